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
use csp_kit::config::BackendArgs;
use csp_kit::identity::IdentityKey;
use csp_kit::outbox::{Destination, Relay, RelaySettings};
use csp_kit::server;
use csp_kit::shutdown::Shutdown;
use csp_kit::upstream::{AuditDestination, signed_channel};
use csp_proto::support::v1::support_service_server::SupportServiceServer;
use tokio::net::TcpListener;

use crate::handlers::SupportApi;
use crate::storage::SupportStore;

/// The service's name in logs, data files and database names.
pub const NAME: &str = "support";
/// Where the service listens by default.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50065);

/// The service's configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Shared backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The ordering service, which resolves and cancels purchases.
    #[arg(
        long = "ordering-url",
        env = "CSP_ORDERING_URL",
        default_value = "http://127.0.0.1:50062"
    )]
    pub ordering_url: String,
    /// The licensing service, which revokes keys and links.
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

/// Opens and migrates the database, starts the refund workflow and the
/// outbox relay, and serves on `listener` until `shutdown` fires.
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
    let store = SupportStore::new(db.clone());
    let destinations: Vec<Arc<dyn Destination>> = vec![Arc::new(AuditDestination::new(
        signed_channel(&config.audit_url, &key, NAME)?,
    ))];
    let relay = Relay::new(
        db.clone(),
        destinations,
        csp_kit::clock::system(),
        RelaySettings::default(),
    );
    let refunds = refunds::Refunds::new(
        store.clone(),
        signed_channel(&config.ordering_url, &key, NAME)?,
        signed_channel(&config.licensing_url, &key, NAME)?,
        clock.clone(),
    );
    let api = SupportApi::new(
        store,
        signed_channel(&config.ordering_url, &key, NAME)?,
        clock,
        refunds.waker(),
        relay.waker(),
    );
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));
    let refunds_task = tokio::spawn(refunds.run(shutdown.clone()));
    let served = starting
        .ready_on(&db, server::DATABASE_CHECK, |routes| {
            routes.add_service(
                SupportServiceServer::new(api)
                    .max_decoding_message_size(domain::MAX_REQUEST_BYTES)
                    .max_encoding_message_size(domain::MAX_ATTACHMENT_BYTES + 64 * 1024),
            )
        })
        .await;
    server::wind_down(&db, vec![relay_task, refunds_task]).await;
    served
}
