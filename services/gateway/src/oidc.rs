//! Sign-in through OpenID Connect providers: the gateway verifies the bearer
//! token a provider issued (an access token for the gateway's audience).
//!
//! Each configured issuer's discovery document names its JWKS; keys are
//! fetched at start and cached, picked by the token's `kid`, and fetched
//! again (at most once per `--oidc-refetch-secs` per issuer) when a token
//! names a key the cache does not hold, so the provider can rotate keys.
//! RS256, ES256 and EdDSA are accepted. `iss` (one of the configured
//! issuers, exactly), `aud`, `exp`, `nbf` and `iat` are required and checked
//! with a small leeway, and a token issued longer ago than the maximum age is
//! refused. Which claims carry the partner, the user, the display name and
//! the roles is configuration; the defaults are Microsoft Entra ID's (`tid`,
//! `oid`, `name`, `roles`). While a provider cannot be reached its cached keys
//! keep working; without one, a token is UNAVAILABLE, never accepted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use tonic::async_trait;

use crate::auth::{AuthError, TokenVerifier, UserClaims, VerifiedUser, user_from_claims};

// The defaults, once for the flags and for `OidcArgs::default()`: Entra ID's
// claims, a day's maximum token age, a minute of clock skew, a key fetch at
// most every 10 s per issuer.
const DEFAULT_PARTNER_CLAIM: &str = "tid";
const DEFAULT_USER_CLAIM: &str = "oid";
const DEFAULT_NAME_CLAIM: &str = "name";
const DEFAULT_ROLES_CLAIM: &str = "roles";
const DEFAULT_MAX_AGE_SECS: u64 = 86_400;
const DEFAULT_LEEWAY_SECS: u64 = 60;
const DEFAULT_REFETCH_SECS: u64 = 10;

/// How the gateway trusts OpenID Connect providers.
#[derive(clap::Args, Clone, Debug)]
pub struct OidcArgs {
    /// Issuer URLs of the OpenID Connect providers users sign in with,
    /// comma-separated, each exactly as its tokens' `iss` names it (Entra ID:
    /// `https://login.microsoftonline.com/TENANT_ID/v2.0`). Required unless
    /// --dev.
    #[arg(long = "oidc-issuer", env = "CSP_OIDC_ISSUERS", value_delimiter = ',')]
    pub issuers: Vec<String>,
    /// The audience tokens must be issued for (`aud`): the gateway's
    /// application id URI or client id at the provider.
    #[arg(long = "oidc-audience", env = "CSP_OIDC_AUDIENCE")]
    pub audience: Option<String>,
    /// The claim holding the partner id (a UUID; Entra ID: the tenant id).
    #[arg(
        long = "oidc-partner-claim",
        env = "CSP_OIDC_PARTNER_CLAIM",
        default_value = DEFAULT_PARTNER_CLAIM
    )]
    pub partner_claim: String,
    /// The claim holding the user's id (Entra ID: the object id).
    #[arg(
        long = "oidc-user-claim",
        env = "CSP_OIDC_USER_CLAIM",
        default_value = DEFAULT_USER_CLAIM
    )]
    pub user_claim: String,
    /// The claim holding the user's display name.
    #[arg(
        long = "oidc-name-claim",
        env = "CSP_OIDC_NAME_CLAIM",
        default_value = DEFAULT_NAME_CLAIM
    )]
    pub name_claim: String,
    /// The claim holding the user's roles (a list, or one string), in token
    /// spelling such as `admin_agent` (Entra ID: the app roles' values).
    #[arg(
        long = "oidc-roles-claim",
        env = "CSP_OIDC_ROLES_CLAIM",
        default_value = DEFAULT_ROLES_CLAIM
    )]
    pub roles_claim: String,
    /// Tokens issued (`iat`) longer ago than this many seconds are refused,
    /// whatever their expiry.
    #[arg(
        long = "oidc-max-age-secs",
        env = "CSP_OIDC_MAX_AGE_SECS",
        default_value_t = DEFAULT_MAX_AGE_SECS
    )]
    pub max_age_secs: u64,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[arg(
        long = "oidc-leeway-secs",
        env = "CSP_OIDC_LEEWAY_SECS",
        default_value_t = DEFAULT_LEEWAY_SECS
    )]
    pub leeway_secs: u64,
    /// The least time between two fetches of one issuer's keys for tokens
    /// naming an unknown key, in seconds.
    #[arg(
        long = "oidc-refetch-secs",
        env = "CSP_OIDC_REFETCH_SECS",
        default_value_t = DEFAULT_REFETCH_SECS
    )]
    pub refetch_secs: u64,
}

