//! The catalog service: products (server subscriptions and Azure
//! reservations), SKUs, prices per market and download options.
//!
//! - [`domain`]: market and availability rules, no I/O.
//! - [`storage`]: SQL on SQLite or PostgreSQL, and the migrations.
//! - [`handlers`]: the gRPC API.
//! - [`hybrid`]: Azure Hybrid Benefit estimates, no I/O.
//! - [`seed`]: the demo catalog.

pub mod domain;
pub mod handlers;
pub mod hybrid;
pub mod seed;
pub mod storage;

use std::net::SocketAddr;

use csp_kit::config::BackendArgs;
use csp_kit::server;
use csp_kit::shutdown::Shutdown;
use csp_proto::catalog::v1::catalog_internal_service_server::CatalogInternalServiceServer;
use csp_proto::catalog::v1::catalog_service_server::CatalogServiceServer;
use tokio::net::TcpListener;

use crate::handlers::CatalogApi;
use crate::storage::CatalogStore;

/// The service's name in logs, data files and database names.
pub const NAME: &str = "catalog";
/// Where the catalog listens by default.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50061);

/// The catalog's configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Shared backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Seed the demo catalog on start (idempotent).
    #[arg(long, env = "CSP_SEED_DEMO_CATALOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub seed_demo_catalog: bool,
}

/// Opens the database, migrates and seeds it, then serves on `listener`
/// until `shutdown` fires.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let starting = server::start_backend(
        NAME,
        listener,
        &config.backend.internal_key,
        shutdown.clone(),
    )
    .await?;
    let db = server::open_database(NAME, &config.backend, &storage::MIGRATIONS).await?;
    let _metrics = csp_kit::metrics::watch_database(NAME, &db, csp_kit::metrics::Outbox::Absent);
    if config.seed_demo_catalog {
        seed::seed_demo_catalog(&db).await?;
    }
    let store = CatalogStore::new(db.clone());
    let served = starting
        .ready_on(&db, server::DATABASE_CHECK, |routes| {
            routes
                .add_service(CatalogServiceServer::new(CatalogApi::new(store.clone())))
                .add_service(CatalogInternalServiceServer::new(
                    handlers::CatalogInternalApi::new(store),
                ))
        })
        .await;
    server::wind_down(&db, Vec::new()).await;
    served
}
