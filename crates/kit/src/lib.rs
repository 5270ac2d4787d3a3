//! The csp service kit: what every service shares, kept small.
//!
//! - [`config`]: command-line and environment configuration pieces, secrets
//!   that never print.
//! - [`telemetry`]: tracing set-up.
//! - [`shutdown`]: a cloneable shutdown signal (SIGTERM/SIGINT, or a test's
//!   trigger).
//! - [`db`]: the database (embedded SQLite or PostgreSQL) and embedded
//!   migrations.
//! - [`roles`] and [`access`]: roles and the per-RPC access rules read from the
//!   descriptor set.
//! - [`identity`]: the gateway-issued caller identity, minted by the gateway
//!   and verified by every backend.
//! - [`error`]: the one mapping from API errors to `tonic::Status`.
//! - [`metrics`]: Prometheus metrics (calls, latency, outbox, pools) and
//!   their `/metrics` endpoint.
//! - [`server`]: a gRPC server with health, reflection, identity checks and
//!   graceful shutdown.
//! - [`paging`]: opaque page tokens.
//! - [`clock`]: time in microseconds, from a clock tests can set.
//! - [`outbox`]: the transactional outbox and its relay.
//! - [`upstream`]: signed channels to other services; the audit destination.

pub mod access;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod identity;
pub mod metrics;
pub mod outbox;
pub mod paging;
pub mod roles;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod upstream;

pub use error::{ApiError, ApiResult, FieldViolation};
pub use identity::Caller;
