//! Azurite, Microsoft's Azure Storage emulator (npm `azurite`), as the
//! tests' Azure Blob Storage: a blob service on a free port, in memory,
//! with one container made by Microsoft's SDK (`@azure/storage-blob`).
//!
//! Both are installed once under `target/tools/azurite` (`.ci/run` does it
//! first; a test installs them itself when they are missing, and fails,
//! never skips, when it cannot).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// What is installed (the versions `.ci/run` installs).
const PACKAGES: [&str; 2] = ["azurite@3.37.0", "@azure/storage-blob@12.29.1"];

/// Azurite's well-known development account and key (public values).
pub const ACCOUNT: &str = "devstoreaccount1";
/// See [`ACCOUNT`].
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The container the tests store content in.
pub const CONTAINER: &str = "csp-software";

/// A running Azurite blob service; stopped when dropped.
pub struct Azurite {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Azurite {
    /// Starts Azurite on a free port and creates [`CONTAINER`].
    pub fn start() -> Azurite {
        let dir = installed();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let mut child = Command::new(dir.join("node_modules/.bin/azurite-blob"))
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(port.to_string())
            .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--loose"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run azurite-blob (Node.js is needed): {e}"));
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            panic!("azurite-blob has no stdout pipe");
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("successfully listens") {
                    let _ = tx.send(());
                }
            }
        });
        let mut azurite = Azurite { child, port };
        // Node.js starts slowly on a loaded 2-core machine (the whole suite
        // runs in parallel): wait up to 3 minutes, but fail at once if
        // Azurite exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        loop {
            match rx.recv_timeout(std::time::Duration::from_secs(1)) {
                Ok(()) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = azurite.child.wait();
                    panic!("azurite-blob closed its output before listening: {status:?}");
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Ok(Some(status)) = azurite.child.try_wait() {
                panic!("azurite-blob exited before listening: {status}");
            }
            if std::time::Instant::now() > deadline {
                azurite.kill();
                panic!("Azurite did not report listening within 180 s");
            }
        }
        let made = Command::new("node")
            .arg(dir.join("container.mjs"))
            .arg(azurite.endpoint())
            .arg(CONTAINER)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run node: {e}"));
        assert!(
            made.status.success(),
            "cannot create the container: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        azurite
    }

    /// The blob endpoint (path style, as Azurite serves it).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Content settings for the container, with SAS URLs valid for
    /// `url_ttl_secs`.
    pub fn content_args(&self, url_ttl_secs: u64) -> csp_content::ContentArgs {
        csp_content::ContentArgs {
            store: Some(format!("az://{CONTAINER}")),
            options: vec![
                format!("azure_storage_account_name={ACCOUNT}"),
                format!("azure_storage_account_key={ACCOUNT_KEY}"),
                format!("azure_storage_endpoint={}", self.endpoint()),
                "allow_http=true".to_owned(),
            ],
            url_ttl_secs,
            ..Default::default()
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The directory holding `node_modules/azurite`, `@azure/storage-blob` and
/// `container.mjs`.
fn installed() -> &'static Path {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(install) {
        Ok(dir) => dir,
        Err(message) => panic!("{message}"),
    }
}

fn install() -> Result<PathBuf, String> {
    let dir = super::npm_tools("azurite", &PACKAGES)?;
    std::fs::write(
        dir.join("container.mjs"),
        include_str!("../azurite/container.mjs"),
    )
    .map_err(|e| e.to_string())?;
    Ok(dir)
}
