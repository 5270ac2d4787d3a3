//! The activity log as a transparency log (issue 16), measured: the audit
//! service runs alone (its checkpoint signer included) on SQLite, or on
//! PostgreSQL with CSP_BENCH_POSTGRES_URL, and this prints, in one run:
//!
//! - the raw single-row insert commit rate of the same database (8 writers,
//!   one row per transaction), the floor to compare the intake with;
//! - appends per second through `RecordActivities`: batches of 100 from 4
//!   producers, and one record per call from 8 producers;
//! - the time from a record's intake to its inclusion in a signed
//!   checkpoint (p50, p99), sampled while the batched load runs;
//! - inclusion and consistency proof time at 10 thousand and 1 million
//!   records (the stored-hash reads and the tree math, as the RPCs do them).
//!
//! Asserts nothing. `cargo bench -p csp-tests --bench audit_log`
//! Knobs: CSP_BENCH_SECONDS (per intake figure, default 5),
//! CSP_BENCH_AUDIT_EVENTS (the large size, default 1000000),
//! CSP_BENCH_POSTGRES_URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use csp_audit::domain::Record;
use csp_audit::log;
use csp_audit::storage::AuditStore;
use csp_kit::clock::SECOND;
use csp_kit::config::{BackendArgs, Secret};
use csp_kit::identity::keys::KeySet;
use csp_kit::identity::{ServiceIdentity, Signer};
use csp_kit::ids::PartnerId;
use csp_kit::service_name::ServiceName;
use csp_proto::audit::v1::audit_intake_service_client::AuditIntakeServiceClient;
use csp_proto::audit::v1::{Activity, ActivityRecord, ActivityType, RecordActivitiesRequest};
use csp_store::db::Db;
use hdrhistogram::Histogram;

const START: i64 = 1_780_000_000 * SECOND;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

fn activity(partner: &str, id: String) -> ActivityRecord {
    ActivityRecord {
        partner_id: partner.to_owned(),
        activity: Some(Activity {
            id,
            r#type: ActivityType::KeyAccessed as i32,
            // Now: the intake refuses records from long ago.
            occur_time: Some(csp_kit::clock::to_timestamp(csp_kit::clock::system().now())),
            user_id: "bench".into(),
            user_display_name: "Bench".into(),
            customer_tenant_id: "00000000-0000-0000-0000-000000000001".into(),
            subscription_id: String::new(),
            product_id: "windows-server-datacenter".into(),
            details: [("version".to_owned(), "2022".to_owned())].into(),
        }),
    }
}

