//! The caller identity that crosses service boundaries.
//!
//! The gateway verifies the user's token, then signs the verified caller
//! (partner, user, roles) into a short-lived internal token bound to the one
//! RPC path it forwards to, in the `x-csp-identity` header. Services calling
//! each other sign their own service identity the same way. Every backend
//! verifies the header in [`IdentityLayer`] and refuses calls without a valid
//! one with UNAUTHENTICATED, then checks the contract's rules for the path
//! ([`Policy`]): a user needs one of the RPC's roles, a service must be one of
//! its declared callers; anyone else gets PERMISSION_DENIED. Handlers read
//! the [`Caller`] from the request.
//!
//! Identities are EdDSA (Ed25519) JWTs. Each service signs with its own
//! private key ([`keys::SigningKey`]); every service holds only the public
//! keys ([`keys::TrustedKeys`]), and only the gateway's key may sign a user's
//! identity, so a compromised backend can speak only as itself. A token lives
//! at most 60 s whatever it claims.

pub mod keys;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::access::Policy;
use crate::config::Secret;
use crate::ids::PartnerId;
use crate::roles::{Role, RoleSet};
use crate::service_name::ServiceName;
use keys::{KEY_VARIABLE, SigningKey, TRUST_VARIABLE, TrustedKeys};

/// The metadata key of the internal identity token.
pub const IDENTITY_HEADER: &str = "x-csp-identity";
/// The metadata key of the request id, set by the gateway and echoed back.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

const AUDIENCE: &str = "csp-internal";
/// The longest an identity lives, whatever its claims say (plus
/// `LEEWAY_SECS` for clock skew).
pub const LIFETIME_SECS: u64 = 60;
/// How long a signer reuses an identity it minted for the same caller and
/// path, so a busy path is not signed on every call; every reused identity
/// still has at least `LIFETIME_SECS - REUSE_SECS` to live.
const REUSE_SECS: u64 = 20;
/// Clock skew tolerated between services.
const LEEWAY_SECS: u64 = 5;
/// Minted and verified identities kept; the caches start over when full.
const CACHE_ENTRIES: usize = 4096;

/// A partner's user, as verified by the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCaller {
    /// The partner the user acts for.
    pub partner_id: PartnerId,
    /// The user's id (token subject).
    pub user_id: String,
    /// The user's display name.
    pub display_name: String,
    /// The user's roles.
    pub roles: RoleSet,
}

/// Who is calling a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A partner's user, through the gateway.
    User(UserCaller),
    /// Another csp service, by the key that signed its identity.
    Service(ServiceName),
}

impl Caller {
    /// The caller as found in a request's extensions, put there by
    /// [`IdentityLayer`].
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
        request
            .extensions()
            .get::<Caller>()
            .ok_or_else(|| Status::unauthenticated("the call carries no verified caller identity"))
    }

    /// The user calling, or PERMISSION_DENIED when a service calls a user RPC.
    pub fn user_of<T>(request: &tonic::Request<T>) -> Result<&UserCaller, Status> {
        match Caller::of(request)? {
            Caller::User(user) => Ok(user),
            Caller::Service(name) => Err(Status::permission_denied(format!(
                "this RPC acts for a partner's user; service {name} cannot call it"
            ))),
        }
    }

    /// The service calling, or PERMISSION_DENIED when a user calls an
    /// internal RPC.
    pub fn service_of<T>(request: &tonic::Request<T>) -> Result<ServiceName, Status> {
        match Caller::of(request)? {
            Caller::Service(name) => Ok(*name),
            Caller::User(_) => Err(Status::permission_denied(
                "this RPC is for csp services only",
            )),
        }
    }
}

