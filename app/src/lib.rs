//! Starting the whole system in one process: what `csp up` runs, and what the
//! cross-service tests and benchmarks start on ephemeral ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use csp_kit::clock::Clock;
use csp_kit::config::{BackendArgs, Secret};
use csp_kit::identity::keys::KeySet;
use csp_kit::server::bind;
use csp_kit::service_name::ServiceName;
use csp_kit::shutdown::{Shutdown, ShutdownTrigger};
use csp_store::db;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Where `csp up` serves metrics.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

/// Where the services keep their data.
#[derive(Clone, Debug)]
pub enum Storage {
    /// One SQLite file per service in this directory.
    Sqlite(PathBuf),
    /// One PostgreSQL database per service, `<prefix>_<service>`, created on
    /// the server of `server_url` when missing.
    Postgres {
        /// A URL of the server (its database part is replaced).
        server_url: String,
        /// Database name prefix.
        prefix: String,
        /// Where files that are not in a database go (audit checkpoints).
        files: PathBuf,
    },
}

/// The addresses the services listen on. Port 0 picks a free port.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    /// The gateway's gRPC API (public).
    pub gateway: SocketAddr,
    /// The gateway's download listener (public HTTP).
    pub gateway_http: SocketAddr,
    /// The catalog.
    pub catalog: SocketAddr,
    /// Ordering.
    pub ordering: SocketAddr,
    /// Licensing.
    pub licensing: SocketAddr,
    /// Audit.
    pub audit: SocketAddr,
    /// Support.
    pub support: SocketAddr,
    /// Prometheus metrics of every service in the process (`GET /metrics`),
    /// when wanted.
    pub metrics: Option<SocketAddr>,
}

impl Addresses {
    /// The fixed local ports of `csp up`.
    pub fn local_defaults() -> Self {
        Self {
            gateway: csp_gateway::DEFAULT_ADDR,
            gateway_http: csp_gateway::DEFAULT_HTTP_ADDR,
            catalog: csp_catalog::DEFAULT_ADDR,
            ordering: csp_ordering::DEFAULT_ADDR,
            licensing: csp_licensing::DEFAULT_ADDR,
            audit: csp_audit::DEFAULT_ADDR,
            support: csp_support::DEFAULT_ADDR,
            metrics: Some(DEFAULT_METRICS_ADDR),
        }
    }

    /// Free ports on 127.0.0.1, for tests.
    pub fn ephemeral() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            gateway: any,
            gateway_http: any,
            catalog: any,
            ordering: any,
            licensing: any,
            audit: any,
            support: any,
            metrics: Some(any),
        }
    }
}

/// How to start the system.
#[derive(Clone, Debug)]
pub struct SystemConfig {
    /// Where data lives.
    pub storage: Storage,
    /// Where services listen.
    pub addresses: Addresses,
    /// The gateway's HS256 secret for development user tokens.
    pub jwt_secret: Secret,
    /// OpenID Connect providers the gateway also accepts users of.
    pub oidc: csp_gateway::oidc::OidcArgs,
    /// Each service's identity key (`csp up` makes fresh ones at each
    /// start; tests use the development ones).
    pub identity_keys: KeySet,
    /// Seed the demo catalog.
    pub seed_demo_catalog: bool,
    /// Where business time comes from (tests pin it).
    pub clock: Arc<dyn Clock>,
    /// The key licensing seals product keys and link tokens with.
    pub sealing_key: Secret,
    /// The object store of software files: unset parts default to a local
    /// store in the data directory (`DATA_DIR/content`), served by the
    /// gateway's download listener with URLs signed by a key made fresh at
    /// each start.
    pub content: csp_content::ContentArgs,
    /// What one partner may keep in ticket attachments.
    pub attachment_quota: csp_support::domain::AttachmentQuota,
    /// The key audit signs its checkpoints with.
    pub audit_key: Secret,
    /// The activity log's name (checkpoint origins `NAME/PARTNER_ID`).
    pub audit_log_name: String,
    /// Services not to start (tests leave one down to show nothing is lost
    /// and start it later on its address): "audit", "licensing".
    pub held_back: &'static [&'static str],
}

