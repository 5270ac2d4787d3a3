//! The local backend's URLs: `BASE/files/KEY?expires=UNIX&signature=MAC`,
//! where MAC is HMAC-SHA256 over the key and the expiry with the shared
//! `CSP_CONTENT_SIGNING_KEY`. The signing services make them; the gateway
//! checks them before serving the file, so a URL works for one object and
//! only until it expires.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};

use crate::{ContentArgs, DEV_SIGNING_KEY, ObjectKey};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What the MAC covers besides the key and expiry: a version tag.
const CONTEXT: &str = "csp-content-url-v1";

/// A local content directory and the key its URLs are signed with.
#[derive(Clone)]
pub struct LocalFiles {
    root: PathBuf,
    mac_key: Vec<u8>,
    public_url: Option<String>,
}

/// Why a local file URL is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// It expired.
    Expired,
    /// Its signature does not match its key and expiry (or it has none).
    BadSignature,
}

impl LocalFiles {
    /// The local directory of a file:// store `args` name and its signing
    /// key; `None` for other stores. The key is required unless `dev`.
    pub fn open(args: &ContentArgs, dev: bool) -> anyhow::Result<Option<Self>> {
        let Some(root) = args.local_dir() else {
            return Ok(None);
        };
        let key = csp_kit::config::required_secret(
            "CSP_CONTENT_SIGNING_KEY",
            args.signing_key.as_ref(),
            DEV_SIGNING_KEY,
            dev,
        )?;
        Ok(Some(Self {
            root,
            mac_key: key.expose().as_bytes().to_vec(),
            public_url: None,
        }))
    }

    pub(crate) fn with_public_url(mut self, url: &str) -> anyhow::Result<Self> {
        let url = url.trim().trim_end_matches('/');
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "CSP_CONTENT_PUBLIC_URL must be an http:// or https:// URL"
        );
        self.public_url = Some(url.to_owned());
        Ok(self)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn mac(&self, key: &str, expires: u64) -> HmacSha256 {
        // HMAC takes a key of any length.
        let mut mac = HmacSha256::new_from_slice(&self.mac_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(CONTEXT.as_bytes());
        mac.update(b"\n");
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The URL of `key` until `expires_at`.
    pub(crate) fn sign(&self, key: &ObjectKey, expires_at: SystemTime) -> String {
        let expires = expires_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.mac(key.as_str(), expires).finalize().into_bytes());
        format!(
            "{}/files/{}?expires={expires}&signature={signature}",
            self.public_url.as_deref().unwrap_or(""),
            key.as_str()
        )
    }

    /// Checks a URL's `expires` and `signature` for `key` at `now`: the file
    /// to serve, or why not. The signature is compared in constant time.
    pub fn check(
        &self,
        key: &ObjectKey,
        expires: &str,
        signature: &str,
        now: SystemTime,
    ) -> Result<PathBuf, Refused> {
        let expires: u64 = expires.parse().map_err(|_| Refused::BadSignature)?;
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Refused::BadSignature)?;
        self.mac(key.as_str(), expires)
            .verify_slice(&signature)
            .map_err(|_| Refused::BadSignature)?;
        let now = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        if now >= expires {
            return Err(Refused::Expired);
        }
        Ok(key
            .segments()
            .fold(self.root.clone(), |path, s| path.join(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(secret: &str) -> LocalFiles {
        LocalFiles {
            root: PathBuf::from("/srv/content"),
            mac_key: secret.as_bytes().to_vec(),
            public_url: Some("https://dl.example".into()),
        }
    }

    fn parts(url: &str) -> (String, String, String) {
        let rest = url
            .strip_prefix("https://dl.example/files/")
            .unwrap_or_default();
        let (key, query) = rest.split_once('?').unwrap_or_default();
        let mut expires = String::new();
        let mut signature = String::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("expires", v)) => expires = v.to_owned(),
                Some(("signature", v)) => signature = v.to_owned(),
                _ => {}
            }
        }
        (key.to_owned(), expires, signature)
    }

    #[test]
    fn a_signed_url_works_for_its_object_until_it_expires() {
        let files = files("one-key");
        let key = ObjectKey::software("p", "1", "en-US", "iso").unwrap_or_else(|e| panic!("{e}"));
        let now = SystemTime::now();
        let url = files.sign(&key, now + Duration::from_secs(300));
        let (k, expires, signature) = parts(&url);
        assert_eq!(k, key.as_str());
        assert_eq!(
            files.check(&key, &expires, &signature, now),
            Ok(PathBuf::from("/srv/content/software/p/1/en-US/iso"))
        );
        // Expired.
        assert_eq!(
            files.check(&key, &expires, &signature, now + Duration::from_secs(301)),
            Err(Refused::Expired)
        );
        // Another object, a later expiry, another key, a cut signature.
        let other =
            ObjectKey::software("p", "1", "en-US", "vhdx").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            files.check(&other, &expires, &signature, now),
            Err(Refused::BadSignature)
        );
        let later = (expires.parse::<u64>().unwrap_or_default() + 3600).to_string();
        assert_eq!(
            files.check(&key, &later, &signature, now),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            crate::local::tests::files("another-key").check(&key, &expires, &signature, now),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            files.check(&key, &expires, &signature[..10], now),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            files.check(&key, "soon", &signature, now),
            Err(Refused::BadSignature)
        );
    }
}
