//! Identity keys. Each service signs the identities it sends with its own
//! Ed25519 key (`CSP_IDENTITY_KEY`, 32 random bytes in base64url); every
//! service holds the public keys of all of them (`CSP_IDENTITY_TRUST`,
//! `SERVICE:PUBLIC_KEY` entries, comma-separated). A key's id is derived
//! from its public key, so rotating one means adding the new public key to
//! the trust list, moving the service to the new private key, then removing
//! the old public key.
//!
//! Development keys are derived from each service's name: anyone can compute
//! them, so they are accepted only with `--dev` (which `csp up` implies).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest as _, Sha256};

use crate::config::Secret;
use crate::service_name::ServiceName;

/// The variable holding a service's private identity key.
pub const KEY_VARIABLE: &str = "CSP_IDENTITY_KEY";
/// The variable holding the trusted public identity keys.
pub const TRUST_VARIABLE: &str = "CSP_IDENTITY_TRUST";

/// A service's private Ed25519 identity key.
#[derive(Clone)]
pub struct SigningKey {
    service: ServiceName,
    seed: [u8; 32],
    public: [u8; 32],
    kid: String,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {}, ***)", self.service, self.kid)
    }
}

impl SigningKey {
    /// A fresh random key for `service`.
    pub fn generate(service: ServiceName) -> anyhow::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Self::from_seed(service, seed)
    }

    /// `service`'s public development key, derived from its name.
    pub fn development(service: ServiceName) -> Self {
        // A fixed, valid seed: from_seed fails only if PKCS#8 encoding does,
        // which it cannot for 32 bytes.
        Self::from_seed(service, development_seed(service))
            .unwrap_or_else(|_| unreachable!("a 32-byte seed always encodes"))
    }

    /// The key with Ed25519 `seed`.
    pub fn from_seed(service: ServiceName, seed: [u8; 32]) -> anyhow::Result<Self> {
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = signing.verifying_key().to_bytes();
        let der = signing
            .to_pkcs8_der()
            .map_err(|_| anyhow::anyhow!("cannot encode the identity key"))?;
        Ok(Self {
            service,
            seed,
            public,
            kid: key_id(&public),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
        })
    }

    /// Reads `service`'s key from its configured text (base64url of 32
    /// bytes). The message names the variable, never the value.
    pub fn parse(service: ServiceName, secret: &Secret) -> Result<Self, String> {
        let seed: [u8; 32] = B64
            .decode(secret.expose().trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                format!(
                    "{KEY_VARIABLE} must be 32 bytes in base64url (43 characters), as `csp keys generate` prints it"
                )
            })?;
        Self::from_seed(service, seed).map_err(|e| e.to_string())
    }

    /// The service the key signs for.
    pub fn service(&self) -> ServiceName {
        self.service
    }

    /// The key's id: derived from the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Whether this is the service's public development key.
    pub fn is_development(&self) -> bool {
        self.seed == development_seed(self.service)
    }

    /// The private key as configured (`CSP_IDENTITY_KEY`).
    pub fn to_config(&self) -> Secret {
        Secret::new(B64.encode(self.seed))
    }

    /// The public key's entry in the trust list: `SERVICE:PUBLIC_KEY`.
    pub fn trust_entry(&self) -> String {
        format!("{}:{}", self.service, B64.encode(self.public))
    }

    /// Signs any `claims` under this key (EdDSA, with its key id): what the
    /// holder of a key can do, for tools and for tests that play a
    /// compromised service.
    pub fn sign_claims(&self, claims: &impl serde::Serialize) -> anyhow::Result<String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    pub(super) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// A key for every service: fresh ones for `csp up` and `csp keys
/// generate`, or the development ones.
#[derive(Clone, Debug)]
pub struct KeySet {
    keys: Vec<SigningKey>,
}

impl KeySet {
    /// A fresh random key for every service.
    pub fn generate() -> anyhow::Result<Self> {
        Ok(Self {
            keys: ServiceName::ALL
                .into_iter()
                .map(SigningKey::generate)
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// Every service's public development key.
    pub fn development() -> Self {
        Self {
            keys: ServiceName::ALL
                .into_iter()
                .map(SigningKey::development)
                .collect(),
        }
    }

    /// The same set with `service`'s public development key instead of its
    /// own (`csp up` lets the operator's tools sign with `--dev`).
    pub fn with_development_key(mut self, service: ServiceName) -> Self {
        self.keys[service as usize] = SigningKey::development(service);
        self
    }

    /// `service`'s key.
    pub fn key(&self, service: ServiceName) -> &SigningKey {
        // ALL holds every service, so the set has a key for each.
        &self.keys[service as usize]
    }

    /// The trust list of all the keys (`CSP_IDENTITY_TRUST`).
    pub fn trust(&self) -> String {
        TrustedKeys::of(&self.keys).to_config()
    }

    /// `service`'s identity options with these keys.
    pub fn args_for(&self, service: ServiceName, dev: bool) -> super::IdentityArgs {
        super::IdentityArgs {
            identity_key: Some(self.key(service).to_config()),
            identity_trust: Some(self.trust()),
            dev,
        }
    }
}

fn development_seed(service: ServiceName) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"csp development identity key\n");
    hasher.update(service.as_str().as_bytes());
    hasher.finalize().into()
}

/// A key's id: the first 12 characters of the base64url SHA-256 of the
/// public key.
fn key_id(public: &[u8; 32]) -> String {
    let mut id = B64.encode(Sha256::digest(public));
    id.truncate(12);
    id
}

/// One trusted public key.
pub(super) struct TrustedKey {
    pub(super) service: ServiceName,
    pub(super) decoding: DecodingKey,
    public: [u8; 32],
}

/// The public identity keys a service accepts, by key id.
#[derive(Default)]
pub struct TrustedKeys {
    keys: HashMap<String, TrustedKey>,
}

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(kid, key)| (key.service, kid)))
            .finish()
    }
}