async fn run() -> anyhow::Result<()> {
    let seconds: u64 = env_or("CSP_BENCH_SECONDS", 5);
    let large: u64 = env_or("CSP_BENCH_AUDIT_EVENTS", 1_000_000);
    let dir = std::env::temp_dir().join(format!("csp-bench-log-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let postgres = std::env::var("CSP_BENCH_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty());
    let (url, raw_url) = match &postgres {
        Some(server) => {
            let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let raw = format!("{name}_raw");
            (
                Some(csp_store::db::ensure_postgres_database(server, &name).await?),
                Some(csp_store::db::ensure_postgres_database(server, &raw).await?),
            )
        }
        None => (None, None),
    };
    let keys = KeySet::generate()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = csp_audit::Config {
        backend: BackendArgs {
            listen: Some(addr),
            database_url: url.clone(),
            data_dir: dir.clone(),
            identity: keys.args_for(ServiceName::Audit, true),
            metrics_listen: None,
        },
        checkpoint_key: Some(Secret::new("bench-audit-key-0123456789")),
        log_name: log::DEFAULT_LOG_NAME.to_owned(),
        max_record_age_hours: 168,
        checkpoint_file: None,
    };
    let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
    let service = tokio::spawn(csp_audit::run(
        config,
        listener,
        shutdown,
        csp_kit::clock::system(),
    ));
    let db = match &url {
        Some(url) => Db::connect_existing(url).await?,
        None => {
            // The service creates and migrates its file; wait for it.
            let path = dir.join("audit.db");
            let mut tries = 0;
            loop {
                if let Ok(db) = Db::open_sqlite(&path).await
                    && csp_store::on_db!(&db, pool => sqlx::query("SELECT 1 FROM log_heads LIMIT 1").fetch_optional(pool).await.map(drop)).is_ok()
                {
                    break db;
                }
                tries += 1;
                anyhow::ensure!(tries < 200, "the audit service did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy();
    let signer = Arc::new(Signer::new(keys.key(ServiceName::Licensing).clone()));
    let client = AuditIntakeServiceClient::with_interceptor(channel, ServiceIdentity::new(signer));
    // Wait until it answers.
    for _ in 0..200 {
        if client
            .clone()
            .record_activities(RecordActivitiesRequest { records: vec![] })
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "activity log intake and proofs ({}), {seconds} s per intake figure, checkpoints signed every 500 ms",
        db.backend_name()
    );

    // The floor: single-row commits of the same database.
    let raw = match &raw_url {
        Some(url) => Db::connect_existing(url).await?,
        None => Db::open_sqlite(&dir.join("raw.db")).await?,
    };
    csp_store::on_db!(&raw, pool => sqlx::query("CREATE TABLE raw (id TEXT PRIMARY KEY, v BIGINT NOT NULL)").execute(pool).await.map(drop))?;
    let commits = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds.min(3));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (raw, commits) = (raw.clone(), commits.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = format!("{w}-{n}");
                let ok = csp_store::on_db!(&raw, pool => sqlx::query("INSERT INTO raw (id, v) VALUES ($1, $2)").bind(&id).bind(n as i64).execute(pool).await.map(drop));
                if ok.is_ok() {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    for w in writers {
        w.await?;
    }
    let floor = commits.load(Ordering::Relaxed) as f64 / seconds.min(3) as f64;
    println!("raw single-row insert commits: {floor:.0}/s (8 writers)");

    // Batched intake, with intake-to-checkpoint latency sampled meanwhile.
    let partner = PartnerId::new();
    let partner_text = partner.to_string();
    let store = AuditStore::new(db.clone());
    let (batched, latency) = {
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut producers = Vec::new();
        for p in 0..4 {
            let (mut client, sent, stop, partner) = (
                client.clone(),
                sent.clone(),
                stop.clone(),
                partner_text.clone(),
            );
            producers.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let records = (0..100)
                        .map(|k| activity(&partner, format!("b{p}-{n}-{k}")))
                        .collect();
                    if let Ok(answer) = client
                        .record_activities(RecordActivitiesRequest { records })
                        .await
                    {
                        sent.fetch_add(u64::from(answer.into_inner().recorded), Ordering::Relaxed);
                    }
                    n += 1;
                }
            }));
        }
        // Samples: 8 other partners each send one record at a time and wait
        // until a signed checkpoint covers it, timed from the intake's
        // answer (the record is committed then).
        let mut samplers = Vec::new();
        for _ in 0..8 {
            let (mut client, stop, store) = (client.clone(), stop.clone(), store.clone());
            let sample_partner = PartnerId::new();
            samplers.push(tokio::spawn(async move {
                let mut taken: Vec<u64> = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Record ids are unique across the whole log.
                    let record = activity(
                        &sample_partner.to_string(),
                        format!("sample-{sample_partner}-{n}"),
                    );
                    let answer = client
                        .record_activities(RecordActivitiesRequest {
                            records: vec![record],
                        })
                        .await;
                    if answer.is_err() {
                        continue;
                    }
                    let committed = Instant::now();
                    let want = n + 1;
                    let covered = loop {
                        let signed = store
                            .latest_checkpoint(sample_partner)
                            .await
                            .ok()
                            .flatten()
                            .map(|(size, _)| size)
                            .unwrap_or(0);
                        if signed >= want {
                            break true;
                        }
                        if stop.load(Ordering::Relaxed) {
                            break false;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    };
                    if !covered {
                        break;
                    }
                    taken.push(committed.elapsed().as_micros() as u64);
                    n += 1;
                }
                taken
            }));
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for p in producers {
            p.await?;
        }
        let mut latency = Histogram::<u64>::new(3)?;
        for sampler in samplers {
            for micros in sampler.await? {
                latency.record(micros)?;
            }
        }
        (
            sent.load(Ordering::Relaxed) as f64 / seconds as f64,
            latency,
        )
    };
    println!(
        "intake, batches of 100 from 4 producers: {batched:.0} records/s ({:.2}x the raw commit rate)",
        batched / floor
    );
    println!(
        "intake to inclusion in a signed checkpoint: p50 {:.0} ms, p99 {:.0} ms ({} samples)",
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.len()
    );

    // One record per call from 8 producers.
    let single = {
        let sent = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut producers = Vec::new();
        for p in 0..8 {
            let (mut client, sent, partner) = (client.clone(), sent.clone(), partner_text.clone());
            producers.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let record = activity(&partner, format!("s{p}-{n}"));
                    if let Ok(answer) = client
                        .record_activities(RecordActivitiesRequest {
                            records: vec![record],
                        })
                        .await
                    {
                        sent.fetch_add(u64::from(answer.into_inner().recorded), Ordering::Relaxed);
                    }
                    n += 1;
                }
            }));
        }
        for p in producers {
            p.await?;
        }
        sent.load(Ordering::Relaxed) as f64 / seconds as f64
    };
    println!(
        "intake, one record per call from 8 producers: {single:.0} records/s ({:.2}x the raw commit rate)",
        single / floor
    );
    trigger.fire();
    service.await??;

    // Proofs at 10 thousand and `large` records of one partner.
    println!();
    println!(
        "{:>10}  {:>18}  {:>18}",
        "records", "inclusion p50/p99", "consistency p50/p99"
    );
    let proven = PartnerId::new();
    let mut filled = 0u64;
    let started = Instant::now();
    for size in [10_000u64, large] {
        while filled < size {
            let n = 1000.min(size - filled);
            let records = (filled..filled + n).map(record).collect();
            store.append(proven, records).await?;
            filled += n;
            if filled.is_multiple_of(100_000) {
                eprintln!(
                    "  filled {filled} records ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let (mut inclusion, mut consistency) =
            (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
        for q in 0..300u64 {
            let index = (q * 7919) % size;
            let began = Instant::now();
            let reads = log::indexes_read(|r| tlog_tiles::prove_record(size, index, r));
            let fetched = store.hashes(proven, &reads).await?;
            let proof = tlog_tiles::prove_record(size, index, &fetched)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            inclusion.record(began.elapsed().as_micros() as u64)?;
            std::hint::black_box(proof);
            let older = 1 + (q * 104_729) % (size - 1);
            let began = Instant::now();
            let reads = log::indexes_read(|r| tlog_tiles::prove_tree(size, older, r));
            let fetched = store.hashes(proven, &reads).await?;
            let proof = tlog_tiles::prove_tree(size, older, &fetched)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            consistency.record(began.elapsed().as_micros() as u64)?;
            std::hint::black_box(proof);
        }
        println!(
            "{size:>10}  {:>8} / {:>5} us  {:>8} / {:>5} us",
            inclusion.value_at_quantile(0.5),
            inclusion.value_at_quantile(0.99),
            consistency.value_at_quantile(0.5),
            consistency.value_at_quantile(0.99),
        );
    }
    db.close().await;
    raw.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn record(i: u64) -> Record {
    Record {
        partner_id: PartnerId::new(),
        seq: 0,
        id: format!("proof-{i}-{}", uuid::Uuid::new_v4().simple()),
        kind: "key_accessed".into(),
        occur_at: START + i as i64,
        recorded_at: START + i as i64,
        user_id: "bench".into(),
        user_display_name: "Bench".into(),
        customer_tenant_id: String::new(),
        subscription_id: String::new(),
        product_id: String::new(),
        details: "{}".into(),
    }
}
