//! The licensing service: the software bought for each customer, product
//! keys, and download links that expire two weeks after issue or after 50
//! downloads, whichever comes first.
//!
//! - [`handlers`]: the gRPC APIs, public and internal: decode, caller, one
//!   use case, encode.
//! - [`use_cases`]: each operation's flow; owns the transaction.
//! - [`domain`]: entitlements, links, downloads, their states and rules
//!   (link validity, selections); no I/O.
//! - [`secrets`]: product keys, link tokens, sealing.
//! - [`storage`]: SQL on SQLite or PostgreSQL, and the migrations.
//! - [`peers`]: the catalog (download options) and ordering (customers).
//! - [`content`]: the software files in the object store (`csp content`).
//!
//! Entitlements come from ordering's events (provisioned on "order placed"
//! for software, revoked on "subscription cancelled"), deduplicated by event
//! id. Key accesses, issued links and downloads go to audit through the
//! outbox.

pub mod content;
pub mod domain;
pub mod handlers;
pub mod peers;
pub mod secrets;
pub mod storage;
pub mod use_cases;

use std::net::SocketAddr;
use std::sync::Arc;

use csp_kit::clock::Clock;
use csp_kit::config::{self, AuditUrl, BackendArgs, CatalogUrl, OrderingUrl, Secret};
use csp_kit::service_name::ServiceName;
use csp_kit::shutdown::Shutdown;
use csp_proto::licensing::v1::licensing_internal_service_server::LicensingInternalServiceServer;
use csp_proto::licensing::v1::licensing_service_server::LicensingServiceServer;
use csp_store::backend::{Backend, Outbox, Spec};
use csp_store::outbox::audit_destination;
use tokio::net::TcpListener;

use crate::handlers::LicensingApi;
use crate::peers::Peers;
use crate::storage::LicensingStore;
use crate::use_cases::{Licensing, Urls};

/// The service's name in logs, data files, database names and identities.
pub const NAME: &str = ServiceName::Licensing.as_str();
/// What the service is to its start-up.
pub const SPEC: Spec = Spec {
    service: ServiceName::Licensing,
    migrations: &storage::MIGRATIONS,
    outbox: Outbox::Present,
};
/// Where the service listens by default.
pub const DEFAULT_ADDR: SocketAddr = config::local(config::ports::LICENSING);
/// The development default of the key product keys and link tokens are sealed
/// with; a deployment sets `CSP_LICENSING_KEY`.
pub const DEV_SEALING_KEY: &str = "csp-development-licensing-key-change-me";

/// The service's configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Shared backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The catalog, for download options.
    #[command(flatten)]
    pub catalog: CatalogUrl,
    /// Ordering, to tell an unknown customer from one with nothing bought.
    #[command(flatten)]
    pub ordering: OrderingUrl,
    /// Audit, which receives activities.
    #[command(flatten)]
    pub audit: AuditUrl,
    /// The key product keys and link tokens are sealed with in the database.
    /// Required unless --dev.
    #[arg(long, env = "CSP_LICENSING_KEY", hide_env_values = true)]
    pub sealing_key: Option<Secret>,
    /// The public base URL of the gateway's download listener, as customers
    /// reach it.
    #[arg(
        long,
        env = "CSP_DOWNLOAD_BASE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub download_base_url: String,
    /// The object store the software files are in; a download redirects to
    /// a URL signed for its one file. With --dev and no store:
    /// file://DATA_DIR/content, served at the download base URL.
    #[command(flatten)]
    pub content: csp_content::ContentArgs,
}

/// Opens and migrates the database, starts the outbox relay, and serves on
/// `listener` until `shutdown` fires. Time comes from `clock`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let sealing_key = csp_kit::config::required_secret(
        "CSP_LICENSING_KEY",
        config.sealing_key.as_ref(),
        DEV_SEALING_KEY,
        config.backend.identity.dev,
    )?;
    let dev = config.backend.identity.dev;
    // Development: files in the data directory, served by a --dev gateway
    // given the same store.
    let content = config.content.clone().or_dev_local(
        dev,
        &config.backend.data_dir,
        &config.download_base_url,
    );
    let content = csp_content::ContentStore::open(&content, "licensing", dev)?;
    let mut backend = Backend::start(&SPEC, &config.backend, listener, shutdown).await?;
    backend.also_ready_when(content.readiness());
    let catalog = backend.channel(&config.catalog.catalog_url)?;
    let ordering = backend.channel(&config.ordering.ordering_url)?;
    let audit = backend.channel(&config.audit.audit_url)?;
    let relay = backend.relay(vec![audit_destination(audit)]);
    let api = LicensingApi::new(Licensing::new(
        LicensingStore::new(backend.db().clone()),
        Peers::new(catalog, ordering),
        secrets::Sealer::new(&sealing_key)?,
        clock,
        Urls {
            download_base: config.download_base_url.clone(),
        },
        content,
        relay,
    ));
    backend
        .serve(|routes| {
            routes
                .add_service(LicensingServiceServer::new(api.clone()))
                .add_service(LicensingInternalServiceServer::new(api))
        })
        .await
}
