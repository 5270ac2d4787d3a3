//! The audit service: the tamper-evident activity log.
//!
//! Its contract (`proto/csp/audit/v1/`) is complete; its RPCs answer
//! UNIMPLEMENTED until the audit issue implements them. It already runs as
//! every csp backend does: health, reflection, and calls accepted only with a
//! caller identity signed by the gateway or another csp service.

use std::net::SocketAddr;

use csp_kit::config::BackendArgs;
use csp_kit::server;
use csp_kit::shutdown::Shutdown;
use csp_proto::audit::v1::audit_intake_service_server::{
    AuditIntakeService, AuditIntakeServiceServer,
};
use csp_proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
use tokio::net::TcpListener;

/// The service's name in logs, data files and database names.
pub const NAME: &str = "audit";
/// Where the service listens by default.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50064);

/// The service's configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Shared backend settings.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// The API; every RPC answers UNIMPLEMENTED for now.
#[derive(Clone, Copy, Debug)]
struct Audit;

impl AuditService for Audit {}
impl AuditIntakeService for Audit {}

/// Serves on `listener` until `shutdown` fires.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    server::run_backend(
        NAME,
        listener,
        &config.backend.internal_key,
        shutdown,
        |routes| {
            routes
                .add_service(AuditServiceServer::new(Audit))
                .add_service(AuditIntakeServiceServer::new(Audit))
        },
    )
    .await
}
