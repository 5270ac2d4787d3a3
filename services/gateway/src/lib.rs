//! The gateway: the only public door of csp.
//!
//! For each call it authenticates the bearer token, looks the RPC up in the
//! routing table built at start-up from the descriptor set (the roles each
//! public RPC declares with `option (csp.auth.v1.access)`), refuses callers
//! without a permitted role, then forwards the call, undecoded, over one
//! long-lived HTTP/2 channel to the backend. The backend receives the
//! verified caller as a signed identity bound to the method, the request id,
//! and the caller's deadline (`grpc-timeout`, passed through).
//!
//! Health and reflection of the public API are served by the gateway itself.

pub mod auth;
pub mod balance;
pub mod denied;
pub mod downloads;
pub mod health;
pub mod limits;
pub mod listener;
pub mod oidc;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use csp_kit::access::{self, PublicMethod};
use csp_kit::config::{
    self as kit_config, AuditUrl, CatalogUrl, DEV_JWT_SECRET, LicensingUrl, OrderingUrl, Secret,
    SupportUrl,
};
use csp_kit::identity::{IDENTITY_HEADER, IdentityArgs, REQUEST_ID_HEADER, Signer, UserCaller};
use csp_kit::ids::PartnerId;
use csp_kit::roles::RoleSet;
use csp_kit::server::{self, ReflectionScope};
use csp_kit::service_name::ServiceName;
use csp_kit::shutdown::Shutdown;
use http::{HeaderName, HeaderValue};
use tokio::net::TcpListener;
use tonic::Status;
use tonic::body::Body;
use tonic::service::Routes;

use crate::auth::{Authenticators, Hs256Verifier, TokenVerifier};
use crate::balance::{Forwarder, Replicas};

/// Where the download listener listens by default.
pub const DEFAULT_HTTP_ADDR: SocketAddr = kit_config::local(kit_config::ports::DOWNLOADS);
/// Where the gateway listens by default.
pub const DEFAULT_ADDR: SocketAddr = kit_config::local(kit_config::ports::GATEWAY);

/// The deadline of calls whose caller set none, in seconds.
pub const DEFAULT_DEADLINE_SECS: u64 = 30;

/// The gateway's configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Address to serve the public gRPC API on [default: 127.0.0.1:50051].
    #[arg(long, env = "CSP_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address to serve download links (HTTP) on [default: 127.0.0.1:8080].
    #[arg(long, env = "CSP_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// HS256 secret of development user tokens (`csp token`); with --dev
    /// only [default with --dev: the development secret].
    #[arg(long, env = "CSP_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// The OpenID Connect providers users sign in with.
    #[command(flatten)]
    pub oidc: oidc::OidcArgs,
    /// The gateway's identity key (it alone signs users' identities), the
    /// keys it trusts, and development mode.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Address to serve Prometheus metrics on (`GET /metrics`, HTTP/1.1)
    /// [default: no metrics listener].
    #[arg(long, env = "CSP_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The deadline, in seconds, given to a call whose caller set none
    /// (`grpc-timeout`), so no call can hold a backend forever.
    #[arg(long, env = "CSP_DEFAULT_DEADLINE", default_value_t = DEFAULT_DEADLINE_SECS)]
    pub default_deadline: u64,
    /// Per-user and per-partner limits.
    #[command(flatten)]
    pub limits: limits::LimitArgs,
    /// The download listener's connection cap and idle timeout.
    #[command(flatten)]
    pub http_limits: listener::HttpLimits,
    /// Proxies in front of the download listener (IP addresses or CIDR
    /// ranges, comma-separated, such as an ingress's pod range) whose
    /// `X-Forwarded-For` names the real client of a download; from anyone
    /// else the header is ignored [default: none: the TCP peer is the
    /// client].
    #[arg(long, env = "CSP_TRUSTED_PROXIES", value_delimiter = ',', value_parser = downloads::parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The content store: with a file:// store (CSP_CONTENT_STORE and
    /// CSP_CONTENT_SIGNING_KEY, as licensing has them) the download listener
    /// serves its files behind licensing's signed URLs; cloud stores serve
    /// their own.
    #[command(flatten)]
    pub content: csp_content::ContentArgs,
    /// Where each backend serves gRPC.
    #[command(flatten)]
    pub backends: Backends,
}

