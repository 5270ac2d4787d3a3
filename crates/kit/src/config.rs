//! Configuration pieces shared by the service binaries. Each binary has one
//! typed configuration struct made of these, read from flags with `CSP_*`
//! environment fallbacks.

use std::fmt;

/// A secret value (signing key, token secret). Its `Debug` and `Display`
/// never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < 16 {
            return Err("a secret must be at least 16 characters long".to_owned());
        }
        Ok(Self(s.to_owned()))
    }
}

/// The development default for the key the gateway signs caller identities
/// with. `csp up` uses it so the system runs with no set-up; a deployment sets
/// `CSP_INTERNAL_KEY`.
pub const DEV_INTERNAL_KEY: &str = "csp-development-internal-key-change-me";

/// The development default for the HS256 secret of user tokens.
pub const DEV_JWT_SECRET: &str = "csp-development-jwt-secret-change-me";

/// What every backend service binary takes. Each deployment sets its own
/// `CSP_*` environment, so the names need no service prefix.
#[derive(clap::Args, Clone, Debug)]
pub struct BackendArgs {
    /// Address to serve gRPC on [default: the service's local port].
    #[arg(long, env = "CSP_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Database URL: postgres://USER@HOST/DB, or sqlite://PATH
    /// [default: sqlite://DATA_DIR/SERVICE.db].
    #[arg(long, env = "CSP_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for the embedded SQLite database.
    #[arg(long, env = "CSP_DATA_DIR", default_value = "data")]
    pub data_dir: std::path::PathBuf,
    /// Key the gateway signs caller identities with; shared by all services.
    #[arg(long, env = "CSP_INTERNAL_KEY", default_value = DEV_INTERNAL_KEY, hide_default_value = true)]
    pub internal_key: Secret,
    /// Address to serve Prometheus metrics on (`GET /metrics`, HTTP/1.1)
    /// [default: no metrics listener].
    #[arg(long, env = "CSP_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl BackendArgs {
    /// The database URL for `service`: the configured one, or a SQLite file
    /// in the data directory.
    pub fn database_url_for(&self, service: &str) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.join(format!("{service}.db")).display()
            )
        })
    }
}

/// Where each service listens when nothing else is said, and so where its
/// callers look for it by default.
pub mod ports {
    /// The gateway's public gRPC port.
    pub const GATEWAY: u16 = 50051;
    /// The catalog.
    pub const CATALOG: u16 = 50061;
    /// Ordering.
    pub const ORDERING: u16 = 50062;
    /// Licensing.
    pub const LICENSING: u16 = 50063;
    /// Audit.
    pub const AUDIT: u16 = 50064;
    /// Support.
    pub const SUPPORT: u16 = 50065;
}

/// `127.0.0.1:port`, a service's default listen address.
pub const fn local(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port)
}

/// Defines the option naming where one peer service serves gRPC, once for
/// every binary that calls it.
macro_rules! peer_url {
    ($(#[$doc:meta])* $name:ident, $field:ident, $flag:literal, $env:literal, $default:literal) => {
        $(#[$doc])*
        #[derive(clap::Args, Clone, Debug)]
        pub struct $name {
            $(#[$doc])*
            #[arg(id = $flag, long = $flag, env = $env, default_value = $default)]
            pub $field: String,
        }

        impl From<String> for $name {
            fn from($field: String) -> Self {
                Self { $field }
            }
        }
    };
}

peer_url!(
    /// Where the catalog service serves gRPC.
    CatalogUrl, catalog_url, "catalog-url", "CSP_CATALOG_URL", "http://127.0.0.1:50061"
);
peer_url!(
    /// Where the ordering service serves gRPC.
    OrderingUrl, ordering_url, "ordering-url", "CSP_ORDERING_URL", "http://127.0.0.1:50062"
);
peer_url!(
    /// Where the licensing service serves gRPC.
    LicensingUrl, licensing_url, "licensing-url", "CSP_LICENSING_URL", "http://127.0.0.1:50063"
);
peer_url!(
    /// Where the audit service serves gRPC.
    AuditUrl, audit_url, "audit-url", "CSP_AUDIT_URL", "http://127.0.0.1:50064"
);
peer_url!(
    /// Where the support service serves gRPC.
    SupportUrl, support_url, "support-url", "CSP_SUPPORT_URL", "http://127.0.0.1:50065"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_url_defaults_follow_the_default_ports() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            catalog: CatalogUrl,
            #[command(flatten)]
            ordering: OrderingUrl,
            #[command(flatten)]
            licensing: LicensingUrl,
            #[command(flatten)]
            audit: AuditUrl,
            #[command(flatten)]
            support: SupportUrl,
        }
        let cli = Cli::try_parse_from(["x"]).unwrap();
        for (url, port) in [
            (cli.catalog.catalog_url, ports::CATALOG),
            (cli.ordering.ordering_url, ports::ORDERING),
            (cli.licensing.licensing_url, ports::LICENSING),
            (cli.audit.audit_url, ports::AUDIT),
            (cli.support.support_url, ports::SUPPORT),
        ] {
            assert_eq!(url, format!("http://{}", local(port)));
        }
    }
}