/// A running system.
pub struct RunningSystem {
    /// Where each service actually listens.
    pub addresses: Addresses,
    trigger: ShutdownTrigger,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl RunningSystem {
    /// Waits until a service stops on its own (an error) or `shutdown`
    /// fires, then stops every service and waits for them.
    pub async fn run_until(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        let first = tokio::select! {
            _ = shutdown.wait() => None,
            Some(joined) = self.tasks.join_next() => Some(joined),
        };
        self.trigger.fire();
        let mut failure = first.and_then(failure_of);
        while let Some(joined) = self.tasks.join_next().await {
            if failure.is_none() {
                failure = failure_of(joined);
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Stops every service and waits for them (tests).
    pub async fn stop(self) -> anyhow::Result<()> {
        let (trigger, shutdown) = Shutdown::new();
        trigger.fire();
        self.run_until(shutdown).await
    }
}

fn failure_of(
    joined: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> Option<anyhow::Error> {
    match joined {
        Ok((_, Ok(()))) => None,
        Ok((name, Err(error))) => Some(error.context(format!("the {name} service failed"))),
        Err(error) => Some(anyhow::Error::new(error).context("a service task panicked")),
    }
}

/// Binds every listener (so a taken port fails at once), then starts the six
/// services. Calls made before a service is ready wait in its listen queue.
pub async fn start(config: SystemConfig) -> anyhow::Result<RunningSystem> {
    let a = config.addresses;
    let catalog = bind(a.catalog).await?;
    let ordering = bind(a.ordering).await?;
    let licensing = bind(a.licensing).await?;
    let audit = bind(a.audit).await?;
    let support = bind(a.support).await?;
    let gateway = bind(a.gateway).await?;
    let gateway_http = bind(a.gateway_http).await?;
    let metrics = match a.metrics {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let addresses = Addresses {
        catalog: catalog.local_addr()?,
        ordering: ordering.local_addr()?,
        licensing: licensing.local_addr()?,
        audit: audit.local_addr()?,
        support: support.local_addr()?,
        gateway: gateway.local_addr()?,
        gateway_http: gateway_http.local_addr()?,
        metrics: metrics.as_ref().map(TcpListener::local_addr).transpose()?,
    };

    let data_dir = match &config.storage {
        Storage::Sqlite(dir) => dir.clone(),
        Storage::Postgres { files, .. } => files.clone(),
    };
    let backend = |listen: SocketAddr, service: ServiceName| BackendArgs {
        listen: Some(listen),
        database_url: None,
        data_dir: data_dir.clone(),
        identity: config.identity_keys.args_for(service, true),
        metrics_listen: None,
    };
    let mut catalog_args = backend(addresses.catalog, ServiceName::Catalog);
    let mut ordering_args = backend(addresses.ordering, ServiceName::Ordering);
    let mut licensing_args = backend(addresses.licensing, ServiceName::Licensing);
    let mut audit_args = backend(addresses.audit, ServiceName::Audit);
    let mut support_args = backend(addresses.support, ServiceName::Support);
    if let Storage::Postgres {
        server_url, prefix, ..
    } = &config.storage
    {
        for (service, args) in [
            ("catalog", &mut catalog_args),
            ("ordering", &mut ordering_args),
            ("licensing", &mut licensing_args),
            ("audit", &mut audit_args),
            ("support", &mut support_args),
        ] {
            let url = db::ensure_postgres_database(server_url, &format!("{prefix}_{service}"))
                .await
                .with_context(|| format!("cannot prepare the {service} database"))?;
            args.database_url = Some(url);
        }
    }
    let url = |addr: SocketAddr| format!("http://{addr}");
    let content = local_content_defaults(
        config.content.clone(),
        &data_dir,
        &url(addresses.gateway_http),
    )?;
    let licensing_database = licensing_args.database_url_for("licensing");

    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = JoinSet::new();
    if let Some(listener) = metrics {
        let s = shutdown.clone();
        tasks.spawn(async move { ("metrics", csp_kit::metrics::serve(listener, s).await) });
    }
    let catalog_config = csp_catalog::Config {
        backend: catalog_args,
        seed_demo_catalog: config.seed_demo_catalog,
    };
    let (s, clock) = (shutdown.clone(), config.clock.clone());
    tasks.spawn(async move {
        (
            "catalog",
            csp_catalog::run(catalog_config, catalog, s, clock).await,
        )
    });
    let c = csp_ordering::Config {
        backend: ordering_args,
        catalog: url(addresses.catalog).into(),
        licensing: url(addresses.licensing).into(),
        audit: url(addresses.audit).into(),
    };
    let (s, clock) = (shutdown.clone(), config.clock.clone());
    tasks.spawn(async move { ("ordering", csp_ordering::run(c, ordering, s, clock).await) });
    let c = csp_licensing::Config {
        backend: licensing_args,
        catalog: url(addresses.catalog).into(),
        ordering: url(addresses.ordering).into(),
        audit: url(addresses.audit).into(),
        sealing_key: Some(config.sealing_key.clone()),
        download_base_url: format!("http://{}", addresses.gateway_http),
        content: content.clone(),
    };
    if config.held_back.contains(&"licensing") {
        drop(licensing);
    } else {
        let (s, clock) = (shutdown.clone(), config.clock.clone());
        tasks.spawn(async move {
            (
                "licensing",
                csp_licensing::run(c, licensing, s, clock).await,
            )
        });
    }
    let c = csp_audit::Config {
        backend: audit_args,
        checkpoint_key: Some(config.audit_key.clone()),
        log_name: config.audit_log_name.clone(),
        max_record_age_hours: 168,
        checkpoint_file: None,
    };
    if !config.held_back.contains(&"audit") {
        let (s, clock) = (shutdown.clone(), config.clock.clone());
        tasks.spawn(async move { ("audit", csp_audit::run(c, audit, s, clock).await) });
    } else {
        drop(audit);
    }
    let c = csp_support::Config {
        backend: support_args,
        ordering: url(addresses.ordering).into(),
        licensing: url(addresses.licensing).into(),
        audit: url(addresses.audit).into(),
        attachment_quota: config.attachment_quota,
        content: content.clone(),
    };
    let (s, clock) = (shutdown.clone(), config.clock.clone());
    tasks.spawn(async move { ("support", csp_support::run(c, support, s, clock).await) });

    let gateway_config = csp_gateway::Config {
        listen: Some(addresses.gateway),
        http_listen: Some(addresses.gateway_http),
        jwt_secret: Some(config.jwt_secret.clone()),
        oidc: config.oidc.clone(),
        identity: config.identity_keys.args_for(ServiceName::Gateway, true),
        metrics_listen: None,
        default_deadline: csp_gateway::DEFAULT_DEADLINE_SECS,
        limits: csp_gateway::limits::LimitArgs::default(),
        http_limits: csp_gateway::listener::HttpLimits::default(),
        trusted_proxies: Vec::new(),
        content: content.clone(),
        backends: csp_gateway::Backends::at(
            url(addresses.catalog),
            url(addresses.ordering),
            url(addresses.licensing),
            url(addresses.audit),
            url(addresses.support),
        ),
    };
    tasks.spawn(async move {
        (
            "gateway",
            csp_gateway::run(gateway_config, gateway, gateway_http, shutdown).await,
        )
    });

    let mut system = RunningSystem {
        addresses,
        trigger,
        tasks,
    };
    system.wait_until_serving(config.held_back).await?;
    if config.seed_demo_catalog && !config.held_back.contains(&"licensing") {
        seed_demo_content(&licensing_database, &content)
            .await
            .context("cannot store the demo software files")?;
    }
    Ok(system)
}

/// `content` with its unset parts filled for one machine: a store in
/// `DATA_DIR/content`, served at `gateway_http`, signed with a fresh key
/// (signed URLs live minutes; a restart only ends the ones handed out).
fn local_content_defaults(
    mut content: csp_content::ContentArgs,
    data_dir: &std::path::Path,
    gateway_http: &str,
) -> anyhow::Result<csp_content::ContentArgs> {
    if content.store.is_none() {
        content.store = Some(csp_content::default_store(data_dir));
    }
    if content.public_url.is_none() {
        content.public_url = Some(gateway_http.to_owned());
    }
    if content.signing_key.is_none() {
        content.signing_key = Some(csp_kit::config::generate_secret()?);
    }
    Ok(content)
}

/// Stores a placeholder for every software download the demo catalog
/// offers that has no file yet (a few KiB each; `csp content put` replaces
/// one with the real file), through the same path as `csp content put`.
pub async fn seed_demo_content(
    licensing_database: &str,
    content: &csp_content::ContentArgs,
) -> anyhow::Result<usize> {
    let store = csp_content::ContentStore::open(content, "csp", true)?;
    let db = db::Db::connect_existing(licensing_database).await?;
    let files = csp_licensing::content::SoftwareFiles::new(db.clone(), store);
    let selections = csp_catalog::seed::download_selections()?;
    let stored = files
        .seed_placeholders(
            selections
                .iter()
                .map(|(p, v, l, f)| (p.as_str(), v.as_str(), l.as_str(), f.as_str())),
        )
        .await;
    db.close().await;
    let stored = stored?;
    if stored > 0 {
        tracing::info!(files = stored, "stored the demo software placeholders");
    }
    Ok(stored)
}

impl RunningSystem {
    /// Waits until every started service answers its health check SERVING
    /// (its database migrated), or fails with the error of a service that
    /// stopped.
    async fn wait_until_serving(&mut self, held_back: &[&str]) -> anyhow::Result<()> {
        let a = self.addresses;
        let services = [
            ("catalog", a.catalog),
            ("ordering", a.ordering),
            ("licensing", a.licensing),
            ("audit", a.audit),
            ("support", a.support),
            ("gateway", a.gateway),
        ];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        for (name, addr) in services
            .into_iter()
            .filter(|(name, _)| !held_back.contains(name))
        {
            loop {
                if let Some(joined) = self.tasks.try_join_next() {
                    let error = failure_of(joined)
                        .unwrap_or_else(|| anyhow::anyhow!("a service stopped during start-up"));
                    self.trigger.fire();
                    return Err(error);
                }
                // With a service held back, the gateway cannot report SERVING
                // (it follows its backends): its process being up is enough.
                let ready = if name == "gateway" && !held_back.is_empty() {
                    health_status(addr, csp_kit::server::LIVENESS)
                        .await
                        .is_ok_and(|status| status == "SERVING")
                } else {
                    serving(addr).await
                };
                if ready {
                    break;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the {name} service did not become ready within 120 s"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

/// Once the server at `addr` answers SERVING, hands back the memory only
/// start-up needed ([`hand_back_start_up_memory_now`]): what `csp up` does
/// after [`start`], for a service run on its own. A gateway is SERVING only
/// once its backends are, so after 120 s this hands back anyway; at shutdown
/// it stops asking.
pub async fn hand_back_start_up_memory(addr: SocketAddr, shutdown: Shutdown) {
    let asking = async {
        while !serving(addr).await {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = shutdown.wait() => {}
        _ = tokio::time::timeout(std::time::Duration::from_secs(120), asking) => {
            hand_back_start_up_memory_now().await;
        }
    }
}

/// `csp_memory::started` on a blocking thread (it reads `/proc/self/smaps`).
pub async fn hand_back_start_up_memory_now() {
    if let Err(error) = tokio::task::spawn_blocking(csp_memory::started).await {
        tracing::warn!(%error, "handing start-up memory back failed");
    }
}

/// Whether the server at `addr` answers its health check SERVING.
async fn serving(addr: SocketAddr) -> bool {
    health_status(addr, "")
        .await
        .is_ok_and(|status| status == "SERVING")
}

/// A refusal for a person: its code and message, or each field violation on
/// its own line when it names fields.
pub fn describe_status(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    match status.get_details_bad_request() {
        Some(bad) if !bad.field_violations.is_empty() => {
            let mut text = format!("{:?}", status.code());
            for v in bad.field_violations {
                text.push_str(&format!("\n  {}: {}", v.field, v.description));
            }
            text
        }
        _ => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// What the server at `addr` answers to a health check of `service` ("" is
/// the whole server): `SERVING`, `NOT_SERVING`, ...; an error when it cannot
/// be asked (not listening, unknown service, no answer within 5 s).
pub async fn health_status(addr: SocketAddr, service: &str) -> anyhow::Result<String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let answer = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("{addr} answered {status}"))?;
    let status =
        ServingStatus::try_from(answer.into_inner().status).map_or("UNKNOWN", |s| s.as_str_name());
    Ok(status.to_owned())
}
