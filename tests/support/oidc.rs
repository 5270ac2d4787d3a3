//! A real OpenID Connect provider for sign-in tests: the npm package
//! `oidc-provider` (certified), run by Node.js from `tests/oidc/provider.mjs`.
//! It is installed once under `target/tools/oidc-provider` (`.ci/run` does it
//! first; otherwise the first test that needs it runs npm). Each start makes
//! fresh signing keys, so restarting on the same port rotates them.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

use base64::Engine as _;
use serde::Deserialize;

/// The pinned package, as `.ci/run` installs it.
pub const PACKAGE: &str = "oidc-provider@9.13.3";
/// The audience the provider issues gateway tokens for.
pub const AUDIENCE: &str = "api://csp";
/// Resources to ask tokens for: each picks the signing algorithm (and the
/// last another audience).
pub const RS256: &str = "urn:csp:rs256";
/// ES256-signed tokens.
pub const ES256: &str = "urn:csp:es256";
/// EdDSA-signed tokens.
pub const EDDSA: &str = "urn:csp:eddsa";
/// Tokens for another API's audience.
pub const OTHER_AUDIENCE: &str = "urn:other:api";

/// A signed-in test user: a client of the provider whose tokens carry these
/// Entra-shaped claims.
#[derive(Clone, Debug, serde::Serialize)]
pub struct User {
    /// The client id.
    pub id: String,
    /// The client secret.
    pub secret: String,
    /// Claims its tokens carry: `tid`, `oid`, `name`, `roles`.
    pub claims: serde_json::Value,
}

impl User {
    /// A user of `partner` with `roles` (token spelling).
    pub fn new(id: &str, partner: uuid::Uuid, roles: &[&str]) -> Self {
        Self {
            id: id.to_owned(),
            secret: format!("{id}-secret-0123456789abcdef"),
            claims: serde_json::json!({
                "tid": partner.to_string(),
                "oid": format!("oid-{id}"),
                "name": format!("User {id}"),
                "roles": roles,
            }),
        }
    }
}

/// One of the provider's private signing keys.
#[derive(Clone, Debug, Deserialize)]
pub struct ProviderKey {
    /// Its key id.
    pub kid: String,
    /// `RS256`, `ES256` or `EdDSA`.
    pub alg: String,
    /// The private key, base64 DER.
    der: String,
}

#[derive(Deserialize)]
struct Ready {
    issuer: String,
    keys: Vec<ProviderKey>,
}

/// A running provider; stopped when dropped.
pub struct Provider {
    child: Child,
    _stdin: ChildStdin,
    /// Its issuer URL (`http://127.0.0.1:PORT`).
    pub issuer: String,
    /// Its port.
    pub port: u16,
    /// Its signing keys of this start.
    pub keys: Vec<ProviderKey>,
    users: Vec<User>,
}

impl Provider {
    /// Starts a provider for `users` on a free port.
    pub fn start(users: &[User]) -> Provider {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        Self::start_on(port, users)
    }

    /// Starts a provider for `users` on `port`, with fresh keys. A start
    /// that does not report ready within 20 s (Node.js 20 has been seen to
    /// hang at start under load) is killed and tried again, three times.
    pub fn start_on(port: u16, users: &[User]) -> Provider {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start_on(port, users) {
                Ok(provider) => return provider,
                Err(error) => last = error,
            }
        }
        panic!("the OpenID Connect provider did not start: {last}");
    }

    fn try_start_on(port: u16, users: &[User]) -> Result<Provider, String> {
        let dir = installed();
        let clients = serde_json::to_string(users).unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .arg(port.to_string())
            .arg(clients)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run node (Node.js is needed for oidc-provider): {e}")
            });
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("it has no stdin or stdout pipe".to_owned());
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
        });
        let line = match rx.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(Ok(line)) => line,
            Ok(Err(error)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot read its output: {error}"));
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("it did not report ready within 20 s".to_owned());
            }
        };
        let ready: Ready = match serde_json::from_str(&line) {
            Ok(ready) => ready,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("its ready line does not read ({error}): {line:?}"));
            }
        };
        Ok(Provider {
            child,
            _stdin: stdin,
            issuer: ready.issuer,
            port,
            keys: ready.keys,
            users: users.to_vec(),
        })
    }

    /// A token for `user` (by client id) for `resource`, from the token
    /// endpoint (client credentials grant).
    pub async fn token(&self, user: &str, resource: &str) -> String {
        let user = self
            .users
            .iter()
            .find(|u| u.id == user)
            .unwrap_or_else(|| panic!("no user {user}"));
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
        }
        let response = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(&user.id, Some(&user.secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", resource),
                ("scope", "csp"),
            ])
            .send()
            .await
            .unwrap_or_else(|e| panic!("the token endpoint did not answer: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "token endpoint: {status}: {text}");
        serde_json::from_str::<Token>(&text)
            .unwrap_or_else(|e| panic!("{e}: {text}"))
            .access_token
    }

    /// Signs `claims` with the provider's own `alg` key, as a token of this
    /// provider (to try claims it would never issue).
    pub fn sign(&self, alg: &str, claims: &serde_json::Value) -> String {
        let key = self
            .keys
            .iter()
            .find(|k| k.alg == alg)
            .unwrap_or_else(|| panic!("no {alg} key"));
        let der = base64::engine::general_purpose::STANDARD
            .decode(&key.der)
            .unwrap_or_else(|e| panic!("{e}"));
        let (algorithm, encoding) = match alg {
            "RS256" => (
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::EncodingKey::from_rsa_der(&der),
            ),
            "ES256" => (
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::EncodingKey::from_ec_der(&der),
            ),
            _ => (
                jsonwebtoken::Algorithm::EdDSA,
                jsonwebtoken::EncodingKey::from_ed_der(&der),
            ),
        };
        let mut header = jsonwebtoken::Header::new(algorithm);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &encoding).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stops the provider and waits for it to exit.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The directory holding `node_modules/oidc-provider` and `provider.mjs`.
fn installed() -> &'static Path {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(install) {
        Ok(dir) => dir,
        Err(message) => panic!("{message}"),
    }
}

fn install() -> Result<PathBuf, String> {
    let dir = super::npm_tools("oidc-provider", &[PACKAGE])?;
    std::fs::write(
        dir.join("provider.mjs"),
        include_str!("../oidc/provider.mjs"),
    )
    .map_err(|e| e.to_string())?;
    Ok(dir)
}
