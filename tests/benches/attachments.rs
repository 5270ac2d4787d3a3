//! The attachment attack of issue 13, measured: one partner sends 8
//! CreateTicket calls at once, each with 5 attachments of 10 MiB (50 MiB a
//! call), and retries whenever told to wait (RESOURCE_EXHAUSTED with
//! RetryInfo), until each call is stored or refused by the partner's
//! attachment quota. The system runs in a child process (this bench started
//! again with `CSP_BENCH_ROLE=system`), as `csp up` runs it: all six services
//! on SQLite with the default limits. Prints the outcomes, the time, the
//! child's resident memory before and its peak (`VmHWM`) and the size of
//! support's database files. Asserts nothing.
//!
//! `cargo bench -p csp-tests --bench attachments`
//! Knobs: CSP_BENCH_CALLS (default 8), CSP_BENCH_FILES (per call, default
//! 5), CSP_BENCH_FILE_MIB (default 10).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use csp::{Addresses, Storage, SystemConfig};
use csp_kit::config::Secret;
use csp_kit::roles::Role;
use csp_proto::support::v1::support_service_client::SupportServiceClient;
use csp_proto::support::v1::{AttachmentUpload, Contact, CreateTicketRequest, Impact, IssueType};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tonic_types::StatusExt as _;

const ROLE: &str = "CSP_BENCH_ROLE";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn jwt_secret() -> Secret {
    Secret::new("bench-jwt-secret-0123456789")
}

fn main() -> anyhow::Result<()> {
    if std::env::var(ROLE).as_deref() == Ok("system") {
        return run_system();
    }
    drive()
}

/// The child: the whole system, until its stdin closes.
fn run_system() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = std::path::PathBuf::from(std::env::var("CSP_BENCH_DIR")?);
    let system = runtime.block_on(csp::start(SystemConfig {
        storage: Storage::Sqlite(dir),
        addresses: Addresses::ephemeral(),
        jwt_secret: jwt_secret(),
        oidc: Default::default(),
        identity_keys: csp_kit::identity::keys::KeySet::generate()?,
        seed_demo_catalog: true,
        clock: csp_kit::clock::system(),
        sealing_key: Secret::new("bench-sealing-key-0123456789"),
        content: Default::default(),
        attachment_quota: Default::default(),
        audit_key: Secret::new("bench-audit-key-0123456789"),
        audit_log_name: csp_audit::log::DEFAULT_LOG_NAME.to_owned(),
        held_back: &[],
    }))?;
    println!("gateway {}", system.addresses.gateway);
    // Serve until the parent closes our stdin.
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line)? > 0 {
        line.clear();
    }
    runtime.block_on(system.stop())?;
    Ok(())
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Outcomes {
    stored: AtomicU64,
    over_quota: AtomicU64,
    told_to_wait: AtomicU64,
    other: AtomicU64,
}

