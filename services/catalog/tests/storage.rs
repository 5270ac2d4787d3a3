//! The catalog storage contract: seeding is idempotent and leaves edits
//! alone; products are listed by id, of a kind, with reservations only when
//! asked for, and paged by id; prices are per market (none where a SKU has
//! no price row); a SKU's product, a product, a market and its compute rates
//! read back as seeded; an unknown stored kind or term is an error, never a
//! default; any change to any catalog table, by any statement, moves the
//! catalog version the snapshot reloads by.
//!
//! Runs on SQLite, or on PostgreSQL when CSP_TEST_POSTGRES_URL is set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use csp_catalog::domain::{DownloadOptions, FileType, Market, Product, ProductKind, Term};
use csp_catalog::hybrid::Rates;
use csp_catalog::seed::{
    BASE_RATE_USD_MICRO_CENTS, MARKETS, PRODUCTS, SKUS, WINDOWS_RATE_USD_MICRO_CENTS, local_price,
    seed_demo_catalog, sku_id,
};
use csp_catalog::storage::{CatalogStore, MIGRATIONS};
use csp_store::db::Db;
use csp_store::testing::TestDb;
use csp_store::{StoreError, StoreResult};

async fn seeded() -> (TestDb, CatalogStore) {
    let test = TestDb::migrated(&MIGRATIONS).await;
    seed_demo_catalog(&test.db).await.unwrap();
    let store = CatalogStore::new(test.db.clone());
    (test, store)
}

/// Rows of markets, products, SKUs, prices, compute rates and download
/// options.
async fn counts(db: &Db) -> [i64; 6] {
    let mut counts = [0; 6];
    let tables: [&'static str; 6] = [
        "SELECT COUNT(*) FROM markets",
        "SELECT COUNT(*) FROM products",
        "SELECT COUNT(*) FROM skus",
        "SELECT COUNT(*) FROM prices",
        "SELECT COUNT(*) FROM compute_rates",
        "SELECT COUNT(*) FROM download_options",
    ];
    for (count, sql) in counts.iter_mut().zip(tables) {
        *count =
            csp_store::on_db!(db, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await)
                .unwrap();
    }
    counts
}

/// Runs `sql` with `binds` and returns the rows it changed.
async fn execute(db: &Db, sql: &'static str, binds: &[&str]) -> u64 {
    csp_store::on_db!(db, pool => {
        let mut query = sqlx::query(sql);
        for value in binds {
            query = query.bind(*value);
        }
        query.execute(pool).await.map(|r| r.rows_affected())
    })
    .unwrap()
}

/// Runs `update` past the CHECK constraint `constraint` of `table`, as a
/// later version whose migration widened the column could have written it:
/// SQLite skips CHECK constraints on one connection, PostgreSQL drops the
/// constraint.
async fn write_past_check(
    db: &Db,
    table: &str,
    constraint: &str,
    update: &'static str,
    binds: &[&str],
) {
    let changed = match db {
        Db::Sqlite(pool) => {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("PRAGMA ignore_check_constraints = ON")
                .execute(&mut *conn)
                .await
                .unwrap();
            let mut query = sqlx::query(update);
            for value in binds {
                query = query.bind(*value);
            }
            let changed = query.execute(&mut *conn).await.map(|r| r.rows_affected());
            sqlx::query("PRAGMA ignore_check_constraints = OFF")
                .execute(&mut *conn)
                .await
                .unwrap();
            changed.unwrap()
        }
        Db::Postgres(pool) => {
            let alter = format!("ALTER TABLE {table} DROP CONSTRAINT {constraint}");
            sqlx::query(sqlx::AssertSqlSafe(alter))
                .execute(pool)
                .await
                .unwrap();
            execute(db, update, binds).await
        }
    };
    assert_eq!(changed, 1, "{update}");
}

fn assert_corrupt<T: std::fmt::Debug>(read: StoreResult<T>, column: &str, value: &str) {
    match read {
        Err(StoreError::Corrupt {
            column: c,
            value: v,
        }) => {
            assert_eq!((c, v.as_str()), (column, value));
        }
        other => panic!("expected a Corrupt {column}, got {other:?}"),
    }
}

