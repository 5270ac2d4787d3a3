//! User authentication: `authorization: Bearer <JWT>`.
//!
//! In production users sign in through OpenID Connect providers
//! ([`crate::oidc`]). In development (`--dev`, `csp up`, `csp token`) HS256
//! tokens under a configured secret are accepted too: they carry the user id
//! (`sub`), the partner (`partner_id`, a UUID), a display name (`name`), roles
//! (`roles`, token spelling such as `"admin_agent"`) and an expiry (`exp`).
//! [`Authenticators`] sends each token to the verifier of its algorithm.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use csp_kit::config::Secret;
use csp_kit::identity::UserCaller;
use csp_kit::roles::{Role, RoleSet};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a caller is not authenticated. Messages never repeat the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("missing authorization metadata: send \"authorization: Bearer <token>\"")]
    Missing,
    /// Not `Bearer <token>`.
    #[error("authorization metadata must be \"Bearer <token>\"")]
    NotBearer,
    /// Not a JWT at all.
    #[error("the bearer token is malformed: {0}")]
    Malformed(String),
    /// Signed with another key or altered.
    #[error("the bearer token's signature is not valid")]
    BadSignature,
    /// Past its expiry.
    #[error("the bearer token has expired; get a new one")]
    Expired,
    /// A claim is missing or wrong.
    #[error("the bearer token's {0}")]
    BadClaim(String),
    /// The token cannot be checked now (its provider's keys are out of
    /// reach): UNAVAILABLE, never accepted.
    #[error("{0}")]
    Unavailable(String),
}

impl AuthError {
    /// The status a caller gets.
    pub fn status(&self) -> tonic::Status {
        match self {
            AuthError::Unavailable(message) => tonic::Status::unavailable(message.clone()),
            other => tonic::Status::unauthenticated(other.to_string()),
        }
    }
}

/// A verified token's user, and until when the verification holds.
#[derive(Clone, Debug)]
pub struct VerifiedUser {
    /// The user the token names.
    pub user: UserCaller,
    /// Seconds since the Unix epoch: the token's expiry, or earlier when a
    /// rule (the maximum age of a sign-in) ends it before.
    pub valid_until: u64,
}

/// Verifies a bearer token and returns the user it names.
#[tonic::async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` (without the `Bearer ` prefix).
    async fn verify(&self, token: &str) -> Result<VerifiedUser, AuthError>;

    /// Moves on whenever the keys that verify tokens may have changed (a
    /// provider's keys fetched again): verifications made before no longer
    /// hold.
    fn key_generation(&self) -> u64 {
        0
    }
}

/// Tokens kept verified at most.
const KEPT_TOKENS: usize = 4096;
/// The longest token kept (longer ones are verified on every call), so the
/// cache holds at most `KEPT_TOKENS * KEPT_TOKEN_BYTES` of tokens.
const KEPT_TOKEN_BYTES: usize = 4096;
/// The longest a verification is reused, whatever the token's expiry.
pub const KEPT_FOR_SECS: u64 = 60;

/// A user verified earlier.
struct Kept {
    user: Arc<UserCaller>,
    valid_until: u64,
    verified_at: u64,
    /// The verifier's key generation before it verified the token.
    generation: u64,
}

/// A verifier that reuses its verifications: a client sends the same bearer
/// token on every call, and checking its signature (and parsing its claims)
/// each time was the largest part of the gateway's own work per call. A
/// token is reused only byte for byte, only until it expires (or its
/// sign-in is older than the maximum age) and for at most
/// [`KEPT_FOR_SECS`], and not past a fetch of its provider's keys (a key
/// withdrawn or replaced then admits nothing more, as without the cache); a
/// refused token is never kept. The cache starts over when
/// full.
pub struct CachedVerifier {
    inner: Box<dyn TokenVerifier>,
    kept: Mutex<HashMap<Box<str>, Kept>>,
}

