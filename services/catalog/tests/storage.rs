//! The catalog's storage and import contract: the demo price list imports
//! once and reads back; an import with errors names them all and changes
//! nothing; the same list twice is a no-op; each import is a version with its
//! changes; prices follow their effective dates on the clock; which markets
//! offer reservations follows the list; an unknown stored kind or term is an
//! error, never a default; any change to any catalog table, by any
//! statement, moves the catalog version the snapshot reloads by.
//!
//! Runs on SQLite, or on PostgreSQL when CSP_TEST_POSTGRES_URL is set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::sync::Arc;

use csp_catalog::domain::ProductKind;
use csp_catalog::seed::{DEMO_IMPORTER, DEMO_PRICE_LIST, seed_demo_catalog};
use csp_catalog::storage::{CatalogStore, MIGRATIONS};
use csp_catalog::use_cases::{Catalog, ImportRequest};
use csp_kit::ApiError;
use csp_kit::clock::{self, Clock, DAY, ManualClock, SECOND};
use csp_store::db::Db;
use csp_store::testing::TestDb;
use csp_store::{StoreError, StoreResult};

/// 2026-11-30T23:59:59Z.
fn before_midnight() -> i64 {
    clock::parse_date("2026-12-01").unwrap() - SECOND
}

struct Fixture {
    test: TestDb,
    store: CatalogStore,
    catalog: Catalog,
    clock: Arc<ManualClock>,
}

async fn fixture(seed: bool) -> Fixture {
    let test = TestDb::migrated(&MIGRATIONS).await;
    let store = CatalogStore::new(test.db.clone());
    let clock = ManualClock::new(before_midnight());
    let catalog = Catalog::load(store.clone(), clock.clone() as Arc<dyn Clock>)
        .await
        .unwrap();
    if seed {
        seed_demo_catalog(&catalog, &test.db).await.unwrap();
    }
    Fixture {
        test,
        store,
        catalog,
        clock,
    }
}

fn import(content: impl Into<Vec<u8>>) -> ImportRequest {
    ImportRequest {
        content: content.into(),
        file_name: "list.csv".to_owned(),
        imported_by: "alice@example.com".to_owned(),
        dry_run: false,
    }
}

const HEADER: &str = "ProductId,ProductTitle,ProductDescription,ProductKind,Publisher,SkuId,SkuTitle,TermDuration,BillingPlan,Market,MarketName,Currency,UnitPrice,TaxIncluded,EffectiveStartDate,EffectiveEndDate,DownloadOptions,CancellationPolicyId";
const OPTIONS: &str = "versions=2022;languages=en-US;file_types=iso-x64:ISO 64-bit";

/// A server subscription line.
fn software(sku: &str, market: &str, price: &str, start: &str, end: &str) -> String {
    format!(
        "ws,Windows Server,Desc,server_subscription,Microsoft Corporation,{sku},{sku} title,P1Y,Annual,{market},Market {market},USD,{price},false,{start},{end},{OPTIONS},new-commerce-168-hours"
    )
}

/// An Azure reservation line.
fn reservation(sku: &str, market: &str, price: &str) -> String {
    format!(
        "vm,Reserved VM,,azure_reservation,Microsoft Corporation,{sku},{sku} title,P3Y,Triennial,{market},Market {market},USD,{price},false,2026-01-01,,,azure-reservation"
    )
}

fn list(lines: &[String]) -> String {
    let mut text = String::from(HEADER);
    for line in lines {
        text.push('\n');
        text.push_str(line);
    }
    text.push('\n');
    text
}

