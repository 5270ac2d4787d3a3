//! The support service: tickets ("Report a Partner Center issue") with
//! comments and attachments, and the refund ticket that cancels a purchase on
//! behalf of a customer through a durable workflow.
//!
//! - [`handlers`]: the gRPC API: decode, caller, one use case, encode.
//! - [`use_cases`]: each operation's flow; owns the transaction.
//! - [`refunds`]: the refund workflow, the use case that runs in the
//!   background.
//! - [`domain`]: tickets, comments, attachments, refund steps, their states
//!   and rules (validation, fingerprints, refund allocation and outcome); no
//!   I/O.
//! - [`storage`]: SQL on SQLite or PostgreSQL, and the migrations.
//! - [`peers`]: ordering (resolve and cancel purchases) and licensing
//!   (revoke keys and links).

pub mod domain;
pub mod handlers;
pub mod peers;
pub mod refunds;
pub mod storage;
pub mod use_cases;

use std::net::SocketAddr;
use std::sync::Arc;

use csp_kit::clock::Clock;
use csp_kit::config::{self, AuditUrl, BackendArgs, LicensingUrl, OrderingUrl};
use csp_kit::service_name::ServiceName;
use csp_kit::shutdown::Shutdown;
use csp_proto::support::v1::support_service_server::SupportServiceServer;
use csp_store::backend::{Backend, Outbox, Spec};
use csp_store::outbox::audit_destination;
use tokio::net::TcpListener;

use crate::handlers::SupportApi;
use crate::peers::Peers;
use crate::storage::SupportStore;
use crate::use_cases::Support;

/// The service's name in logs, data files and database names.
pub const NAME: &str = ServiceName::Support.as_str();
/// What the service is to its start-up.
pub const SPEC: Spec = Spec {
    service: ServiceName::Support,
    migrations: &storage::MIGRATIONS,
    outbox: Outbox::Present,
};
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
    /// What one partner may keep in attachments.
    #[command(flatten)]
    pub attachment_quota: domain::AttachmentQuota,
    /// The object store attachments live in (licensing's software files
    /// share it). With --dev and no store: file://DATA_DIR/content, served
    /// by a --dev gateway given the same store at http://127.0.0.1:8080.
    #[command(flatten)]
    pub content: csp_content::ContentArgs,
}

/// Opens and migrates the database, starts the refund workflow and the
/// outbox relay, and serves on `listener` until `shutdown` fires.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let mut backend = Backend::start(&SPEC, &config.backend, listener, shutdown).await?;
    let dev = config.backend.identity.dev;
    let content = config.content.clone().or_dev_local(
        dev,
        &config.backend.data_dir,
        &format!(
            "http://{}",
            csp_kit::config::local(csp_kit::config::ports::DOWNLOADS)
        ),
    );
    let content = csp_content::ContentStore::open(&content, "support", dev)?;
    backend.also_ready_when(content.readiness());
    let store = SupportStore::new(backend.db().clone());
    let ordering = backend.channel(&config.ordering.ordering_url)?;
    let licensing = backend.channel(&config.licensing.licensing_url)?;
    let audit = backend.channel(&config.audit.audit_url)?;
    let relay = backend.relay(vec![audit_destination(audit)]);
    let peers = Peers::new(ordering, licensing);
    let refunds = refunds::Refunds::new(store.clone(), peers.clone(), clock.clone());
    let support = Support::new(
        store,
        peers,
        config.attachment_quota,
        content,
        clock,
        refunds.waker(),
        relay,
    );
    // Attachments an earlier version kept in the database move to the
    // object store before the service turns SERVING.
    let moved = support.move_attachments_to_store().await?;
    if moved > 0 {
        tracing::info!(
            moved,
            "attachments moved from the database to the object store"
        );
    }
    let api = SupportApi::new(support.clone());
    let shutdown = backend.shutdown().clone();
    backend.spawn(refunds.run(shutdown.clone()));
    backend.spawn(async move {
        // Uploads no ticket named within a day are deleted, every 10 min.
        loop {
            match support.delete_expired_uploads().await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "deleted unclaimed attachment uploads"),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "unclaimed uploads could not be deleted")
                }
            }
            tokio::select! {
                () = shutdown.clone().wait() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
            }
        }
    });
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