/// The backends' gRPC URLs (the options every caller shares). Each may be
/// several comma-separated URLs; every address they resolve to is a replica
/// the gateway spreads calls over.
#[derive(clap::Args, Clone, Debug)]
pub struct Backends {
    /// The catalog service.
    #[command(flatten)]
    pub catalog: CatalogUrl,
    /// The ordering service.
    #[command(flatten)]
    pub ordering: OrderingUrl,
    /// The licensing service.
    #[command(flatten)]
    pub licensing: LicensingUrl,
    /// The audit service.
    #[command(flatten)]
    pub audit: AuditUrl,
    /// The support service.
    #[command(flatten)]
    pub support: SupportUrl,
}

impl Backends {
    /// The backends at these URLs.
    pub fn at(
        catalog: String,
        ordering: String,
        licensing: String,
        audit: String,
        support: String,
    ) -> Self {
        Self {
            catalog: CatalogUrl {
                catalog_url: catalog,
            },
            ordering: OrderingUrl {
                ordering_url: ordering,
            },
            licensing: LicensingUrl {
                licensing_url: licensing,
            },
            audit: AuditUrl { audit_url: audit },
            support: SupportUrl {
                support_url: support,
            },
        }
    }

    /// The backend serving a proto package, by name and URL.
    fn for_package(&self, package: &str) -> Option<(&'static str, &str)> {
        match package {
            "csp.catalog.v1" => Some(("catalog", &self.catalog.catalog_url)),
            "csp.ordering.v1" => Some(("ordering", &self.ordering.ordering_url)),
            "csp.licensing.v1" => Some(("licensing", &self.licensing.licensing_url)),
            "csp.audit.v1" => Some(("audit", &self.audit.audit_url)),
            "csp.support.v1" => Some(("support", &self.support.support_url)),
            _ => None,
        }
    }
}

/// One routed public RPC.
struct Route {
    method: PublicMethod,
    /// The backend's replicas.
    replicas: Arc<Replicas>,
}

/// The routing table and the keys.
struct Gateway {
    routes: HashMap<String, Route>,
    denied: denied::DeniedCalls,
    forwarder: Forwarder,
    verifier: auth::CachedVerifier,
    identity: Arc<Signer>,
    /// `grpc-timeout` for calls without one.
    default_deadline: HeaderValue,
    /// How long the first bytes of a request's message may take to come.
    first_message_wait: std::time::Duration,
    /// Per-user and per-partner limits.
    limits: Arc<limits::Limits>,
}

/// Builds the routing table: every public RPC of the descriptor set, with its
/// roles and its backend's replicas (resolved once per backend).
async fn build_routes(
    backends: &Backends,
) -> anyhow::Result<(HashMap<String, Route>, Vec<Arc<Replicas>>)> {
    let mut replicas: HashMap<&'static str, Arc<Replicas>> = HashMap::new();
    let mut routes = HashMap::new();
    for method in access::public_methods(csp_proto::FILE_DESCRIPTOR_SET)? {
        let (backend, urls) = backends
            .for_package(&method.package)
            .with_context(|| format!("no backend is configured for package {}", method.package))?;
        let backend_replicas = match replicas.get(backend) {
            Some(known) => known.clone(),
            None => {
                let resolved = Replicas::resolve(backend, urls).await?;
                replicas.insert(backend, resolved.clone());
                resolved
            }
        };
        if !method.declares_access {
            tracing::warn!(method = %method.path, "public RPC declares no roles; everyone is denied");
        }
        routes.insert(
            method.path.clone(),
            Route {
                method,
                replicas: backend_replicas,
            },
        );
    }
    Ok((routes, replicas.into_values().collect()))
}

/// Serves the public gRPC API on `listener` and download links on `http`
/// until `shutdown` fires.
pub async fn run(
    config: Config,
    listener: TcpListener,
    http: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (routes, replicas) = build_routes(&config.backends).await?;
    let mut licensing = None;
    for backend in &replicas {
        if backend.name == "licensing" {
            licensing = Some(backend.clone());
        }
        tokio::spawn(backend.clone().refresh_until(shutdown.clone()));
    }
    let licensing = licensing.context("no route leads to licensing")?;
    let forwarder = Forwarder::new();
    let identity = config.identity.resolve(ServiceName::Gateway)?;
    let authenticators = authenticators(&config)?;
    let downloads = tokio::spawn(downloads::serve(
        http,
        forwarder.to(licensing),
        identity.signer.clone(),
        config.trusted_proxies.clone(),
        csp_content::LocalFiles::open(&config.content, config.identity.dev)?,
        config.http_limits,
        shutdown.clone(),
    ));
    let grpc = serve_grpc(
        config,
        Authentication {
            signer: identity.signer,
            verifier: Box::new(authenticators),
        },
        routes,
        replicas,
        forwarder,
        listener,
        shutdown,
    )
    .await;
    let downloads = downloads
        .await
        .map_err(anyhow::Error::from)
        .and_then(|served| served);
    grpc.and(downloads)
}