impl Default for OidcArgs {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            audience: None,
            partner_claim: DEFAULT_PARTNER_CLAIM.to_owned(),
            user_claim: DEFAULT_USER_CLAIM.to_owned(),
            name_claim: DEFAULT_NAME_CLAIM.to_owned(),
            roles_claim: DEFAULT_ROLES_CLAIM.to_owned(),
            max_age_secs: DEFAULT_MAX_AGE_SECS,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            refetch_secs: DEFAULT_REFETCH_SECS,
        }
    }
}

/// A provider's signing key, with the one algorithm it verifies.
struct Key {
    key: DecodingKey,
    algorithm: Algorithm,
}

/// What is known of one issuer's keys.
#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<Key>>,
    /// When the keys were last fetched (successfully or not).
    fetched_at: Option<Instant>,
}

/// One trusted issuer.
struct Issuer {
    url: String,
    keys: RwLock<Keys>,
    /// Held by the one task fetching this issuer's keys.
    fetching: Mutex<()>,
}

/// Verifies tokens of the configured OpenID Connect providers (cheap to
/// clone: the key caches are shared).
#[derive(Clone)]
pub struct OidcVerifier {
    issuers: Arc<HashMap<String, Arc<Issuer>>>,
    audience: String,
    claims: Arc<OidcArgs>,
    http: reqwest::Client,
    /// Moves on with every fetch of a provider's keys (one known before
    /// may be gone or replaced): verifications kept from before no longer
    /// count.
    withdrawals: Arc<std::sync::atomic::AtomicU64>,
}

/// Why a provider's keys could not be fetched (for logs and messages; no
/// token in it).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Http(String),
    #[error("the discovery document names issuer {found:?}, not {expected:?}")]
    IssuerMismatch { expected: String, found: String },
}

