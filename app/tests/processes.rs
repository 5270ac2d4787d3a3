//! The system as it is deployed: every service its own `csp` process, with
//! the environment the Kubernetes manifests give it (`deploy/k8s/base`:
//! `CSP_LISTEN`, `CSP_METRICS_LISTEN`, JSON logs, the backend URLs, the
//! secrets), on PostgreSQL, migrated first by `csp migrate` as the init
//! containers do, with two licensing replicas and two gateways.
//!
//! The flow runs through the gateways: purchase, keys, download (302), then,
//! under load through both gateways, SIGTERM to one licensing replica (no
//! call may fail; the replica exits 0 well inside the grace period), a
//! refund ticket, and the link answers 410. Metrics and JSON log lines with
//! request ids are read from the processes as Prometheus and a log pipeline
//! would. At the end every process gets SIGTERM and must exit 0.
//!
//! It needs PostgreSQL: `CSP_TEST_POSTGRES_URL`, or the local server at
//! `postgres://postgres@127.0.0.1:5432/postgres`. Without one it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use csp_proto::licensing::v1::licensing_service_client::LicensingServiceClient;
use csp_proto::licensing::v1::{GetKeysAndDownloadsRequest, ListSoftwareRequest};
use csp_proto::ordering::v1::CreateCustomerRequest;
use csp_proto::ordering::v1::ordering_service_client::OrderingServiceClient;
use csp_proto::support::v1::support_service_client::SupportServiceClient;
use csp_proto::support::v1::{GetTicketRequest, TicketStatus, refund_request};
use csp_tests::{Bearer, connect, http};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

const CSP: &str = env!("CARGO_BIN_EXE_csp");
const BACKENDS: [&str; 5] = ["catalog", "ordering", "licensing", "audit", "support"];
/// The software file the operator stores with `csp content put`.
const SOFTWARE_FILE: &str = "Windows Server 2022 (a stand-in for the ISO)\n";
/// The pods' `terminationGracePeriodSeconds`.
const GRACE: Duration = Duration::from_secs(30);

