//! The catalog through the gateway: listings per market, the 11 markets
//! without Azure reservations, the tax flag, paging, and bad input.

use std::collections::BTreeSet;

use csp_kit::roles::Role;
use csp_proto::catalog::v1::{
    GetProductRequest, GetSkuPriceRequest, ListMarketsRequest, ListProductsRequest, Product,
    ProductKind,
};
use csp_tests::TestSystem;
use tonic::Code;
use tonic_types::StatusExt as _;

const UNAVAILABLE: [&str; 11] = [
    "AR", "BR", "CN", "ID", "LI", "MY", "MX", "RU", "SA", "ZA", "TR",
];

fn list(market: &str) -> ListProductsRequest {
    ListProductsRequest {
        market: market.into(),
        page_size: 100,
        ..Default::default()
    }
}

fn kinds(products: &[Product]) -> BTreeSet<i32> {
    products.iter().map(|p| p.kind).collect()
}

fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_hold_server_subscriptions_everywhere_and_reservations_only_where_offered() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::MarketingContentAdmin]).await;

    let us = catalog
        .list_products(list("US"))
        .await
        .unwrap()
        .into_inner()
        .products;
    assert!(kinds(&us).contains(&(ProductKind::AzureReservation as i32)));
    assert!(kinds(&us).contains(&(ProductKind::ServerSubscription as i32)));
    for product in &us {
        assert!(!product.skus.is_empty(), "{} has no SKUs", product.id);
        for sku in &product.skus {
            let price = sku
                .price
                .as_ref()
                .unwrap_or_else(|| panic!("{} has no price", sku.id));
            let amount = price.amount.as_ref().unwrap();
            assert_eq!(amount.currency_code, "USD");
            assert!(amount.minor_units > 0);
            assert_eq!(price.market, "US");
        }
    }

    for market in UNAVAILABLE {
        let products = catalog
            .list_products(list(market))
            .await
            .unwrap()
            .into_inner()
            .products;
        assert!(!products.is_empty(), "{market} lists nothing");
        assert_eq!(
            kinds(&products),
            BTreeSet::from([ProductKind::ServerSubscription as i32]),
            "{market} lists Azure reservations"
        );
    }

    // The kind filter.
    let reservations = catalog
        .list_products(ListProductsRequest {
            kind: ProductKind::AzureReservation as i32,
            ..list("DE")
        })
        .await
        .unwrap()
        .into_inner()
        .products;
    assert!(!reservations.is_empty());
    assert_eq!(
        kinds(&reservations),
        BTreeSet::from([ProductKind::AzureReservation as i32])
    );
    let none_in_brazil = catalog
        .list_products(ListProductsRequest {
            kind: ProductKind::AzureReservation as i32,
            ..list("BR")
        })
        .await
        .unwrap()
        .into_inner()
        .products;
    assert!(none_in_brazil.is_empty());
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_a_reservation_where_unavailable_is_failed_precondition_naming_the_market() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::SalesAgent]).await;
    for market in UNAVAILABLE {
        let status = catalog
            .get_product(GetProductRequest {
                product_id: "azure-reserved-vm-d2s-v3".into(),
                market: market.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{market}");
        assert!(
            status.message().contains(&format!("market {market}")),
            "{}",
            status.message()
        );

        let status = catalog
            .get_sku_price(GetSkuPriceRequest {
                as_of: None,
                sku_id: "azure-reserved-vm-e4s-v3-p3y".into(),
                market: market.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{market}");
        assert!(status.message().contains(market), "{}", status.message());
        let details = status.get_error_details();
        assert_eq!(
            details.precondition_failure().unwrap().violations[0].subject,
            format!("market/{market}")
        );
    }
    // Offered elsewhere, and software is offered in the unavailable markets.
    let price = catalog
        .get_sku_price(GetSkuPriceRequest {
            as_of: None,
            sku_id: "azure-reserved-vm-e4s-v3-p3y".into(),
            market: "US".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .price
        .unwrap();
    assert_eq!(price.amount.unwrap().currency_code, "USD");
    let product = catalog
        .get_product(GetProductRequest {
            product_id: "windows-server-standard".into(),
            market: "BR".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(product.skus.len(), 2);
    assert!(product.skus.iter().all(|s| s.price.is_some()));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_australia_and_brazil_prices_include_tax() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::AdminAgent]).await;
    let markets = catalog
        .list_markets(ListMarketsRequest {})
        .await
        .unwrap()
        .into_inner()
        .markets;
    assert!(markets.len() >= 13, "{} markets", markets.len());
    for market in &markets {
        let price = catalog
            .get_sku_price(GetSkuPriceRequest {
                as_of: None,
                sku_id: "windows-server-datacenter-p1y".into(),
                market: market.code.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .price
            .unwrap();
        let expected = market.code == "AU" || market.code == "BR";
        assert_eq!(price.tax_included, expected, "{}", market.code);
        assert_eq!(market.tax_included, expected, "{}", market.code);
        assert_eq!(price.amount.unwrap().currency_code, market.currency_code);
        assert_eq!(
            market.azure_reservations_available,
            !UNAVAILABLE.contains(&market.code.as_str()),
            "{}",
            market.code
        );
    }
    // Every listed price carries the flag too.
    let au = catalog
        .list_products(list("AU"))
        .await
        .unwrap()
        .into_inner()
        .products;
    assert!(
        au.iter()
            .flat_map(|p| &p.skus)
            .all(|s| s.price.as_ref().is_some_and(|p| p.tax_included))
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_walks_every_product_once() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::GlobalAdmin]).await;
    let all: Vec<String> = catalog
        .list_products(list("US"))
        .await
        .unwrap()
        .into_inner()
        .products
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert!(all.len() >= 5);

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = catalog
            .list_products(ListProductsRequest {
                market: "US".into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.products.len() <= 2);
        seen.extend(page.products.into_iter().map(|p| p.id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 50, "paging does not end");
    }
    assert_eq!(seen, all);
    assert_eq!(pages, all.len().div_ceil(2));

    // A token belongs to its query.
    let first = catalog
        .list_products(ListProductsRequest {
            market: "US".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = catalog
        .list_products(ListProductsRequest {
            market: "DE".into(),
            page_size: 1,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["page_token"]);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_field_named() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::HelpdeskAgent]).await;

    for (market, hint) in [
        ("XX", "unknown market"),
        ("", "required"),
        ("USA", "at most 2 characters"),
    ] {
        let status = catalog.list_products(list(market)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{market:?}");
        assert_eq!(violated_fields(&status), ["market"], "{market:?}");
        assert!(
            status.message().contains(hint),
            "{market:?}: {}",
            status.message()
        );
    }
    let status = catalog
        .list_products(ListProductsRequest {
            page_size: -1,
            ..list("US")
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["page_size"]);
    let status = catalog
        .list_products(ListProductsRequest {
            page_token: "garbage".into(),
            ..list("US")
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["page_token"]);
    let status = catalog
        .list_products(ListProductsRequest {
            kind: 42,
            ..list("US")
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["kind"]);

    let status = catalog
        .get_product(GetProductRequest {
            product_id: "no-such-product".into(),
            market: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("no-such-product"));
    let status = catalog
        .get_product(GetProductRequest::default())
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["product_id"]);

    let status = catalog
        .get_sku_price(GetSkuPriceRequest {
            as_of: None,
            sku_id: "no-such-sku".into(),
            market: "US".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = catalog
        .get_sku_price(GetSkuPriceRequest {
            as_of: None,
            sku_id: "windows-server-standard-p1y".into(),
            market: "ZZ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["market"]);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_case_market_codes_are_accepted_and_products_carry_download_options() {
    let system = TestSystem::start().await;
    let mut catalog = system.catalog(&[Role::AdminAgent]).await;
    let product = catalog
        .get_product(GetProductRequest {
            product_id: "windows-server-datacenter".into(),
            market: "jp".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    let price = product.skus[0].price.clone().unwrap();
    assert_eq!(price.market, "JP");
    let amount = price.amount.unwrap();
    assert_eq!(
        (amount.currency_code.as_str(), amount.minor_unit_digits),
        ("JPY", 0)
    );
    let options = product.download_options.unwrap();
    assert!(options.versions.contains(&"2022".to_owned()));
    assert!(options.languages.contains(&"zh-CN".to_owned()));
    assert!(
        options
            .file_types
            .iter()
            .any(|f| f.display_name == "ISO 64-bit")
    );
    assert_eq!(product.cancellation_window_days, 60);

    // Without a market: no prices, no availability check.
    let reservation = catalog
        .get_product(GetProductRequest {
            product_id: "azure-reserved-vm-d2s-v3".into(),
            market: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert!(reservation.skus.iter().all(|s| s.price.is_none()));
    assert!(reservation.download_options.unwrap().versions.is_empty());
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_again_on_restart_changes_nothing() {
    let system = TestSystem::start().await;
    let before = system
        .catalog(&[Role::AdminAgent])
        .await
        .list_products(list("US"))
        .await
        .unwrap()
        .into_inner();
    let storage = system.stop_keeping_data().await;

    let again = TestSystem::start_on(storage).await;
    let after = again
        .catalog(&[Role::AdminAgent])
        .await
        .list_products(list("US"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before, after);
    again.stop().await;
}