impl OidcVerifier {
    /// A verifier for `args`' issuers; `None` when none is configured.
    pub fn new(args: &OidcArgs) -> anyhow::Result<Option<Self>> {
        if args.issuers.is_empty() {
            return Ok(None);
        }
        let audience = args.audience.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "CSP_OIDC_AUDIENCE is not set: with CSP_OIDC_ISSUERS, name the audience tokens must be issued for"
            )
        })?;
        let mut issuers = HashMap::new();
        for url in &args.issuers {
            let url = url.trim();
            anyhow::ensure!(
                url.starts_with("https://") || url.starts_with("http://"),
                "CSP_OIDC_ISSUERS holds {url:?}, which is not an http(s) URL"
            );
            issuers.insert(
                url.to_owned(),
                Arc::new(Issuer {
                    url: url.to_owned(),
                    keys: RwLock::new(Keys::default()),
                    fetching: Mutex::new(()),
                }),
            );
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Some(Self {
            issuers: Arc::new(issuers),
            audience,
            claims: Arc::new(args.clone()),
            http,
            withdrawals: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }))
    }

    /// Starts fetching every issuer's keys in the background (the gateway
    /// does not wait for its providers to start serving).
    pub fn prefetch_in_background(&self) {
        let verifier = self.clone();
        tokio::spawn(async move { verifier.prefetch().await });
    }

    /// Fetches every issuer's keys once (at start; a provider that cannot be
    /// reached is logged and tried again when a token needs it).
    pub async fn prefetch(&self) {
        for issuer in self.issuers.values() {
            if let Err(error) = self.refresh(issuer, None).await {
                tracing::warn!(issuer = %issuer.url, %error, "cannot fetch the identity provider's keys; will try again when a token needs them");
            }
        }
    }

    /// Fetches `issuer`'s keys, unless another task just did (then its
    /// result is used) or, when `unless_fetched_within` is given, they were
    /// fetched within that time.
    async fn refresh(
        &self,
        issuer: &Issuer,
        unless_fetched_within: Option<Duration>,
    ) -> Result<(), FetchError> {
        let started = Instant::now();
        let _fetching = issuer.fetching.lock().await;
        {
            let keys = issuer.keys.read().await;
            if let Some(at) = keys.fetched_at
                && (at >= started
                    || unless_fetched_within.is_some_and(|within| at.elapsed() < within))
            {
                return Ok(());
            }
        }
        let fetched = self.fetch(issuer).await;
        let mut keys = issuer.keys.write().await;
        keys.fetched_at = Some(Instant::now());
        let by_kid = fetched?;
        tracing::info!(issuer = %issuer.url, keys = by_kid.len(), "fetched the identity provider's signing keys");
        // A key may have been withdrawn, or replaced under its id: tokens
        // verified before are verified again. (Fetches are rare: at start,
        // and for a key id not seen within the refetch interval.)
        self.withdrawals
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        keys.by_kid = by_kid;
        Ok(())
    }

    async fn fetch(&self, issuer: &Issuer) -> Result<HashMap<String, Arc<Key>>, FetchError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        #[derive(Deserialize)]
        struct JwkSet {
            keys: Vec<serde_json::Value>,
        }
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.url.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&discovery_url).await?;
        if discovery.issuer != issuer.url {
            return Err(FetchError::IssuerMismatch {
                expected: issuer.url.clone(),
                found: discovery.issuer,
            });
        }
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        let mut by_kid = HashMap::new();
        for value in set.keys {
            // A key of a kind this gateway does not verify with is skipped,
            // not a reason to refuse the others.
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            if let Some((kid, key)) = usable(&jwk) {
                by_kid.insert(kid, Arc::new(key));
            }
        }
        Ok(by_kid)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| FetchError::Http(format!("GET {url}: {}", without_url(&e))))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Http(format!("GET {url}: HTTP {status}")));
        }
        response.json().await.map_err(|e| {
            FetchError::Http(format!(
                "GET {url}: not the JSON expected: {}",
                without_url(&e)
            ))
        })
    }

    /// The key `kid` of `issuer`: cached, or fetched again when unknown.
    async fn key(&self, issuer: &Issuer, kid: &str) -> Result<Arc<Key>, AuthError> {
        if let Some(key) = issuer.keys.read().await.by_kid.get(kid) {
            return Ok(key.clone());
        }
        let refetch = Duration::from_secs(self.claims.refetch_secs);
        let fetched = self.refresh(issuer, Some(refetch)).await;
        let keys = issuer.keys.read().await;
        if let Some(key) = keys.by_kid.get(kid) {
            return Ok(key.clone());
        }
        match fetched {
            Err(error) => {
                tracing::warn!(issuer = %issuer.url, %error, "cannot fetch the identity provider's keys");
                Err(AuthError::Unavailable(format!(
                    "the identity provider {} cannot be reached and this token's signing key is not cached; try again later",
                    issuer.url
                )))
            }
            Ok(())
                if keys.by_kid.is_empty()
                    && keys.fetched_at.is_some_and(|at| at.elapsed() < refetch) =>
            {
                Err(AuthError::Unavailable(format!(
                    "the identity provider {} published no usable signing key; try again later",
                    issuer.url
                )))
            }
            Ok(()) => Err(AuthError::BadSignature),
        }
    }
}

/// The key id and verifying key of a JWK this gateway can use (RS256,
/// ES256 on P-256, EdDSA on Ed25519, for signatures).
fn usable(jwk: &Jwk) -> Option<(String, Key)> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let kid = jwk.common.key_id.clone()?;
    let natural = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => natural,
        Some(declared) => match Algorithm::try_from(declared) {
            Ok(algorithm) if algorithm == natural => algorithm,
            _ => return None,
        },
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, Key { key, algorithm }))
}