fn postgres_url() -> String {
    std::env::var("CSP_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Free ports on 127.0.0.1, all distinct.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One service process, its log (stdout and stderr) in a file.
struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    command: Vec<String>,
    env: BTreeMap<String, String>,
}

impl Process {
    fn start(dir: &Path, name: &str, command: &[&str], env: &BTreeMap<String, String>) -> Process {
        let mut process = Process {
            name: name.to_owned(),
            child: None,
            log: dir.join(format!("{name}.log")),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            env: env.clone(),
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(CSP)
            .args(&self.command)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CSP} for {}: {e}", self.name));
        self.child = Some(child);
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends SIGTERM, as the kubelet does when a pod is deleted.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to exit, at most `limit`.
    async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until the server at `addr` reports SERVING.
async fn serving(process: &Process, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if csp::health_status(addr, "")
            .await
            .is_ok_and(|s| s == "SERVING")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} at {addr} did not become SERVING:\n{}",
            process.name,
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scrape(metrics: SocketAddr) -> String {
    let answer = http::get(&format!("http://{metrics}/metrics")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body
}

type Authed = InterceptedService<Channel, Bearer>;

/// The deployment: databases, ports and processes.
struct Deployment {
    dir: PathBuf,
    server_url: String,
    prefix: String,
    ports: BTreeMap<&'static str, u16>,
    processes: BTreeMap<&'static str, Process>,
    common: BTreeMap<String, String>,
    /// Every licensing replica's URL, comma-separated.
    licensing_replicas: String,
    /// Whether [`Deployment::stop`] cleaned up.
    stopped: bool,
    /// The OpenID Connect provider users sign in with.
    oidc_issuer: String,
}

/// A service's own identity key and the trust list, as a deployment sets
/// them (fresh keys, no development mode).
fn identity_env(service: &str) -> [(String, String); 2] {
    let service = csp_tests::ServiceName::parse(service)
        .unwrap_or_else(|| panic!("{service} is not a csp service"));
    let keys = csp_tests::identity_keys();
    [
        (
            "CSP_IDENTITY_KEY".into(),
            keys.key(service).to_config().expose().to_owned(),
        ),
        ("CSP_IDENTITY_TRUST".into(), keys.trust()),
    ]
}

impl Deployment {
    fn port(&self, name: &str) -> u16 {
        self.ports[name]
    }

    fn database(&self, service: &str) -> String {
        format!("{}_{service}", self.prefix)
    }

    /// The environment of a backend container.
    fn backend_env(
        &self,
        service: &str,
        replica: &str,
        database_url: &str,
    ) -> BTreeMap<String, String> {
        let mut env = self.common.clone();
        env.insert(
            "CSP_LISTEN".into(),
            format!("127.0.0.1:{}", self.port(replica)),
        );
        env.insert(
            "CSP_METRICS_LISTEN".into(),
            format!("127.0.0.1:{}", self.port(&format!("{replica}-metrics"))),
        );
        env.insert("CSP_DATABASE_URL".into(), database_url.to_owned());
        env.extend(identity_env(service));
        match service {
            "licensing" => {
                env.insert(
                    "CSP_LICENSING_KEY".into(),
                    csp_tests::sealing_key().expose().to_owned(),
                );
            }
            "audit" => {
                env.insert(
                    "CSP_AUDIT_KEY".into(),
                    csp_tests::audit_key().expose().to_owned(),
                );
                env.insert(
                    "CSP_AUDIT_CHECKPOINT_FILE".into(),
                    self.dir
                        .join("audit-checkpoints.jsonl")
                        .display()
                        .to_string(),
                );
            }
            "catalog" => {
                env.insert("CSP_SEED_DEMO_CATALOG".into(), "true".into());
            }
            _ => {}
        }
        env
    }

    fn gateway_env(&self, gateway: &str) -> BTreeMap<String, String> {
        let mut env = self.common.clone();
        env.insert("CSP_LICENSING_URL".into(), self.licensing_replicas.clone());
        env.insert(
            "CSP_LISTEN".into(),
            format!("127.0.0.1:{}", self.port(gateway)),
        );
        env.insert(
            "CSP_HTTP_LISTEN".into(),
            format!("127.0.0.1:{}", self.port(&format!("{gateway}-http"))),
        );
        env.insert(
            "CSP_METRICS_LISTEN".into(),
            format!("127.0.0.1:{}", self.port(&format!("{gateway}-metrics"))),
        );
        env.insert("CSP_OIDC_ISSUERS".into(), self.oidc_issuer.clone());
        env.insert(
            "CSP_OIDC_AUDIENCE".into(),
            csp_tests::oidc::AUDIENCE.to_owned(),
        );
        env.extend(identity_env("gateway"));
        env
    }

    async fn start(oidc_issuer: &str) -> Deployment {
        let server_url = postgres_url();
        let prefix = format!("e2e{}", Uuid::new_v4().simple());
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        let names: [&'static str; 18] = [
            "catalog",
            "ordering",
            "licensing-1",
            "licensing-2",
            "audit",
            "support",
            "gateway-a",
            "gateway-b",
            "gateway-a-http",
            "gateway-b-http",
            "catalog-metrics",
            "ordering-metrics",
            "licensing-1-metrics",
            "licensing-2-metrics",
            "audit-metrics",
            "support-metrics",
            "gateway-a-metrics",
            "gateway-b-metrics",
        ];
        let ports: BTreeMap<&'static str, u16> =
            names.into_iter().zip(free_ports(names.len())).collect();
        let url = |name: &str| format!("http://127.0.0.1:{}", ports[name]);
        // The ConfigMap. Licensing has two replicas; in the cluster its
        // headless Service resolves to both. Here the gateways, which spread
        // calls over every replica, are given both addresses (their only
        // difference from the manifests' environment); the backends that call
        // licensing connect to one, as over the Service name.
        let licensing = format!("{},{}", url("licensing-1"), url("licensing-2"));
        let common: BTreeMap<String, String> = [
            ("CSP_LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "info".to_owned()),
            ("CSP_CATALOG_URL", url("catalog")),
            ("CSP_ORDERING_URL", url("ordering")),
            ("CSP_LICENSING_URL", url("licensing-1")),
            ("CSP_AUDIT_URL", url("audit")),
            ("CSP_SUPPORT_URL", url("support")),
            ("CSP_DOWNLOAD_BASE_URL", url("gateway-a-http")),
            (
                "CSP_CONTENT_STORE",
                csp_content::file_url(&dir.join("content")),
            ),
            ("CSP_CONTENT_PUBLIC_URL", url("gateway-a-http")),
            (
                "CSP_CONTENT_SIGNING_KEY",
                csp_tests::content_signing_key().expose().to_owned(),
            ),
            ("CSP_DATA_DIR", dir.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut deployment = Deployment {
            dir,
            server_url,
            prefix,
            ports,
            processes: BTreeMap::new(),
            common,
            licensing_replicas: licensing,
            stopped: false,
            oidc_issuer: oidc_issuer.to_owned(),
        };

        // The databases the DBA creates (deploy/README.md, step 1).
        for service in BACKENDS {
            csp_store::db::ensure_postgres_database(
                &deployment.server_url,
                &deployment.database(service),
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs PostgreSQL at {} (CSP_TEST_POSTGRES_URL): {e:#}",
                    csp_store::db::redact_url(&deployment.server_url)
                )
            });
        }

        // The init containers: every backend's migration, licensing's twice
        // at once as two replicas' pods would.
        let mut migrations = Vec::new();
        for (service, replica) in BACKENDS
            .iter()
            .map(|s| (*s, *s))
            .chain([("licensing", "licensing-again")])
        {
            let mut env = deployment.common.clone();
            env.insert("CSP_DATABASE_URL".into(), deployment.database_url(service));
            migrations.push(Process::start(
                &deployment.dir,
                &format!("migrate-{replica}"),
                &["migrate", service],
                &env,
            ));
        }
        for migration in &mut migrations {
            let status = migration.exited(Duration::from_secs(60)).await;
            assert!(
                status.success(),
                "{} failed ({status}):\n{}",
                migration.name,
                migration.log_tail()
            );
        }

        // The operator stores the software file the test downloads.
        let file = deployment.dir.join("windows-server-2022-en-us.iso");
        std::fs::write(&file, SOFTWARE_FILE).unwrap();
        let mut env = deployment.common.clone();
        env.insert(
            "CSP_DATABASE_URL".into(),
            deployment.database_url("licensing"),
        );
        let mut put = Process::start(
            &deployment.dir,
            "content-put",
            &[
                "content",
                "put",
                "windows-server-standard",
                "2022",
                "en-US",
                "iso-x64",
                &file.display().to_string(),
            ],
            &env,
        );
        let status = put.exited(Duration::from_secs(60)).await;
        assert!(
            status.success(),
            "csp content put failed ({status}):\n{}",
            put.log_tail()
        );

        for (service, replica) in [
            ("catalog", "catalog"),
            ("ordering", "ordering"),
            ("licensing", "licensing-1"),
            ("licensing", "licensing-2"),
            ("audit", "audit"),
            ("support", "support"),
        ] {
            let env = deployment.backend_env(service, replica, &deployment.database_url(service));
            let process = Process::start(&deployment.dir, replica, &[service], &env);
            deployment.processes.insert(replica, process);
        }
        for gateway in ["gateway-a", "gateway-b"] {
            let env = deployment.gateway_env(gateway);
            let process = Process::start(&deployment.dir, gateway, &["gateway"], &env);
            deployment.processes.insert(gateway, process);
        }
        let started: Vec<&'static str> = deployment.processes.keys().copied().collect();
        for name in started {
            let at = addr(deployment.port(name));
            serving(&deployment.processes[name], at).await;
        }
        deployment
    }

    fn database_url(&self, service: &str) -> String {
        let base = self
            .server_url
            .rsplit_once('/')
            .map_or(self.server_url.as_str(), |(b, _)| b);
        format!("{base}/{}", self.database(service))
    }

    fn gateway(&self, name: &str) -> SocketAddr {
        addr(self.port(name))
    }

    async fn stop(mut self) {
        let processes = std::mem::take(&mut self.processes);
        drop(processes);
        for service in BACKENDS {
            let _ =
                csp_store::db::drop_postgres_database(&self.server_url, &self.database(service))
                    .await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.stopped = true;
    }
}

impl Drop for Deployment {
    /// A failed test still stops its processes and drops its databases; the
    /// logs stay in the temporary directory for the failure report.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.processes.clear();
        let server_url = self.server_url.clone();
        let names: Vec<String> = BACKENDS.iter().map(|s| self.database(s)).collect();
        let dropped = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                for name in names {
                    let _ = csp_store::db::drop_postgres_database(&server_url, &name).await;
                }
            });
        });
        let _ = dropped.join();
        eprintln!("deployment logs: {}", self.dir.display());
    }
}

async fn ordering(gateway: SocketAddr, token: &str) -> OrderingServiceClient<Authed> {
    OrderingServiceClient::with_interceptor(connect(gateway).await, Bearer::new(token))
}

async fn licensing(gateway: SocketAddr, token: &str) -> LicensingServiceClient<Authed> {
    LicensingServiceClient::with_interceptor(connect(gateway).await, Bearer::new(token))
}

async fn support(gateway: SocketAddr, token: &str) -> SupportServiceClient<Authed> {
    SupportServiceClient::with_interceptor(connect(gateway).await, Bearer::new(token))
}

/// The same link on another gateway's download listener.
fn via(link: &str, http_port: u16) -> String {
    let path = link
        .strip_prefix("http://")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap();
    format!("http://127.0.0.1:{http_port}{path}")
}

/// JSON log lines of `text` whose call span carries `request_id`; panics on
/// a line that is not a JSON object, or a line of a call without its id.
fn lines_of_call(name: &str, text: &str, request_id: &str) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{name} logged a line that is not JSON ({e}): {line}"));
        assert!(value.is_object(), "{name}: {line}");
        if value["span"]["name"] == "rpc" {
            assert!(
                value["span"]["request_id"]
                    .as_str()
                    .is_some_and(|id| !id.is_empty()),
                "{name} logged a line of a call without a request id: {line}"
            );
        }
        if line.contains(request_id) {
            assert_eq!(
                value["span"]["request_id"], request_id,
                "{name} logged a line of the call without its request id in the span: {line}"
            );
            found.push(value);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_on_postgres_survive_a_replica_terminated_under_load() {
    // Users sign in through a real OpenID Connect provider, as in production.
    let partner = Uuid::new_v4();
    let provider = csp_tests::oidc::Provider::start(&[
        csp_tests::oidc::User::new("admin", partner, &["admin_agent"]),
        csp_tests::oidc::User::new("helpdesk", partner, &["helpdesk_agent"]),
    ]);
    let mut deployment = Deployment::start(&provider.issuer).await;
    let admin = provider.token("admin", csp_tests::oidc::ES256).await;
    let (a, b) = (
        deployment.gateway("gateway-a"),
        deployment.gateway("gateway-b"),
    );

    // Purchase through gateway B, read through gateway A.
    let domain = format!("e2e-{}.example.com", Uuid::new_v4().simple());
    let (customer, order) = csp_tests::purchase_with(
        &mut ordering(b, &admin).await,
        &domain,
        &["windows-server-standard-p1y"],
    )
    .await;
    let mut keys_client = licensing(a, &admin).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = keys_client
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
        assert!(
            Instant::now() < deadline,
            "licensing never received the order:\n{}",
            deployment.processes["ordering"].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let selection = GetKeysAndDownloadsRequest {
        customer_tenant_id: customer.clone(),
        subscription_id: order.lines[0].subscription_id.clone(),
        version: "2022".into(),
        language: "en-US".into(),
        file_type: "iso-x64".into(),
    };
    let issued = keys_client
        .get_keys_and_downloads(selection.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(issued.product_key.len(), 29, "{}", issued.product_key.len());
    let link = issued.download_link.unwrap().url;
    for http_port in [
        deployment.port("gateway-a-http"),
        deployment.port("gateway-b-http"),
    ] {
        let answer = http::get(&via(&link, http_port)).await;
        assert_eq!(answer.status, 302, "{answer:?}");
        let location = answer.header("location").unwrap_or_default();
        assert!(
            location.starts_with(&format!(
                "http://127.0.0.1:{}/files/",
                deployment.port("gateway-a-http")
            )),
            "{answer:?}"
        );
        // Either gateway serves the file behind the signed URL.
        let file = http::get(&via(location, http_port)).await;
        assert_eq!(file.status, 200, "{file:?}");
        assert_eq!(file.body, SOFTWARE_FILE);
    }

    // Load through both gateways; SIGTERM to licensing-2 in the middle.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for worker in 0..6u32 {
        let gateway = if worker.is_multiple_of(2) { a } else { b };
        let mut client = licensing(gateway, &admin).await;
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let (selection, customer) = (selection.clone(), customer.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let result = if n.is_multiple_of(2) {
                    client
                        .get_keys_and_downloads(selection.clone())
                        .await
                        .map(|_| ())
                } else {
                    client
                        .list_software(ListSoftwareRequest {
                            customer_tenant_id: customer.clone(),
                        })
                        .await
                        .map(|_| ())
                };
                match result {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => failures.lock().unwrap().push(format!(
                        "{:?}: {}",
                        status.code(),
                        status.message()
                    )),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Both replicas are taking calls before one is terminated.
    for replica in ["licensing-1", "licensing-2"] {
        let text = scrape(addr(deployment.port(&format!("{replica}-metrics")))).await;
        let served = csp_tests::metric_sample(
            &text,
            "csp_grpc_server_handled_total",
            &[
                ("service", "licensing"),
                ("method", "/csp.licensing.v1.LicensingService/ListSoftware"),
                ("code", "OK"),
            ],
        );
        assert!(served >= Some(1.0), "{replica} took no calls: {served:?}");
    }
    let before_term = ok.load(Ordering::Relaxed);
    let terminated_at = Instant::now();
    deployment.processes["licensing-2"].terminate();
    let status = deployment
        .processes
        .get_mut("licensing-2")
        .unwrap()
        .exited(GRACE)
        .await;
    let drained_in = terminated_at.elapsed();
    assert!(
        status.success(),
        "licensing-2 exited with {status}:\n{}",
        deployment.processes["licensing-2"].log_tail()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let total = ok.load(Ordering::Relaxed);
    eprintln!(
        "load: {total} calls OK ({before_term} before SIGTERM), {} failed; licensing-2 drained and exited in {drained_in:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "calls failed while a replica was terminated: {failures:?}"
    );
    assert!(
        total > before_term + 10,
        "the load stopped when the replica went away"
    );
    let terminated_log = deployment.processes["licensing-2"].log_text();
    let after_signal = terminated_log
        .split_once("shutdown signal received")
        .map(|(_, after)| after.matches("keys and download link handed out").count());
    let Some(after_signal) = after_signal else {
        panic!("licensing-2 did not log the signal:\n{terminated_log}");
    };
    eprintln!("licensing-2 finished {after_signal} GetKeysAndDownloads call(s) after SIGTERM");

    // The orchestrator replaces the pod.
    {
        let replica = deployment.processes.get_mut("licensing-2").unwrap();
        replica.spawn();
    }
    serving(
        &deployment.processes["licensing-2"],
        addr(deployment.port("licensing-2")),
    )
    .await;

    // A refund ticket through gateway B cancels the purchase.
    let mut tickets = support(b, &admin).await;
    let ticket = tickets
        .create_ticket(csp_tests::refund_ticket(
            refund_request::Customer::CustomerDomainName(domain.clone()),
            refund_request::Target::OrderId(order.id.clone()),
            order.total.as_ref().unwrap().minor_units,
        ))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let mut tickets_a = support(a, &admin).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let settled = loop {
        let t = tickets_a
            .get_ticket(GetTicketRequest {
                ticket_id: ticket.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap();
        if t.status != TicketStatus::Submitted as i32 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the refund never settled:\n{}",
            deployment.processes["support"].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        settled.status,
        TicketStatus::Resolved as i32,
        "{}",
        settled.rejection_reason
    );
    for http_port in [
        deployment.port("gateway-a-http"),
        deployment.port("gateway-b-http"),
    ] {
        let answer = http::get(&via(&link, http_port)).await;
        assert_eq!(answer.status, 410, "{answer:?}");
    }
    let status = keys_client
        .get_keys_and_downloads(selection)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // Request ids: a call the gateway denies, and one a backend refuses,
    // each logged in JSON with the request id in its span.
    let request_id = format!("e2e-{}", Uuid::new_v4().simple());
    let helpdesk = provider.token("helpdesk", csp_tests::oidc::RS256).await;
    let mut denied = ordering(a, &helpdesk).await;
    let mut request = tonic::Request::new(CreateCustomerRequest {
        tenant_id: String::new(),
        domain_name: "denied.example.com".into(),
        company_name: "Denied".into(),
        market: "US".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    let status = denied.create_customer(request).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut direct = OrderingServiceClient::new(connect(addr(deployment.port("ordering"))).await);
    let mut request = tonic::Request::new(CreateCustomerRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    let status = direct.create_customer(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for name in ["gateway-a", "ordering"] {
        let text = deployment.processes[name].log_text();
        let lines = lines_of_call(name, &text, &request_id);
        assert!(
            !lines.is_empty(),
            "{name} logged nothing for {request_id}:\n{text}"
        );
    }
    for (name, process) in &deployment.processes {
        lines_of_call(name, &process.log_text(), "no-such-request-id");
    }

    // Metrics, scraped from a gateway as Prometheus does.
    let text = scrape(addr(deployment.port("gateway-a-metrics"))).await;
    let denied = csp_tests::metric_sample(
        &text,
        "csp_grpc_server_handled_total",
        &[
            ("service", "gateway"),
            ("method", "/csp.ordering.v1.OrderingService/CreateCustomer"),
            ("code", "PERMISSION_DENIED"),
        ],
    );
    assert_eq!(denied, Some(1.0), "{text}");
    let text = scrape(addr(deployment.port("ordering-metrics"))).await;
    assert!(
        csp_tests::metric_sample(
            &text,
            "csp_db_pool_max_connections",
            &[("service", "ordering")]
        ) >= Some(1.0),
        "{text}"
    );

    // Every process stops cleanly on SIGTERM, as at a rollout.
    for process in deployment.processes.values() {
        process.terminate();
    }
    for (name, process) in deployment.processes.iter_mut() {
        let status = process.exited(GRACE).await;
        assert!(
            status.success(),
            "{name} exited with {status} after SIGTERM:\n{}",
            process.log_tail()
        );
    }

    deployment.stop().await;
}
