//! Files in object storage: software downloads (one object per product,
//! version, language and file type) and ticket attachments, handed out only
//! behind short-lived signed URLs.
//!
//! Three backends, chosen by the store URL (`CSP_CONTENT_STORE`):
//! - `file:///PATH`: a local directory (the embedded default of `csp up`).
//!   The gateway's public HTTP listener serves it at `/files/KEY` behind its
//!   own signed, expiring URLs (HMAC-SHA256 with `CSP_CONTENT_SIGNING_KEY`,
//!   shared by the services that sign and the gateway that checks).
//! - `az://CONTAINER`: Azure Blob Storage, with service SAS URLs signed by
//!   the account key.
//! - `s3://BUCKET`: S3 or any S3-compatible store, with presigned URLs.
//!
//! The cloud backends are the `object_store` crate's (Apache Arrow's
//! uniform object store client): it already signs SAS and presigned URLs,
//! so no request signing is written here. Their credentials come from the
//! standard environment (`AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, `AWS_ACCESS_KEY_ID`, ...) or from
//! `--content-store-option KEY=VALUE` with `object_store`'s configuration
//! keys.

mod key;
mod local;

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use csp_kit::config::Secret;
use futures_util::TryStreamExt as _;
use object_store::path::Path;
use object_store::signer::Signer as _;
use object_store::{ObjectStore, PutPayload};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

pub use key::{InvalidKey, ObjectKey};
pub use local::{LocalFiles, Refused};

/// The public development signing key of the local backend's URLs (only
/// with `--dev`).
pub const DEV_SIGNING_KEY: &str = "csp-development-content-signing-key-change-me";

/// How often readiness asks the store whether it answers.
pub const PROBE_EVERY: Duration = Duration::from_secs(15);

/// How long a signed URL works by default: five minutes.
pub const DEFAULT_URL_TTL_SECS: u64 = 300;

/// Where content lives and how its URLs are signed; every service that
/// stores or hands out files takes these.
#[derive(clap::Args, Clone, Debug)]
pub struct ContentArgs {
    /// The object store: file:///PATH (a local directory the gateway serves),
    /// az://CONTAINER (Azure Blob Storage) or s3://BUCKET (S3 or compatible).
    /// Credentials come from the standard AZURE_STORAGE_* / AWS_* variables
    /// or --content-store-option.
    #[arg(long = "content-store", env = "CSP_CONTENT_STORE")]
    pub store: Option<String>,
    /// Store options as KEY=VALUE, object_store's configuration keys (for
    /// example azure_storage_endpoint=URL, aws_endpoint=URL, allow_http=true);
    /// comma-separated in the variable.
    #[arg(
        long = "content-store-option",
        env = "CSP_CONTENT_STORE_OPTIONS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub options: Vec<String>,
    /// Seconds a signed URL works after it is handed out.
    #[arg(long = "content-url-ttl-secs", env = "CSP_CONTENT_URL_TTL_SECS", default_value_t = DEFAULT_URL_TTL_SECS)]
    pub url_ttl_secs: u64,
    /// For file:// stores: the public base URL of the gateway's download
    /// listener, where the files are served (`BASE/files/KEY`).
    #[arg(long = "content-public-url", env = "CSP_CONTENT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// For file:// stores: the key the gateway's file URLs are signed with
    /// (the signing services and the gateway share it). Required unless
    /// --dev.
    #[arg(
        long = "content-signing-key",
        env = "CSP_CONTENT_SIGNING_KEY",
        hide_env_values = true
    )]
    pub signing_key: Option<Secret>,
}

impl Default for ContentArgs {
    fn default() -> Self {
        Self {
            store: None,
            options: Vec::new(),
            url_ttl_secs: DEFAULT_URL_TTL_SECS,
            public_url: None,
            signing_key: None,
        }
    }
}

impl ContentArgs {
    /// A local store in `dir`, served at `public_url` with URLs signed by
    /// `signing_key`.
    pub fn local(dir: &FsPath, public_url: String, signing_key: Secret) -> Self {
        Self {
            store: Some(file_url(dir)),
            options: Vec::new(),
            url_ttl_secs: DEFAULT_URL_TTL_SECS,
            public_url: Some(public_url),
            signing_key: Some(signing_key),
        }
    }