impl CachedVerifier {
    /// Reuses the verifications of `inner`.
    pub fn new(inner: Box<dyn TokenVerifier>) -> Self {
        Self {
            inner,
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// The user `token` names, when it is valid now.
    pub async fn verify(&self, token: &str) -> Result<Arc<UserCaller>, AuthError> {
        let now = crate::oidc::now_secs();
        let generation = self.inner.key_generation();
        if let Some(kept) = lock(&self.kept).get(token)
            && kept.generation == generation
            && now < kept.valid_until
            && kept.verified_at <= now
            && now < kept.verified_at.saturating_add(KEPT_FOR_SECS)
        {
            return Ok(kept.user.clone());
        }
        let verified = self.inner.verify(token).await?;
        let user = Arc::new(verified.user);
        if token.len() <= KEPT_TOKEN_BYTES && now < verified.valid_until {
            let mut kept = lock(&self.kept);
            if kept.len() >= KEPT_TOKENS {
                kept.clear();
            }
            kept.insert(
                token.into(),
                Kept {
                    user: user.clone(),
                    valid_until: verified.valid_until,
                    verified_at: now,
                    generation,
                },
            );
        }
        Ok(user)
    }
}

/// Locks the cache, taking it over if a holder panicked (it holds nothing a
/// panic can leave half-written).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The gateway's verifiers: OpenID Connect providers' tokens, and in
/// development HS256 tokens; each token goes to the one for its algorithm.
pub struct Authenticators {
    /// HS256 under the development secret (`--dev` only).
    pub development: Option<Hs256Verifier>,
    /// The configured OpenID Connect providers.
    pub oidc: Option<crate::oidc::OidcVerifier>,
}

#[tonic::async_trait]
impl TokenVerifier for Authenticators {
    fn key_generation(&self) -> u64 {
        self.oidc.as_ref().map_or(0, TokenVerifier::key_generation)
    }

    async fn verify(&self, token: &str) -> Result<VerifiedUser, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Malformed("it is not a signed JWT".to_owned()))?;
        match (header.alg, &self.development, &self.oidc) {
            (Algorithm::HS256, Some(development), _) => development.verify(token).await,
            (Algorithm::HS256, None, _) => Err(AuthError::Malformed(
                "HS256 tokens are accepted only by a development gateway; sign in through the identity provider".to_owned(),
            )),
            (_, _, Some(oidc)) => oidc.verify(token).await,
            (_, _, None) => Err(AuthError::Malformed(
                "it is not signed with HS256, and this development gateway trusts no identity provider".to_owned(),
            )),
        }
    }
}

/// The claims of a user token.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserClaims {
    /// The user id.
    pub sub: String,
    /// The partner the user belongs to (a UUID).
    pub partner_id: String,
    /// The user's display name.
    #[serde(default)]
    pub name: String,
    /// The user's roles, token spelling.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: u64,
}

/// HS256 tokens under a shared secret (development and tests).
pub struct Hs256Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Hs256Verifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            key: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
        }
    }
}

#[tonic::async_trait]
impl TokenVerifier for Hs256Verifier {
    async fn verify(&self, token: &str) -> Result<VerifiedUser, AuthError> {
        let claims = jsonwebtoken::decode::<UserClaims>(token, &self.key, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::BadClaim(format!("{claim} claim is missing"))
                }
                ErrorKind::InvalidAlgorithm => {
                    AuthError::Malformed("it is not signed with HS256".to_owned())
                }
                ErrorKind::Json(_) => AuthError::BadClaim(
                    "claims are not valid (need sub, partner_id, roles, exp)".to_owned(),
                ),
                _ => AuthError::Malformed(error.to_string()),
            })?
            .claims;
        let valid_until = claims.exp;
        Ok(VerifiedUser {
            user: user_from_claims(claims)?,
            valid_until,
        })
    }
}

/// The longest user id (`sub`) accepted: the activity log's limit.
pub const MAX_USER_ID: usize = 255;

/// Display names are cut to this many characters: the activity log's limit.
pub const MAX_DISPLAY_NAME: usize = 256;

