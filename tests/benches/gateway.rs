//! Gateway overhead: the same catalog read (ListProducts, US, one page of
//! every product) measured directly against the catalog service and through
//! the gateway, in the same run, at several concurrencies. Prints p50/p99
//! latency, throughput and the gateway/direct ratios. Asserts nothing.
//!
//! `cargo bench -p csp-tests --bench gateway`
//! Knobs: CSP_BENCH_SECONDS (per path and concurrency, default 6),
//! CSP_BENCH_CONCURRENCY (comma-separated, default 1,16).
//!
//! The two paths are measured in alternating half-second rounds, so a
//! neighbour's load on a shared machine hits both alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use csp::{Addresses, Storage, SystemConfig};
use csp_kit::identity::keys::KeySet;
use csp_kit::identity::{IDENTITY_HEADER, Signer, UserCaller};
use csp_kit::roles::Role;
use csp_kit::service_name::ServiceName;
use csp_proto::catalog::v1::ListProductsRequest;
use csp_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use hdrhistogram::Histogram;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

const PATH: &str = "/csp.catalog.v1.CatalogService/ListProducts";

struct Figures {
    p50_us: f64,
    p99_us: f64,
    per_second: f64,
    errors: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let seconds: u64 = env_or("CSP_BENCH_SECONDS", 6);
    let concurrencies: Vec<usize> = std::env::var("CSP_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,16".to_owned())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();

    // The system gets its own runtime (2 worker threads), the load generator
    // another, so neither starves the other's scheduler; both share the
    // machine's cores, as they would on one host.
    let system_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("csp-bench-{}", uuid::Uuid::new_v4().simple()));
    let jwt_secret = csp_kit::config::Secret::new("bench-jwt-secret-0123456789");
    let keys = KeySet::generate()?;
    let system = system_runtime.block_on(csp::start(SystemConfig {
        storage: Storage::Sqlite(dir.clone()),
        addresses: Addresses::ephemeral(),
        jwt_secret: jwt_secret.clone(),
        oidc: Default::default(),
        identity_keys: keys.clone(),
        seed_demo_catalog: true,
        clock: csp_kit::clock::system(),
        sealing_key: csp_kit::config::Secret::new("bench-sealing-key-0123456789"),
        content_origin: "https://files.bench/software".to_owned(),
        attachment_quota: Default::default(),
        audit_key: csp_kit::config::Secret::new("bench-audit-key-0123456789"),
        audit_log_name: csp_audit::log::DEFAULT_LOG_NAME.to_owned(),
        held_back: &[],
    }))?;
    let addresses = system.addresses;

    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let partner = uuid::Uuid::new_v4();
    let user_token = csp_gateway::auth::mint_dev_token(
        &jwt_secret,
        partner,
        "bench",
        "Bench",
        &[Role::SalesAgent],
        Duration::from_secs(3600),
    )?;
    let identity_key = Signer::new(keys.key(ServiceName::Gateway).clone());
    let user = UserCaller {
        partner_id: partner.into(),
        user_id: "bench".into(),
        display_name: "Bench".into(),
        roles: [Role::SalesAgent].into_iter().collect(),
    };

    println!(
        "gateway overhead benchmark: ListProducts(market US, page_size 100), {seconds}s per path and concurrency in alternating 0.5s rounds"
    );
    println!(
        "machine: {} logical CPUs; system and load generator in one process, 2 runtime threads each",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    println!(
        "{:>11}  {:>8}  {:>10}  {:>10}  {:>12}  {:>6}",
        "concurrency", "path", "p50 (us)", "p99 (us)", "calls/s", "errors"
    );
    let mut rows = Vec::new();
    for &concurrency in &concurrencies {
        // Direct: the backend needs the identity the gateway would sign; it is
        // signed once per concurrency (valid 60 s), so signing costs nothing
        // on this path.
        let direct_auth: MetadataValue<Ascii> = identity_key
            .mint_for_user(&user, PATH)
            .map_err(|s| anyhow::anyhow!("{s}"))?
            .parse()?;
        let gateway_auth: MetadataValue<Ascii> = format!("Bearer {user_token}").parse()?;
        let (direct, through) = client_runtime.block_on(async {
            let direct = Target::connect(addresses.catalog, IDENTITY_HEADER, direct_auth).await?;
            let through = Target::connect(addresses.gateway, "authorization", gateway_auth).await?;
            let mut direct_total = Totals::new()?;
            let mut through_total = Totals::new()?;
            for _ in 0..seconds * 2 {
                direct_total.add(direct.run(concurrency, Duration::from_millis(500)).await?)?;
                through_total.add(through.run(concurrency, Duration::from_millis(500)).await?)?;
            }
            Ok::<_, anyhow::Error>((direct_total.figures(), through_total.figures()))
        })?;
        for (name, f) in [("direct", &direct), ("gateway", &through)] {
            println!(
                "{:>11}  {:>8}  {:>10.0}  {:>10.0}  {:>12.0}  {:>6}",
                concurrency, name, f.p50_us, f.p99_us, f.per_second, f.errors
            );
        }
        rows.push((concurrency, direct, through));
    }
    println!();
    for (concurrency, direct, through) in &rows {
        println!(
            "concurrency {concurrency}: gateway/direct p50 {:.2}x (+{:.0}%), p99 {:.2}x, throughput {:.2}x",
            through.p50_us / direct.p50_us,
            (through.p50_us / direct.p50_us - 1.0) * 100.0,
            through.p99_us / direct.p99_us,
            through.per_second / direct.per_second,
        );
    }

    system_runtime.block_on(system.stop())?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// One endpoint to load, with the metadata its calls carry.
struct Target {
    client: CatalogServiceClient<Channel>,
    header: &'static str,
    value: MetadataValue<Ascii>,
}

/// What one timed round measured.
struct Round {
    histogram: Histogram<u64>,
    errors: u64,
    elapsed: Duration,
}

/// Rounds added up.
struct Totals {
    histogram: Histogram<u64>,
    errors: u64,
    elapsed: Duration,
}

impl Totals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            errors: 0,
            elapsed: Duration::ZERO,
        })
    }

    fn add(&mut self, round: Round) -> anyhow::Result<()> {
        self.histogram.add(round.histogram)?;
        self.errors += round.errors;
        self.elapsed += round.elapsed;
        Ok(())
    }

    fn figures(&self) -> Figures {
        Figures {
            p50_us: self.histogram.value_at_quantile(0.50) as f64,
            p99_us: self.histogram.value_at_quantile(0.99) as f64,
            per_second: self.histogram.len() as f64 / self.elapsed.as_secs_f64(),
            errors: self.errors,
        }
    }
}

