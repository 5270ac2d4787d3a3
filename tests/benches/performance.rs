//! The system's speed against what this machine allows, in one run:
//!
//! - the floor: a bare tonic server answering `grpc.health.v1.Health/Check`
//!   (no work at all), called by the same client;
//! - a catalog read (ListProducts, US, one page of every product) direct to
//!   the catalog and through the gateway, at concurrency 1, 16 and 64, in
//!   alternating half-second rounds with the floor (so a neighbour's load
//!   hits all three alike);
//! - download redemptions through the gateway's HTTP listener (32
//!   connections over fresh links, round-robin), with p50/p99, against the
//!   raw single-row commit rate of the same database (SQLite: one
//!   connection, WAL, synchronous=FULL; PostgreSQL: 32 connections updating
//!   random rows, as pgbench's simple update does), and the activity log's
//!   backlog: licensing's outbox during the run and how long after the last
//!   redirect the last download was recorded;
//! - PlaceOrder through the gateway (16 callers), against the same commit rate;
//! - a price-list import (the demo's 12 SKUs in 420 markets, two periods
//!   each: 10,080 lines) through the catalog's internal API as `csp catalog
//!   import` sends it, then the catalog read again (the same US page: 6
//!   products, 12 SKUs) against the figures from before the import.
//!
//! It prints every figure and the ratios of issue 17's goals; it asserts
//! nothing about time.
//!
//!   cargo bench -p csp-tests --bench performance
//!
//! Knobs: CSP_BENCH_SECONDS (per catalog path and concurrency, default 4),
//! CSP_BENCH_CONCURRENCY (default 1,16,64), CSP_BENCH_POSTGRES_URL (run on
//! PostgreSQL: a server where the bench may create databases),
//! CSP_BENCH_PATHS (catalog paths, default floor,direct,gateway),
//! CSP_BENCH_IMPORT_MARKETS (markets of the imported list, 24 lines each;
//! 0 skips the import) and CSP_BENCH_READS_ONLY=1 (skip redemptions and
//! orders: for profiling one path with perf).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failure report

/// The allocator the `csp` binary ships with, so the figures are its.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use csp::{Addresses, Storage, SystemConfig};
use csp_kit::identity::keys::KeySet;
use csp_kit::identity::{IDENTITY_HEADER, ServiceIdentity, Signer, UserCaller};
use csp_kit::roles::Role;
use csp_kit::service_name::ServiceName;
use csp_proto::catalog::v1::catalog_internal_service_client::CatalogInternalServiceClient;
use csp_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use csp_proto::catalog::v1::{ImportPriceListRequest, ListProductsRequest};
use csp_proto::licensing::v1::GetKeysAndDownloadsRequest;
use csp_proto::licensing::v1::licensing_service_client::LicensingServiceClient;
use csp_proto::ordering::v1::ordering_service_client::OrderingServiceClient;
use csp_proto::ordering::v1::{CreateCustomerRequest, OrderLineRequest, PlaceOrderRequest};
use csp_store::db::Db;
use hdrhistogram::Histogram;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

const PATH: &str = "/csp.catalog.v1.CatalogService/ListProducts";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()
}

/// Latency and throughput of one path.
#[derive(Clone, Copy)]
struct Figures {
    p50_us: f64,
    p99_us: f64,
    per_second: f64,
    errors: u64,
}

/// Rounds of one path added up.
struct Totals {
    histogram: Histogram<u64>,
    errors: u64,
    elapsed: Duration,
}

impl Totals {
    fn new() -> Self {
        Self {
            histogram: histogram(),
            errors: 0,
            elapsed: Duration::ZERO,
        }
    }

    fn add(&mut self, (histogram, errors, elapsed): (Histogram<u64>, u64, Duration)) {
        self.histogram.add(histogram).unwrap();
        self.errors += errors;
        self.elapsed += elapsed;
    }

    fn figures(&self) -> Figures {
        Figures {
            p50_us: self.histogram.value_at_quantile(0.50) as f64,
            p99_us: self.histogram.value_at_quantile(0.99) as f64,
            per_second: self.histogram.len() as f64 / self.elapsed.as_secs_f64().max(1e-9),
            errors: self.errors,
        }
    }
}