/// The gateway's token verifiers: the OpenID Connect providers (required
/// unless --dev), and with --dev HS256 development tokens.
fn authenticators(config: &Config) -> anyhow::Result<Authenticators> {
    let oidc = oidc::OidcVerifier::new(&config.oidc)?;
    let development = if config.identity.dev {
        Some(Hs256Verifier::new(&kit_config::required_secret(
            "CSP_JWT_SECRET",
            config.jwt_secret.as_ref(),
            DEV_JWT_SECRET,
            true,
        )?))
    } else {
        anyhow::ensure!(
            config.jwt_secret.is_none(),
            "CSP_JWT_SECRET is set, but HS256 development tokens are accepted only with --dev; \
             sign users in through an OpenID Connect provider (CSP_OIDC_ISSUERS)"
        );
        anyhow::ensure!(
            oidc.is_some(),
            "CSP_OIDC_ISSUERS is not set: name the OpenID Connect providers users sign in with \
             (and CSP_OIDC_AUDIENCE), or pass --dev for development tokens"
        );
        None
    };
    if let Some(oidc) = &oidc {
        oidc.prefetch_in_background();
    }
    Ok(Authenticators { development, oidc })
}

/// How the gateway knows its callers and speaks for them.
struct Authentication {
    /// Signs users' identities and the gateway's own.
    signer: Arc<Signer>,
    /// Verifies users' bearer tokens.
    verifier: Box<dyn TokenVerifier>,
}

async fn serve_grpc(
    config: Config,
    authentication: Authentication,
    routes: HashMap<String, Route>,
    replicas: Vec<Arc<Replicas>>,
    forwarder: Forwarder,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let public = access::public_services(csp_proto::FILE_DESCRIPTOR_SET)?;
    let backends: Vec<health::Backend> = replicas
        .into_iter()
        .map(|replicas| health::Backend {
            name: replicas.name,
            services: public
                .iter()
                .filter(|service| {
                    service.rsplit_once('.').is_some_and(|(package, _)| {
                        config
                            .backends
                            .for_package(package)
                            .is_some_and(|(name, _)| name == replicas.name)
                    })
                })
                .cloned()
                .collect(),
            channel: forwarder.to(replicas),
        })
        .collect();
    let limits = Arc::new(
        limits::Limits::new(&config.limits)?.on_listener(&listener.local_addr()?.to_string()),
    );
    tokio::spawn(forget_quiet(limits.clone(), shutdown.clone()));
    let gateway = Arc::new(Gateway {
        routes,
        denied: denied::DeniedCalls::start(
            &config.backends.audit.audit_url,
            &authentication.signer,
            shutdown.clone(),
        )?,
        forwarder,
        verifier: auth::CachedVerifier::new(authentication.verifier),
        identity: authentication.signer,
        default_deadline: grpc_timeout(config.default_deadline)?,
        first_message_wait: std::time::Duration::from_secs(config.default_deadline),
        limits: limits.clone(),
    });
    let (health, routes) = server::base_routes(ReflectionScope::Only(public)).await?;
    // NOT_SERVING until every backend serves (health::watch).
    server::set_serving(&health, false).await;
    let proxy = tower::service_fn(move |request: http::Request<axum::body::Body>| {
        let gateway = gateway.clone();
        async move { Ok::<_, std::convert::Infallible>(gateway.forward(request).await) }
    });
    let routes = Routes::from(routes.into_axum_router().fallback_service(proxy));
    tracing::info!(service = "gateway", addr = %listener.local_addr()?, "serving");
    tokio::spawn(health::watch(health.clone(), backends, shutdown.clone()));
    server::serve("gateway", listener, routes, health, None, shutdown).await
}

impl Gateway {
    /// Authenticates, authorizes and forwards one call; every answer carries
    /// the request id.
    async fn forward(&self, request: http::Request<axum::body::Body>) -> http::Response<Body> {
        use tracing::Instrument as _;
        let request_id = request_id(request.headers().get(&REQUEST_ID));
        // Every line logged while the call is handled carries its request id
        // and method (in JSON: under "span").
        let span = tracing::info_span!(
            "rpc",
            method = %request.uri().path(),
            request_id = %String::from_utf8_lossy(request_id.as_bytes()),
        );
        self.forward_with_id(request, request_id)
            .instrument(span)
            .await
    }