/// Rows of markets, products, SKUs, prices, compute rates, download
/// options and price lists.
async fn counts(db: &Db) -> [i64; 7] {
    let mut counts = [0; 7];
    let tables: [&'static str; 7] = [
        "SELECT COUNT(*) FROM markets",
        "SELECT COUNT(*) FROM products",
        "SELECT COUNT(*) FROM skus",
        "SELECT COUNT(*) FROM price_periods",
        "SELECT COUNT(*) FROM compute_rates",
        "SELECT COUNT(*) FROM download_options",
        "SELECT COUNT(*) FROM price_lists",
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

#[tokio::test]
async fn the_demo_list_imports_once_at_first_start_and_reads_back() {
    let f = fixture(true).await;
    // 21 markets, 6 products, 12 SKUs, 208 prices (reservations are not
    // priced in the 11 markets without them), 21 compute rates, 4 products
    // with 8 download options each, 1 price list.
    assert_eq!(counts(&f.test.db).await, [21, 6, 12, 208, 21, 32, 1]);
    seed_demo_catalog(&f.catalog, &f.test.db).await.unwrap();
    assert_eq!(counts(&f.test.db).await, [21, 6, 12, 208, 21, 32, 1]);
    let history = f.store.price_lists(0, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].imported_by, DEMO_IMPORTER);
    assert_eq!(history[0].checksum, csp_kit::sha256_hex(DEMO_PRICE_LIST));
    assert_eq!(history[0].changes.products_added.len(), 6);

    let (market, quotes, version) = f
        .catalog
        .quote("jp", &["windows-server-standard-p1y".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        (market.currency_code.as_str(), market.minor_unit_digits),
        ("JPY", 0)
    );
    assert_eq!((quotes[0].sku.price_minor, version), (Some(60_000), 1));
    let br = f.catalog.market("market", "BR").await.unwrap();
    assert!(br.tax_included && !br.azure_reservations_available);
    f.test.remove().await;
}

#[tokio::test]
async fn an_import_with_errors_names_every_one_and_changes_nothing() {
    let f = fixture(true).await;
    let before = counts(&f.test.db).await;
    let version = f.store.version().await.unwrap();
    let bad = list(&[
        software("ws-p1y", "US", "400.00", "2026-11-01", ""),
        software("ws-p1y", "DE", "4.001", "2026-11-01", ""),
        software("ws-p1y", "FR", "400", "2026-13-01", ""),
        software("ws-p1y", "US", "410.00", "2026-12-01", ""),
        reservation("vm-p3y", "US", "600").replace("azure-reservation", "no-such-policy"),
    ]);
    let error = f.catalog.import(import(bad)).await.unwrap_err();
    let ApiError::InvalidArgument(violations) = error else {
        panic!("expected INVALID_ARGUMENT, got {error:?}");
    };
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "line 3, column UnitPrice",
            "line 4, column EffectiveStartDate",
            "line 5, column EffectiveStartDate",
            "line 6, column CancellationPolicyId",
        ]
    );
    assert!(
        violations[2].description.contains("line 2"),
        "{violations:?}"
    );
    assert!(
        violations[3].description.contains("csp-2019-60-days"),
        "{violations:?}"
    );
    assert_eq!(counts(&f.test.db).await, before);
    assert_eq!(f.store.version().await.unwrap(), version);
    f.test.remove().await;
}

#[tokio::test]
async fn the_same_list_twice_changes_nothing_and_says_so() {
    let f = fixture(false).await;
    let lines = [
        software("ws-p1y", "US", "400.00", "2026-11-01", ""),
        software("ws-p1y", "DE", "380.00", "2026-11-01", ""),
    ];
    let first = f.catalog.import(import(list(&lines))).await.unwrap();
    assert!(first.changed, "{}", first.summary);
    assert_eq!(first.price_list.as_ref().unwrap().version, 1);
    let version = f.store.version().await.unwrap();
    let rows = counts(&f.test.db).await;

    let again = f.catalog.import(import(list(&lines))).await.unwrap();
    assert!(!again.changed);
    assert!(
        again
            .summary
            .starts_with("unchanged: this file is price list version 1"),
        "{}",
        again.summary
    );
    // The same list in another order: the same catalog, still no change.
    let reordered = f
        .catalog
        .import(import(list(&[lines[1].clone(), lines[0].clone()])))
        .await
        .unwrap();
    assert!(!reordered.changed, "{}", reordered.summary);
    assert!(
        reordered
            .summary
            .contains("says what price list version 1 says"),
        "{}",
        reordered.summary
    );
    assert_eq!(f.store.version().await.unwrap(), version);
    assert_eq!(counts(&f.test.db).await, rows);
    f.test.remove().await;
}

