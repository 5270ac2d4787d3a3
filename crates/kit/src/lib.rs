//! The csp service kit: what every service shares, the gateway included, kept
//! small and free of any database (that is `csp-store`).
//!
//! - [`config`]: command-line and environment configuration pieces (the
//!   backend options, each peer's URL option, default ports), secrets that
//!   never print.
//! - [`telemetry`]: tracing set-up.
//! - [`shutdown`]: a cloneable shutdown signal (SIGTERM/SIGINT, or a test's
//!   trigger).
//! - [`roles`], [`service_name`] and [`access`]: roles, the services by name,
//!   and the per-RPC access rules (roles and calling services) read from the
//!   descriptor set.
//! - [`identity`]: the caller identity each service signs with its own key
//!   (users' only by the gateway), verified and authorized by every backend.
//! - [`error`]: the one mapping from API errors to `tonic::Status`.
//! - [`ids`] and [`market`]: typed identifiers and market codes, parsed once
//!   at the edge.
//! - [`peer`]: signed channels to other services, and the one way to read
//!   their failures.
//! - [`backoff`]: the one retry pace.
//! - [`activity`]: activity records for the audit log, built in one place.
//! - [`stored`]: state enums with their one stored spelling; [`product`]: the
//!   product kinds and terms every service shares.
//! - [`metrics`]: Prometheus metrics (calls, latency, outbox, pools) and
//!   their `/metrics` endpoint.
//! - [`server`]: a gRPC server with health, reflection, identity checks and
//!   graceful shutdown.
//! - [`paging`]: opaque page tokens.
//! - [`clock`]: time in microseconds, from a clock tests can set.

pub mod access;
pub mod activity;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod error;
pub mod identity;
pub mod ids;
pub mod inproc;
pub mod market;
pub mod metrics;
pub mod paging;
pub mod peer;
pub mod product;
pub mod roles;
pub mod server;
pub mod service_name;
pub mod shutdown;
pub mod stored;
pub mod telemetry;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

pub use error::{ApiError, ApiResult, FieldViolation};
pub use identity::Caller;