    async fn forward_with_id(
        &self,
        request: http::Request<axum::body::Body>,
        request_id: HeaderValue,
    ) -> http::Response<Body> {
        let mut response = match self.admit(request, &request_id).await {
            // The permit counts the call as in flight until it is answered.
            Ok((route, request, partner, _in_flight)) => {
                self.pass_on(route, request, partner, &request_id).await
            }
            Err(status) => status.into_http(),
        };
        response.headers_mut().insert(REQUEST_ID, request_id);
        response
    }

    /// Sends an admitted call to its backend, once the size its request
    /// message declares is within the large-request limits (the permit is
    /// held until the backend has answered).
    async fn pass_on(
        &self,
        route: &Route,
        request: http::Request<axum::body::Body>,
        partner: PartnerId,
        request_id: &HeaderValue,
    ) -> http::Response<Body> {
        let (parts, body) = request.into_parts();
        let first = balance::first_message_length(body);
        let (body, declared) = match tokio::time::timeout(self.first_message_wait, first).await {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => {
                tracing::info!(%error, "the caller's request body ended early");
                return Status::cancelled("the request body could not be read").into_http();
            }
            Err(_) => {
                return Status::deadline_exceeded(format!(
                    "the request message did not start within {} s",
                    self.first_message_wait.as_secs()
                ))
                .into_http();
            }
        };
        // A client stream's size is not known from its first message: it
        // counts as a large call of the most an upload may hold.
        let declared = match declared.unwrap_or(0) {
            first if route.method.client_streaming => first.max(STREAMED_REQUEST_BYTES),
            first => first,
        };
        let _large = match self.limits.admit_large(partner, declared) {
            Ok(permit) => permit,
            Err(status) => {
                tracing::info!(
                    method = %parts.uri.path(),
                    request_id = ?request_id,
                    partner_id = %partner,
                    declared_bytes = declared,
                    reason = status.message(),
                    "call refused: over the large-request limit"
                );
                return status.into_http();
            }
        };
        let mut parts = parts;
        if _large.is_some() {
            // A large call holds a share of the budget: it may not hold it
            // past LARGE_DEADLINE, whatever deadline its caller asked for.
            cap_deadline(&mut parts.headers, LARGE_DEADLINE);
        }
        self.forwarder
            .send(&route.replicas, http::Request::from_parts(parts, body))
            .await
    }

    /// Decides whether a call goes through, and prepares it for the backend.
    async fn admit(
        &self,
        request: http::Request<axum::body::Body>,
        request_id: &HeaderValue,
    ) -> Result<
        (
            &Route,
            http::Request<axum::body::Body>,
            PartnerId,
            tokio::sync::OwnedSemaphorePermit,
        ),
        Status,
    > {
        let path = request.uri().path();
        let verified = match auth::bearer(request.headers().get(http::header::AUTHORIZATION)) {
            Ok(token) => self.verifier.verify(token).await,
            Err(error) => Err(error),
        };
        let user = verified.map_err(|error| {
            tracing::info!(method = %path, request_id = ?request_id, reason = %error, "call denied: not authenticated");
            error.status()
        })?;
        let in_flight = self.limits.admit(&user).inspect_err(|status| {
            tracing::info!(
                method = %path,
                request_id = ?request_id,
                partner_id = %user.partner_id,
                user_id = %user.user_id,
                reason = status.message(),
                "call refused: over a limit"
            );
        })?;
        let route = self.routes.get(path).ok_or_else(|| {
            Status::unimplemented(format!(
                "unknown method {path}: the gateway serves only the public csp APIs (list them with reflection)"
            ))
        })?;
        authorize(&route.method, &user).inspect_err(|status| {
            self.denied.report(&user, path, status.message());
            tracing::info!(
                method = %path,
                request_id = ?request_id,
                partner_id = %user.partner_id,
                user_id = %user.user_id,
                reason = status.message(),
                "call denied: no permitted role"
            );
        })?;
        let identity = self.identity.user_header(&user, path)?;

        let (mut parts, body) = request.into_parts();
        parts.headers.remove(http::header::AUTHORIZATION);
        parts.headers.insert(IDENTITY, identity);
        parts.headers.insert(REQUEST_ID, request_id.clone());
        if !parts.headers.contains_key(GRPC_TIMEOUT) {
            parts
                .headers
                .insert(GRPC_TIMEOUT, self.default_deadline.clone());
        }
        Ok((
            route,
            http::Request::from_parts(parts, body),
            user.partner_id,
            in_flight,
        ))
    }
}

