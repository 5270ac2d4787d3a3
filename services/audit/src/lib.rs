//! The audit service: every partner's activity log, complete and
//! tamper-evident, queryable by date range.
//!
//! - [`domain`]: record hashes, signed checkpoints, chain verification; no I/O.
//! - [`storage`]: appending to the chains, reading by range.
//! - [`checkpoints`]: the checkpoint file outside the database.
//! - [`export`]: CSV and JSON lines.
//! - [`handlers`]: the intake (internal) and the query API (public): decode,
//!   caller, one use case, encode.
//! - [`use_cases`]: intake, list, export and verify as flows.

pub mod checkpoints;
pub mod domain;
pub mod export;
pub mod handlers;
pub mod log;
pub mod storage;
pub mod use_cases;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use csp_kit::clock::Clock;
use csp_kit::config::{self, BackendArgs, Secret};
use csp_kit::shutdown::Shutdown;
use csp_proto::audit::v1::audit_intake_service_server::AuditIntakeServiceServer;
use csp_proto::audit::v1::audit_service_server::AuditServiceServer;
use csp_store::backend::{Backend, Outbox, Spec};
use tokio::net::TcpListener;

use crate::handlers::AuditApi;
use crate::storage::AuditStore;
use crate::use_cases::Audit;

/// The service's name in logs, data files and database names.
pub const NAME: &str = "audit";
/// What the service is to its start-up.
pub const SPEC: Spec = Spec {
    name: NAME,
    migrations: &storage::MIGRATIONS,
    outbox: Outbox::Absent,
};
/// Where the service listens by default.
pub const DEFAULT_ADDR: SocketAddr = config::local(config::ports::AUDIT);
/// The development default of the checkpoint key; a deployment sets
/// `CSP_AUDIT_KEY`.
pub const DEV_CHECKPOINT_KEY: &str = "csp-development-audit-key-change-me";

/// The service's configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Shared backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The key chain heads are signed with; the database never holds it.
    #[arg(long, env = "CSP_AUDIT_KEY", default_value = DEV_CHECKPOINT_KEY, hide_default_value = true)]
    pub checkpoint_key: Secret,
    /// The file checkpoints are also appended to, outside the database
    /// [default: DATA_DIR/audit-checkpoints.jsonl].
    #[arg(long, env = "CSP_AUDIT_CHECKPOINT_FILE")]
    pub checkpoint_file: Option<PathBuf>,
}

/// Opens and migrates the database and serves on `listener` until
/// `shutdown` fires.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let backend = Backend::start(&SPEC, &config.backend, listener, shutdown).await?;
    let file = config
        .checkpoint_file
        .clone()
        .unwrap_or_else(|| config.backend.data_dir.join("audit-checkpoints.jsonl"));
    tracing::info!(service = NAME, checkpoint_file = %file.display(), "checkpoints also go to a file");
    let api = AuditApi::new(Audit::new(
        AuditStore::new(backend.db().clone()),
        domain::Signer::new(config.checkpoint_key.expose().as_bytes()),
        checkpoints::CheckpointFile::new(file),
        clock,
    ));
    backend
        .serve(|routes| {
            routes
                .add_service(AuditServiceServer::new(api.clone()))
                .add_service(AuditIntakeServiceServer::new(api))
        })
        .await
}
