//! `csp up` as a person runs it, with curl: buy, take a download link,
//! `curl -L` the file (its SHA-256 is the link's), ranges and HEAD on the
//! signed URL, HEAD on the link counting nothing; after a restart the
//! signed URLs handed out before are refused and the link still works.
//! `csp catalog import` and `history` against it, as an operator runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use csp_proto::licensing::v1::licensing_service_client::LicensingServiceClient;
use csp_proto::licensing::v1::{GetKeysAndDownloadsRequest, ListSoftwareRequest};
use csp_proto::ordering::v1::ordering_service_client::OrderingServiceClient;
use csp_tests::Bearer;
use sha2::Digest as _;

const CSP: &str = env!("CARGO_BIN_EXE_csp");

/// A running `csp up`.
struct Up {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    token: String,
    /// The catalog's URL for `csp catalog import`.
    catalog: String,
    _lines: Receiver<String>,
}

impl Up {
    /// Starts `csp up` on `dir` with every listener on a free port (fixed
    /// backend ports lie in Linux's ephemeral range, where another test's
    /// outgoing connection may hold one), and reads the banner.
    fn start(dir: &std::path::Path) -> Up {
        let mut child = Command::new(CSP)
            .args(["up", "--data-dir"])
            .arg(dir)
            .args([
                "--ephemeral-ports",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut grpc, mut http, mut token, mut catalog) = (None, None, None, None);
        while catalog.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("csp up printed no banner within 120 s"));
            if let Some(rest) = line.strip_prefix("csp is up: gateway gRPC on ") {
                let (g, rest) = rest.split_once(", download links on http://").unwrap();
                grpc = Some(g.parse().unwrap());
                http = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() == 2 && words[0] == "admin_agent" {
                token = Some(words[1].to_owned());
            }
            if line.starts_with("Load a price list") {
                catalog = words.last().map(|url| (*url).to_owned());
            }
        }
        Up {
            child,
            grpc: grpc.unwrap(),
            http: http.unwrap(),
            token: token.unwrap(),
            catalog: catalog.unwrap(),
            _lines: rx,
        }
    }

    /// SIGTERM, and waits for the exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exited = self.child.wait().unwrap();
        assert!(exited.success(), "csp up exited with {exited}");
    }
}