impl Target {
    /// Connects one HTTP/2 channel (as a real client would) and warms it up.
    async fn connect(
        addr: std::net::SocketAddr,
        header: &'static str,
        value: MetadataValue<Ascii>,
    ) -> anyhow::Result<Self> {
        let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let target = Target {
            client: CatalogServiceClient::new(channel),
            header,
            value,
        };
        for _ in 0..200 {
            target.call().await?;
        }
        Ok(target)
    }

    fn call(
        &self,
    ) -> impl std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(ListProductsRequest {
            market: "US".into(),
            page_size: 100,
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert(self.header, self.value.clone());
        async move { client.list_products(request).await.map(|_| ()) }
    }

    /// `concurrency` callers, each calling in a loop for `duration`.
    async fn run(&self, concurrency: usize, duration: Duration) -> anyhow::Result<Round> {
        let started = Instant::now();
        let deadline = started + duration;
        let target = Arc::new(Target {
            client: self.client.clone(),
            header: self.header,
            value: self.value.clone(),
        });
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let start = Instant::now();
                    match target.call().await {
                        Ok(()) => histogram.record(start.elapsed().as_micros().max(1) as u64)?,
                        Err(_) => errors += 1,
                    }
                }
                Ok::<_, anyhow::Error>((histogram, errors))
            }));
        }
        let mut round = Round {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            errors: 0,
            elapsed: Duration::ZERO,
        };
        for task in tasks {
            let (histogram, errors) = task.await??;
            round.histogram.add(histogram)?;
            round.errors += errors;
        }
        round.elapsed = started.elapsed();
        Ok(round)
    }
}