/// Every minute, forgets the users and partners that have been quiet.
async fn forget_quiet(limits: Arc<limits::Limits>, shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.clone().wait() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(60)) => limits.forget_quiet(),
        }
    }
}

/// The gRPC deadline header.
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// The headers the gateway sets on every call, made once.
const IDENTITY: HeaderName = HeaderName::from_static(IDENTITY_HEADER);
const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// What a client-streaming call (an attachment upload) is counted as in the
/// large-request limits: the most one may send (10 MiB).
pub const STREAMED_REQUEST_BYTES: u32 = 10 * 1024 * 1024;

/// The longest deadline a large call (an upload) gets.
const LARGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Lowers the call's `grpc-timeout` to `cap` when it asks for more (or is
/// not one that parses).
fn cap_deadline(headers: &mut http::HeaderMap, cap: std::time::Duration) {
    let asked = headers
        .get(GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(csp_kit::server::parse_grpc_timeout);
    if asked.is_none_or(|asked| asked > cap)
        && let Ok(value) = HeaderValue::from_str(&format!("{}m", cap.as_millis()))
    {
        headers.insert(GRPC_TIMEOUT, value);
    }
}

/// A `grpc-timeout` value of `seconds` (at most 8 digits, as gRPC allows).
fn grpc_timeout(seconds: u64) -> anyhow::Result<HeaderValue> {
    anyhow::ensure!(
        (1..=99_999_999).contains(&seconds),
        "the default deadline must be 1 to 99999999 seconds, not {seconds}"
    );
    Ok(HeaderValue::from_str(&format!("{seconds}S"))?)
}

/// PERMISSION_DENIED naming the roles that would allow the call, unless the
/// user holds one of them.
fn authorize(method: &PublicMethod, user: &UserCaller) -> Result<(), Status> {
    if method.roles.intersects(user.roles) {
        return Ok(());
    }
    if method.roles.is_empty() {
        return Err(Status::permission_denied(format!(
            "no role may call {}: its contract declares no roles",
            method.path
        )));
    }
    Err(Status::permission_denied(format!(
        "{}/{} needs one of the roles {}; the caller has {}",
        method.service,
        method.method,
        method.roles.names().join(", "),
        describe_roles(user.roles)
    )))
}

fn describe_roles(roles: RoleSet) -> String {
    if roles.is_empty() {
        "no role".to_owned()
    } else {
        roles.names().join(", ")
    }
}

/// The caller's request id when it is a sane one, else a new UUID.
fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    given
        .filter(|v| {
            let bytes = v.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= 128
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"))
        })
}

/// Where the gateway listens when not configured.
pub fn listen_addr(config: &Config) -> SocketAddr {
    config.listen.unwrap_or(DEFAULT_ADDR)
}

/// Where the download listener listens when not configured.
pub fn http_listen_addr(config: &Config) -> SocketAddr {
    config.http_listen.unwrap_or(DEFAULT_HTTP_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_call_gets_at_most_the_large_deadline() {
        use std::time::Duration;
        assert_eq!(
            csp_kit::server::parse_grpc_timeout("30S"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            csp_kit::server::parse_grpc_timeout("2H"),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(
            csp_kit::server::parse_grpc_timeout("100m"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(csp_kit::server::parse_grpc_timeout("S"), None);
        assert_eq!(csp_kit::server::parse_grpc_timeout("123456789S"), None);
        assert_eq!(csp_kit::server::parse_grpc_timeout("5x"), None);
        let mut headers = http::HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("99999999S"));
        cap_deadline(&mut headers, LARGE_DEADLINE);
        assert_eq!(headers[GRPC_TIMEOUT], "60000m");
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("5S"));
        cap_deadline(&mut headers, LARGE_DEADLINE);
        assert_eq!(headers[GRPC_TIMEOUT], "5S", "a shorter deadline stays");
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let kept = request_id(Some(&HeaderValue::from_static("abc-123")));
        assert_eq!(kept, "abc-123");
        let made = request_id(Some(&HeaderValue::from_static("has space")));
        assert_ne!(made, "has space");
        assert_eq!(made.len(), 36);
        assert_eq!(request_id(None).len(), 36);
    }
}
