//! The catalog service: products (server subscriptions and Azure
//! reservations), SKUs, prices per market and download options.
//!
//! - [`handlers`]: the gRPC APIs: decode, one use case, encode.
//! - [`use_cases`]: each read's flow over storage and the rules.
//! - [`domain`]: markets, products, SKUs, their kinds and terms, and where
//!   reservations are offered; no I/O.
//! - [`hybrid`]: Azure Hybrid Benefit estimates, no I/O.
//! - [`storage`]: SQL on SQLite or PostgreSQL, and the migrations.
//! - [`convert`]: the domain in the contract's messages.
//! - [`price_list`]: the price-list file an operator imports, read and
//!   checked without I/O; [`changes`]: what an import changes.
//! - [`snapshot`]: the catalog in memory, priced at one instant.
//! - [`seed`]: the demo price list, imported at first start.

pub mod changes;
pub mod convert;
pub mod domain;
pub mod handlers;
pub mod hybrid;
pub mod price_list;
pub mod seed;
pub mod snapshot;
pub mod storage;
pub mod use_cases;

use std::net::SocketAddr;
use std::sync::Arc;

use csp_kit::clock::Clock;

use csp_kit::config::{self, BackendArgs};
use csp_kit::service_name::ServiceName;
use csp_kit::shutdown::Shutdown;
use csp_proto::catalog::v1::catalog_internal_service_server::CatalogInternalServiceServer;
use csp_proto::catalog::v1::catalog_service_server::CatalogServiceServer;
use csp_store::backend::{Backend, Outbox, Spec};
use tokio::net::TcpListener;

use crate::handlers::CatalogApi;
use crate::storage::CatalogStore;
use crate::use_cases::Catalog;

/// The service's name in logs, data files and database names.
pub const NAME: &str = ServiceName::Catalog.as_str();
/// What the service is to its start-up.
pub const SPEC: Spec = Spec {
    service: ServiceName::Catalog,
    migrations: &storage::MIGRATIONS,
    outbox: Outbox::Absent,
};
/// Where the catalog listens by default.
pub const DEFAULT_ADDR: SocketAddr = config::local(config::ports::CATALOG);

/// The catalog's configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Shared backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Import the demo price list at start when the catalog has never been
    /// imported (a catalog an operator imported is never touched).
    #[arg(long, env = "CSP_SEED_DEMO_CATALOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub seed_demo_catalog: bool,
}

/// Opens the database, migrates it, imports the demo price list when asked
/// and never imported, then serves on `listener` until `shutdown` fires.
/// Prices in effect are those at `clock`'s time.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let mut backend = Backend::start(&SPEC, &config.backend, listener, shutdown).await?;
    let catalog = Catalog::load(CatalogStore::new(backend.db().clone()), clock).await?;
    if config.seed_demo_catalog {
        seed::seed_demo_catalog(&catalog, backend.db()).await?;
    }
    backend.spawn(catalog.clone().refresh_until(backend.shutdown().clone()));
    backend
        .serve(|routes| {
            routes
                .add_service(CatalogServiceServer::new(CatalogApi::new(catalog.clone())))
                .add_service(
                    CatalogInternalServiceServer::new(handlers::CatalogInternalApi::new(catalog))
                        .max_decoding_message_size(use_cases::MAX_IMPORT_BYTES + 4096),
                )
        })
        .await
}