impl TrustedKeys {
    /// Reads a trust list: `SERVICE:PUBLIC_KEY` entries separated by commas
    /// or white space. A service may have several keys (rotation).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut trusted = Self::default();
        for (index, entry) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let n = index + 1;
            let (name, key) = entry
                .split_once(':')
                .ok_or_else(|| format!("{TRUST_VARIABLE} entry {n} is not SERVICE:PUBLIC_KEY"))?;
            let service = ServiceName::parse(name).ok_or_else(|| {
                format!(
                    "{TRUST_VARIABLE} entry {n} names no csp service (gateway, catalog, ordering, licensing, audit, support)"
                )
            })?;
            let public: [u8; 32] = B64
                .decode(key)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .filter(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_ok())
                .ok_or_else(|| {
                    format!(
                        "{TRUST_VARIABLE} entry {n} ({service}) is not an Ed25519 public key in base64url"
                    )
                })?;
            if let Some(earlier) = trusted.keys.get(&key_id(&public)) {
                return Err(format!(
                    "{TRUST_VARIABLE} entry {n} ({service}) repeats the key of {}: each service needs its own",
                    earlier.service
                ));
            }
            trusted.insert(service, public);
        }
        if trusted.keys.is_empty() {
            return Err(format!("{TRUST_VARIABLE} lists no key"));
        }
        Ok(trusted)
    }

    /// Trusts the public halves of `keys`.
    pub fn of<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> Self {
        let mut trusted = Self::default();
        for key in keys {
            trusted.insert(key.service, key.public);
        }
        trusted
    }

    /// Every service's development key.
    pub fn development() -> Self {
        let keys: Vec<SigningKey> = ServiceName::ALL
            .into_iter()
            .map(SigningKey::development)
            .collect();
        Self::of(&keys)
    }

    fn insert(&mut self, service: ServiceName, public: [u8; 32]) {
        self.keys.insert(
            key_id(&public),
            TrustedKey {
                service,
                decoding: DecodingKey::from_ed_der(&public),
                public,
            },
        );
    }

    /// The services for which a development key (any service's) is trusted.
    pub fn development_services(&self) -> Vec<ServiceName> {
        let development: Vec<[u8; 32]> = ServiceName::ALL
            .into_iter()
            .map(|service| SigningKey::development(service).public)
            .collect();
        let mut services: Vec<ServiceName> = self
            .keys
            .values()
            .filter(|key| development.contains(&key.public))
            .map(|key| key.service)
            .collect();
        services.sort();
        services.dedup();
        services
    }

    /// Whether `key`'s public half is trusted for its service.
    pub fn trusts(&self, key: &SigningKey) -> bool {
        self.keys
            .get(&key.kid)
            .is_some_and(|trusted| trusted.service == key.service && trusted.public == key.public)
    }

    /// The trust list in its configured form.
    pub fn to_config(&self) -> String {
        let mut entries: Vec<(ServiceName, String)> = self
            .keys
            .values()
            .map(|key| (key.service, B64.encode(key.public)))
            .collect();
        entries.sort();
        entries
            .into_iter()
            .map(|(service, key)| format!("{service}:{key}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(super) fn get(&self, kid: &str) -> Option<&TrustedKey> {
        self.keys.get(kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_key_round_trips_and_is_trusted_through_its_entry() {
        let key = SigningKey::generate(ServiceName::Ordering).unwrap();
        let again = SigningKey::parse(ServiceName::Ordering, &key.to_config()).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert!(!key.is_development());
        let trusted = TrustedKeys::parse(&key.trust_entry()).unwrap();
        assert!(trusted.trusts(&key));
        assert!(trusted.development_services().is_empty());
        assert_eq!(
            TrustedKeys::parse(&trusted.to_config())
                .unwrap()
                .to_config(),
            trusted.to_config()
        );
        // The same key claimed by another service is not trusted.
        let other = SigningKey::from_seed(ServiceName::Audit, key.seed).unwrap();
        assert!(!trusted.trusts(&other));
    }

    #[test]
    fn bad_configuration_is_named_without_its_value() {
        let short = SigningKey::parse(
            ServiceName::Audit,
            &Secret::new("c2VjcmV0LXNlY3JldC1zZWNyZXQ"),
        )
        .unwrap_err();
        assert!(short.contains(KEY_VARIABLE), "{short}");
        assert!(!short.contains("c2VjcmV0"), "{short}");
        for (text, expected) in [
            ("", "lists no key"),
            ("gateway", "entry 1 is not SERVICE:PUBLIC_KEY"),
            ("root:AAAA", "entry 1 names no csp service"),
            (
                "gateway:AAAA",
                "entry 1 (gateway) is not an Ed25519 public key",
            ),
        ] {
            let error = TrustedKeys::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn development_keys_are_recognised() {
        let key = SigningKey::development(ServiceName::Gateway);
        assert!(key.is_development());
        let trusted = TrustedKeys::development();
        assert!(trusted.trusts(&key));
        assert_eq!(trusted.development_services(), ServiceName::ALL);
        // Another service's development key listed for ordering.
        let borrowed = key.trust_entry().replace("gateway:", "ordering:");
        assert_eq!(
            TrustedKeys::parse(&borrowed)
                .unwrap()
                .development_services(),
            [ServiceName::Ordering]
        );
    }
}
