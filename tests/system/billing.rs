//! Billing a partner can reconcile, through the gateway: a month with orders
//! and refunds gives a statement per currency whose line items sum to its
//! total, equal to the orders' totals minus the refunds, in minor units; the
//! next month opens with the last one's closing balance; the CSV export
//! says the same; only the global admin and the billing admin see billing,
//! and only their own partner's.

use std::time::Duration;

use csp_kit::clock::{self, DAY, ManualClock};
use csp_kit::roles::Role;
use csp_proto::common::v1::Money;
use csp_proto::ordering::v1::billing_service_client::BillingServiceClient;
use csp_proto::ordering::v1::{
    ChargeType, CreateCustomerRequest, CurrencyStatement, ExportBillingLineItemsRequest,
    GetBillingStatementRequest, ListBillingLineItemsRequest, Order,
};
use csp_proto::support::v1::{GetTicketRequest, TicketStatus, refund_request};
use csp_tests::{Bearer, TestSystem};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;
use uuid::Uuid;

type Billing = BillingServiceClient<InterceptedService<Channel, Bearer>>;

async fn billing(system: &TestSystem, role: Role) -> Billing {
    BillingServiceClient::with_interceptor(
        system.gateway().await,
        Bearer::new(&system.token(&[role])),
    )
}