    /// With `dev` and no store named: a local store in `DATA_DIR/content`,
    /// served at `public_url` unless one is set (a development machine).
    pub fn or_dev_local(mut self, dev: bool, data_dir: &FsPath, public_url: &str) -> Self {
        if dev && self.store.is_none() {
            self.store = Some(default_store(data_dir));
            self.public_url.get_or_insert_with(|| public_url.to_owned());
        }
        self
    }

    /// The local directory of a file:// store.
    pub fn local_dir(&self) -> Option<PathBuf> {
        let store = self.store.as_deref()?;
        store.strip_prefix("file://").map(PathBuf::from)
    }
}

/// The store of one machine: `file://DATA_DIR/content` (`csp up`, `--dev`,
/// and `csp content`'s default).
pub fn default_store(data_dir: &FsPath) -> String {
    file_url(&data_dir.join("content"))
}

/// The `file://` URL of a directory.
pub fn file_url(dir: &FsPath) -> String {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    format!("file://{}", dir.display())
}

/// Which kind of store holds the content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A local directory served by the gateway.
    Local,
    /// Azure Blob Storage.
    Azure,
    /// S3 or an S3-compatible store.
    S3,
}

impl Backend {
    /// The metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Azure => "azure",
            Backend::S3 => "s3",
        }
    }
}

/// What a signed URL is for (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A software download, behind a counted link.
    Software,
    /// A ticket attachment.
    Attachment,
}

impl Purpose {
    const fn as_str(self) -> &'static str {
        match self {
            Purpose::Software => "software",
            Purpose::Attachment => "attachment",
        }
    }
}

/// What storing an object recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
}

/// A URL that reads one object until it expires (its `Debug` hides the
/// URL: it is a credential).
#[derive(Clone)]
pub struct SignedUrl {
    /// The URL (a credential until it expires: never logged).
    pub url: String,
    /// When it stops working.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedUrl")
            .field("url", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a content operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// No such object.
    #[error("no object is stored at {0}")]
    NotFound(String),
    /// The store failed or cannot be reached.
    #[error("the object store failed: {0}")]
    Store(String),
    /// Reading the input failed.
    #[error("reading the file failed: {0}")]
    Read(#[from] std::io::Error),
}

impl From<object_store::Error> for ContentError {
    fn from(error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { path, .. } => ContentError::NotFound(path),
            other => ContentError::Store(other.to_string()),
        }
    }
}

/// Content in one object store.
#[derive(Clone)]
pub struct ContentStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    signing: Signing,
    ttl: Duration,
    /// The service that signs (a metrics label).
    service: &'static str,
    /// The last readiness answer and when it was asked.
    probed: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

enum Signing {
    /// An operator tool's local store: no URLs.
    Unsigned,
    Local(LocalFiles),
    Azure(Arc<object_store::azure::MicrosoftAzure>),
    S3(Arc<object_store::aws::AmazonS3>),
}

impl std::fmt::Debug for ContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentStore")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// How hard the cloud clients try before a call fails: a download must not
/// hang on a store that is down.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

fn client_options() -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120))
}

/// The KEY=VALUE options, split.
fn options(args: &ContentArgs) -> anyhow::Result<Vec<(&str, &str)>> {
    args.options
        .iter()
        .filter(|o| !o.trim().is_empty())
        .map(|option| {
            option
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "a content store option is not KEY=VALUE (key {})",
                        csp_kit::error::quoted(option.split('=').next().unwrap_or_default())
                    )
                })
        })
        .collect()
}

impl ContentStore {
    /// Opens the store `args` name, for `service`. A file:// directory is
    /// created when missing. Fails, naming the setting, when the store is
    /// not configured or its settings do not fit.
    pub fn open(args: &ContentArgs, service: &'static str, dev: bool) -> anyhow::Result<Self> {
        Self::open_with(args, service, Some(dev))
    }

    /// Opens the store `args` name for an operator tool that stores, lists
    /// and removes objects but signs no URL (no signing key needed).
    pub fn open_unsigned(args: &ContentArgs) -> anyhow::Result<Self> {
        Self::open_with(args, "csp", None)
    }