#[tokio::test]
async fn each_import_is_a_version_with_what_it_changed() {
    let f = fixture(false).await;
    let v1 = list(&[
        software("ws-p1y", "US", "400.00", "2026-11-01", ""),
        software("ws-p1y", "DE", "380.00", "2026-11-01", ""),
        software("old-p1y", "US", "10.00", "2026-11-01", ""),
    ]);
    f.catalog.import(import(v1)).await.unwrap();
    let v2 = list(&[
        software("ws-p1y", "US", "420.00", "2026-11-01", ""),
        software("ws-p1y", "DE", "380.00", "2026-11-01", ""),
        software("new-p1y", "US", "20.00", "2026-11-01", ""),
        reservation("vm-p3y", "US", "600"),
    ]);
    let mut dry = import(v2.clone());
    dry.dry_run = true;
    let planned = f.catalog.import(dry).await.unwrap();
    assert!(!planned.changed && planned.price_list.is_none());
    assert_eq!(f.store.price_lists(0, 10).await.unwrap().len(), 1);

    let report = f.catalog.import(import(v2)).await.unwrap();
    assert_eq!(report.changes, planned.changes);
    let changes = &report.changes;
    assert_eq!(changes.skus_added, ["new-p1y", "vm-p3y"]);
    assert_eq!(changes.skus_removed, ["old-p1y"]);
    assert_eq!(changes.products_added, ["vm"]);
    assert_eq!(changes.markets_changed, ["US"]); // now offers reservations
    assert_eq!(changes.price_changes.len(), 1);
    let change = &changes.price_changes[0];
    assert_eq!(
        (
            change.sku_id.as_str(),
            change.market.as_str(),
            change.before,
            change.after
        ),
        ("ws-p1y", "US", Some(40_000), Some(42_000))
    );
    let history = f.store.price_lists(0, 10).await.unwrap();
    let versions: Vec<i64> = history.iter().map(|h| h.version).collect();
    assert_eq!(versions, [2, 1]);
    assert_eq!(history[0].imported_by, "alice@example.com");
    assert_eq!(history[0].line_count, 5);
    assert_eq!(
        f.store.price_list(2).await.unwrap().unwrap().changes,
        *changes
    );
    let (page, next) = f.catalog.price_lists(1, "").await.unwrap();
    assert_eq!((page[0].version, next.is_empty()), (2, false));
    let (page, next) = f.catalog.price_lists(1, &next).await.unwrap();
    assert_eq!((page[0].version, next.is_empty()), (1, true));
    assert!(matches!(
        f.catalog.price_list(9).await,
        Err(ApiError::NotFound { .. })
    ));
    // The removed SKU is gone from the catalog.
    let quote = f.catalog.quote("US", &["old-p1y".to_owned()]).await;
    assert!(matches!(quote, Err(ApiError::NotFound { .. })), "{quote:?}");
    f.test.remove().await;
}

#[tokio::test]
async fn a_price_that_changes_at_midnight_is_the_old_one_before_and_the_new_one_after() {
    let f = fixture(false).await;
    let next_month = list(&[
        software("ws-p1y", "US", "400.00", "2026-11-01", "2026-11-30"),
        software("ws-p1y", "US", "410.00", "2026-12-01", ""),
    ]);
    f.catalog.import(import(next_month)).await.unwrap();
    let sku = ["ws-p1y".to_owned()];
    let price = || async {
        let (_, quotes, _) = f.catalog.quote("US", &sku).await.unwrap();
        quotes[0].sku.price_minor
    };
    assert_eq!(price().await, Some(40_000)); // 23:59:59
    f.clock.advance(SECOND);
    assert_eq!(price().await, Some(41_000)); // 00:00:00
    // Reads at another time: the November price, and none before November.
    let us = f.catalog.market("market", "US").await.unwrap();
    let november = clock::parse_date("2026-11-15").unwrap();
    let then = f
        .catalog
        .sku_price("ws-p1y", &us, Some(november))
        .await
        .unwrap();
    assert_eq!(then.sku.price_minor, Some(40_000));
    let page = f
        .catalog
        .list_products("US", 0, 10, "", Some(november))
        .await
        .unwrap();
    assert_eq!(page.products[0].skus[0].price_minor, Some(40_000));
    let before = f
        .catalog
        .sku_price("ws-p1y", &us, Some(november - 30 * DAY))
        .await;
    assert!(
        matches!(
            &before,
            Err(ApiError::FailedPrecondition {
                reason: "SKU_NOT_PRICED",
                ..
            })
        ),
        "{before:?}"
    );
    f.test.remove().await;
}

#[tokio::test]
async fn markets_offer_reservations_as_the_list_prices_them() {
    let f = fixture(false).await;
    // Today's list: 110 markets without Azure reservations, 3 with.
    let mut lines = Vec::new();
    let codes: Vec<String> = (b'A'..=b'Z')
        .flat_map(|a| (b'A'..=b'Z').map(move |b| format!("{}{}", a as char, b as char)))
        .take(113)
        .collect();
    for (i, code) in codes.iter().enumerate() {
        lines.push(software("ws-p1y", code, "400.00", "2026-01-01", ""));
        if i >= 110 {
            lines.push(reservation("vm-p3y", code, "600.00"));
        }
    }
    f.catalog.import(import(list(&lines))).await.unwrap();
    let markets = f.catalog.markets().await.unwrap();
    assert_eq!(markets.len(), 113);
    let without = markets
        .iter()
        .filter(|m| !m.azure_reservations_available)
        .count();
    assert_eq!(without, 110);
    let listed = f
        .catalog
        .list_products("AA", 0, 10, "", None)
        .await
        .unwrap();
    let kinds: Vec<ProductKind> = listed.products.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [ProductKind::ServerSubscription]);
    let refused = f.catalog.quote("AA", &["vm-p3y".to_owned()]).await;
    assert!(
        matches!(
            &refused,
            Err(ApiError::FailedPrecondition {
                reason: "AZURE_RESERVATIONS_UNAVAILABLE",
                ..
            })
        ),
        "{refused:?}"
    );
    let last = &codes[112];
    let (_, quotes, _) = f.catalog.quote(last, &["vm-p3y".to_owned()]).await.unwrap();
    assert_eq!(quotes[0].sku.price_minor, Some(60_000));
    f.test.remove().await;
}