/// Checks claims that every verifier shares.
pub fn user_from_claims(claims: UserClaims) -> Result<UserCaller, AuthError> {
    let partner_id = claims
        .partner_id
        .parse()
        .map_err(|_| AuthError::BadClaim("partner_id claim is not a UUID".to_owned()))?;
    if claims.sub.trim().is_empty() {
        return Err(AuthError::BadClaim("sub claim is empty".to_owned()));
    }
    if claims.sub.chars().count() > MAX_USER_ID {
        return Err(AuthError::BadClaim(format!(
            "sub claim is longer than {MAX_USER_ID} characters"
        )));
    }
    // Unknown role names are ignored: they grant nothing.
    let roles: RoleSet = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
    Ok(UserCaller {
        partner_id,
        display_name: if claims.name.is_empty() {
            claims.sub.clone()
        } else {
            claims.name.chars().take(MAX_DISPLAY_NAME).collect()
        },
        user_id: claims.sub,
        roles,
    })
}

/// Extracts the token from an `authorization` value.
pub fn bearer(value: Option<&http::HeaderValue>) -> Result<&str, AuthError> {
    let value = value.ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(token.trim())
}

/// Signs a development token (HS256) for `csp token`, `csp up` and tests.
pub fn mint_dev_token(
    secret: &Secret,
    partner_id: Uuid,
    user_id: &str,
    display_name: &str,
    roles: &[Role],
    lifetime: Duration,
) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = UserClaims {
        sub: user_id.to_owned(),
        partner_id: partner_id.to_string(),
        name: display_name.to_owned(),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        exp: now + lifetime.as_secs(),
        iat: now,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("test-secret-0123456789")
    }

    fn verify(verifier: &Hs256Verifier, token: &str) -> Result<UserCaller, AuthError> {
        futures_executor(verifier.verify(token)).map(|verified| verified.user)
    }

    /// Runs a future that never waits (HS256 verification) to completion.
    fn futures_executor<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_minted_token_verifies() {
        let partner = Uuid::new_v4();
        let token = mint_dev_token(
            &secret(),
            partner,
            "ada",
            "Ada",
            &[Role::AdminAgent],
            Duration::from_secs(60),
        )
        .unwrap();
        let user = verify(&Hs256Verifier::new(&secret()), &token).unwrap();
        assert_eq!(user.partner_id, partner.into());
        assert!(user.roles.contains(Role::AdminAgent));
        assert_eq!(user.display_name, "Ada");
    }

    #[test]
    fn a_long_user_id_is_refused_and_a_long_name_cut() {
        let long_sub = mint_dev_token(
            &secret(),
            Uuid::new_v4(),
            &"u".repeat(MAX_USER_ID + 1),
            "Ada",
            &[Role::AdminAgent],
            Duration::from_secs(60),
        )
        .unwrap();
        let refused = verify(&Hs256Verifier::new(&secret()), &long_sub).unwrap_err();
        assert!(matches!(refused, AuthError::BadClaim(_)), "{refused}");

        let long_name = mint_dev_token(
            &secret(),
            Uuid::new_v4(),
            &"u".repeat(MAX_USER_ID),
            &"n".repeat(10_000),
            &[Role::AdminAgent],
            Duration::from_secs(60),
        )
        .unwrap();
        let user = verify(&Hs256Verifier::new(&secret()), &long_name).unwrap();
        assert_eq!(user.display_name.chars().count(), MAX_DISPLAY_NAME);
    }

    #[test]
    fn another_secret_is_a_bad_signature() {
        let token = mint_dev_token(
            &secret(),
            Uuid::new_v4(),
            "ada",
            "",
            &[],
            Duration::from_secs(60),
        )
        .unwrap();
        let other = Hs256Verifier::new(&Secret::new("another-secret-0123456789"));
        assert_eq!(verify(&other, &token), Err(AuthError::BadSignature));
    }

    /// Counts its verifications; accepts tokens starting with "ok",
    /// valid for `valid_for` seconds from now.
    struct Counting {
        calls: Arc<std::sync::atomic::AtomicUsize>,
        valid_for: i64,
        generation: Arc<std::sync::atomic::AtomicU64>,
    }

    #[tonic::async_trait]
    impl TokenVerifier for Counting {
        fn key_generation(&self) -> u64 {
            self.generation.load(std::sync::atomic::Ordering::SeqCst)
        }

        async fn verify(&self, token: &str) -> Result<VerifiedUser, AuthError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if !token.starts_with("ok") {
                return Err(AuthError::BadSignature);
            }
            let now = crate::oidc::now_secs() as i64;
            Ok(VerifiedUser {
                user: UserCaller {
                    partner_id: Uuid::nil().into(),
                    user_id: token.to_owned(),
                    display_name: String::new(),
                    roles: RoleSet::default(),
                },
                valid_until: u64::try_from(now + self.valid_for).unwrap_or(0),
            })
        }
    }

    fn cached(valid_for: i64) -> (CachedVerifier, Arc<std::sync::atomic::AtomicUsize>) {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let verifier = CachedVerifier::new(Box::new(Counting {
            calls: calls.clone(),
            valid_for,
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }));
        (verifier, calls)
    }

    fn calls(counter: &std::sync::atomic::AtomicUsize) -> usize {
        counter.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn a_valid_token_is_verified_once_and_reused_byte_for_byte() {
        let (verifier, counter) = cached(600);
        for _ in 0..3 {
            let user = futures_executor(verifier.verify("ok-ada")).unwrap();
            assert_eq!(user.user_id, "ok-ada");
        }
        assert_eq!(calls(&counter), 1, "verified once, then reused");
        let other = futures_executor(verifier.verify("ok-bob")).unwrap();
        assert_eq!(other.user_id, "ok-bob", "another token is another user");
        assert_eq!(calls(&counter), 2);
    }

    #[test]
    fn refused_expiring_and_oversized_tokens_are_verified_every_time() {
        let (verifier, counter) = cached(600);
        for _ in 0..2 {
            assert_eq!(
                futures_executor(verifier.verify("bad")).unwrap_err(),
                AuthError::BadSignature
            );
        }
        assert_eq!(calls(&counter), 2, "a refusal is never kept");

        let (verifier, counter) = cached(0);
        for _ in 0..2 {
            futures_executor(verifier.verify("ok-ending")).unwrap();
        }
        assert_eq!(calls(&counter), 2, "a token at its expiry is not kept");

        let (verifier, counter) = cached(600);
        let long = format!("ok{}", "x".repeat(KEPT_TOKEN_BYTES));
        for _ in 0..2 {
            futures_executor(verifier.verify(&long)).unwrap();
        }
        assert_eq!(calls(&counter), 2, "an oversized token is not kept");
    }

    #[test]
    fn a_withdrawn_key_ends_what_was_verified_before() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let verifier = CachedVerifier::new(Box::new(Counting {
            calls: calls.clone(),
            valid_for: 600,
            generation: generation.clone(),
        }));
        futures_executor(verifier.verify("ok-ada")).unwrap();
        futures_executor(verifier.verify("ok-ada")).unwrap();
        assert_eq!(self::calls(&calls), 1);
        generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        futures_executor(verifier.verify("ok-ada")).unwrap();
        assert_eq!(self::calls(&calls), 2, "verified again after a withdrawal");
    }

    #[test]
    fn a_full_cache_starts_over() {
        let (verifier, counter) = cached(600);
        for n in 0..=KEPT_TOKENS {
            futures_executor(verifier.verify(&format!("ok{n}"))).unwrap();
        }
        assert!(lock(&verifier.kept).len() <= KEPT_TOKENS);
        futures_executor(verifier.verify("ok0")).unwrap();
        assert_eq!(
            calls(&counter),
            KEPT_TOKENS + 2,
            "the first token was forgotten"
        );
    }

    #[test]
    fn bearer_needs_the_scheme() {
        let value = http::HeaderValue::from_static("Bearer abc");
        assert_eq!(bearer(Some(&value)), Ok("abc"));
        assert_eq!(
            bearer(Some(&http::HeaderValue::from_static("abc"))),
            Err(AuthError::NotBearer)
        );
        assert_eq!(bearer(None), Err(AuthError::Missing));
    }
}
