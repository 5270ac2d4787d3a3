//! The audit service: every partner's activity log, complete and
//! tamper-evident, queryable by date range.
//!
//! - [`domain`]: records, their intake, what verification found; no I/O.
//! - [`log`]: the transparency log without I/O: entries, the Merkle tree,
//!   signed checkpoints, the log key.
//! - [`storage`]: appending records and tree hashes, checkpoints, reading by
//!   range.
//! - [`checkpoints`]: the checkpoint file outside the database.
//! - [`bundle`]: the offline verifier of proof bundles (`csp verify-log`).
//! - [`export`]: CSV and JSON lines.
//! - [`handlers`]: the intake (internal) and the query API (public): decode,
//!   caller, one use case, encode.
//! - [`use_cases`]: intake, list, export and verify as flows.

pub mod bundle;
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
use csp_kit::service_name::ServiceName;
use csp_kit::shutdown::Shutdown;
use csp_proto::audit::v1::audit_intake_service_server::AuditIntakeServiceServer;
use csp_proto::audit::v1::audit_service_server::AuditServiceServer;
use csp_store::backend::{Backend, Outbox, Spec};
use tokio::net::TcpListener;

use crate::handlers::AuditApi;
use crate::storage::AuditStore;
use crate::use_cases::Audit;

/// The service's name in logs, data files and database names.
pub const NAME: &str = ServiceName::Audit.as_str();
/// What the service is to its start-up.
pub const SPEC: Spec = Spec {
    service: ServiceName::Audit,
    migrations: &storage::MIGRATIONS,
    outbox: Outbox::Absent,
};
/// Where the service listens by default.
pub const DEFAULT_ADDR: SocketAddr = config::local(config::ports::AUDIT);
/// The development default of the log key; a deployment sets
/// `CSP_AUDIT_KEY` to a note signer key (`csp audit-log-key --generate`).
pub const DEV_CHECKPOINT_KEY: &str = "csp-development-audit-key-change-me";

/// The service's configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Shared backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The key checkpoints are signed with (Ed25519); the database never
    /// holds it. A note signer key `PRIVATE+KEY+NAME+ID+KEY` (from `csp
    /// audit-log-key --generate`), or any other secret, from which a key
    /// named by `--log-name` is derived. Required unless --dev.
    #[arg(long, env = "CSP_AUDIT_KEY", hide_env_values = true)]
    pub checkpoint_key: Option<Secret>,
    /// The log's name: the key's name and the first part of every
    /// checkpoint's origin (NAME/PARTNER_ID), when the key does not carry
    /// its own.
    #[arg(long, env = "CSP_AUDIT_LOG_NAME", default_value = log::DEFAULT_LOG_NAME)]
    pub log_name: String,
    /// How old, in hours, a record may be when it reaches the log (outbox
    /// redeliveries after an outage keep their original time); older ones
    /// are refused, so no producer can backdate a record further.
    #[arg(long, env = "CSP_AUDIT_MAX_RECORD_AGE_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u32).range(1..=87_600))]
    pub max_record_age_hours: u32,
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
    let checkpoint_key = csp_kit::config::required_secret(
        "CSP_AUDIT_KEY",
        config.checkpoint_key.as_ref(),
        DEV_CHECKPOINT_KEY,
        config.backend.identity.dev,
    )?;
    let backend = Backend::start(&SPEC, &config.backend, listener, shutdown).await?;
    let file = config
        .checkpoint_file
        .clone()
        .unwrap_or_else(|| config.backend.data_dir.join("audit-checkpoints.jsonl"));
    tracing::info!(service = NAME, checkpoint_file = %file.display(), "checkpoints also go to a file");
    let key = log::LogKey::from_config(checkpoint_key.expose(), &config.log_name)?;
    tracing::info!(service = NAME, public_key = %key.verifier_key(), "activity log checkpoints are signed with this key");
    let store = AuditStore::new(backend.db().clone());
    let built = store.build_missing_leaves(1000).await?;
    if built > 0 {
        tracing::info!(
            service = NAME,
            leaves = built,
            "built the activity log's tree over records logged before it"
        );
    }
    let audit = Audit::new(
        store,
        std::sync::Arc::new(key),
        checkpoints::CheckpointFile::new(file),
        clock,
        domain::IntakeRules::new(
            i64::from(config.max_record_age_hours) * 3600 * csp_kit::clock::SECOND,
        )?,
    );
    tokio::spawn(audit.clone().checkpoint_until(backend.shutdown().clone()));
    let api = AuditApi::new(audit);
    backend
        .serve(|routes| {
            routes
                .add_service(AuditServiceServer::new(api.clone()))
                .add_service(AuditIntakeServiceServer::new(api))
        })
        .await
}