    /// Opens the store; `signing` is `Some(dev)` for a service that signs
    /// URLs.
    fn open_with(
        args: &ContentArgs,
        service: &'static str,
        signing: Option<bool>,
    ) -> anyhow::Result<Self> {
        let Some(url) = args.store.as_deref() else {
            anyhow::bail!(
                "CSP_CONTENT_STORE is not set: name the object store software files and \
                 attachments live in (file:///PATH, az://CONTAINER or s3://BUCKET)"
            );
        };
        anyhow::ensure!(
            args.url_ttl_secs > 0 && args.url_ttl_secs <= 7 * 24 * 3600,
            "CSP_CONTENT_URL_TTL_SECS must be between 1 and 604800 (7 days); 300 is the default"
        );
        let options = options(args)?;
        let (store, signing): (Arc<dyn ObjectStore>, Signing) = if let Some(dir) =
            url.strip_prefix("file://")
        {
            let signing = match signing {
                Some(dev) => {
                    let files = LocalFiles::open(args, dev)?.ok_or_else(|| {
                        anyhow::anyhow!("the content store is not a local directory")
                    })?;
                    let public_url = args.public_url.as_deref().ok_or_else(|| {
                        anyhow::anyhow!(
                            "CSP_CONTENT_PUBLIC_URL is not set: with a file:// content store, \
                                 give the public base URL of the gateway's download listener (for \
                                 example https://downloads.example.com)"
                        )
                    })?;
                    Signing::Local(files.with_public_url(public_url)?)
                }
                None => Signing::Unsigned,
            };
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create the content directory {dir}: {e}"))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
            (Arc::new(store), signing)
        } else if url.starts_with("az://") || url.starts_with("azure://") {
            let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_retry(retry())
                .with_client_options(client_options());
            for (key, value) in options {
                builder = builder.with_config(key.parse()?, value);
            }
            let azure = Arc::new(builder.build()?);
            (azure.clone(), Signing::Azure(azure))
        } else if url.starts_with("s3://") {
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .with_retry(retry())
                .with_client_options(client_options());
            for (key, value) in options {
                builder = builder.with_config(key.parse()?, value);
            }
            let s3 = Arc::new(builder.build()?);
            (s3.clone(), Signing::S3(s3))
        } else {
            anyhow::bail!(
                "CSP_CONTENT_STORE {} is not a store this system knows: use file:///PATH, \
                     az://CONTAINER or s3://BUCKET",
                csp_kit::error::quoted(url)
            );
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                signing,
                ttl: Duration::from_secs(args.url_ttl_secs),
                service,
                probed: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The kind of store.
    pub fn backend(&self) -> Backend {
        match self.inner.signing {
            Signing::Local(_) | Signing::Unsigned => Backend::Local,
            Signing::Azure(_) => Backend::Azure,
            Signing::S3(_) => Backend::S3,
        }
    }

    /// How long a signed URL works.
    pub fn url_ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// Stores what `reader` yields at `key`, streaming (multipart uploads
    /// for large files), and returns its size and SHA-256. `progress` hears
    /// the bytes stored so far after each chunk. An object already at `key`
    /// is replaced only once the new one is complete.
    pub async fn put_stream<R: AsyncRead + Unpin>(
        &self,
        key: &ObjectKey,
        mut reader: R,
        mut progress: impl FnMut(u64),
    ) -> Result<Stored, ContentError> {
        let mut writer = self.writer(key);
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(error) => {
                    writer.abort().await;
                    return Err(error.into());
                }
            };
            writer.write(&chunk[..n]).await?;
            progress(writer.size());
        }
        writer.finish().await
    }