fn drive() -> anyhow::Result<()> {
    let calls: usize = env_or("CSP_BENCH_CALLS", 8);
    let files: usize = env_or("CSP_BENCH_FILES", 5);
    let file_mib: usize = env_or("CSP_BENCH_FILE_MIB", 10);
    let dir = std::env::temp_dir().join(format!(
        "csp-bench-attachments-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let mut child: Child = Command::new(std::env::current_exe()?)
        .env(ROLE, "system")
        .env("CSP_BENCH_DIR", &dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let gateway = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("the system stopped before serving"))??;
        if let Some(addr) = line.strip_prefix("gateway ") {
            break addr.to_owned();
        }
    };
    let idle = Arc::new(AtomicU64::new(0));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let partner = uuid::Uuid::new_v4();
    let token = csp_gateway::auth::mint_dev_token(
        &jwt_secret(),
        partner,
        "attacker",
        "Attacker",
        &[Role::HelpdeskAgent],
        Duration::from_secs(3600),
    )?;
    let content = prost::bytes::Bytes::from(vec![0x5a; file_mib * 1024 * 1024]);
    let outcomes = Arc::new(Outcomes {
        stored: AtomicU64::new(0),
        over_quota: AtomicU64::new(0),
        told_to_wait: AtomicU64::new(0),
        other: AtomicU64::new(0),
    });

    // Sample the child's memory while the calls run.
    let peak_sampled = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak_sampled.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some((rss, _)) = memory(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    println!(
        "attachment attack: {calls} CreateTicket calls at once from one partner, {files} x {file_mib} MiB attachments each ({} MiB a call); default limits (attachment quota 500 files / 256 MiB per partner, large-request budget 64 MiB)",
        files * file_mib
    );
    let started = Instant::now();
    runtime.block_on(async {
        let channel = Endpoint::from_shared(format!("http://{gateway}"))?
            .connect()
            .await?;
        // Until the gateway says every backend serves.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        for _ in 0..300 {
            let serving = health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().status == 1);
            if serving {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (idle_rss, _) = memory(pid).ok_or_else(|| anyhow::anyhow!("the system stopped"))?;
        idle.store(idle_rss, Ordering::Relaxed);
        let bearer: MetadataValue<_> = format!("Bearer {token}").parse()?;
        let mut tasks = Vec::new();
        for _ in 0..calls {
            let ticket = CreateTicketRequest {
                issue_type: IssueType::Technical as i32,
                impact: Impact::Minimal as i32,
                title: "Evidence".into(),
                description: "Captures attached.".into(),
                contact: Some(Contact {
                    name: "Ada Agent".into(),
                    email: "ada@partner.example".into(),
                    phone: "+1 425 555 0100".into(),
                }),
                refund: None,
                attachments: (0..files)
                    .map(|i| AttachmentUpload {
                        file_name: format!("capture-{i}.pdf"),
                        content_type: "application/pdf".into(),
                        content: content.clone(),
                        upload_id: String::new(),
                    })
                    .collect(),
                request_id: uuid::Uuid::new_v4().to_string(),
            };
            let (channel, bearer, outcomes) = (channel.clone(), bearer.clone(), outcomes.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = SupportServiceClient::with_interceptor(
                    channel,
                    move |mut request: tonic::Request<()>| {
                        request
                            .metadata_mut()
                            .insert("authorization", bearer.clone());
                        Ok(request)
                    },
                );
                loop {
                    match client.create_ticket(ticket.clone()).await {
                        Ok(_) => {
                            outcomes.stored.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            let details = status.get_error_details();
                            if details.quota_failure().is_some() {
                                outcomes.over_quota.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            outcomes.told_to_wait.fetch_add(1, Ordering::Relaxed);
                            let wait = details
                                .retry_info()
                                .and_then(|r| r.retry_delay)
                                .unwrap_or(Duration::from_secs(1));
                            tokio::time::sleep(wait).await;
                        }
                        Err(status) => {
                            eprintln!("  call failed: {:?} {}", status.code(), status.message());
                            outcomes.other.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await?;
        }
        anyhow::Ok(())
    })?;
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let (_, hwm) = memory(pid).ok_or_else(|| anyhow::anyhow!("the system stopped"))?;

    let file_size = |name: &str| {
        std::fs::metadata(dir.join(name))
            .map(|m| m.len() as f64 / (1024.0 * 1024.0))
            .unwrap_or(0.0)
    };
    println!(
        "outcomes: {} stored, {} refused by the quota, {} other failures; told to wait and retried {} times",
        outcomes.stored.load(Ordering::Relaxed),
        outcomes.over_quota.load(Ordering::Relaxed),
        outcomes.other.load(Ordering::Relaxed),
        outcomes.told_to_wait.load(Ordering::Relaxed),
    );
    println!("time: {:.1} s", elapsed.as_secs_f64());
    println!(
        "system process RSS: {:.0} MiB idle, peak {:.0} MiB (VmHWM; sampled every 20 ms: {:.0} MiB)",
        mib(idle.load(Ordering::Relaxed)),
        mib(hwm),
        mib(peak_sampled.load(Ordering::Relaxed)),
    );
    println!(
        "support.db {:.0} MiB, support.db-wal {:.0} MiB",
        file_size("support.db"),
        file_size("support.db-wal"),
    );

    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
