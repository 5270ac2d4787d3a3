//! The licensing service: the software bought for each customer, product
//! keys, and download links that expire two weeks after issue or after 50
//! downloads, whichever comes first.
//!
//! - [`domain`]: link validity and selection rules; no I/O.
//! - [`secrets`]: product keys, link tokens, sealing.
//! - [`storage`]: SQL on SQLite or PostgreSQL, and the migrations.
//! - [`handlers`]: the gRPC APIs, public and internal.
//!
//! Entitlements come from ordering's events (provisioned on "order placed"
//! for software, revoked on "subscription cancelled"), deduplicated by event
//! id. Key accesses, issued links and downloads go to audit through the
//! outbox.

pub mod domain;
pub mod handlers;
pub mod secrets;
pub mod storage;

use std::net::SocketAddr;
use std::sync::Arc;

use csp_kit::clock::Clock;
use csp_kit::config::{BackendArgs, Secret};
use csp_kit::identity::IdentityKey;
use csp_kit::outbox::{Destination, Relay, RelaySettings};
use csp_kit::server;
use csp_kit::shutdown::Shutdown;
use csp_kit::upstream::{AuditDestination, signed_channel};
use csp_proto::licensing::v1::licensing_internal_service_server::LicensingInternalServiceServer;
use csp_proto::licensing::v1::licensing_service_server::LicensingServiceServer;
use tokio::net::TcpListener;

use crate::handlers::{LicensingApi, Urls};
use crate::storage::LicensingStore;

/// The service's name in logs, data files, database names and identities.
pub const NAME: &str = "licensing";
/// Where the service listens by default.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50063);
/// The development default of the key product keys and link tokens are sealed
/// with; a deployment sets `CSP_LICENSING_KEY`.
pub const DEV_SEALING_KEY: &str = "csp-development-licensing-key-change-me";

/// The service's configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Shared backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The catalog service, for download options.
    #[arg(
        long = "catalog-url",
        env = "CSP_CATALOG_URL",
        default_value = "http://127.0.0.1:50061"
    )]
    pub catalog_url: String,
    /// The ordering service, which knows the partner's customers.
    #[arg(
        long = "ordering-url",
        env = "CSP_ORDERING_URL",
        default_value = "http://127.0.0.1:50062"
    )]
    pub ordering_url: String,
    /// The audit service, which receives activities.
    #[arg(
        long = "audit-url",
        env = "CSP_AUDIT_URL",
        default_value = "http://127.0.0.1:50064"
    )]
    pub audit_url: String,
    /// The key product keys and link tokens are sealed with in the database.
    #[arg(long, env = "CSP_LICENSING_KEY", default_value = DEV_SEALING_KEY, hide_default_value = true)]
    pub sealing_key: Secret,
    /// The public base URL of the gateway's download listener, as customers
    /// reach it.
    #[arg(
        long,
        env = "CSP_DOWNLOAD_BASE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub download_base_url: String,
    /// Where the files are; a download redirects to
    /// ORIGIN/PRODUCT/VERSION/LANGUAGE/FILE_TYPE.
    #[arg(
        long,
        env = "CSP_CONTENT_ORIGIN",
        default_value = "https://download.csp.example/software"
    )]
    pub content_origin: String,
}

/// Opens and migrates the database, starts the outbox relay, and serves on
/// `listener` until `shutdown` fires. Time comes from `clock`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let starting = server::start_backend(
        NAME,
        listener,
        &config.backend.internal_key,
        shutdown.clone(),
    )
    .await?;
    let db = server::open_database(NAME, &config.backend, &storage::MIGRATIONS).await?;
    let _metrics = csp_kit::metrics::watch_database(NAME, &db, csp_kit::metrics::Outbox::Present);

    let key = Arc::new(IdentityKey::new(&config.backend.internal_key));
    let destinations: Vec<Arc<dyn Destination>> = vec![Arc::new(AuditDestination::new(
        signed_channel(&config.audit_url, &key, NAME)?,
    ))];
    let relay = Relay::new(
        db.clone(),
        destinations,
        csp_kit::clock::system(),
        RelaySettings::default(),
    );
    let api = LicensingApi::new(
        LicensingStore::new(db.clone()),
        signed_channel(&config.catalog_url, &key, NAME)?,
        signed_channel(&config.ordering_url, &key, NAME)?,
        secrets::Sealer::new(&config.sealing_key)?,
        clock,
        Urls {
            download_base: config.download_base_url.clone(),
            content_origin: config.content_origin.clone(),
        },
        relay.waker(),
    );
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));
    let served = starting
        .ready_on(&db, server::DATABASE_CHECK, |routes| {
            routes
                .add_service(LicensingServiceServer::new(api.clone()))
                .add_service(LicensingInternalServiceServer::new(api))
        })
        .await;
    server::wind_down(&db, vec![relay_task]).await;
    served
}