#[tokio::test]
async fn a_ten_thousand_line_list_imports_in_one_go() {
    let f = fixture(true).await;
    let mut lines = Vec::new();
    for sku in 0..100 {
        for market in 0..100 {
            let code = format!(
                "{}{}",
                (b'A' + market / 26) as char,
                (b'A' + market % 26) as char
            );
            lines.push(software(
                &format!("ws-{sku}-p1y"),
                &code,
                &format!("{}.{:02}", 100 + sku, market),
                "2026-01-01",
                "",
            ));
        }
    }
    let started = std::time::Instant::now();
    let report = f.catalog.import(import(list(&lines))).await.unwrap();
    eprintln!(
        "10,000-line import on {} (debug build): {:.2} s",
        f.test.backend(),
        started.elapsed().as_secs_f64()
    );
    assert!(report.changed);
    assert_eq!(report.changes.skus_added.len(), 100);
    assert_eq!(report.changes.skus_removed.len(), 12); // the demo's
    let rows = counts(&f.test.db).await;
    assert_eq!(&rows[..4], [100, 1, 100, 10_000]);
    let (_, quotes, version) = f
        .catalog
        .quote("DV", &["ws-42-p1y".to_owned()])
        .await
        .unwrap();
    assert_eq!((quotes[0].sku.price_minor, version), (Some(14_299), 2));
    f.test.remove().await;
}

#[tokio::test]
async fn an_unknown_stored_product_kind_reads_as_corrupt() {
    let f = fixture(true).await;
    let update = "UPDATE products SET kind = $1 WHERE id = $2";
    let binds = ["saas_subscription", "sql-server-standard"];
    write_past_check(
        &f.test.db,
        "products",
        "products_kind_check",
        update,
        &binds,
    )
    .await;
    assert_corrupt(f.store.load().await, "products.kind", "saas_subscription");
    f.test.remove().await;
}

#[tokio::test]
async fn an_unknown_stored_term_reads_as_corrupt() {
    let f = fixture(true).await;
    let update = "UPDATE skus SET term = $1 WHERE id = $2";
    write_past_check(
        &f.test.db,
        "skus",
        "skus_term_check",
        update,
        &["P2Y", "windows-server-standard-p1y"],
    )
    .await;
    assert_corrupt(f.store.load().await, "skus.term", "P2Y");
    f.test.remove().await;
}

#[tokio::test]
async fn every_change_to_the_catalog_moves_its_version() {
    let f = fixture(true).await;
    let postgres = matches!(f.test.db, Db::Postgres(_));
    let changes = [
        "UPDATE price_periods SET amount_minor = amount_minor + 1 WHERE market = 'US'",
        "UPDATE products SET title = title || '.' WHERE id = 'sql-server-standard'",
        "INSERT INTO markets (code, display_name, currency_code, minor_unit_digits, tax_included, azure_reservations_available) \
         VALUES ('ZZ', 'Test', 'USD', 2, FALSE, TRUE)",
        "DELETE FROM compute_rates WHERE market = 'US'",
        "UPDATE cancellation_policies SET title = title || '.' WHERE id = 'csp-2019-60-days'",
        if postgres {
            "TRUNCATE download_options"
        } else {
            "DELETE FROM download_options"
        },
    ];
    for sql in changes {
        let before = f.store.version().await.unwrap();
        csp_store::on_db!(&f.test.db, pool => sqlx::query(sql).execute(pool).await.map(drop))
            .unwrap();
        let after = f.store.version().await.unwrap();
        assert_ne!(before, after, "{sql} on {}", f.test.backend());
    }
    // A read changes nothing.
    let before = f.store.version().await.unwrap();
    f.store.load().await.unwrap();
    assert_eq!(f.store.version().await.unwrap(), before);
    f.test.remove().await;
}