/// How a service's identity keys are configured. Every service binary takes
/// these options.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct IdentityArgs {
    /// This service's private identity key (32 bytes in base64url), from
    /// `csp keys generate`. Required unless --dev.
    #[arg(long, env = "CSP_IDENTITY_KEY", hide_env_values = true)]
    pub identity_key: Option<Secret>,
    /// The public identity keys of the csp services (`SERVICE:KEY`,
    /// comma-separated), from `csp keys generate`; the same everywhere.
    /// Required unless --dev.
    #[arg(long, env = "CSP_IDENTITY_TRUST")]
    pub identity_trust: Option<String>,
    /// Development mode: keys and secrets that are not set take public
    /// development values, and those values are accepted. Never in
    /// production; `csp up` implies it.
    #[arg(long, env = "CSP_DEV")]
    pub dev: bool,
}

/// One service's identity: the key it signs with and the keys and rules it
/// verifies callers with.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Signs this service's calls (and, in the gateway, users' identities).
    pub signer: Arc<Signer>,
    /// Verifies and authorizes callers.
    pub verifier: Arc<Verifier>,
}

impl IdentityArgs {
    /// Development keys for every service (`csp up`, tests).
    pub fn development() -> Self {
        Self {
            identity_key: None,
            identity_trust: None,
            dev: true,
        }
    }

