//! The caller identity that crosses service boundaries.
//!
//! The gateway verifies the user's token, then signs the verified caller
//! (partner, user, roles) into a short-lived internal token bound to the one
//! RPC path it forwards to, in the `x-csp-identity` header. Services calling
//! each other sign a service identity the same way. Every backend verifies the
//! header in [`IdentityLayer`] and refuses calls without a valid one with
//! UNAUTHENTICATED; handlers read the [`Caller`] from the request.
//!
//! The key is shared by the gateway and the backends (`CSP_INTERNAL_KEY`) and
//! never leaves them; callers outside cannot forge the header.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::Status;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::config::Secret;
use crate::ids::PartnerId;
use crate::roles::{Role, RoleSet};

/// The metadata key of the internal identity token.
pub const IDENTITY_HEADER: &str = "x-csp-identity";
/// The metadata key of the request id, set by the gateway and echoed back.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

const AUDIENCE: &str = "csp-internal";
/// Internal tokens live this long: they are minted per call.
const LIFETIME_SECS: u64 = 60;

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
    /// Another csp service, by name.
    Service(String),
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
    pub fn service_of<T>(request: &tonic::Request<T>) -> Result<&str, Status> {
        match Caller::of(request)? {
            Caller::Service(name) => Ok(name),
            Caller::User(_) => Err(Status::permission_denied(
                "this RPC is for csp services only",
            )),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    aud: String,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    svc: Option<String>,
}

/// Signs and verifies internal identity tokens (HS256 under the internal key).
pub struct IdentityKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(***)")
    }
}

impl IdentityKey {
    /// A key from the configured secret.
    pub fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "aud"]);
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
        }
    }

    /// Signs a user's identity for one call to `path`.
    pub fn mint_for_user(&self, user: &UserCaller, path: &str) -> Result<String, Status> {
        self.mint(Claims {
            aud: AUDIENCE.to_owned(),
            exp: now_secs() + LIFETIME_SECS,
            mth: path.to_owned(),
            pid: Some(user.partner_id),
            sub: Some(user.user_id.clone()),
            name: Some(user.display_name.clone()),
            roles: user.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            svc: None,
        })
    }

    /// Signs a service's identity for one call to `path`.
    pub fn mint_for_service(&self, service: &str, path: &str) -> Result<String, Status> {
        self.mint(Claims {
            aud: AUDIENCE.to_owned(),
            exp: now_secs() + LIFETIME_SECS,
            mth: path.to_owned(),
            pid: None,
            sub: None,
            name: None,
            roles: Vec::new(),
            svc: Some(service.to_owned()),
        })
    }

    fn mint(&self, claims: Claims) -> Result<String, Status> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|error| Status::internal(format!("cannot sign the caller identity: {error}")))
    }

    /// Verifies a token for a call to `path`.
    pub fn verify(&self, token: &str, path: &str) -> Result<Caller, String> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| format!("the caller identity is not valid: {error}"))?
            .claims;
        if claims.mth != path {
            return Err(format!(
                "the caller identity was issued for {}, not for {path}",
                claims.mth
            ));
        }
        if let Some(service) = claims.svc {
            return Ok(Caller::Service(service));
        }
        match (claims.pid, claims.sub) {
            (Some(partner_id), Some(user_id)) => Ok(Caller::User(UserCaller {
                partner_id,
                user_id,
                display_name: claims.name.unwrap_or_default(),
                roles: claims.roles.iter().filter_map(|r| Role::parse(r)).collect(),
            })),
            _ => Err("the caller identity names neither a user nor a service".to_owned()),
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
/// answers UNAUTHENTICATED when it is missing or invalid. Health and
/// reflection stay open. Each call runs in a span with its method and request
/// id.
#[derive(Clone, Debug)]
pub struct IdentityLayer {
    key: Arc<IdentityKey>,
}

impl IdentityLayer {
    /// A layer verifying with `key`.
    pub fn new(key: Arc<IdentityKey>) -> Self {
        Self { key }
    }
}

impl<S> tower::Layer<S> for IdentityLayer {
    type Service = RequireIdentity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireIdentity {
            inner,
            key: self.key.clone(),
        }
    }
}

/// The service [`IdentityLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct RequireIdentity<S> {
    inner: S,
    key: Arc<IdentityKey>,
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
        let verified = match token {
            None => Err(format!(
                "missing {IDENTITY_HEADER}: backends accept calls only through the gateway"
            )),
            Some(token) => self.key.verify(token, &path),
        };
        match verified {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(inner.call(request).instrument(span))
            }
            Err(message) => {
                span.in_scope(
                    || tracing::warn!(reason = %message, "call refused: no valid caller identity"),
                );
                Box::pin(async move { Ok(Status::unauthenticated(message).into_http()) })
            }
        }
    }
}

/// A client interceptor for service-to-service calls: signs this service's
/// identity for the called method.
#[derive(Clone, Debug)]
pub struct ServiceIdentity {
    key: Arc<IdentityKey>,
    service: Arc<str>,
}

impl ServiceIdentity {
    /// Calls will be signed as `service`.
    pub fn new(key: Arc<IdentityKey>, service: &str) -> Self {
        Self {
            key,
            service: service.into(),
        }
    }
}

impl tonic::service::Interceptor for ServiceIdentity {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let method = request
            .extensions()
            .get::<tonic::GrpcMethod>()
            .ok_or_else(|| Status::internal("the client call does not name its gRPC method"))?;
        let path = format!("/{}/{}", method.service(), method.method());
        let token = self.key.mint_for_service(&self.service, &path)?;
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

    fn key(secret: &str) -> IdentityKey {
        IdentityKey::new(&Secret::new(secret))
    }

    fn user() -> UserCaller {
        UserCaller {
            partner_id: PartnerId::new(),
            user_id: "ada".to_owned(),
            display_name: "Ada".to_owned(),
            roles: [Role::AdminAgent].into_iter().collect(),
        }
    }

    #[test]
    fn a_user_identity_verifies_for_its_path_only() {
        let k = key("0123456789abcdef0123");
        let token = k.mint_for_user(&user(), "/a.B/C").unwrap();
        assert!(matches!(k.verify(&token, "/a.B/C"), Ok(Caller::User(u)) if u.user_id == "ada"));
        assert!(
            k.verify(&token, "/a.B/D")
                .unwrap_err()
                .contains("issued for /a.B/C")
        );
    }

    #[test]
    fn another_key_is_refused() {
        let token = key("0123456789abcdef0123")
            .mint_for_service("ordering", "/a.B/C")
            .unwrap();
        assert!(
            key("another-key-0123456789")
                .verify(&token, "/a.B/C")
                .is_err()
        );
        assert_eq!(
            key("0123456789abcdef0123").verify(&token, "/a.B/C"),
            Ok(Caller::Service("ordering".to_owned()))
        );
    }
}