    /// A writer that streams an object to `key` chunk by chunk, measuring
    /// its size and SHA-256; nothing is visible at `key` until
    /// [`ObjectWriter::finish`].
    pub fn writer(&self, key: &ObjectKey) -> ObjectWriter {
        ObjectWriter {
            inner: object_store::buffered::BufWriter::new(self.inner.store.clone(), key.path()),
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Stores `bytes` at `key` in one request.
    pub async fn put_bytes(&self, key: &ObjectKey, bytes: Bytes) -> Result<Stored, ContentError> {
        let stored = Stored {
            size: bytes.len() as u64,
            sha256: hex(&Sha256::digest(&bytes)),
        };
        self.inner
            .store
            .put(&key.path(), PutPayload::from_bytes(bytes))
            .await?;
        Ok(stored)
    }

    /// The whole object at `key`.
    pub async fn get_bytes(&self, key: &ObjectKey) -> Result<Bytes, ContentError> {
        Ok(self.inner.store.get(&key.path()).await?.bytes().await?)
    }

    /// The size of the object at `key`; `None` when there is none.
    pub async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, ContentError> {
        match self.inner.store.head(&key.path()).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// Deletes the object at `key` (nothing when there is none).
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), ContentError> {
        match self.inner.store.delete(&key.path()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// Every object under `prefix` (a key's first segments), with its size.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ContentError> {
        let prefix = Path::from(prefix);
        let objects: Vec<object_store::ObjectMeta> =
            self.inner.store.list(Some(&prefix)).try_collect().await?;
        let mut listed: Vec<(String, u64)> = objects
            .into_iter()
            .map(|meta| (meta.location.to_string(), meta.size))
            .collect();
        listed.sort();
        Ok(listed)
    }

    /// A URL that reads the object at `key` (GET, and HEAD where the store
    /// allows it) for [`ContentStore::url_ttl`], signed without a network
    /// call where the credentials allow (an account key, static keys).
    pub async fn signed_url(
        &self,
        key: &ObjectKey,
        purpose: Purpose,
    ) -> Result<SignedUrl, ContentError> {
        let ttl = self.inner.ttl;
        let expires_at = SystemTime::now() + ttl;
        let method = http::Method::GET;
        let url = match &self.inner.signing {
            Signing::Local(files) => files.sign(key, expires_at),
            Signing::Unsigned => {
                return Err(ContentError::Store("this tool signs no URLs".to_owned()));
            }
            Signing::Azure(azure) => azure
                .signed_url(method, &key.path(), ttl)
                .await?
                .to_string(),
            Signing::S3(s3) => s3.signed_url(method, &key.path(), ttl).await?.to_string(),
        };
        csp_kit::metrics::count_signed_url(
            self.inner.service,
            self.backend().as_str(),
            purpose.as_str(),
        );
        Ok(SignedUrl { url, expires_at })
    }

    /// The readiness check of a service that needs the store: whether it
    /// answers, asked at most every [`PROBE_EVERY`] (a cloud store is not
    /// listed on every health watch tick).
    pub fn readiness(&self) -> csp_kit::server::Probe {
        let store = self.clone();
        Arc::new(move || {
            let store = store.clone();
            Box::pin(async move {
                let last = *store
                    .inner
                    .probed
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some((at, answer)) = last
                    && at.elapsed() < PROBE_EVERY
                {
                    return answer;
                }
                let answer = store.probe().await;
                *store
                    .inner
                    .probed
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    Some((std::time::Instant::now(), answer));
                answer
            })
        })
    }

    /// Whether the store answers (a listing of at most one page).
    pub async fn probe(&self) -> bool {
        let prefix = Path::from("software");
        match tokio::time::timeout(
            Duration::from_secs(10),
            self.inner.store.list_with_delimiter(Some(&prefix)),
        )
        .await
        {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "the object store does not answer");
                false
            }
            Err(_) => {
                tracing::warn!("the object store did not answer within 10 s");
                false
            }
        }
    }
}

/// An object being written; see [`ContentStore::writer`].
pub struct ObjectWriter {
    inner: object_store::buffered::BufWriter,
    hasher: Sha256,
    size: u64,
}

impl ObjectWriter {
    /// Appends `bytes`; on a failure the upload is aborted.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ContentError> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        if let Err(error) = self.inner.write_all(bytes).await {
            let _ = self.inner.abort().await;
            return Err(ContentError::Store(error.to_string()));
        }
        Ok(())
    }

    /// The bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Completes the object: its size and SHA-256.
    pub async fn finish(mut self) -> Result<Stored, ContentError> {
        self.inner
            .shutdown()
            .await
            .map_err(|e| ContentError::Store(e.to_string()))?;
        Ok(Stored {
            size: self.size,
            sha256: hex(&self.hasher.finalize()),
        })
    }

    /// Gives the object up: nothing is stored.
    pub async fn abort(mut self) {
        if let Err(error) = self.inner.abort().await {
            tracing::warn!(%error, "an aborted upload could not be cleaned up");
        }
    }
}

pub use csp_kit::hex;

/// The demo placeholder stored for `key` at first start: a few KiB of text
/// naming the object, so its SHA-256 is known in advance
/// ([`placeholder_sha256`]).
pub fn placeholder(key: &ObjectKey) -> Bytes {
    let line = format!(
        "csp demo placeholder for {}: a real deployment stores the vendor's file here with `csp content put`.\n",
        key.as_str()
    );
    let mut text = String::with_capacity(4096 + line.len());
    while text.len() < 4096 {
        text.push_str(&line);
    }
    Bytes::from(text)
}

