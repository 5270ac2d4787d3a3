//! Product keys and link tokens: made from the operating system's random
//! source, stored only sealed (ChaCha20-Poly1305 under the configured key,
//! bound to their row by associated data), links found by the SHA-256 of
//! their token.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use csp_kit::config::Secret;
use sha2::{Digest, Sha256};

/// The product key alphabet: no vowels, no look-alikes (0/O, 1/I, 5/S).
const KEY_ALPHABET: &[u8; 24] = b"BCDFGHJKMPQRTVWXY2346789";

/// Random bytes from the operating system.
fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow::anyhow!("no randomness available: {error}"))?;
    Ok(bytes)
}

/// A new product key: five groups of five characters, about 114 bits.
pub fn new_product_key() -> anyhow::Result<String> {
    let mut key = String::with_capacity(29);
    let mut chosen = 0;
    while chosen < 25 {
        for byte in random::<32>()? {
            // Rejection sampling keeps every character equally likely.
            if byte >= 240 || chosen == 25 {
                continue;
            }
            if chosen > 0 && chosen % 5 == 0 {
                key.push('-');
            }
            key.push(char::from(KEY_ALPHABET[usize::from(byte % 24)]));
            chosen += 1;
        }
    }
    Ok(key)
}

/// Whether `key` has the product key shape.
pub fn is_product_key(key: &str) -> bool {
    let groups: Vec<&str> = key.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|b| KEY_ALPHABET.contains(&b)))
}

/// A new link token: 256 random bits, URL-safe base64 (43 characters).
pub fn new_token() -> anyhow::Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(random::<32>()?))
}

/// Whether `token` could be one of ours (checked before any lookup).
pub fn is_token(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The SHA-256 of a token, hex: how links are looked up.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Seals and opens secrets under the configured key.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    /// A sealer whose key is the SHA-256 of the configured secret.
    pub fn new(secret: &Secret) -> anyhow::Result<Self> {
        let key = Sha256::digest(secret.expose().as_bytes());
        let cipher = ChaCha20Poly1305::new_from_slice(key.as_slice())
            .map_err(|_| anyhow::anyhow!("the key encryption key has the wrong length"))?;
        Ok(Self { cipher })
    }

    /// Seals `plaintext`, bound to `context` (the row it belongs to).
    pub fn seal(&self, plaintext: &str, context: &str) -> anyhow::Result<String> {
        let nonce_bytes = random::<12>()?;
        let nonce = Nonce::from(nonce_bytes);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// Opens what [`Sealer::seal`] made for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> anyhow::Result<String> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| anyhow::anyhow!("a sealed value is not base64"))?;
        anyhow::ensure!(bytes.len() > 12, "a sealed value is too short");
        let (nonce, ciphertext) = bytes.split_at(12);
        let nonce = Nonce::try_from(nonce)
            .map_err(|_| anyhow::anyhow!("a sealed value has a bad nonce"))?;
        let plain = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!("a sealed value does not open: wrong key encryption key, or the row was tampered with")
            })?;
        String::from_utf8(plain).map_err(|_| anyhow::anyhow!("a sealed value is not text"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_keys_have_five_groups_of_five_and_differ() {
        let a = new_product_key().unwrap();
        let b = new_product_key().unwrap();
        assert!(is_product_key(&a), "{a}");
        assert_eq!(a.len(), 29);
        assert_ne!(a, b);
        assert!(!is_product_key("ABCDE-12345-ABCDE-12345-ABCDE"));
    }

    #[test]
    fn tokens_are_long_and_url_safe() {
        let t = new_token().unwrap();
        assert!(is_token(&t), "{t}");
        assert_ne!(t, new_token().unwrap());
        assert_eq!(token_hash(&t).len(), 64);
        assert!(!is_token("short"));
        assert!(!is_token(&format!("{}/", &t[..42])));
    }

    #[test]
    fn sealed_values_open_only_with_the_key_and_their_context() {
        let sealer = Sealer::new(&Secret::new("key-encryption-key-0123456789")).unwrap();
        let sealed = sealer
            .seal("BCDFG-HJKMP-QRTVW-XY234-6789B", "sub/2022")
            .unwrap();
        assert!(!sealed.contains("BCDFG"));
        assert_eq!(
            sealer.open(&sealed, "sub/2022").unwrap(),
            "BCDFG-HJKMP-QRTVW-XY234-6789B"
        );
        assert!(sealer.open(&sealed, "other/2022").is_err());
        let other = Sealer::new(&Secret::new("another-key-0123456789")).unwrap();
        assert!(other.open(&sealed, "sub/2022").is_err());
        assert_ne!(
            sealed,
            sealer
                .seal("BCDFG-HJKMP-QRTVW-XY234-6789B", "sub/2022")
                .unwrap()
        );
    }
}
