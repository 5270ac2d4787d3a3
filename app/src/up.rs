//! `csp up`: the whole system on one machine.

use std::path::PathBuf;
use std::time::Duration;

use csp::{Addresses, Storage, SystemConfig};
use csp_kit::config::{DEV_JWT_SECRET, Secret};
use csp_kit::identity::keys::KeySet;
use csp_kit::roles::Role;
use csp_kit::service_name::ServiceName;
use csp_kit::shutdown::Shutdown;

/// The partner the printed development tokens belong to.
const DEMO_PARTNER: &str = "8f2b6c1e-4d3a-4e5f-9a7b-1c2d3e4f5a6b";

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Directory for the embedded SQLite databases and the audit checkpoint
    /// file.
    #[arg(long, env = "CSP_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Use this PostgreSQL server instead of SQLite: one database per service
    /// (csp_catalog, csp_ordering, ...), created when missing.
    #[arg(long, env = "CSP_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// HS256 secret for user tokens.
    #[arg(long, env = "CSP_JWT_SECRET", default_value = DEV_JWT_SECRET, hide_default_value = true)]
    jwt_secret: Secret,
    /// OpenID Connect providers whose users may sign in too (beside the
    /// printed development tokens).
    #[command(flatten)]
    oidc: csp_gateway::oidc::OidcArgs,
    /// Key product keys and link tokens are sealed with in the database.
    #[arg(long, env = "CSP_LICENSING_KEY", default_value = csp_licensing::DEV_SEALING_KEY, hide_default_value = true)]
    sealing_key: Secret,
    /// Key the audit log's checkpoints are signed with.
    #[arg(long, env = "CSP_AUDIT_KEY", default_value = csp_audit::DEV_CHECKPOINT_KEY, hide_default_value = true)]
    audit_key: Secret,
    /// The activity log's name: the key's name and the first part of each
    /// checkpoint's origin (as `csp audit-log-key --log-name` takes it).
    #[arg(long, env = "CSP_AUDIT_LOG_NAME", default_value = csp_audit::log::DEFAULT_LOG_NAME)]
    audit_log_name: String,
    /// Where software files live [default: a local store in DATA_DIR/content,
    /// served by the gateway's download listener].
    #[command(flatten)]
    content: csp_content::ContentArgs,
    /// What one partner may keep in ticket attachments.
    #[command(flatten)]
    attachment_quota: csp_support::domain::AttachmentQuota,
    /// The gateway's public gRPC address (the backends keep their fixed
    /// local ports); port 0 picks a free one.
    #[arg(long, env = "CSP_LISTEN", default_value_t = csp_gateway::DEFAULT_ADDR)]
    listen: std::net::SocketAddr,
    /// The gateway's public download listener (download links and, with the
    /// local store, the files); port 0 picks a free one.
    #[arg(long, env = "CSP_HTTP_LISTEN", default_value_t = csp_gateway::DEFAULT_HTTP_ADDR)]
    http_listen: std::net::SocketAddr,
    /// Put the five backends on free ports instead of 50061-50065 (they are
    /// reached only inside the process and through the gateway), so that
    /// `csp up` starts beside anything else on the machine.
    #[arg(long, env = "CSP_EPHEMERAL_PORTS")]
    ephemeral_ports: bool,
    /// Where Prometheus metrics of all six services are served (GET /metrics).
    #[arg(long, env = "CSP_METRICS_LISTEN", default_value_t = csp::DEFAULT_METRICS_ADDR)]
    metrics_listen: std::net::SocketAddr,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let storage = match &args.postgres_url {
        Some(url) => Storage::Postgres {
            server_url: url.clone(),
            prefix: "csp".to_owned(),
            files: args.data_dir.clone(),
        },
        None => Storage::Sqlite(args.data_dir.clone()),
    };
    let shutdown = Shutdown::on_signals();
    let system = csp::start(SystemConfig {
        storage: storage.clone(),
        addresses: Addresses {
            metrics: Some(args.metrics_listen),
            gateway: args.listen,
            gateway_http: args.http_listen,
            ..if args.ephemeral_ports {
                Addresses::ephemeral()
            } else {
                Addresses::local_defaults()
            }
        },
        jwt_secret: args.jwt_secret.clone(),
        oidc: args.oidc.clone(),
        // Fresh identity keys at every start: the services of one process
        // trust each other and nothing else.
        // Fresh keys for the services; the operator's tools (`csp catalog
        // import --dev`) sign with the public development key, which only a
        // development system trusts.
        identity_keys: KeySet::generate()?.with_development_key(ServiceName::Operator),
        seed_demo_catalog: true,
        clock: csp_kit::clock::system(),
        sealing_key: args.sealing_key.clone(),
        content: args.content.clone(),
        attachment_quota: args.attachment_quota,
        audit_key: args.audit_key.clone(),
        audit_log_name: args.audit_log_name.clone(),
        held_back: &[],
    })
    .await?;
    // Every service answers SERVING: what only start-up needed goes back.
    csp::hand_back_start_up_memory_now().await;
    print_banner(&args, &storage, &system.addresses)?;
    system.run_until(shutdown).await
}

fn print_banner(args: &UpArgs, storage: &Storage, addresses: &Addresses) -> anyhow::Result<()> {
    let partner = uuid::Uuid::parse_str(DEMO_PARTNER)?;
    let gateway = addresses.gateway;
    let data = match storage {
        Storage::Sqlite(dir) => format!("SQLite files in {}", dir.display()),
        Storage::Postgres { .. } => "PostgreSQL databases csp_<service>".to_owned(),
    };
    println!();
    println!(
        "csp is up: gateway gRPC on {gateway}, download links on http://{} ({data}). Ctrl-C stops it.",
        addresses.gateway_http
    );
    match args.content.store.as_deref() {
        None => println!(
            "Software files: {} (a placeholder per demo download; `csp content put` stores real ones).",
            args.data_dir.join("content").display()
        ),
        Some(store) => println!("Software files: {store}."),
    }
    if let Some(metrics) = addresses.metrics {
        println!("Prometheus metrics of every service: http://{metrics}/metrics");
    }
    println!();
    println!("Development tokens for partner {partner} (valid 12 hours):");
    let mut admin_token = String::new();
    for role in Role::ALL {
        let token = csp_gateway::auth::mint_dev_token(
            &args.jwt_secret,
            partner,
            &format!("demo-{}", role.as_str().replace('_', "-")),
            &format!("Demo {}", role.as_str().replace('_', " ")),
            &[role],
            Duration::from_secs(12 * 3600),
        )?;
        println!("  {:<24} {token}", role.as_str());
        if role == Role::AdminAgent {
            admin_token = token;
        }
    }
    println!();
    println!("Try (grpcurl 1.8+):");
    println!("  grpcurl -plaintext {gateway} list");
    println!("  grpcurl -plaintext {gateway} describe csp.catalog.v1.CatalogService");
    println!("  export TOKEN={admin_token}");
    println!(
        "  grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" -d '{{\"market\":\"US\"}}' {gateway} csp.catalog.v1.CatalogService/ListProducts"
    );
    println!(
        "  grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" -d '{{\"sku_id\":\"windows-server-standard-p1y\",\"market\":\"AU\"}}' {gateway} csp.catalog.v1.CatalogService/GetSkuPrice"
    );
    println!("  grpcurl -plaintext {gateway} grpc.health.v1.Health/Check");
    println!();
    println!(
        "Load a price list (README.md, \"Price lists\"): csp catalog import FILE --dev --catalog-url http://{}",
        addresses.catalog
    );
    println!();
    Ok(())
}