/// The SHA-256 of [`placeholder`]`(key)`.
pub fn placeholder_sha256(key: &ObjectKey) -> String {
    hex(&Sha256::digest(placeholder(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_a_few_kib_and_name_their_object() {
        let key = ObjectKey::software("windows-server-standard", "2019", "en-US", "iso-x64")
            .unwrap_or_else(|e| panic!("{e}"));
        let bytes = placeholder(&key);
        assert!((4096..8192).contains(&bytes.len()), "{}", bytes.len());
        assert!(String::from_utf8_lossy(&bytes).contains("software/windows-server-standard/2019"));
        assert_eq!(placeholder_sha256(&key), hex(&Sha256::digest(&bytes)));
    }

    #[test]
    fn options_must_be_key_value() {
        let mut args = ContentArgs {
            options: vec!["allow_http=true".into(), " ".into()],
            ..Default::default()
        };
        assert_eq!(
            options(&args).unwrap_or_default(),
            vec![("allow_http", "true")]
        );
        args.options.push("azure_storage_account_key".into());
        assert!(options(&args).is_err());
    }

    #[tokio::test]
    async fn a_local_store_keeps_lists_and_deletes_with_checksums() {
        let dir = std::env::temp_dir().join(format!("csp-content-{}", std::process::id()));
        let args = ContentArgs::local(
            &dir,
            "http://127.0.0.1:8080".into(),
            Secret::new("a-signing-key-of-at-least-thirty-two-chars"),
        );
        let store = ContentStore::open(&args, "test", false).unwrap_or_else(|e| panic!("{e:#}"));
        let key = ObjectKey::software("p", "1", "en-US", "iso").unwrap_or_else(|e| panic!("{e}"));
        let data = vec![7u8; 3 * (1 << 20) + 5];
        let mut seen = 0;
        let stored = store
            .put_stream(&key, &data[..], |n| seen = n)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored.size, data.len() as u64);
        assert_eq!(seen, stored.size);
        assert_eq!(stored.sha256, hex(&Sha256::digest(&data)));
        assert_eq!(
            store.size(&key).await.unwrap_or_else(|e| panic!("{e}")),
            Some(stored.size)
        );
        assert_eq!(
            store
                .get_bytes(&key)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .len(),
            data.len()
        );
        let listed = store
            .list("software")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed, vec![(key.as_str().to_owned(), stored.size)]);
        assert!(store.probe().await);
        let signed = store
            .signed_url(&key, Purpose::Software)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            signed
                .url
                .starts_with("http://127.0.0.1:8080/files/software/p/1/en-US/iso?expires="),
            "{}",
            signed.url
        );
        store.delete(&key).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.size(&key).await.unwrap_or_default(), None);
        store.delete(&key).await.unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_cloud_store_that_does_not_answer_is_not_ready() {
        // Nothing listens on port 1: the listing fails within the retries.
        let args = ContentArgs {
            store: Some("az://csp-software".into()),
            options: vec![
                "azure_storage_account_name=devstoreaccount1".into(),
                "azure_storage_account_key=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==".into(),
                "azure_storage_endpoint=http://127.0.0.1:1/devstoreaccount1".into(),
                "allow_http=true".into(),
            ],
            ..Default::default()
        };
        let store = ContentStore::open(&args, "test", false).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(store.backend(), Backend::Azure);
        assert!(!store.probe().await);
        assert!(!(store.readiness())().await);
        // Signing needs no network: the account key signs the SAS.
        let key = ObjectKey::software("p", "1", "en-US", "iso").unwrap_or_else(|e| panic!("{e}"));
        let url = store
            .signed_url(&key, Purpose::Software)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            url.url.starts_with(
                "http://127.0.0.1:1/devstoreaccount1/csp-software/software/p/1/en-US/iso?"
            ),
            "{}",
            url.url
        );
        assert!(url.url.contains("sig="), "{}", url.url);
    }

    #[test]
    fn a_store_must_be_named_and_known() {
        let missing = ContentStore::open(&ContentArgs::default(), "test", true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(missing.contains("CSP_CONTENT_STORE"), "{missing}");
        let unknown = ContentStore::open(
            &ContentArgs {
                store: Some("gs://bucket".into()),
                ..Default::default()
            },
            "test",
            true,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(unknown.contains("az://CONTAINER"), "{unknown}");
        let no_url = ContentStore::open(
            &ContentArgs {
                store: Some("file:///tmp/csp-content-no-url".into()),
                ..Default::default()
            },
            "test",
            true,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(no_url.contains("CSP_CONTENT_PUBLIC_URL"), "{no_url}");
    }
}
