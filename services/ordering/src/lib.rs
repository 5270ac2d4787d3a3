//! The ordering service: a partner's customers, the orders its agents place
//! on their behalf (prices frozen from the catalog, billed to the partner,
//! idempotent by request id), the subscriptions each line becomes, and the
//! cancellation primitive the refund workflow calls. "Order placed" and
//! "subscription cancelled" leave through the transactional outbox to
//! licensing and audit.
//!
//! The shape every service follows, in the order a call passes through it:
//!
//! - [`handlers`]: the gRPC APIs, public and internal: decode, caller, one
//!   use case, encode.
//! - [`use_cases`]: each operation's flow; owns the transaction.
//! - [`domain`]: entities, states and rules (validation, pricing,
//!   fingerprints, the cancellation window); no I/O.
//! - [`storage`]: SQL on SQLite or PostgreSQL, and the migrations.
//! - [`peers`]: the catalog client and licensing as an outbox destination.
//! - [`convert`]: entities to the contract's messages and events.

pub mod convert;
pub mod domain;
pub mod handlers;
pub mod peers;
pub mod storage;
pub mod use_cases;

use std::net::SocketAddr;
use std::sync::Arc;

use csp_kit::clock::Clock;
use csp_kit::config::{self, AuditUrl, BackendArgs, CatalogUrl, LicensingUrl};
use csp_kit::service_name::ServiceName;
use csp_kit::shutdown::Shutdown;
use csp_proto::ordering::v1::billing_service_server::BillingServiceServer;
use csp_proto::ordering::v1::ordering_internal_service_server::OrderingInternalServiceServer;
use csp_proto::ordering::v1::ordering_service_server::OrderingServiceServer;
use csp_store::backend::{Backend, Outbox, Spec};
use csp_store::outbox::audit_destination;
use tokio::net::TcpListener;

use crate::handlers::OrderingApi;
use crate::storage::OrderingStore;
use crate::use_cases::Ordering;

/// The service's name in logs, data files, database names and identities.
pub const NAME: &str = ServiceName::Ordering.as_str();
/// What the service is to its start-up.
pub const SPEC: Spec = Spec {
    service: ServiceName::Ordering,
    migrations: &storage::MIGRATIONS,
    outbox: Outbox::Present,
};
/// Where the service listens by default.
pub const DEFAULT_ADDR: SocketAddr = config::local(config::ports::ORDERING);

/// The service's configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Shared backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The catalog, for markets and prices.
    #[command(flatten)]
    pub catalog: CatalogUrl,
    /// Licensing, which receives order events.
    #[command(flatten)]
    pub licensing: LicensingUrl,
    /// Audit, which receives activities.
    #[command(flatten)]
    pub audit: AuditUrl,
}

/// Opens and migrates the database, starts the outbox relay, and serves on
/// `listener` until `shutdown` fires. Business time comes from `clock`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let mut backend = Backend::start(&SPEC, &config.backend, listener, shutdown).await?;
    let catalog = peers::Catalog::new(backend.channel(&config.catalog.catalog_url)?);
    let licensing = backend.channel(&config.licensing.licensing_url)?;
    let audit = backend.channel(&config.audit.audit_url)?;
    let relay = backend.relay(vec![
        peers::licensing_destination(licensing),
        audit_destination(audit),
    ]);
    let api = OrderingApi::new(Ordering::new(
        OrderingStore::new(backend.db().clone()),
        catalog,
        clock,
        relay,
    ));
    backend
        .serve(|routes| {
            routes
                .add_service(OrderingServiceServer::new(api.clone()))
                .add_service(BillingServiceServer::new(api.clone()))
                .add_service(OrderingInternalServiceServer::new(api))
        })
        .await
}
