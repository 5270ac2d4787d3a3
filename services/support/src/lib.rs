//! The support service: tickets ("Report a Partner Center issue") with
//! comments and attachments, and the refund ticket that cancels a purchase on
//! behalf of a customer through a durable workflow.
//!
//! - [`domain`]: validation, fingerprints, refund allocation; no I/O.
//! - [`storage`]: SQL on SQLite or PostgreSQL, and the migrations.
//! - [`refunds`]: the refund workflow runner.
//! - [`handlers`]: the gRPC API.

pub mod domain;
pub mod handlers;
pub mod refunds;
pub mod storage;

use std::net::SocketAddr;
use std::sync::Arc;

use csp_kit::clock::Clock;
use csp_kit::config::{self, AuditUrl, BackendArgs, LicensingUrl, OrderingUrl};
use csp_kit::shutdown::Shutdown;
use csp_proto::support::v1::support_service_server::SupportServiceServer;
use csp_store::backend::{Backend, Outbox};
use csp_store::outbox::audit_destination;
use tokio::net::TcpListener;

use crate::handlers::SupportApi;
use crate::storage::SupportStore;

/// The service's name in logs, data files and database names.
pub const NAME: &str = "support";
/// Where the service listens by default.
pub const DEFAULT_ADDR: SocketAddr = config::local(config::ports::SUPPORT);

/// The service's configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Shared backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Ordering, which resolves and cancels purchases.
    #[command(flatten)]
    pub ordering: OrderingUrl,
    /// Licensing, which revokes keys and links.
    #[command(flatten)]
    pub licensing: LicensingUrl,
    /// Audit, which receives activities.
    #[command(flatten)]
    pub audit: AuditUrl,
}

/// Opens and migrates the database, starts the refund workflow and the
/// outbox relay, and serves on `listener` until `shutdown` fires.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let mut backend = Backend::start(
        NAME,
        &config.backend,
        listener,
        shutdown,
        &storage::MIGRATIONS,
        Outbox::Present,
    )
    .await?;
    let store = SupportStore::new(backend.db().clone());
    let ordering = backend.channel(&config.ordering.ordering_url)?;
    let licensing = backend.channel(&config.licensing.licensing_url)?;
    let audit = backend.channel(&config.audit.audit_url)?;
    let relay = backend.relay(vec![audit_destination(audit)]);
    let refunds = refunds::Refunds::new(store.clone(), ordering.clone(), licensing, clock.clone());
    let api = SupportApi::new(store, ordering, clock, refunds.waker(), relay);
    let shutdown = backend.shutdown().clone();
    backend.spawn(refunds.run(shutdown));
    backend
        .serve(|routes| {
            routes.add_service(
                SupportServiceServer::new(api)
                    .max_decoding_message_size(domain::MAX_REQUEST_BYTES)
                    .max_encoding_message_size(domain::MAX_ATTACHMENT_BYTES + 64 * 1024),
            )
        })
        .await
}
