//! Activity log scale: fills one partner's log with 10 thousand and then
//! 1 million events (spread over 90 days) and prints the latency of a
//! one-day and a 30-day page query (100 records, newest first) at both sizes.
//! Asserts nothing.
//!
//! `cargo bench -p csp-tests --bench audit`
//! Knobs: CSP_BENCH_AUDIT_EVENTS (the large size, default 1000000),
//! CSP_BENCH_POSTGRES_URL (a server to run on instead of SQLite).

use std::time::Instant;

use csp_audit::domain::Record;
use csp_audit::storage::{AuditStore, Query};
use csp_kit::clock::{DAY, SECOND};
use csp_kit::ids::PartnerId;
use csp_store::db::Db;
use hdrhistogram::Histogram;

const START: i64 = 1_780_000_000 * SECOND;
const SPAN: i64 = 90 * DAY;
const BATCH: usize = 1000;
const QUERIES: usize = 300;

fn main() -> anyhow::Result<()> {
    let large: usize = std::env::var("CSP_BENCH_AUDIT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(large))
}

async fn run(large: usize) -> anyhow::Result<()> {
    let (db, cleanup) = open().await?;
    db.migrate(&csp_audit::storage::MIGRATIONS).await?;
    let store = AuditStore::new(db.clone());
    let partner = PartnerId::new();
    println!(
        "activity log scale: one partner, events over 90 days, page of 100 newest first, {QUERIES} queries per figure ({})",
        db.backend_name()
    );
    println!(
        "{:>10}  {:>8}  {:>10}  {:>10}",
        "events", "range", "p50 (us)", "p99 (us)"
    );
    let mut filled = 0;
    let mut results = Vec::new();
    for size in [10_000, large] {
        let started = Instant::now();
        while filled < size {
            let n = BATCH.min(size - filled);
            let records = (filled..filled + n).map(record).collect();
            store.append(partner, records).await?;
            filled += n;
            if filled % 100_000 == 0 {
                eprintln!(
                    "  filled {filled} events ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        // Fresh statistics, as autovacuum (PostgreSQL) or a periodic ANALYZE
        // keeps them on a live system.
        csp_store::on_db!(&db, pool => sqlx::query("ANALYZE").execute(pool).await.map(drop))?;
        for (name, days) in [("1 day", 1), ("30 days", 30)] {
            let (p50, p99) = measure(&store, partner, days).await?;
            println!("{size:>10}  {name:>8}  {p50:>10.0}  {p99:>10.0}");
            results.push((size, name, p50));
        }
    }
    println!();
    for name in ["1 day", "30 days"] {
        let small = results
            .iter()
            .find(|r| r.0 == 10_000 && r.1 == name)
            .map(|r| r.2)
            .unwrap_or(1.0);
        let big = results
            .iter()
            .find(|r| r.0 == large && r.1 == name)
            .map(|r| r.2)
            .unwrap_or(0.0);
        println!(
            "{name}: p50 at {large} events is {:.2}x the p50 at 10000",
            big / small
        );
    }
    db.close().await;
    cleanup.run().await;
    Ok(())
}

/// Event `i`, at a pseudo-random time in the 90 days (the same for the same
/// `i`), so the log covers the whole span at any size.
fn record(i: usize) -> Record {
    let at = START + (splitmix64(i as u64) % SPAN as u64) as i64;
    Record {
        partner_id: PartnerId::from_uuid(uuid::Uuid::nil()), // set by append
        seq: 0,
        id: uuid::Uuid::new_v4().to_string(),
        kind: if i.is_multiple_of(3) {
            "software_downloaded"
        } else {
            "key_accessed"
        }
        .to_owned(),
        occur_at: at,
        recorded_at: at,
        user_id: format!("user-{}", i % 50),
        user_display_name: format!("User {}", i % 50),
        customer_tenant_id: format!("customer-{}", i % 200),
        subscription_id: format!("subscription-{}", i % 1000),
        product_id: "windows-server-datacenter".to_owned(),
        details: r#"{"version":"2022"}"#.to_owned(),
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn measure(store: &AuditStore, partner: PartnerId, days: i64) -> anyhow::Result<(f64, f64)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let max_seq = store.head_seq(partner).await?;
    for q in 0..QUERIES {
        // Ranges ending at different points of the last 60 days.
        let end = START + SPAN - (q as i64 % 60) * DAY;
        let query = Query {
            start: end - days * DAY,
            end,
            max_seq,
            ..Query::all(partner)
        };
        let started = Instant::now();
        let page = store.page(&query, None, 101).await?;
        histogram.record(started.elapsed().as_micros().max(1) as u64)?;
        anyhow::ensure!(!page.is_empty(), "a query found nothing");
    }
    Ok((
        histogram.value_at_quantile(0.5) as f64,
        histogram.value_at_quantile(0.99) as f64,
    ))
}

/// What to remove after the run.
enum Cleanup {
    Postgres { server: String, name: String },
    Sqlite(std::path::PathBuf),
}

impl Cleanup {
    async fn run(self) {
        match self {
            Cleanup::Postgres { server, name } => {
                let _ = csp_store::db::drop_postgres_database(&server, &name).await;
            }
            Cleanup::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

async fn open() -> anyhow::Result<(Db, Cleanup)> {
    match std::env::var("CSP_BENCH_POSTGRES_URL") {
        Ok(server) if !server.is_empty() => {
            let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let url = csp_store::db::ensure_postgres_database(&server, &name).await?;
            Ok((Db::connect(&url).await?, Cleanup::Postgres { server, name }))
        }
        _ => {
            let dir =
                std::env::temp_dir().join(format!("csp-bench-{}", uuid::Uuid::new_v4().simple()));
            let db = Db::open_sqlite(&dir.join("audit.db")).await?;
            Ok((db, Cleanup::Sqlite(dir)))
        }
    }
}
