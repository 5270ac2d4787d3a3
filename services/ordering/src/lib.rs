//! The ordering service: a partner's customers, the orders its agents place
//! on their behalf (prices frozen from the catalog, billed to the partner,
//! idempotent by request id), the subscriptions each line becomes, and the
//! cancellation primitive the refund workflow calls. "Order placed" and
//! "subscription cancelled" leave through the transactional outbox to
//! licensing and audit.
//!
//! - [`domain`]: validation, fingerprints, the cancellation window; no I/O.
//! - [`storage`]: SQL on SQLite or PostgreSQL, and the migrations.
//! - [`handlers`]: the gRPC APIs, public and internal.
//! - [`upstream`]: the catalog client and the outbox destinations.

pub mod convert;
pub mod domain;
pub mod handlers;
pub mod storage;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use csp_kit::clock::Clock;
use csp_kit::config::BackendArgs;
use csp_kit::identity::IdentityKey;
use csp_kit::outbox::{Destination, Relay, RelaySettings};
use csp_kit::server;
use csp_kit::shutdown::Shutdown;
use csp_proto::ordering::v1::ordering_internal_service_server::OrderingInternalServiceServer;
use csp_proto::ordering::v1::ordering_service_server::OrderingServiceServer;
use tokio::net::TcpListener;

use crate::handlers::OrderingApi;
use crate::storage::OrderingStore;

/// The service's name in logs, data files, database names and identities.
pub const NAME: &str = "ordering";
/// Where the service listens by default.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50062);

/// The service's configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Shared backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The catalog service, for markets and prices.
    #[arg(
        long = "catalog-url",
        env = "CSP_CATALOG_URL",
        default_value = "http://127.0.0.1:50061"
    )]
    pub catalog_url: String,
    /// The licensing service, which receives order events.
    #[arg(
        long = "licensing-url",
        env = "CSP_LICENSING_URL",
        default_value = "http://127.0.0.1:50063"
    )]
    pub licensing_url: String,
    /// The audit service, which receives activities.
    #[arg(
        long = "audit-url",
        env = "CSP_AUDIT_URL",
        default_value = "http://127.0.0.1:50064"
    )]
    pub audit_url: String,
}

/// Opens and migrates the database, starts the outbox relay, and serves on
/// `listener` until `shutdown` fires. Business time comes from `clock`.
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
    let catalog = upstream::Catalog::new(upstream::channel(&config.catalog_url, &key)?);
    let destinations: Vec<Arc<dyn Destination>> = vec![
        Arc::new(upstream::LicensingDestination::new(upstream::channel(
            &config.licensing_url,
            &key,
        )?)),
        Arc::new(upstream::AuditDestination::new(upstream::channel(
            &config.audit_url,
            &key,
        )?)),
    ];
    let relay = Relay::new(
        db.clone(),
        destinations,
        csp_kit::clock::system(),
        RelaySettings::default(),
    );
    let api = OrderingApi::new(
        OrderingStore::new(db.clone()),
        catalog,
        clock,
        relay.waker(),
    );
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));

    let served = starting
        .ready_on(&db, server::DATABASE_CHECK, |routes| {
            routes
                .add_service(OrderingServiceServer::new(api.clone()))
                .add_service(OrderingInternalServiceServer::new(api))
        })
        .await;
    server::wind_down(&db, vec![relay_task]).await;
    served
}