/// Runs `concurrency` callers of `call` for `duration`: latencies, errors
/// and the time taken.
async fn load<F, Fut>(
    concurrency: usize,
    duration: Duration,
    call: F,
) -> (Histogram<u64>, u64, Duration)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = histogram();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let start = Instant::now();
                if call().await {
                    latencies
                        .record(start.elapsed().as_micros().max(1) as u64)
                        .unwrap();
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = histogram();
    let mut errors = 0;
    for task in tasks {
        let (latencies, failed) = task.await.unwrap();
        all.add(latencies).unwrap();
        errors += failed;
    }
    (all, errors, started.elapsed())
}

/// A catalog client whose calls carry, in turn, the metadata of several
/// callers (users of different partners, so the gateway's per-user and
/// per-partner rate limits, meant for one tenant, do not cap the run).
#[derive(Clone)]
struct Catalog {
    client: CatalogServiceClient<Channel>,
    header: &'static str,
    values: Arc<[MetadataValue<Ascii>]>,
    next: Arc<AtomicU64>,
}

impl Catalog {
    fn new(channel: Channel, header: &'static str, values: Vec<MetadataValue<Ascii>>) -> Self {
        Self {
            client: CatalogServiceClient::new(channel),
            header,
            values: values.into(),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    async fn call(self) -> bool {
        let mut client = self.client;
        let mut request = tonic::Request::new(ListProductsRequest {
            market: "US".into(),
            page_size: 100,
            ..Default::default()
        });
        let n = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.values.len();
        request
            .metadata_mut()
            .insert(self.header, self.values[n].clone());
        client.list_products(request).await.is_ok()
    }
}

/// A price list of the demo's SKUs in `markets` markets (the US with the
/// demo's prices, the others made up), each with this period and the next:
/// `12 * markets * 2` lines.
fn price_list(markets: usize) -> Vec<u8> {
    let demo = String::from_utf8(csp_catalog::seed::DEMO_PRICE_LIST.to_vec()).unwrap();
    let mut lines = demo.lines();
    let header = lines.next().unwrap();
    let us: Vec<&str> = lines.filter(|l| l.contains(",US,United States,")).collect();
    let codes = std::iter::once("US".to_owned()).chain(
        (b'A'..=b'Z')
            .flat_map(|a| (b'A'..=b'Z').map(move |b| format!("{}{}", a as char, b as char)))
            .filter(|c| c != "US"),
    );
    let mut out = String::from(header);
    for code in codes.take(markets) {
        for line in &us {
            let line = line.replace(",US,United States,", &format!(",{code},Market {code},"));
            out.push('\n');
            out.push_str(&line.replace(",2000-01-01,,", ",2000-01-01,2099-12-31,"));
            out.push('\n');
            out.push_str(&line.replace(",2000-01-01,,", ",2100-01-01,,"));
        }
    }
    out.push('\n');
    out.into_bytes()
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap()
}

/// The floor: a bare tonic server with nothing but the health service, its
/// sockets set up as csp's servers set theirs (TCP_NODELAY: without it, Nagle
/// and delayed ACKs held the floor's p99 at 44 ms at 64 callers, and its
/// throughput below the catalog's).
async fn floor_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming)
            .await
    });
    addr
}

