//! Price lists from outside: the operator imports one over the catalog's
//! internal API (as `csp catalog import` does), orders follow its effective
//! dates on the clock and record its version, reads at another time answer
//! with the prices then, the history shows each import, and nobody but the
//! operator may import.

use csp_kit::clock::{self, ManualClock, SECOND};
use csp_kit::roles::Role;
use csp_kit::service_name::ServiceName;
use csp_proto::catalog::v1::{
    GetPriceListRequest, GetSkuPriceRequest, ImportPriceListRequest, ListPriceListsRequest,
    ListProductsRequest,
};
use csp_proto::ordering::v1::{CreateCustomerRequest, OrderLineRequest, PlaceOrderRequest};
use csp_tests::TestSystem;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

/// The demo list with Windows Server Standard (1 year) in the US at 400.00
/// until 30 November 2026 and 410.00 from 1 December.
fn next_month_list() -> Vec<u8> {
    let demo = String::from_utf8(csp_catalog::seed::DEMO_PRICE_LIST.to_vec()).unwrap();
    let mut lines = Vec::new();
    for line in demo.lines() {
        if line.starts_with("windows-server-standard,") && line.contains(",P1Y,Annual,US,") {
            lines.push(line.replace(
                ",400.00,false,2000-01-01,,",
                ",400.00,false,2000-01-01,2026-11-30,",
            ));
            lines.push(line.replace(",400.00,false,2000-01-01,,", ",410.00,false,2026-12-01,,"));
        } else {
            lines.push(line.to_owned());
        }
    }
    assert_eq!(
        lines.len(),
        demo.lines().count() + 1,
        "the demo list changed shape"
    );
    let mut text = lines.join("\n");
    text.push('\n');
    text.into_bytes()
}

fn import(content: Vec<u8>) -> ImportPriceListRequest {
    ImportPriceListRequest {
        content,
        file_name: "2026-12.csv".into(),
        imported_by: "pricing@csp.example".into(),
        dry_run: false,
    }
}

fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_take_the_price_in_effect_when_placed_and_record_the_list() {
    let midnight = clock::parse_date("2026-12-01").unwrap();
    let clock = ManualClock::new(midnight - SECOND);
    let system = TestSystem::start_with_clock(clock.clone()).await;
    let mut operator = system.catalog_internal(ServiceName::Operator).await;
    let imported = operator
        .import_price_list(import(next_month_list()))
        .await
        .unwrap()
        .into_inner();
    assert!(imported.changed, "{}", imported.summary);
    let list = imported.price_list.unwrap();
    assert_eq!(list.version, 2, "the demo list is version 1");
    assert_eq!(list.imported_by, "pricing@csp.example");
    let changes = imported.changes.unwrap();
    assert_eq!(changes.price_changes.len(), 2, "{changes:?}"); // one ended, one new
    // The catalog serves it at once.
    let mut ordering = system.ordering(&[Role::AdminAgent]).await;
    let tenant = ordering
        .create_customer(CreateCustomerRequest {
            tenant_id: String::new(),
            domain_name: "midnight.example.com".into(),
            company_name: "Midnight Ltd".into(),
            market: "US".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap()
        .tenant_id;
    let order = |request_id: String| PlaceOrderRequest {
        customer_tenant_id: tenant.clone(),
        lines: vec![OrderLineRequest {
            sku_id: "windows-server-standard-p1y".into(),
            quantity: 2,
        }],
        request_id,
    };
    let before = ordering
        .place_order(order(Uuid::new_v4().to_string()))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        before.lines[0].unit_price.as_ref().unwrap().minor_units,
        40_000
    );
    assert_eq!(before.total.as_ref().unwrap().minor_units, 80_000);
    assert_eq!(before.price_list_version, 2);

    clock.advance(SECOND); // 00:00:00 on 1 December
    let after = ordering
        .place_order(order(Uuid::new_v4().to_string()))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        after.lines[0].unit_price.as_ref().unwrap().minor_units,
        41_000
    );
    assert_eq!(after.price_list_version, 2);

    // Reads now, and as of November.
    let mut catalog = system.catalog(&[Role::SalesAgent]).await;
    let price = |as_of: Option<i64>| GetSkuPriceRequest {
        sku_id: "windows-server-standard-p1y".into(),
        market: "US".into(),
        as_of: as_of.map(clock::to_timestamp),
    };
    let now = catalog
        .get_sku_price(price(None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.price.unwrap().amount.unwrap().minor_units, 41_000);
    let november = clock::parse_date("2026-11-15").unwrap();
    let then = catalog
        .get_sku_price(price(Some(november)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(then.price.unwrap().amount.unwrap().minor_units, 40_000);
    let listed = catalog
        .list_products(ListProductsRequest {
            market: "US".into(),
            page_size: 100,
            as_of: Some(clock::to_timestamp(november)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let sku = listed
        .products
        .iter()
        .flat_map(|p| &p.skus)
        .find(|s| s.id == "windows-server-standard-p1y")
        .unwrap();
    assert_eq!(
        sku.price
            .as_ref()
            .unwrap()
            .amount
            .as_ref()
            .unwrap()
            .minor_units,
        40_000
    );
    assert_eq!(sku.billing_plan, "Annual");
    // A bad as_of is named.
    let bad = catalog
        .get_sku_price(GetSkuPriceRequest {
            as_of: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..price(None)
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&bad), ["as_of"]);

    // The history: both versions, newest first, and one in full.
    let history = operator
        .list_price_lists(ListPriceListsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let versions: Vec<i64> = history.price_lists.iter().map(|l| l.version).collect();
    assert_eq!(versions, [2, 1]);
    assert_eq!(history.price_lists[0].summary, "2 prices changed");
    let full = operator
        .get_price_list(GetPriceListRequest { version: 2 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.changes.unwrap().price_changes.len(), 2);
    let missing = operator
        .get_price_list(GetPriceListRequest { version: 99 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // The same file again changes nothing, and says so.
    let again = operator
        .import_price_list(import(next_month_list()))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.changed);
    assert_eq!(again.price_list.unwrap().version, 2);
    assert!(again.summary.starts_with("unchanged"), "{}", again.summary);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operator_imports_and_bad_lists_are_refused_with_their_lines() {
    let system = TestSystem::start().await;
    // Another service may not.
    let mut ordering = system.catalog_internal(ServiceName::Ordering).await;
    let denied = ordering
        .import_price_list(import(next_month_list()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = ordering
        .list_price_lists(ListPriceListsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let mut operator = system.catalog_internal(ServiceName::Operator).await;
    // Bad request fields.
    let empty = operator
        .import_price_list(ImportPriceListRequest {
            content: Vec::new(),
            imported_by: String::new(),
            ..import(Vec::new())
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(fields(&empty), ["content", "imported_by"]);
    // A file with errors: each named by line and column; nothing changes.
    let mut bad = String::from_utf8(next_month_list()).unwrap();
    bad = bad.replacen(",P1Y,Annual,", ",P2Y,Annual,", 1);
    bad.push_str("not,a,price,line\n");
    let refused = operator
        .import_price_list(import(bad.into_bytes()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&refused),
        ["line 2, column TermDuration", "line 211"]
    );
    assert!(
        !refused.message().contains("pricing@"),
        "{}",
        refused.message()
    );
    let history = operator
        .list_price_lists(ListPriceListsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.price_lists.len(), 1, "only the demo list");
    // A page size out of range.
    let bad_page = operator
        .list_price_lists(ListPriceListsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&bad_page), ["page_size"]);
    system.stop().await;
}