async fn customer(system: &TestSystem, market: &str) -> String {
    let mut ordering = system.ordering(&[Role::AdminAgent]).await;
    ordering
        .create_customer(CreateCustomerRequest {
            tenant_id: String::new(),
            domain_name: format!("b{}.example.com", Uuid::new_v4().simple()),
            company_name: format!("Billing {market}"),
            market: market.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap()
        .tenant_id
}

async fn order(system: &TestSystem, tenant: &str, lines: &[(&str, i32)]) -> Order {
    let mut ordering = system.ordering(&[Role::AdminAgent]).await;
    ordering
        .place_order(csp_tests::order_request(tenant, lines))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

/// Refunds `minor` of one subscription through a refund ticket, and waits
/// until it is resolved.
async fn refund(system: &TestSystem, tenant: &str, subscription: &str, money: Money) {
    let mut support = system.support(&[Role::AdminAgent]).await;
    let mut request = csp_tests::refund_ticket(
        refund_request::Customer::CustomerTenantId(tenant.into()),
        refund_request::Target::SubscriptionId(subscription.into()),
        money.minor_units,
    );
    request.refund.as_mut().unwrap().requested_amount = Some(money);
    let ticket = support
        .create_ticket(request)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    for _ in 0..600 {
        let t = support
            .get_ticket(GetTicketRequest {
                ticket_id: ticket.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap();
        if t.status == TicketStatus::Resolved as i32 {
            return;
        }
        assert_eq!(t.status, TicketStatus::Submitted as i32, "{t:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the refund ticket never resolved");
}

fn minor(m: &Option<Money>) -> i64 {
    m.as_ref().unwrap().minor_units
}

/// (currency, opening, charges, credits, total, closing, count).
fn figures(s: &CurrencyStatement) -> (&str, i64, i64, i64, i64, i64, i64) {
    (
        s.currency_code.as_str(),
        minor(&s.opening_balance),
        minor(&s.charges),
        minor(&s.credits),
        minor(&s.total),
        minor(&s.closing_balance),
        s.line_item_count,
    )
}

async fn statement(billing: &mut Billing, month: &str) -> Vec<CurrencyStatement> {
    billing
        .get_billing_statement(GetBillingStatementRequest {
            month: month.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .statements
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_months_statement_sums_its_lines_and_equals_orders_minus_refunds() {
    let november = clock::parse_date("2026-11-15").unwrap();
    let clock = ManualClock::new(november);
    let system = TestSystem::start_with_clock(clock.clone()).await;
    let us = customer(&system, "US").await;
    let de = customer(&system, "DE").await;
    // November: 2 x 400.00 + 1 x 1,900.00 USD; 1 x 368.00 EUR.
    let first = order(
        &system,
        &us,
        &[
            ("windows-server-standard-p1y", 2),
            ("sql-server-standard-p1y", 1),
        ],
    )
    .await;
    let german = order(&system, &de, &[("windows-server-standard-p1y", 1)]).await;
    assert_eq!(minor(&first.total), 270_000);
    assert_eq!(minor(&german.total), 36_800);

    // December: a new order, the SQL Server line refunded in full, part of
    // the German one refunded.
    clock.set(november + 18 * DAY);
    let second = order(&system, &us, &[("windows-server-datacenter-p1y", 1)]).await;
    refund(
        &system,
        &us,
        &first.lines[1].subscription_id,
        first.lines[1].amount.clone().unwrap(),
    )
    .await;
    refund(
        &system,
        &de,
        &german.lines[0].subscription_id,
        Money {
            currency_code: "EUR".into(),
            minor_units: 10_000,
            minor_unit_digits: 2,
        },
    )
    .await;

    let mut admin = billing(&system, Role::BillingAdmin).await;
    let nov = statement(&mut admin, "2026-11").await;
    let nov: Vec<_> = nov.iter().map(figures).collect();
    assert_eq!(
        nov,
        [
            ("EUR", 0, 36_800, 0, 36_800, 36_800, 1),
            ("USD", 0, 270_000, 0, 270_000, 270_000, 2),
        ]
    );
    let dec = statement(&mut admin, "2026-12").await;
    let dec_figures: Vec<_> = dec.iter().map(figures).collect();
    assert_eq!(
        dec_figures,
        [
            ("EUR", 36_800, 0, -10_000, -10_000, 26_800, 1),
            ("USD", 270_000, 140_000, -190_000, -50_000, 220_000, 2),
        ]
    );
    // December's USD total is its order's total minus its refund...
    assert_eq!(minor(&dec[1].total), minor(&second.total) - 190_000);
    // ...and the sum of its line items, which carry what they were priced from.
    let mut global = billing(&system, Role::GlobalAdmin).await;
    let (mut items, mut token) = (Vec::new(), String::new());
    loop {
        let page = global
            .list_billing_line_items(ListBillingLineItemsRequest {
                month: "2026-12".into(),
                currency_code: "USD".into(),
                page_size: 1,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        items.extend(page.line_items);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(items.len(), 2);
    assert_eq!(items.iter().map(|i| minor(&i.amount)).sum::<i64>(), -50_000);
    let refunded = items
        .iter()
        .find(|i| i.charge_type == ChargeType::Refund as i32)
        .unwrap();
    assert_eq!(refunded.subscription_id, first.lines[1].subscription_id);
    assert_eq!(refunded.order_id, first.id);
    assert_eq!(
        (refunded.sku_id.as_str(), refunded.market.as_str()),
        ("sql-server-standard-p1y", "US")
    );
    assert_eq!(
        (refunded.quantity, minor(&refunded.unit_price)),
        (1, 190_000)
    );
    assert_eq!(refunded.price_list_version, 1);
    assert_eq!(refunded.cancellation_policy_id, "csp-2019-60-days");

    // The CSV export says the same.
    let mut stream = admin
        .export_billing_line_items(ExportBillingLineItemsRequest {
            month: "2026-12".into(),
            currency_code: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut csv = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        csv.extend(chunk.data);
    }
    let text = String::from_utf8(csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "LineItemId");
    let amount = header.iter().position(|c| *c == "Amount").unwrap();
    let currency = header.iter().position(|c| *c == "Currency").unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3);
    let usd: Vec<&str> = rows
        .iter()
        .filter(|r| r[currency] == "USD")
        .map(|r| r[amount])
        .collect();
    assert_eq!(usd.len(), 2);
    assert!(
        usd.contains(&"-1900.00") && usd.contains(&"1400.00"),
        "{usd:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r[currency] == "EUR" && r[amount] == "-100.00")
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_billing_roles_see_billing_and_only_their_partners() {
    let system = TestSystem::start().await;
    let us = customer(&system, "US").await;
    order(&system, &us, &[("windows-server-standard-p1y", 1)]).await;
    let month = clock::to_date(clock::Clock::now(&clock::SystemClock))[..7].to_owned();

    let mut agent = billing(&system, Role::AdminAgent).await;
    let denied = agent
        .get_billing_statement(GetBillingStatementRequest {
            month: month.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let mut admin = billing(&system, Role::BillingAdmin).await;
    assert_eq!(statement(&mut admin, &month).await.len(), 1);
    // Another partner's billing admin sees nothing of it.
    let other = system.token_of(Uuid::new_v4(), &[Role::BillingAdmin]);
    let mut stranger =
        BillingServiceClient::with_interceptor(system.gateway().await, Bearer::new(&other));
    assert!(statement(&mut stranger, &month).await.is_empty());

    // Bad months and currencies are named.
    let bad = admin
        .get_billing_statement(GetBillingStatementRequest {
            month: "2026-13".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let fields: Vec<String> = bad
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["month"]);
    let bad = admin
        .list_billing_line_items(ListBillingLineItemsRequest {
            month: month.clone(),
            currency_code: "usd".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    system.stop().await;
}
