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

/// Any text reads as a secret; what each secret must be is checked where it
/// is used ([`required_secret`], the key parsers), so a refusal never
/// repeats the value (as a parse error on the command line would).
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// The development value of the HS256 secret of user tokens (`csp up`,
/// `csp token`).
pub const DEV_JWT_SECRET: &str = "csp-development-jwt-secret-change-me";

/// A fresh random secret: 32 bytes in base64url (43 characters).
pub fn generate_secret() -> anyhow::Result<Secret> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(Secret::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ))
}

/// The shortest secret accepted outside development.
pub const MIN_SECRET_CHARS: usize = 32;

/// A required secret: the configured one, or the public `development` value
/// with `--dev`. Outside development a missing secret, the development value
/// or one shorter than [`MIN_SECRET_CHARS`] stops the service with a message
/// naming `variable`, never the value.
pub fn required_secret(
    variable: &str,
    configured: Option<&Secret>,
    development: &str,
    dev: bool,
) -> anyhow::Result<Secret> {
    match configured {
        None if dev => Ok(Secret::new(development)),
        None => anyhow::bail!(
            "{variable} is not set: set it to a fresh secret (`csp keys generate` prints one), \
             or pass --dev for development"
        ),
        Some(secret) if dev => Ok(secret.clone()),
        Some(secret) if secret.expose() == development => anyhow::bail!(
            "{variable} holds the public development value; set a fresh secret \
             (`csp keys generate` prints one), or pass --dev for development"
        ),
        Some(secret) if secret.expose().chars().count() < MIN_SECRET_CHARS => anyhow::bail!(
            "{variable} is shorter than {MIN_SECRET_CHARS} characters; set a fresh secret \
             (`csp keys generate` prints one)"
        ),
        Some(secret) => Ok(secret.clone()),
    }
}

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
    /// This service's identity key, the keys it trusts, and development mode.
    #[command(flatten)]
    pub identity: crate::identity::IdentityArgs,
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
    /// The gateway's public download listener (links, local files).
    pub const DOWNLOADS: u16 = 8080;
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
    fn required_secrets_refuse_missing_development_and_short_values() {
        let var = "CSP_LICENSING_KEY";
        let dev = "csp-development-licensing-key-change-me";
        let missing = required_secret(var, None, dev, false)
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains(var) && missing.contains("not set"),
            "{missing}"
        );
        let public = required_secret(var, Some(&Secret::new(dev)), dev, false)
            .unwrap_err()
            .to_string();
        assert!(public.contains("development value"), "{public}");
        let short = required_secret(var, Some(&Secret::new("0123456789abcdef")), dev, false)
            .unwrap_err()
            .to_string();
        assert!(short.contains("shorter than 32"), "{short}");
        assert!(!short.contains("0123456789abcdef"), "{short}");
        assert_eq!(
            required_secret(var, None, dev, true).unwrap().expose(),
            dev,
            "--dev takes the development value"
        );
        let fresh = Secret::new("a-fresh-secret-of-forty-characters-000000");
        assert_eq!(
            required_secret(var, Some(&fresh), dev, false).unwrap(),
            fresh
        );
    }

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