impl Drop for Up {
    /// A test that fails leaves no `csp up` behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Runs curl with `args`; its stdout, after checking it succeeded.
fn curl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("curl")
        .args(["--silent", "--show-error"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn sha256(bytes: &[u8]) -> String {
    csp_content::hex(&sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csp_up_serves_downloads_to_curl_behind_signed_urls() {
    let dir = std::env::temp_dir().join(format!("csp-up-{}", uuid::Uuid::new_v4().simple()));
    let up = Up::start(&dir);
    let channel = csp_tests::connect(up.grpc).await;
    let mut ordering =
        OrderingServiceClient::with_interceptor(channel.clone(), Bearer::new(&up.token));
    let (customer, order) = csp_tests::purchase_with(
        &mut ordering,
        "curl.example.com",
        &["windows-server-standard-p1y"],
    )
    .await;
    let mut licensing = LicensingServiceClient::with_interceptor(channel, Bearer::new(&up.token));
    for _ in 0..500 {
        let listed = licensing
            .list_software(ListSoftwareRequest {
                customer_tenant_id: customer.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .software;
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let request = GetKeysAndDownloadsRequest {
        customer_tenant_id: customer,
        subscription_id: order.lines[0].subscription_id.clone(),
        version: "2019".into(),
        language: "de-DE".into(),
        file_type: "vhdx-x64".into(),
    };
    let link = licensing
        .get_keys_and_downloads(request.clone())
        .await
        .unwrap()
        .into_inner()
        .download_link
        .unwrap();
    let key =
        csp_content::ObjectKey::software("windows-server-standard", "2019", "de-DE", "vhdx-x64")
            .unwrap();
    assert_eq!(link.file_sha256, csp_content::placeholder_sha256(&key));
    assert!(
        link.url
            .starts_with(&format!("http://{}/download/", up.http))
    );

    // HEAD on the link: 200, counts nothing, gives no address.
    let head = String::from_utf8(curl(&["--head", &link.url])).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("location"), "{head}");

    // curl -L downloads the file: the link's SHA-256.
    let file = dir.join("downloaded.vhdx");
    curl(&["--location", "--output", file.to_str().unwrap(), &link.url]);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(sha256(&bytes), link.file_sha256);
    assert_eq!(bytes.len() as u64, link.file_size_bytes);

    // The signed URL itself: a range, and HEAD.
    let redirect = String::from_utf8(curl(&[
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code} %{redirect_url}",
        &link.url,
    ]))
    .unwrap();
    let (code, signed) = redirect.split_once(' ').unwrap();
    assert_eq!(code, "302");
    assert!(
        signed.starts_with(&format!(
            "http://{}/files/software/windows-server-standard/2019/de-DE/vhdx-x64?expires=",
            up.http
        )),
        "{signed}"
    );
    assert_eq!(curl(&["--range", "0-9", signed]), bytes[..10].to_vec());
    let head = String::from_utf8(curl(&["--head", signed])).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", bytes.len())),
        "{head}"
    );
    // Two downloads counted (the -L and the redirect read), not the HEADs.
    let now = licensing
        .get_keys_and_downloads(request.clone())
        .await
        .unwrap()
        .into_inner()
        .download_link
        .unwrap();
    assert_eq!(now.downloads_remaining, 48);
    drop(licensing);
    drop(ordering);

    // After a restart the URLs handed out before no longer work (a fresh
    // signing key); the link does, and gives the same file.
    up.stop();
    let up = Up::start(&dir);
    let link_now = link.url.replace(
        &link.url[7..link.url[7..].find('/').unwrap() + 7],
        &up.http.to_string(),
    );
    let signed_now = signed.replace(
        &signed[7..signed[7..].find('/').unwrap() + 7],
        &up.http.to_string(),
    );
    let refused = Command::new("curl")
        .args([
            "--silent",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
        ])
        .arg(&signed_now)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "403");
    let again = dir.join("again.vhdx");
    curl(&["--location", "--output", again.to_str().unwrap(), &link_now]);
    assert_eq!(std::fs::read(&again).unwrap(), bytes);
    up.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `csp catalog ARGS --dev --catalog-url URL`: (success, stdout, stderr).
fn csp_catalog(up: &Up, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(CSP)
        .arg("catalog")
        .args(args)
        .args(["--dev", "--catalog-url", &up.catalog])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_imports_price_lists_with_csp_catalog() {
    let dir = std::env::temp_dir().join(format!("csp-up-{}", uuid::Uuid::new_v4().simple()));
    let up = Up::start(&dir);
    let (ok, history, err) = csp_catalog(&up, &["history"]);
    assert!(ok, "{err}");
    assert!(history.starts_with("version 1 "), "{history}");
    assert!(history.contains("demo-price-list.csv"), "{history}");

    // A list with one price raised and one SKU gone.
    let demo = String::from_utf8(csp_catalog::seed::DEMO_PRICE_LIST.to_vec()).unwrap();
    let mut lines: Vec<String> = demo
        .lines()
        .filter(|l| !l.starts_with("sql-server-enterprise,"))
        .map(str::to_owned)
        .collect();
    for line in &mut lines {
        if line.starts_with("windows-server-standard,") && line.contains(",P1Y,Annual,US,") {
            *line = line.replace(",400.00,", ",425.00,");
        }
    }
    let file = dir.join("december.csv");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let path = file.to_str().unwrap();
    let (ok, dry, _) = csp_catalog(&up, &["import", path, "--dry-run", "--as", "pricing team"]);
    assert!(ok, "{dry}");
    assert!(
        dry.starts_with(
            "dry run, nothing written: 1 product removed, 2 SKUs removed, 1 price changed"
        ),
        "{dry}"
    );
    assert!(dry.contains("price windows-server-standard-p1y in US (2000-01-01 to no end): 400.00 USD -> 425.00 USD"), "{dry}");
    let (ok, out, err) = csp_catalog(&up, &["import", path, "--as", "pricing team"]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("imported as price list version 2"), "{out}");
    assert!(err.contains("prices read and checked"), "{err}");
    let (ok, again, _) = csp_catalog(&up, &["import", path, "--as", "pricing team"]);
    assert!(ok);
    assert!(
        again.starts_with("unchanged: this file is price list version 2"),
        "{again}"
    );
    let (_, history, _) = csp_catalog(&up, &["history"]);
    assert!(history.starts_with("version 2 "), "{history}");
    assert!(
        history.contains("by pricing team  december.csv"),
        "{history}"
    );
    let (_, details, _) = csp_catalog(&up, &["history", "--version", "2"]);
    assert!(
        details.contains("SKU removed: sql-server-enterprise-p1y"),
        "{details}"
    );

    // A file with errors: every one printed with its line and column, and
    // nothing sent.
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            lines[0],
            lines[1]
                .replace(",P1Y,", ",P5Y,")
                .replace(",1008.00,", ",10.0.8,")
        ),
    )
    .unwrap();
    let (ok, _, err) = csp_catalog(&up, &["import", path]);
    assert!(!ok);
    assert!(err.contains("line 2, column TermDuration"), "{err}");
    assert!(err.contains("line 2, column UnitPrice"), "{err}");
    assert!(err.contains("has 2 errors; nothing was imported"), "{err}");
    let (_, history, _) = csp_catalog(&up, &["history"]);
    assert!(history.starts_with("version 2 "), "{history}");
    up.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