    /// The identity of `service`: refuses to start without keys (naming the
    /// variable), and with development keys unless `--dev`.
    pub fn resolve(&self, service: ServiceName) -> anyhow::Result<Identity> {
        let key = match &self.identity_key {
            Some(secret) => SigningKey::parse(service, secret).map_err(anyhow::Error::msg)?,
            None if self.dev => SigningKey::development(service),
            None => anyhow::bail!(
                "{KEY_VARIABLE} is not set: the {service} service needs its own identity key \
                 (run `csp keys generate`), or --dev for development"
            ),
        };
        if key.is_development() && !self.dev {
            anyhow::bail!(
                "{KEY_VARIABLE} holds the {service} service's public development key; \
                 set a key from `csp keys generate`, or pass --dev for development"
            );
        }
        let trusted = match &self.identity_trust {
            Some(text) => TrustedKeys::parse(text).map_err(anyhow::Error::msg)?,
            None if self.dev => TrustedKeys::development(),
            None => anyhow::bail!(
                "{TRUST_VARIABLE} is not set: list every service's public identity key \
                 (run `csp keys generate`), or pass --dev for development"
            ),
        };
        let development = trusted.development_services();
        if !development.is_empty() && !self.dev {
            let names: Vec<&str> = development.iter().map(|s| s.as_str()).collect();
            anyhow::bail!(
                "{TRUST_VARIABLE} trusts the public development key of {}; \
                 list keys from `csp keys generate`, or pass --dev for development",
                names.join(", ")
            );
        }
        anyhow::ensure!(
            trusted.trusts(&key),
            "{TRUST_VARIABLE} does not list the {service} service's own public key \
             ({KEY_VARIABLE} and {TRUST_VARIABLE} come from different `csp keys generate` runs?)"
        );
        let policy = Policy::from_descriptor_set(csp_proto::FILE_DESCRIPTOR_SET)?;
        Ok(Identity {
            signer: Arc::new(Signer::new(key)),
            verifier: Arc::new(Verifier::new(trusted, policy)),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The service whose key signed it.
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
    /// The RPC path the token is good for.
    mth: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<PartnerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
}

/// Signs identities as one service, reusing a fresh one for the same caller
/// and path.
pub struct Signer {
    key: SigningKey,
    header: Header,
    minted: Mutex<HashMap<MintedFor, Minted>>,
}

/// An identity minted, as text and as a header value (made once, so a
/// reused identity costs no copy), and when.
#[derive(Clone)]
struct Minted {
    token: Arc<str>,
    header: http::HeaderValue,
    at: u64,
}

/// What a minted identity is for: the path, and the user (none for the
/// service's own identity).
#[derive(Clone, PartialEq, Eq, Hash)]
struct MintedFor {
    path: String,
    user: Option<(PartnerId, RoleSet, String, String)>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({:?})", self.key)
    }
}

impl Signer {
    /// Signs with `key`.
    pub fn new(key: SigningKey) -> Self {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid().to_owned());
        Self {
            key,
            header,
            minted: Mutex::new(HashMap::new()),
        }
    }

    /// The service this signer speaks for.
    pub fn service(&self) -> ServiceName {
        self.key.service()
    }

    /// Signs a user's identity for one call to `path`. Only the gateway may.
    pub fn mint_for_user(&self, user: &UserCaller, path: &str) -> Result<Arc<str>, Status> {
        self.mint_user(user, path).map(|minted| minted.token)
    }

    /// [`Signer::mint_for_user`] as the value of the identity header.
    pub fn user_header(&self, user: &UserCaller, path: &str) -> Result<http::HeaderValue, Status> {
        self.mint_user(user, path).map(|minted| minted.header)
    }

    fn mint_user(&self, user: &UserCaller, path: &str) -> Result<Minted, Status> {
        if self.service() != ServiceName::Gateway {
            return Err(Status::internal(format!(
                "only the gateway signs users' identities, not the {} service",
                self.service()
            )));
        }
        let minted_for = MintedFor {
            path: path.to_owned(),
            user: Some((
                user.partner_id,
                user.roles,
                user.user_id.clone(),
                user.display_name.clone(),
            )),
        };
        self.mint_cached(minted_for, |now| Claims {
            iss: self.service().as_str().to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            exp: now + LIFETIME_SECS,
            mth: path.to_owned(),
            pid: Some(user.partner_id),
            sub: Some(user.user_id.clone()),
            name: Some(user.display_name.clone()),
            roles: user.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        })
    }

    /// Signs this service's identity for one call to `path`.
    pub fn mint_for_service(&self, path: &str) -> Result<Arc<str>, Status> {
        self.mint_service(path).map(|minted| minted.token)
    }

    fn mint_service(&self, path: &str) -> Result<Minted, Status> {
        let minted_for = MintedFor {
            path: path.to_owned(),
            user: None,
        };
        self.mint_cached(minted_for, |now| Claims {
            iss: self.service().as_str().to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            exp: now + LIFETIME_SECS,
            mth: path.to_owned(),
            pid: None,
            sub: None,
            name: None,
            roles: Vec::new(),
        })
    }

    fn mint_cached(
        &self,
        cache_key: MintedFor,
        claims: impl FnOnce(u64) -> Claims,
    ) -> Result<Minted, Status> {
        let now = now_secs();
        if let Some(minted) = lock(&self.minted).get(&cache_key)
            && now.saturating_sub(minted.at) < REUSE_SECS
            && minted.at <= now
        {
            return Ok(minted.clone());
        }
        let token = jsonwebtoken::encode(&self.header, &claims(now), self.key.encoding()).map_err(
            |error| Status::internal(format!("cannot sign the caller identity: {error}")),
        )?;
        let header = http::HeaderValue::from_str(&token)
            .map_err(|_| Status::internal("the signed identity is not valid metadata"))?;
        let minted = Minted {
            token: token.into(),
            header,
            at: now,
        };
        let mut cache = lock(&self.minted);
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(cache_key, minted.clone());
        Ok(minted)
    }
}

/// Locks a cache, taking it over if a holder panicked (a cache holds
/// nothing a panic can leave half-written).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a call's identity was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No valid identity: UNAUTHENTICATED.
    Unauthenticated(String),
    /// A valid identity the RPC does not admit: PERMISSION_DENIED.
    Denied(String),
}

impl Refusal {
    fn status(&self) -> Status {
        match self {
            Refusal::Unauthenticated(message) => Status::new(Code::Unauthenticated, message),
            Refusal::Denied(message) => Status::new(Code::PermissionDenied, message),
        }
    }

    fn message(&self) -> &str {
        match self {
            Refusal::Unauthenticated(message) | Refusal::Denied(message) => message,
        }
    }
}

/// A verified identity kept for the calls that reuse it.
struct Verified {
    caller: Caller,
    path: Box<str>,
    exp: u64,
}