/// The seeded product ids of the kinds `keep` keeps, by id.
fn seeded_ids(keep: impl Fn(ProductKind) -> bool) -> Vec<String> {
    let mut ids: Vec<String> = PRODUCTS
        .iter()
        .filter(|p| keep(p.3))
        .map(|p| p.0.to_owned())
        .collect();
    ids.sort();
    ids
}

fn ids(products: &[Product]) -> Vec<String> {
    products.iter().map(|p| p.id.clone()).collect()
}

/// A product's SKUs as (id, price) pairs.
fn prices(product: &Product) -> Vec<(String, Option<i64>)> {
    product
        .skus
        .iter()
        .map(|s| (s.id.clone(), s.price_minor))
        .collect()
}

/// The seeded SKUs of `product` with their prices at `rate` (None: no
/// market), by SKU id.
fn seeded_prices(product: &str, rate: Option<i64>) -> Vec<(String, Option<i64>)> {
    let mut skus: Vec<(String, Option<i64>)> = SKUS
        .iter()
        .filter(|s| s.0 == product)
        .map(|&(_, term, usd)| (sku_id(product, term), rate.map(|r| local_price(usd, r))))
        .collect();
    skus.sort();
    skus
}

#[tokio::test]
async fn seeding_twice_changes_nothing_and_leaves_edits_alone() {
    let (test, store) = seeded().await;
    let first = counts(&test.db).await;
    let expected = [
        MARKETS.len(),
        PRODUCTS.len(),
        SKUS.len(),
        SKUS.len() * MARKETS.len(),
        MARKETS.len(),
    ]
    .map(|n| n as i64);
    assert_eq!(first[..5], expected, "on {}", test.backend());

    let sku = sku_id("windows-server-standard", Term::OneYear);
    let edit = "UPDATE prices SET amount_minor = 12345 WHERE sku_id = $1 AND market = $2";
    assert_eq!(execute(&test.db, edit, &[sku.as_str(), "US"]).await, 1);
    seed_demo_catalog(&test.db).await.unwrap();

    assert_eq!(counts(&test.db).await, first);
    let markets = store.list_markets().await.unwrap();
    let codes: Vec<&str> = markets.iter().map(|m| m.code.as_str()).collect();
    let mut seeded: Vec<&str> = MARKETS.iter().map(|m| m.0).collect();
    seeded.sort_unstable();
    assert_eq!(codes, seeded);
    let product = store
        .get_product("windows-server-standard", Some("US"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(product.skus[0].id, sku);
    assert_eq!(
        product.skus[0].price_minor,
        Some(12345),
        "a seed overwrote an edit"
    );
    test.remove().await;
}

#[tokio::test]
async fn reservations_are_listed_only_where_the_market_offers_them() {
    let (test, store) = seeded().await;
    let br = store.get_market("BR").await.unwrap().unwrap();
    let us = store.get_market("US").await.unwrap().unwrap();
    assert!(!br.azure_reservations_available);
    assert!(us.azure_reservations_available);

    let in_br = store
        .list_products("BR", None, br.azure_reservations_available, "", 100)
        .await
        .unwrap();
    assert_eq!(
        ids(&in_br),
        seeded_ids(|k| k != ProductKind::AzureReservation)
    );
    let in_us = store
        .list_products("US", None, us.azure_reservations_available, "", 100)
        .await
        .unwrap();
    assert_eq!(ids(&in_us), seeded_ids(|_| true));
    assert!(
        in_us
            .iter()
            .any(|p| p.kind == ProductKind::AzureReservation)
    );
    // SKUs stay with their products when reservations in the id range are left out.
    for product in &in_br {
        let skus: Vec<String> = prices(product).into_iter().map(|(id, _)| id).collect();
        let seeded: Vec<String> = seeded_prices(&product.id, None)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(skus, seeded, "{}", product.id);
    }
    test.remove().await;
}

#[tokio::test]
async fn list_products_filters_by_kind() {
    let (test, store) = seeded().await;
    for kind in [
        ProductKind::AzureReservation,
        ProductKind::ServerSubscription,
    ] {
        let listed = store
            .list_products("US", Some(kind), true, "", 100)
            .await
            .unwrap();
        assert_eq!(ids(&listed), seeded_ids(|k| k == kind), "{kind}");
    }
    let none = store
        .list_products("BR", Some(ProductKind::AzureReservation), false, "", 100)
        .await
        .unwrap();
    assert!(none.is_empty(), "{:?}", ids(&none));
    test.remove().await;
}

#[tokio::test]
async fn list_products_pages_by_product_id() {
    let (test, store) = seeded().await;
    for limit in [1, 2, 4] {
        let mut after = String::new();
        let mut seen = Vec::new();
        loop {
            let page = store
                .list_products("US", None, true, &after, limit)
                .await
                .unwrap();
            assert!(page.len() <= limit as usize);
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            seen.extend(ids(&page));
        }
        assert_eq!(seen, seeded_ids(|_| true), "pages of {limit}");
    }
    test.remove().await;
}

#[tokio::test]
async fn prices_are_per_market_and_none_without_a_price_row() {
    let (test, store) = seeded().await;
    let product = "windows-server-standard";
    for &(market, .., rate) in MARKETS {
        let priced = store
            .get_product(product, Some(market))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            prices(&priced),
            seeded_prices(product, Some(rate)),
            "{market}"
        );
    }
    let p1y = sku_id(product, Term::OneYear);
    let us = store
        .get_product(product, Some("US"))
        .await
        .unwrap()
        .unwrap();
    let jp = store
        .get_product(product, Some("JP"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (us.skus[0].id.as_str(), us.skus[0].price_minor),
        (p1y.as_str(), Some(40_000))
    );
    assert_eq!(
        (jp.skus[0].id.as_str(), jp.skus[0].price_minor),
        (p1y.as_str(), Some(60_000))
    );

    let delete = "DELETE FROM prices WHERE sku_id = $1 AND market = $2";
    assert_eq!(execute(&test.db, delete, &[p1y.as_str(), "GB"]).await, 1);
    let gb = store
        .get_product(product, Some("GB"))
        .await
        .unwrap()
        .unwrap();
    let mut expected = seeded_prices(product, Some(7_900));
    expected[0].1 = None;
    assert_eq!(
        prices(&gb),
        expected,
        "a SKU without a price row has no price"
    );
    let listed = store
        .list_products("GB", None, true, "", 100)
        .await
        .unwrap();
    let listed = listed.iter().find(|p| p.id == product).unwrap();
    assert_eq!(prices(listed), expected);
    let still = store
        .get_product(product, Some("US"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        prices(&still),
        prices(&us),
        "other markets keep their prices"
    );

    let unpriced = store.get_product(product, None).await.unwrap().unwrap();
    assert_eq!(prices(&unpriced), seeded_prices(product, None));
    test.remove().await;
}

#[tokio::test]
async fn a_product_its_skus_market_and_compute_rates_read_back_as_seeded() {
    let (test, store) = seeded().await;
    let sku = sku_id("sql-server-standard", Term::ThreeYears);
    let of_sku = store.product_of_sku(&sku).await.unwrap();
    assert_eq!(of_sku.as_deref(), Some("sql-server-standard"));
    assert_eq!(store.product_of_sku("no-such-sku").await.unwrap(), None);

    let (id, title, description, kind) = PRODUCTS[4];
    let product = store.get_product(id, Some("US")).await.unwrap().unwrap();
    assert_eq!(
        (
            product.id.as_str(),
            product.title.as_str(),
            product.description.as_str()
        ),
        (id, title, description)
    );
    assert_eq!((product.kind, product.cancellation_window_days), (kind, 60));
    assert_eq!(prices(&product), seeded_prices(id, Some(10_000)));
    let terms: Vec<Term> = product.skus.iter().map(|s| s.term).collect();
    assert_eq!(terms, [Term::OneYear, Term::ThreeYears]);
    let file_type = |id: &str, name: &str| FileType {
        id: id.to_owned(),
        display_name: name.to_owned(),
    };
    let options = DownloadOptions {
        versions: vec!["2019".to_owned(), "2022".to_owned()],
        languages: ["en-US", "zh-CN", "de-DE", "ja-JP"]
            .map(str::to_owned)
            .to_vec(),
        file_types: vec![
            file_type("iso-x64", "ISO 64-bit"),
            file_type("vhdx-x64", "VHDX 64-bit"),
        ],
    };
    assert_eq!(product.download_options, options);
    let reservation = store
        .get_product("azure-reserved-vm-d2s-v3", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reservation.kind, ProductKind::AzureReservation);
    assert_eq!(reservation.download_options, DownloadOptions::default());
    assert_eq!(
        store
            .get_product("no-such-product", Some("US"))
            .await
            .unwrap(),
        None
    );

    let brazil = Market {
        code: "BR".to_owned(),
        display_name: "Brazil".to_owned(),
        currency_code: "BRL".to_owned(),
        minor_unit_digits: 2,
        tax_included: true,
        azure_reservations_available: false,
    };
    assert_eq!(store.get_market("BR").await.unwrap(), Some(brazil));
    assert_eq!(store.get_market("XX").await.unwrap(), None);

    let us = Rates {
        windows_micro_minor: WINDOWS_RATE_USD_MICRO_CENTS,
        base_micro_minor: BASE_RATE_USD_MICRO_CENTS,
    };
    assert_eq!(store.compute_rates("US").await.unwrap(), Some(us));
    let jp = Rates {
        windows_micro_minor: local_price(WINDOWS_RATE_USD_MICRO_CENTS, 15_000),
        base_micro_minor: local_price(BASE_RATE_USD_MICRO_CENTS, 15_000),
    };
    assert_eq!(store.compute_rates("JP").await.unwrap(), Some(jp));
    assert_eq!(store.compute_rates("XX").await.unwrap(), None);
    test.remove().await;
}

#[tokio::test]
async fn an_unknown_stored_product_kind_reads_as_corrupt() {
    let (test, store) = seeded().await;
    let update = "UPDATE products SET kind = $1 WHERE id = $2";
    let binds = ["saas_subscription", "sql-server-standard"];
    write_past_check(&test.db, "products", "products_kind_check", update, &binds).await;

    let read = store.get_product("sql-server-standard", Some("US")).await;
    assert_corrupt(read, "products.kind", "saas_subscription");
    let listed = store.list_products("US", None, true, "", 100).await;
    assert_corrupt(listed, "products.kind", "saas_subscription");
    test.remove().await;
}

#[tokio::test]
async fn an_unknown_stored_term_reads_as_corrupt() {
    let (test, store) = seeded().await;
    let sku = sku_id("windows-server-standard", Term::OneYear);
    let update = "UPDATE skus SET term = $1 WHERE id = $2";
    write_past_check(
        &test.db,
        "skus",
        "skus_term_check",
        update,
        &["P2Y", sku.as_str()],
    )
    .await;

    let read = store
        .get_product("windows-server-standard", Some("US"))
        .await;
    assert_corrupt(read, "skus.term", "P2Y");
    test.remove().await;
}

#[tokio::test]
async fn every_change_to_the_catalog_moves_its_version() {
    let (test, store) = seeded().await;
    let postgres = matches!(test.db, Db::Postgres(_));
    let changes = [
        "UPDATE prices SET amount_minor = amount_minor + 1 WHERE market = 'US'",
        "UPDATE products SET title = title || '.' WHERE id = 'sql-server-standard'",
        "INSERT INTO markets (code, display_name, currency_code, minor_unit_digits, tax_included, azure_reservations_available) \
         VALUES ('ZZ', 'Test', 'USD', 2, FALSE, TRUE)",
        "DELETE FROM compute_rates WHERE market = 'US'",
        if postgres {
            "TRUNCATE download_options"
        } else {
            "DELETE FROM download_options"
        },
    ];
    for sql in changes {
        let before = store.version().await.unwrap();
        csp_store::on_db!(&test.db, pool => sqlx::query(sql).execute(pool).await.map(drop))
            .unwrap();
        let after = store.version().await.unwrap();
        assert_ne!(before, after, "{sql} on {}", test.backend());
    }
    // A read changes nothing.
    let before = store.version().await.unwrap();
    store.load_snapshot().await.unwrap();
    assert_eq!(store.version().await.unwrap(), before);
    test.remove().await;
}