fn main() {
    let seconds: u64 = env_or("CSP_BENCH_SECONDS", 4);
    let concurrencies: Vec<usize> = std::env::var("CSP_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,16,64".to_owned())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let postgres = std::env::var("CSP_BENCH_POSTGRES_URL").ok();
    let paths =
        std::env::var("CSP_BENCH_PATHS").unwrap_or_else(|_| "floor,direct,gateway".to_owned());
    let reads_only = std::env::var("CSP_BENCH_READS_ONLY").is_ok_and(|v| v == "1");

    // The system and the floor get one runtime (2 worker threads), the load
    // generator another; both share the machine's cores, as on one host.
    let system_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("csp-bench-{}", uuid::Uuid::new_v4().simple()));
    let prefix = format!("bench{}", uuid::Uuid::new_v4().simple());
    let storage = match &postgres {
        Some(server) => Storage::Postgres {
            server_url: server.clone(),
            prefix: prefix.clone(),
            files: dir.clone(),
        },
        None => Storage::Sqlite(dir.clone()),
    };
    let jwt_secret = csp_kit::config::Secret::new("bench-jwt-secret-0123456789");
    let keys = KeySet::generate().unwrap();
    let (system, floor) = system_runtime.block_on(async {
        let system = csp::start(SystemConfig {
            storage: storage.clone(),
            addresses: Addresses::ephemeral(),
            jwt_secret: jwt_secret.clone(),
            oidc: Default::default(),
            identity_keys: keys.clone(),
            seed_demo_catalog: true,
            clock: csp_kit::clock::system(),
            sealing_key: csp_kit::config::Secret::new("bench-sealing-key-0123456789"),
            content: Default::default(),
            attachment_quota: Default::default(),
            audit_key: csp_kit::config::Secret::new("bench-audit-key-0123456789"),
            audit_log_name: csp_audit::log::DEFAULT_LOG_NAME.to_owned(),
            held_back: &[],
        })
        .await
        .unwrap();
        (system, floor_server().await)
    });
    let addresses = system.addresses;
    let database = |service: &str| -> String {
        match &postgres {
            Some(_) => format!("{prefix}_{service}"),
            None => format!("sqlite://{}", dir.join(format!("{service}.db")).display()),
        }
    };
    let open = |service: &str| {
        let name = database(service);
        let postgres = postgres.clone();
        async move {
            match postgres {
                Some(server) => Db::connect_existing(
                    &csp_store::db::ensure_postgres_database(&server, &name)
                        .await
                        .unwrap(),
                )
                .await
                .unwrap(),
                None => Db::connect_existing(&name).await.unwrap(),
            }
        }
    };

    println!(
        "csp performance on {} ({} logical CPUs); system and load generator in one process, 2 runtime threads each",
        if postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // --- Catalog reads against the floor --------------------------------
    // Catalog readers: 16 sales agents of 16 partners.
    let readers: Vec<(String, UserCaller)> = (0..16)
        .map(|n| {
            let partner = uuid::Uuid::new_v4();
            let user_id = format!("bench{n}");
            let bearer = csp_gateway::auth::mint_dev_token(
                &jwt_secret,
                partner,
                &user_id,
                "Bench",
                &[Role::SalesAgent],
                Duration::from_secs(3600),
            )
            .unwrap();
            let user = UserCaller {
                partner_id: partner.into(),
                user_id: user_id.as_str().into(),
                display_name: "Bench".into(),
                roles: [Role::SalesAgent].into_iter().collect(),
            };
            (bearer, user)
        })
        .collect();
    let admin = csp_gateway::auth::mint_dev_token(
        &jwt_secret,
        uuid::Uuid::new_v4(),
        "bench",
        "Bench",
        &[Role::AdminAgent],
        Duration::from_secs(3600),
    )
    .unwrap();
    let signer = Signer::new(keys.key(ServiceName::Gateway).clone());
    // Direct calls carry the identities the gateway would sign (valid 60 s,
    // reused by the signer for up to 20 s, so at least 40 s left: signed
    // again for each concurrency), through the gateway the bearers.
    let identities = || -> Vec<MetadataValue<Ascii>> {
        readers
            .iter()
            .map(|(_, user)| signer.mint_for_user(user, PATH).unwrap().parse().unwrap())
            .collect()
    };
    let bearers: Vec<MetadataValue<Ascii>> = readers
        .iter()
        .map(|(bearer, _)| format!("Bearer {bearer}").parse().unwrap())
        .collect();
    println!();
    println!(
        "catalog read: ListProducts(market US, page_size 100), {seconds} s per path and concurrency in alternating 0.5 s rounds"
    );
    println!(
        "{:>11}  {:>8}  {:>10}  {:>10}  {:>12}  {:>6}",
        "concurrency", "path", "p50 (us)", "p99 (us)", "calls/s", "errors"
    );
    let mut rows = Vec::new();
    for &concurrency in &concurrencies {
        let direct_identities = identities();
        let (floor_f, direct_f, gateway_f) = client_runtime.block_on(async {
            let health = tonic_health::pb::health_client::HealthClient::new(channel(floor).await);
            let direct = Catalog::new(
                channel(addresses.catalog).await,
                IDENTITY_HEADER,
                direct_identities.clone(),
            );
            let through = Catalog::new(
                channel(addresses.gateway).await,
                "authorization",
                bearers.clone(),
            );
            for _ in 0..100 {
                assert!(direct.clone().call().await && through.clone().call().await);
            }
            let (mut f, mut d, mut g) = (Totals::new(), Totals::new(), Totals::new());
            let round = Duration::from_millis(500);
            for _ in 0..seconds * 2 {
                let h = health.clone();
                if paths.contains("floor") {
                    f.add(
                        load(concurrency, round, move || {
                            let mut h = h.clone();
                            async move {
                                h.check(tonic_health::pb::HealthCheckRequest::default())
                                    .await
                                    .is_ok()
                            }
                        })
                        .await,
                    );
                }
                if paths.contains("direct") {
                    let c = direct.clone();
                    d.add(load(concurrency, round, move || c.clone().call()).await);
                }
                if paths.contains("gateway") {
                    let c = through.clone();
                    g.add(load(concurrency, round, move || c.clone().call()).await);
                }
            }
            (f.figures(), d.figures(), g.figures())
        });
        for (name, f) in [
            ("floor", &floor_f),
            ("direct", &direct_f),
            ("gateway", &gateway_f),
        ] {
            println!(
                "{:>11}  {:>8}  {:>10.0}  {:>10.0}  {:>12.0}  {:>6}",
                concurrency, name, f.p50_us, f.p99_us, f.per_second, f.errors
            );
        }
        rows.push((concurrency, floor_f, direct_f, gateway_f));
    }

    // --- A price-list import, then the same reads -------------------------
    let import_markets: usize = env_or("CSP_BENCH_IMPORT_MARKETS", 420);
    if import_markets > 0 {
        let list = price_list(import_markets);
        let lines = list.iter().filter(|b| **b == b'\n').count() - 1;
        let operator = Arc::new(Signer::new(keys.key(ServiceName::Operator).clone()));
        let elapsed = client_runtime.block_on(async {
            let mut client = CatalogInternalServiceClient::with_interceptor(
                channel(addresses.catalog).await,
                ServiceIdentity::new(operator),
            )
            .max_encoding_message_size(64 << 20);
            let started = Instant::now();
            let answer = client
                .import_price_list(ImportPriceListRequest {
                    content: list,
                    file_name: "bench.csv".into(),
                    imported_by: "bench".into(),
                    dry_run: false,
                })
                .await
                .unwrap()
                .into_inner();
            let elapsed = started.elapsed();
            assert!(answer.changed, "{}", answer.summary);
            elapsed
        });
        println!();
        println!(
            "price-list import: {lines} lines in {:.2} s ({:.0} lines/s), checked and applied in one transaction",
            elapsed.as_secs_f64(),
            lines as f64 / elapsed.as_secs_f64()
        );
        // Replicas poll the catalog version every second: this one serves
        // the import at once (the importing replica reloads).
        println!(
            "{:>11}  {:>8}  {:>10}  {:>10}  {:>12}  {:>6}  {:>13}",
            "concurrency", "path", "p50 (us)", "p99 (us)", "calls/s", "errors", "vs before"
        );
        for (concurrency, _, direct_before, gateway_before) in &rows {
            let direct_identities = identities();
            let concurrency = *concurrency;
            let (direct_f, gateway_f) = client_runtime.block_on(async {
                let direct = Catalog::new(
                    channel(addresses.catalog).await,
                    IDENTITY_HEADER,
                    direct_identities.clone(),
                );
                let through = Catalog::new(
                    channel(addresses.gateway).await,
                    "authorization",
                    bearers.clone(),
                );
                let (mut d, mut g) = (Totals::new(), Totals::new());
                let round = Duration::from_millis(500);
                for _ in 0..seconds * 2 {
                    let c = direct.clone();
                    d.add(load(concurrency, round, move || c.clone().call()).await);
                    let c = through.clone();
                    g.add(load(concurrency, round, move || c.clone().call()).await);
                }
                (d.figures(), g.figures())
            });
            for (name, after, before) in [
                ("direct", direct_f, direct_before),
                ("gateway", gateway_f, gateway_before),
            ] {
                println!(
                    "{:>11}  {:>8}  {:>10.0}  {:>10.0}  {:>12.0}  {:>6}  {:>12.2}x",
                    concurrency,
                    name,
                    after.p50_us,
                    after.p99_us,
                    after.per_second,
                    after.errors,
                    after.per_second / before.per_second.max(1e-9)
                );
            }
        }
    }

    if reads_only {
        system_runtime.block_on(system.stop()).unwrap();
        let _ = std::fs::remove_dir_all(dir);
        return;
    }

    // --- The raw commit rate of the same database -------------------------
    let raw_commits = client_runtime.block_on(raw_commit_rate(&postgres, &dir, &prefix));

    // --- PlaceOrder, which also makes the subscriptions for the links -----
    let (orders, subscriptions) = client_runtime.block_on(async {
        let gateway = channel(addresses.gateway).await;
        let mut ordering = OrderingServiceClient::with_interceptor(
            gateway.clone(),
            csp_tests::Bearer::new(&admin),
        );
        let tenant = ordering
            .create_customer(CreateCustomerRequest {
                tenant_id: String::new(),
                domain_name: format!("bench{}.onmicrosoft.com", uuid::Uuid::new_v4().simple()),
                company_name: "Bench".into(),
                market: "US".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .customer
            .unwrap_or_default()
            .tenant_id;
        let subscriptions = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (latencies, errors, elapsed) = {
            let subscriptions = subscriptions.clone();
            let tenant = tenant.clone();
            load(16, Duration::from_secs(3), move || {
                let mut ordering = ordering.clone();
                let tenant = tenant.clone();
                let subscriptions = subscriptions.clone();
                async move {
                    match ordering
                        .place_order(PlaceOrderRequest {
                            customer_tenant_id: tenant,
                            lines: vec![OrderLineRequest {
                                sku_id: "windows-server-standard-p1y".into(),
                                quantity: 1,
                            }],
                            request_id: uuid::Uuid::new_v4().to_string(),
                        })
                        .await
                    {
                        Ok(answer) => {
                            let order = answer.into_inner().order.unwrap_or_default();
                            subscriptions
                                .lock()
                                .unwrap()
                                .extend(order.lines.into_iter().map(|l| l.subscription_id));
                            true
                        }
                        Err(_) => false,
                    }
                }
            })
            .await
        };
        let mut totals = Totals::new();
        totals.add((latencies, errors, elapsed));
        let found = std::mem::take(&mut *subscriptions.lock().unwrap());
        (totals.figures(), (tenant, found))
    });

    // --- Download redemptions ---------------------------------------------
    let (tenant, subscription_ids) = subscriptions;
    let links: Vec<String> = client_runtime.block_on(async {
        let mut licensing = LicensingServiceClient::with_interceptor(
            channel(addresses.gateway).await,
            csp_tests::Bearer::new(&admin),
        );
        let mut links = Vec::new();
        'outer: for subscription in &subscription_ids {
            for version in ["2019", "2022"] {
                for language in ["en-US", "zh-CN", "de-DE", "ja-JP"] {
                    for file_type in ["iso-x64", "vhdx-x64"] {
                        // Licensing learns of a subscription through
                        // ordering's outbox: wait for it.
                        let mut tries = 0;
                        let answer = loop {
                            match licensing
                                .get_keys_and_downloads(GetKeysAndDownloadsRequest {
                                    customer_tenant_id: tenant.clone(),
                                    subscription_id: subscription.clone(),
                                    version: version.into(),
                                    language: language.into(),
                                    file_type: file_type.into(),
                                })
                                .await
                            {
                                Ok(answer) => break answer.into_inner(),
                                Err(status)
                                    if status.code() == tonic::Code::NotFound && tries < 200 =>
                                {
                                    tries += 1;
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                                Err(status) => panic!("{status:?}"),
                            }
                        };
                        links.push(answer.download_link.unwrap_or_default().url);
                        if links.len() == 384 {
                            break 'outer;
                        }
                    }
                }
            }
        }
        links
    });
    let licensing_db = system_runtime.block_on(open("licensing"));
    let audit_db = system_runtime.block_on(open("audit"));
    let downloads = client_runtime.block_on(redeem(
        &links,
        addresses.gateway_http,
        &licensing_db,
        &audit_db,
    ));

    // --- Report -----------------------------------------------------------
    println!();
    println!("ratios (issue 17's goals in brackets)");
    for (concurrency, floor_f, direct_f, gateway_f) in &rows {
        println!(
            "  c={concurrency:<3} gateway read: {:>5.1}% of the floor's throughput [>= 30% at c=64], p50 {:>5.2}x the floor's [<= 3x at c=1]; hop: p50 {:.2}x direct [<= 1.15x at c=1], throughput {:.2}x direct [>= 0.9x at c=64]",
            gateway_f.per_second / floor_f.per_second * 100.0,
            gateway_f.p50_us / floor_f.p50_us,
            gateway_f.p50_us / direct_f.p50_us,
            gateway_f.per_second / direct_f.per_second,
        );
    }
    println!(
        "  raw single-row commits: {raw_commits:.0}/s ({})",
        if postgres.is_some() {
            "PostgreSQL, 32 connections, UPDATE of a random row of 100,000 each"
        } else {
            "SQLite, one connection, WAL, synchronous=FULL"
        }
    );
    println!(
        "  redemptions: {:.0} redirects/s = {:.2}x the raw commit rate [>= 0.5x]; p50 {:.1} ms, p99 {:.1} ms [< 25 ms] at 32 connections; {} redirects, {} errors",
        downloads.figures.per_second,
        downloads.figures.per_second / raw_commits,
        downloads.figures.p50_us / 1000.0,
        downloads.figures.p99_us / 1000.0,
        downloads.redirects,
        downloads.figures.errors,
    );
    println!(
        "  activity log: licensing's outbox held at most {} records = {:.2} s of the redemption rate [< 1 s]; the last download was recorded {:.2} s after the last redirect [<= 2 s] ({} of {} recorded)",
        downloads.max_backlog,
        downloads.max_backlog as f64 / downloads.figures.per_second.max(1.0),
        downloads.caught_up.as_secs_f64(),
        downloads.recorded,
        downloads.redirects,
    );
    println!(
        "  PlaceOrder through the gateway, 16 callers: {:.0} orders/s = {:.2}x the raw commit rate; p50 {:.1} ms, p99 {:.1} ms; {} errors",
        orders.per_second,
        orders.per_second / raw_commits,
        orders.p50_us / 1000.0,
        orders.p99_us / 1000.0,
        orders.errors
    );

    system_runtime.block_on(system.stop()).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// Single-row UPDATE commits per second on a database of the same kind, on
/// the same disk, with the same durability.
async fn raw_commit_rate(postgres: &Option<String>, dir: &std::path::Path, prefix: &str) -> f64 {
    let duration = Duration::from_secs(3);
    match postgres {
        None => {
            // The same settings as the services' own files.
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.join("raw-commits.db"))
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS counters (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)",
            )
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query("INSERT INTO counters VALUES (1, 0) ON CONFLICT DO NOTHING")
                .execute(&pool)
                .await
                .unwrap();
            let started = Instant::now();
            let mut commits = 0u64;
            while started.elapsed() < duration {
                sqlx::query("UPDATE counters SET n = n + 1 WHERE id = 1")
                    .execute(&pool)
                    .await
                    .unwrap();
                commits += 1;
            }
            commits as f64 / started.elapsed().as_secs_f64()
        }
        Some(server) => {
            let url = csp_store::db::ensure_postgres_database(server, &format!("{prefix}_raw"))
                .await
                .unwrap();
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(32)
                .connect(&url)
                .await
                .unwrap();
            sqlx::query("CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL)")
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 100000) g ON CONFLICT DO NOTHING")
                .execute(&pool)
                .await
                .unwrap();
            let commits = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for worker in 0..32u64 {
                let pool = pool.clone();
                let commits = commits.clone();
                tasks.push(tokio::spawn(async move {
                    let mut row = worker * 3_121 % 100_000;
                    while started.elapsed() < duration {
                        row = (row * 48_271 + 11) % 100_000;
                        sqlx::query("UPDATE accounts SET balance = balance + 1 WHERE id = $1")
                            .bind(i32::try_from(row + 1).unwrap())
                            .execute(&pool)
                            .await
                            .unwrap();
                        commits.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            commits.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
        }
    }
}

/// What the redemption run measured.
struct Downloads {
    figures: Figures,
    redirects: u64,
    max_backlog: i64,
    caught_up: Duration,
    recorded: i64,
}

/// 32 connections redeem `links` round-robin until every download of every
/// link is spent; licensing's outbox is watched meanwhile, and afterwards
/// how long until audit holds a record of every redirect.
async fn redeem(
    links: &[String],
    http: std::net::SocketAddr,
    licensing: &Db,
    audit: &Db,
) -> Downloads {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    // Parsed once, as wrk would: the load generator shares the system's two
    // CPUs, and parsing every request's URL (with IDNA) was its own cost.
    let urls: Arc<Vec<reqwest::Url>> = Arc::new(
        links
            .iter()
            .map(|link| {
                // The link names the gateway's public listener.
                let path = link
                    .split_once("/download/")
                    .map(|(_, t)| t)
                    .unwrap_or(link);
                reqwest::Url::parse(&format!("http://{http}/download/{path}")).unwrap()
            })
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let total = (urls.len() * 50) as u64;
    let backlog = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (licensing, backlog, watching) = (licensing.clone(), backlog.clone(), watching.clone());
        // The span of waiting sequence numbers: at least the number waiting,
        // read from the two ends of the primary key. A `count(*)` every
        // 100 ms scanned every dead outbox row of the burst (autovacuum does
        // not run within it): about 2.5% of the machine on PostgreSQL.
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                let waiting: i64 = csp_store::on_db!(&licensing, pool => sqlx::query_scalar("SELECT COALESCE(MAX(seq) - MIN(seq) + 1, 0) FROM outbox").fetch_one(pool).await).unwrap_or(0);
                backlog.fetch_max(waiting, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, urls, next) = (client.clone(), urls.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = histogram();
            let mut errors = 0u64;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let url = &urls[(n % urls.len() as u64) as usize];
                let start = Instant::now();
                match client.get(url.clone()).send().await {
                    Ok(answer) if answer.status() == 302 => {
                        latencies
                            .record(start.elapsed().as_micros().max(1) as u64)
                            .unwrap();
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = histogram();
    let mut errors = 0;
    for task in tasks {
        let (latencies, failed) = task.await.unwrap();
        all.add(latencies).unwrap();
        errors += failed;
    }
    let elapsed = started.elapsed();
    let ended = Instant::now();
    let redirects = all.len();
    let mut recorded = 0i64;
    while ended.elapsed() < Duration::from_secs(120) {
        recorded = csp_store::on_db!(audit, pool => sqlx::query_scalar("SELECT count(*) FROM activities WHERE kind = 'software_downloaded'").fetch_one(pool).await).unwrap_or(0);
        if recorded >= redirects as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = ended.elapsed();
    watching.store(false, Ordering::Relaxed);
    watcher.await.unwrap();
    let mut totals = Totals::new();
    totals.add((all, errors, elapsed));
    Downloads {
        figures: totals.figures(),
        redirects,
        max_backlog: backlog.load(Ordering::Relaxed),
        caught_up,
        recorded,
    }
}