/// Verifies identities against the trusted keys and authorizes them by the
/// contract's rules.
pub struct Verifier {
    trusted: TrustedKeys,
    policy: Policy,
    validation: Validation,
    verified: Mutex<HashMap<Box<str>, Verified>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({:?})", self.trusted)
    }
}

impl Verifier {
    /// Trusts `trusted` and enforces `policy`.
    pub fn new(trusted: TrustedKeys, policy: Policy) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        Self {
            trusted,
            policy,
            validation,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies `token` for a call to `path` and checks that the caller may
    /// make it.
    pub fn check(&self, token: &str, path: &str) -> Result<Caller, Refusal> {
        let caller = self.verify(token, path).map_err(Refusal::Unauthenticated)?;
        self.authorize(&caller, path).map_err(Refusal::Denied)?;
        Ok(caller)
    }

    /// Verifies `token` for a call to `path`: signed by a trusted key, for
    /// this path, fresh, and naming a user only when the gateway signed it.
    pub fn verify(&self, token: &str, path: &str) -> Result<Caller, String> {
        let now = now_secs();
        if let Some(known) = lock(&self.verified).get(token)
            && known.exp + LEEWAY_SECS >= now
        {
            return if &*known.path == path {
                Ok(known.caller.clone())
            } else {
                Err(format!(
                    "the caller identity was issued for {}, not for {path}",
                    known.path
                ))
            };
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| "the caller identity is not a signed token".to_owned())?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.trusted.get(kid))
            .ok_or_else(|| {
                "the caller identity is signed with a key this service does not trust".to_owned()
            })?;
        let mut validation = self.validation.clone();
        validation.set_issuer(&[key.service.as_str()]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|error| format!("the caller identity is not valid: {error}"))?
            .claims;
        if claims.iat > now + LEEWAY_SECS {
            return Err("the caller identity was issued in the future".to_owned());
        }
        if claims.exp > claims.iat + LIFETIME_SECS {
            return Err(format!(
                "the caller identity claims to live longer than {LIFETIME_SECS} s"
            ));
        }
        if claims.mth != path {
            return Err(format!(
                "the caller identity was issued for {}, not for {path}",
                claims.mth
            ));
        }
        let caller = match (claims.pid, claims.sub) {
            (None, None) => Caller::Service(key.service),
            (Some(partner_id), Some(user_id)) if key.service == ServiceName::Gateway => {
                Caller::User(UserCaller {
                    partner_id,
                    user_id,
                    display_name: claims.name.unwrap_or_default(),
                    roles: claims.roles.iter().filter_map(|r| Role::parse(r)).collect(),
                })
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "only the gateway signs users' identities; the {} service cannot",
                    key.service
                ));
            }
            _ => return Err("the caller identity names a partner or a user, not both".to_owned()),
        };
        let mut verified = lock(&self.verified);
        if verified.len() >= CACHE_ENTRIES {
            verified.clear();
        }
        verified.insert(
            token.into(),
            Verified {
                caller: caller.clone(),
                path: path.into(),
                exp: claims.exp,
            },
        );
        Ok(caller)
    }

    /// Whether `caller` may call `path`, by the contract: a user needs one of
    /// a public RPC's roles; a service must be one of the RPC's callers.
    pub fn authorize(&self, caller: &Caller, path: &str) -> Result<(), String> {
        let Some(rules) = self.policy.get(path) else {
            return Err(format!("{path} is not an RPC of any csp service"));
        };
        match caller {
            Caller::User(user) if rules.public => {
                if user.roles.intersects(rules.roles) {
                    Ok(())
                } else {
                    Err(format!(
                        "this RPC needs one of the roles {}; the caller has {}",
                        rules.roles.names().join(", "),
                        if user.roles.is_empty() {
                            "none".to_owned()
                        } else {
                            user.roles.names().join(", ")
                        }
                    ))
                }
            }
            Caller::User(_) => Err("this RPC is for csp services only".to_owned()),
            Caller::Service(service) if rules.callers.contains(*service) => Ok(()),
            Caller::Service(service) => Err(format!(
                "the {service} service may not call this RPC{}",
                if rules.callers.is_empty() {
                    String::new()
                } else {
                    format!(" (its callers: {})", rules.callers.names().join(", "))
                }
            )),
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Paths any caller may use without an identity: health checks (probes) and
/// reflection (grpcurl).
fn is_open_path(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

/// A tower layer for backend servers: verifies `x-csp-identity` against the
/// called path, puts the [`Caller`] into the request's extensions, and
/// answers UNAUTHENTICATED when it is missing or invalid and
/// PERMISSION_DENIED when the contract does not let the caller call the
/// path. Health and reflection stay open. Each call runs in a span with its
/// method and request id.
#[derive(Clone, Debug)]
pub struct IdentityLayer {
    verifier: Arc<Verifier>,
}

impl IdentityLayer {
    /// A layer checking callers with `verifier`.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for IdentityLayer {
    type Service = RequireIdentity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireIdentity {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service [`IdentityLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct RequireIdentity<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for RequireIdentity<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Take the ready service and leave a fresh clone (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        if is_open_path(&path) {
            return Box::pin(inner.call(request));
        }
        // Calls from the gateway carry the caller's request id; calls between
        // services (outbox deliveries, the refund workflow) get one here, so
        // every line logged for a call has an id to find the others by.
        let request_id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|id| !id.is_empty())
            .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
        let span = tracing::info_span!("rpc", method = %path, request_id = %request_id);
        let token = request
            .headers()
            .get(IDENTITY_HEADER)
            .and_then(|v| v.to_str().ok());
        let checked = match token {
            None => Err(Refusal::Unauthenticated(format!(
                "missing {IDENTITY_HEADER}: backends take calls only from the gateway and other csp services"
            ))),
            Some(token) => self.verifier.check(token, &path),
        };
        match checked {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(inner.call(request).instrument(span))
            }
            Err(refusal) => {
                span.in_scope(|| {
                    tracing::warn!(reason = %refusal.message(), "call refused by the identity check");
                });
                let status = refusal.status();
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// A client interceptor for service-to-service calls: signs this service's
/// identity for the called method.
#[derive(Clone, Debug)]
pub struct ServiceIdentity {
    signer: Arc<Signer>,
}

impl ServiceIdentity {
    /// Calls will be signed by `signer`, as its service.
    pub fn new(signer: Arc<Signer>) -> Self {
        Self { signer }
    }
}

impl tonic::service::Interceptor for ServiceIdentity {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let method = request
            .extensions()
            .get::<tonic::GrpcMethod>()
            .ok_or_else(|| Status::internal("the client call does not name its gRPC method"))?;
        let path = format!("/{}/{}", method.service(), method.method());
        let token = self.signer.mint_for_service(&path)?;
        let value = token
            .parse()
            .map_err(|_| Status::internal("the signed identity is not valid metadata"))?;
        request.metadata_mut().insert(IDENTITY_HEADER, value);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST_MARKETS: &str = "/csp.catalog.v1.CatalogService/ListMarkets";
    const QUOTE: &str = "/csp.catalog.v1.CatalogInternalService/QuoteSkus";

    fn identity(service: ServiceName) -> Identity {
        IdentityArgs::development().resolve(service).unwrap()
    }

    fn user(roles: &[Role]) -> UserCaller {
        UserCaller {
            partner_id: PartnerId::new(),
            user_id: "ada".to_owned(),
            display_name: "Ada".to_owned(),
            roles: roles.iter().copied().collect(),
        }
    }

    fn sign(key: &SigningKey, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid().to_owned());
        jsonwebtoken::encode(&header, claims, key.encoding()).unwrap()
    }

    fn claims(iss: ServiceName, path: &str, iat: u64, exp: u64) -> Claims {
        Claims {
            iss: iss.as_str().to_owned(),
            aud: AUDIENCE.to_owned(),
            iat,
            exp,
            mth: path.to_owned(),
            pid: None,
            sub: None,
            name: None,
            roles: Vec::new(),
        }
    }

    #[test]
    fn a_user_identity_verifies_for_its_path_only_and_is_reused() {
        let gateway = identity(ServiceName::Gateway);
        let catalog = identity(ServiceName::Catalog);
        let ada = user(&[Role::AdminAgent]);
        let token = gateway.signer.mint_for_user(&ada, LIST_MARKETS).unwrap();
        assert_eq!(
            catalog.verifier.check(&token, LIST_MARKETS),
            Ok(Caller::User(ada.clone()))
        );
        // Served from the cache the second time, with the same answers.
        assert_eq!(
            catalog.verifier.check(&token, LIST_MARKETS),
            Ok(Caller::User(ada.clone()))
        );
        let elsewhere = catalog.verifier.verify(&token, QUOTE).unwrap_err();
        assert!(elsewhere.contains("issued for"), "{elsewhere}");
        assert_eq!(
            gateway.signer.mint_for_user(&ada, LIST_MARKETS).unwrap(),
            token,
            "a fresh identity for the same user and path is reused"
        );
        assert_ne!(
            gateway
                .signer
                .mint_for_user(&user(&[Role::SalesAgent]), LIST_MARKETS)
                .unwrap(),
            token
        );
    }

    #[test]
    fn only_the_gateway_signs_users() {
        let ordering = SigningKey::development(ServiceName::Ordering);
        let signer = Signer::new(SigningKey::development(ServiceName::Ordering));
        assert!(
            signer
                .mint_for_user(&user(&[Role::AdminAgent]), LIST_MARKETS)
                .is_err()
        );
        // A forged user identity under a backend's own (trusted) key.
        let now = now_secs();
        let mut forged = claims(ServiceName::Ordering, LIST_MARKETS, now, now + 30);
        forged.pid = Some(PartnerId::new());
        forged.sub = Some("mallory".to_owned());
        forged.roles = vec!["admin_agent".to_owned()];
        let refused = identity(ServiceName::Catalog)
            .verifier
            .check(&sign(&ordering, &forged), LIST_MARKETS)
            .unwrap_err();
        assert!(
            matches!(&refused, Refusal::Unauthenticated(m) if m.contains("only the gateway")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_key_cannot_speak_for_another_service() {
        let ordering = SigningKey::development(ServiceName::Ordering);
        let now = now_secs();
        // Ordering's key, claiming to be licensing.
        let token = sign(
            &ordering,
            &claims(ServiceName::Licensing, QUOTE, now, now + 30),
        );
        let refused = identity(ServiceName::Catalog)
            .verifier
            .verify(&token, QUOTE);
        assert!(refused.is_err(), "{refused:?}");
        // An untrusted key.
        let stranger = SigningKey::generate(ServiceName::Ordering).unwrap();
        let token = sign(
            &stranger,
            &claims(ServiceName::Ordering, QUOTE, now, now + 30),
        );
        let refused = identity(ServiceName::Catalog)
            .verifier
            .verify(&token, QUOTE)
            .unwrap_err();
        assert!(refused.contains("does not trust"), "{refused}");
    }

    #[test]
    fn lifetimes_are_capped_whatever_the_token_claims() {
        let ordering = SigningKey::development(ServiceName::Ordering);
        let verifier = identity(ServiceName::Catalog).verifier;
        let now = now_secs();
        let ten_years = sign(
            &ordering,
            &claims(ServiceName::Ordering, QUOTE, now, now + 10 * 365 * 86_400),
        );
        let refused = verifier.verify(&ten_years, QUOTE).unwrap_err();
        assert!(refused.contains("longer than 60 s"), "{refused}");
        let future = sign(
            &ordering,
            &claims(ServiceName::Ordering, QUOTE, now + 3600, now + 3630),
        );
        let refused = verifier.verify(&future, QUOTE).unwrap_err();
        assert!(refused.contains("in the future"), "{refused}");
        let expired = sign(
            &ordering,
            &claims(ServiceName::Ordering, QUOTE, now - 100, now - 40),
        );
        assert!(verifier.verify(&expired, QUOTE).is_err());
        let fine = sign(
            &ordering,
            &claims(ServiceName::Ordering, QUOTE, now, now + 60),
        );
        assert_eq!(
            verifier.verify(&fine, QUOTE),
            Ok(Caller::Service(ServiceName::Ordering))
        );
    }

    #[test]
    fn the_contract_decides_who_may_call() {
        let catalog = identity(ServiceName::Catalog).verifier;
        let ordering = Caller::Service(ServiceName::Ordering);
        let support = Caller::Service(ServiceName::Support);
        assert_eq!(catalog.authorize(&ordering, QUOTE), Ok(()));
        let refused = catalog.authorize(&support, QUOTE).unwrap_err();
        assert!(refused.contains("support service may not"), "{refused}");
        assert!(refused.contains("its callers: ordering"), "{refused}");
        // A public RPC a service is declared for, and one it is not.
        assert_eq!(catalog.authorize(&ordering, LIST_MARKETS), Ok(()));
        let products = "/csp.catalog.v1.CatalogService/ListProducts";
        assert!(catalog.authorize(&ordering, products).is_err());
        // Users: one of the roles, and never an internal RPC.
        assert_eq!(
            catalog.authorize(&Caller::User(user(&[Role::HelpdeskAgent])), products),
            Ok(())
        );
        let roleless = catalog
            .authorize(&Caller::User(user(&[])), products)
            .unwrap_err();
        assert!(roleless.contains("the caller has none"), "{roleless}");
        assert!(
            catalog
                .authorize(&Caller::User(user(&[Role::AdminAgent])), QUOTE)
                .is_err()
        );
        assert!(catalog.authorize(&ordering, "/x.Y/Z").is_err());
    }

    #[test]
    fn missing_and_development_keys_are_refused_outside_development() {
        let production = IdentityArgs::default();
        let error = production
            .resolve(ServiceName::Audit)
            .unwrap_err()
            .to_string();
        assert!(error.contains(KEY_VARIABLE), "{error}");

        let dev_key = IdentityArgs {
            identity_key: Some(SigningKey::development(ServiceName::Audit).to_config()),
            identity_trust: Some(TrustedKeys::development().to_config()),
            dev: false,
        };
        let error = dev_key.resolve(ServiceName::Audit).unwrap_err().to_string();
        assert!(error.contains("development key"), "{error}");

        let fresh = SigningKey::generate(ServiceName::Audit).unwrap();
        let no_trust = IdentityArgs {
            identity_key: Some(fresh.to_config()),
            identity_trust: None,
            dev: false,
        };
        let error = no_trust
            .resolve(ServiceName::Audit)
            .unwrap_err()
            .to_string();
        assert!(error.contains(TRUST_VARIABLE), "{error}");

        let dev_trust = IdentityArgs {
            identity_key: Some(fresh.to_config()),
            identity_trust: Some(format!(
                "{},{}",
                fresh.trust_entry(),
                SigningKey::development(ServiceName::Gateway).trust_entry()
            )),
            dev: false,
        };
        let error = dev_trust
            .resolve(ServiceName::Audit)
            .unwrap_err()
            .to_string();
        assert!(error.contains("development key of gateway"), "{error}");

        let other = SigningKey::generate(ServiceName::Audit).unwrap();
        let mismatched = IdentityArgs {
            identity_key: Some(fresh.to_config()),
            identity_trust: Some(other.trust_entry()),
            dev: false,
        };
        let error = mismatched
            .resolve(ServiceName::Audit)
            .unwrap_err()
            .to_string();
        assert!(error.contains("own public key"), "{error}");

        let good = IdentityArgs {
            identity_key: Some(fresh.to_config()),
            identity_trust: Some(fresh.trust_entry()),
            dev: false,
        };
        assert!(good.resolve(ServiceName::Audit).is_ok());
    }
}