/// A reqwest error's text without the URL (which may carry a query).
fn without_url(error: &reqwest::Error) -> String {
    let mut error = error.to_string();
    if let Some(index) = error.find(" for url (") {
        error.truncate(index);
    }
    error
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The unverified `iss` of a token (to pick the issuer whose keys verify
/// it; nothing else is read before the signature is checked).
fn claimed_issuer(token: &str) -> Result<String, AuthError> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let claims: Iss = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|_| AuthError::Malformed("its claims are not a JSON object".to_owned()))?;
    claims
        .iss
        .ok_or_else(|| AuthError::BadClaim("iss claim is missing".to_owned()))
}

#[async_trait]
impl TokenVerifier for OidcVerifier {
    fn key_generation(&self) -> u64 {
        self.withdrawals.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn verify(&self, token: &str) -> Result<VerifiedUser, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Malformed("it is not a signed JWT".to_owned()))?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(AuthError::Malformed(format!(
                "it is signed with {:?}; RS256, ES256 and EdDSA are accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Malformed("its header names no key (kid)".to_owned()))?;
        let iss = claimed_issuer(token)?;
        let issuer = self.issuers.get(&iss).ok_or_else(|| {
            AuthError::BadClaim(
                "issuer (iss) is not one this gateway trusts (CSP_OIDC_ISSUERS)".to_owned(),
            )
        })?;
        let key = self.key(issuer, &kid).await?;
        if key.algorithm != header.alg {
            return Err(AuthError::Malformed(
                "its algorithm is not the one its key is for".to_owned(),
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.claims.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&issuer.url]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<HashMap<String, serde_json::Value>>(
            token,
            &key.key,
            &validation,
        )
        .map_err(|error| match error.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::BadClaim(
                "nbf claim is in the future: the token is not valid yet".to_owned(),
            ),
            ErrorKind::InvalidAudience => AuthError::BadClaim(
                "aud claim does not name this gateway's audience (CSP_OIDC_AUDIENCE)".to_owned(),
            ),
            ErrorKind::InvalidIssuer => AuthError::BadClaim("iss claim is not trusted".to_owned()),
            ErrorKind::MissingRequiredClaim(claim) => {
                AuthError::BadClaim(format!("{claim} claim is missing"))
            }
            ErrorKind::InvalidClaimFormat(claim) => {
                AuthError::BadClaim(format!("{claim} claim is not valid"))
            }
            _ => AuthError::Malformed("it cannot be verified".to_owned()),
        })?
        .claims;
        let now = now_secs();
        let iat = claims
            .get("iat")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| AuthError::BadClaim("iat claim is missing".to_owned()))?;
        if iat > now + self.claims.leeway_secs {
            return Err(AuthError::BadClaim("iat claim is in the future".to_owned()));
        }
        if now.saturating_sub(iat) > self.claims.max_age_secs + self.claims.leeway_secs {
            return Err(AuthError::BadClaim(format!(
                "iat claim is older than {} s; sign in again",
                self.claims.max_age_secs
            )));
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let partner_id = text(&self.claims.partner_claim).ok_or_else(|| {
            AuthError::BadClaim(format!(
                "{} claim (the partner) is missing",
                self.claims.partner_claim
            ))
        })?;
        let sub = text(&self.claims.user_claim).ok_or_else(|| {
            AuthError::BadClaim(format!(
                "{} claim (the user) is missing",
                self.claims.user_claim
            ))
        })?;
        let roles = match claims.get(&self.claims.roles_claim) {
            Some(serde_json::Value::Array(values)) => values
                .iter()
                .filter_map(serde_json::Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(serde_json::Value::String(role)) => {
                role.split_whitespace().map(str::to_owned).collect()
            }
            _ => Vec::new(),
        };
        // Required above, so present; a token still holds until it expires
        // and while it is younger than the maximum age.
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let user = user_from_claims(UserClaims {
            sub,
            partner_id,
            name: text(&self.claims.name_claim).unwrap_or_default(),
            roles,
            exp: 0,
            iat,
        })
        .map_err(|error| match error {
            AuthError::BadClaim(message) if message.starts_with("partner_id") => {
                AuthError::BadClaim(format!(
                    "{} claim (the partner) is not a UUID",
                    self.claims.partner_claim
                ))
            }
            other => other,
        })?;
        Ok(VerifiedUser {
            user,
            valid_until: exp.min(iat.saturating_add(self.claims.max_age_secs)),
        })
    }
}
