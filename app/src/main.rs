//! `csp`: one binary for the whole system.
//!
//! - `csp up` runs all six services in one process on fixed local ports with
//!   embedded SQLite under `./data` (or PostgreSQL), and prints the gateway
//!   address, a development token per role and grpcurl commands.
//! - `csp gateway|catalog|ordering|licensing|audit|support` runs one service,
//!   as a deployment does.
//! - `csp token` prints a development token.
//! - `csp keys generate` prints fresh keys and secrets for a deployment.

mod up;

/// mimalloc instead of glibc's malloc: the gRPC paths allocate per call, and
/// at 64 callers glibc's allocator took about a fifth of the CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use csp_kit::config::{DEV_JWT_SECRET, Secret};
use csp_kit::roles::Role;
use csp_kit::server::bind;
use csp_kit::shutdown::Shutdown;
use csp_kit::telemetry::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "csp",
    version,
    about = "A Cloud Solution Provider's software-subscription system"
)]
struct Cli {
    /// Log line format.
    #[arg(long, env = "CSP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole system in one process, with the demo catalog.
    Up(up::UpArgs),
    /// Print a development token (HS256) for the gateway.
    Token(TokenArgs),
    /// Keys and secrets for a deployment.
    Keys(KeysArgs),
    /// Run the gateway alone.
    Gateway(csp_gateway::Config),
    /// Run the catalog service alone; or, with `import` or `history`, load
    /// a price list into a running catalog and list the ones loaded.
    Catalog(CatalogCommand),
    /// Run the ordering service alone.
    Ordering(csp_ordering::Config),
    /// Run the licensing service alone.
    Licensing(csp_licensing::Config),
    /// Run the audit service alone.
    Audit(csp_audit::Config),
    /// Run the support service alone.
    Support(csp_support::Config),
    /// Software files in the object store: store one (`put`), list them,
    /// remove one. Works on licensing's database and the content store.
    Content(ContentCommand),
    /// Inspect a service's outbox: what waits, and the dead letters.
    Outbox(OutboxArgs),
    /// Apply a service's database migrations and exit (a deployment's init
    /// step; services also migrate at start, under a lock).
    Migrate(MigrateArgs),
    /// Ask a server's gRPC health check; exits 0 when it is SERVING (for
    /// container health checks: the runtime image has no shell).
    Health(HealthArgs),
    /// Print the activity log's public key (the verifier key auditors check
    /// checkpoints and proofs with), or generate a new key pair.
    AuditLogKey(AuditLogKeyArgs),
    /// Check a proof bundle (ExportActivity with include_proofs, JSON lines)
    /// with the log's public key alone: every record's inclusion, the
    /// checkpoint's signature, and that it extends a checkpoint kept from
    /// before. Exits 1 and names what is wrong when anything is.
    VerifyLog(VerifyLogArgs),
}

#[derive(clap::Args, Debug)]
struct KeysArgs {
    #[command(subcommand)]
    action: KeysAction,
}

#[derive(Subcommand, Debug)]
enum KeysAction {
    /// Print fresh keys and secrets for every service, as the CSP_*
    /// variables each needs (secret: store them in your secret manager, never
    /// in the repository).
    Generate {
        /// The activity log's name (its key's name and the start of every
        /// checkpoint's origin).
        #[arg(long, env = "CSP_AUDIT_LOG_NAME", default_value = csp_audit::log::DEFAULT_LOG_NAME)]
        log_name: String,
        /// `env`: the variables of each service, grouped; `compose`: an
        /// .env file for deploy/compose.yaml; `kubernetes`: the Secret
        /// `csp-keys` the manifests read.
        #[arg(long, value_enum, default_value_t = KeysFormat::Env)]
        format: KeysFormat,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum KeysFormat {
    Env,
    Compose,
    Kubernetes,
}

#[derive(clap::Args, Debug)]
struct VerifyLogArgs {
    /// The log's verifier key (NAME+ID+KEY), as `csp audit-log-key` or
    /// GetLogPublicKey give it.
    #[arg(long)]
    public_key: String,
    /// A signed checkpoint kept from before (a file holding the note).
    #[arg(long)]
    previous: Option<std::path::PathBuf>,
    /// Accept a bundle of part of the log (a date range): records deleted
    /// from the log cannot be found in it.
    #[arg(long)]
    partial: bool,
    /// The bundle (a file; `-` for standard input).
    bundle: std::path::PathBuf,
}

#[derive(clap::Args, Debug)]
struct AuditLogKeyArgs {
    /// Generate a new key pair instead: prints the signer key (for
    /// CSP_AUDIT_KEY; keep it secret) and the verifier key.
    #[arg(long)]
    generate: bool,
    /// The log key (as the audit service takes it).
    #[arg(long, env = "CSP_AUDIT_KEY", hide_env_values = true)]
    key: Option<csp_kit::config::Secret>,
    /// Without a key, print the development key's (as `csp up` signs with).
    #[arg(long, env = "CSP_DEV")]
    dev: bool,
    /// The log's name (for a generated key, or one derived from a secret).
    #[arg(long, env = "CSP_AUDIT_LOG_NAME", default_value = csp_audit::log::DEFAULT_LOG_NAME)]
    log_name: String,
}

#[derive(clap::Args, Debug)]
struct MigrateArgs {
    /// The service whose database to migrate.
    #[arg(value_parser = ["catalog", "ordering", "licensing", "audit", "support"])]
    service: String,
    /// Where the database is.
    #[command(flatten)]
    backend: csp_kit::config::BackendArgs,
}

#[derive(clap::Args, Debug)]
struct HealthArgs {
    /// The server's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: std::net::SocketAddr,
    /// The health service name to ask about ("" is the whole server;
    /// "liveness" answers SERVING while the process runs).
    #[arg(long, default_value = "")]
    service: String,
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct CatalogCommand {
    #[command(subcommand)]
    action: Option<CatalogAction>,
    #[command(flatten)]
    service: csp_catalog::Config,
}

#[derive(Subcommand, Debug)]
enum CatalogAction {
    /// Make a price list (CSV; README.md, "Price lists", describes the
    /// columns) the catalog. The file is checked here first (every error is
    /// printed with its line and column), then by the catalog, which applies
    /// it in one transaction, or changes nothing when it is the current list.
    Import {
        /// The price-list file.
        file: std::path::PathBuf,
        /// Only show what the list would change.
        #[arg(long)]
        dry_run: bool,
        /// Who runs the import, kept in the history [default: $USER].
        #[arg(long = "as", env = "CSP_OPERATOR")]
        operator: Option<String>,
        /// Print every price change, not only the counts.
        #[arg(long)]
        details: bool,
        #[command(flatten)]
        target: OperatorTarget,
    },
    /// The imported price lists, newest first; with --version, every change
    /// that one made.
    History {
        /// Show one version's changes in full.
        #[arg(long)]
        version: Option<i64>,
        /// At most this many versions.
        #[arg(long, default_value_t = 25)]
        limit: usize,
        #[command(flatten)]
        target: OperatorTarget,
    },
}

/// Where the catalog is, and the operator's identity to call it with.
#[derive(clap::Args, Debug)]
struct OperatorTarget {
    #[command(flatten)]
    catalog: csp_kit::config::CatalogUrl,
    /// The operator identity key (`# operator` in `csp keys generate`) and
    /// the trust list; `--dev` (as `csp up`) uses the development key.
    #[command(flatten)]
    identity: csp_kit::identity::IdentityArgs,
}

#[derive(clap::Args, Debug)]
struct ContentCommand {
    /// Licensing's database: postgres://USER@HOST/DB or sqlite://PATH
    /// [default: sqlite://DATA_DIR/licensing.db, where `csp up` keeps it].
    #[arg(long, env = "CSP_DATABASE_URL")]
    database_url: Option<String>,
    /// The data directory of `csp up` (for the defaults).
    #[arg(long, env = "CSP_DATA_DIR", default_value = "data")]
    data_dir: std::path::PathBuf,
    /// The object store [default: file://DATA_DIR/content, as `csp up`].
    #[command(flatten)]
    store: csp_content::ContentArgs,
    #[command(subcommand)]
    action: ContentAction,
}

#[derive(Subcommand, Debug)]
enum ContentAction {
    /// Store FILE as the download of a product's version, language and file
    /// type (replacing one stored before), and print its size and SHA-256.
    Put {
        /// The product id, for example windows-server-standard.
        product: String,
        /// The version, for example 2022.
        version: String,
        /// The language, for example en-US.
        language: String,
        /// The file type id, for example iso-x64.
        file_type: String,
        /// The file to store.
        file: std::path::PathBuf,
    },
    /// Every stored file with its size and SHA-256, and whether the store
    /// still holds it.
    List,
    /// Remove a stored file: no new link is issued for it.
    Remove {
        /// The product id.
        product: String,
        /// The version.
        version: String,
        /// The language.
        language: String,
        /// The file type id.
        file_type: String,
    },
}

#[derive(clap::Args, Debug)]
struct OutboxArgs {
    /// The service's database: postgres://USER@HOST/DB or sqlite://PATH.
    #[arg(long, env = "CSP_DATABASE_URL")]
    database_url: String,
    #[command(subcommand)]
    action: OutboxAction,
}

#[derive(Subcommand, Debug)]
enum OutboxAction {
    /// Messages waiting per destination, and every dead letter with its reason.
    List,
    /// Put dead letters back where they were, to be delivered again.
    Replay {
        /// The event ids to replay.
        #[arg(required_unless_present = "all")]
        event_ids: Vec<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::Args, Debug)]
struct TokenArgs {
    /// The partner the user belongs to (a UUID).
    #[arg(long)]
    partner: uuid::Uuid,
    /// The user id.
    #[arg(long)]
    user: String,
    /// The user's display name [default: the user id].
    #[arg(long)]
    name: Option<String>,
    /// A role; repeat for several (admin_agent, sales_agent, helpdesk_agent,
    /// global_admin, account_admin, referral_admin, marketing_content_admin,
    /// billing_admin).
    #[arg(long = "role", required = true, value_parser = parse_role)]
    roles: Vec<Role>,
    /// Hours until the token expires.
    #[arg(long, default_value_t = 12)]
    hours: u64,
    /// The gateway's HS256 secret.
    #[arg(long, env = "CSP_JWT_SECRET", default_value = DEV_JWT_SECRET, hide_default_value = true)]
    jwt_secret: Secret,
}

fn parse_role(name: &str) -> Result<Role, String> {
    Role::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown role {name:?}; roles are {}", known.join(", "))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if serves(&cli.command) {
        // Memory freed while starting goes back at once, until every service
        // answers SERVING (`csp_memory::started`). Set before the runtime's
        // threads exist.
        csp_memory::starting();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("csp: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main(cli))
}

/// Whether the command serves until stopped (`csp up` or one service), as
/// opposed to doing one thing and exiting.
fn serves(command: &Command) -> bool {
    match command {
        Command::Up(_)
        | Command::Gateway(_)
        | Command::Ordering(_)
        | Command::Licensing(_)
        | Command::Audit(_)
        | Command::Support(_) => true,
        Command::Catalog(catalog) => catalog.action.is_none(),
        _ => false,
    }
}

async fn async_main(cli: Cli) -> ExitCode {
    if !matches!(
        cli.command,
        Command::Token(_)
            | Command::Content(_)
            | Command::Outbox(_)
            | Command::Health(_)
            | Command::AuditLogKey(_)
            | Command::Keys(_)
            | Command::VerifyLog(_)
    ) {
        telemetry::init(cli.log_format);
    }
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("csp: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up(args) => up::run(args).await,
        Command::Token(args) => {
            let token = csp_gateway::auth::mint_dev_token(
                &args.jwt_secret,
                args.partner,
                &args.user,
                args.name.as_deref().unwrap_or(&args.user),
                &args.roles,
                Duration::from_secs(args.hours * 3600),
            )?;
            println!("{token}");
            Ok(())
        }
        Command::AuditLogKey(args) => {
            if args.generate {
                let (signer, verifier) = csp_audit::log::generate(&args.log_name)?;
                println!("signer key (CSP_AUDIT_KEY, secret): {signer}");
                println!("verifier key (public): {verifier}");
            } else {
                let secret = csp_kit::config::required_secret(
                    "CSP_AUDIT_KEY",
                    args.key.as_ref(),
                    csp_audit::DEV_CHECKPOINT_KEY,
                    args.dev,
                )?;
                let key = csp_audit::log::LogKey::from_config(secret.expose(), &args.log_name)?;
                println!("{}", key.verifier_key());
            }
            Ok(())
        }
        Command::Keys(KeysArgs {
            action: KeysAction::Generate { log_name, format },
        }) => generate_keys(&log_name, format),
        Command::VerifyLog(args) => verify_log(args),
        Command::Outbox(args) => outbox(args).await,
        Command::Content(args) => content(args).await,
        Command::Catalog(CatalogCommand {
            action: Some(action),
            ..
        }) => catalog(action).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Health(args) => {
            let status = csp::health_status(args.addr, &args.service).await?;
            println!("{status}");
            anyhow::ensure!(status == "SERVING", "{} is {status}", args.addr);
            Ok(())
        }
        service => run_service(service).await,
    }
}

/// Runs one service until SIGTERM or SIGINT, with its metrics listener when
/// configured.
async fn run_service(command: Command) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals();
    let metrics_listen = match &command {
        Command::Gateway(config) => config.metrics_listen,
        Command::Catalog(command) => command.service.backend.metrics_listen,
        Command::Ordering(config) => config.backend.metrics_listen,
        Command::Licensing(config) => config.backend.metrics_listen,
        Command::Audit(config) => config.backend.metrics_listen,
        Command::Support(config) => config.backend.metrics_listen,
        _ => None,
    };
    let metrics = match metrics_listen {
        Some(addr) => {
            let listener = bind(addr).await?;
            Some(tokio::spawn(csp_kit::metrics::serve(
                listener,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let clock = csp_kit::clock::system();
    // Binds the service's listener; once the service answers SERVING there,
    // what only start-up needed goes back.
    let serve_on = async |addr: std::net::SocketAddr| -> anyhow::Result<tokio::net::TcpListener> {
        let listener = bind(addr).await?;
        tokio::spawn(csp::hand_back_start_up_memory(
            listener.local_addr()?,
            shutdown.clone(),
        ));
        Ok(listener)
    };
    let served = match command {
        Command::Gateway(config) => {
            let listener = serve_on(csp_gateway::listen_addr(&config)).await?;
            let http = bind(csp_gateway::http_listen_addr(&config)).await?;
            csp_gateway::run(config, listener, http, shutdown).await
        }
        Command::Catalog(CatalogCommand {
            service: config, ..
        }) => {
            let listener =
                serve_on(config.backend.listen.unwrap_or(csp_catalog::DEFAULT_ADDR)).await?;
            csp_catalog::run(config, listener, shutdown, clock).await
        }
        Command::Ordering(config) => {
            let listener =
                serve_on(config.backend.listen.unwrap_or(csp_ordering::DEFAULT_ADDR)).await?;
            csp_ordering::run(config, listener, shutdown, clock).await
        }
        Command::Licensing(config) => {
            let listener =
                serve_on(config.backend.listen.unwrap_or(csp_licensing::DEFAULT_ADDR)).await?;
            csp_licensing::run(config, listener, shutdown, clock).await
        }
        Command::Audit(config) => {
            let listener =
                serve_on(config.backend.listen.unwrap_or(csp_audit::DEFAULT_ADDR)).await?;
            csp_audit::run(config, listener, shutdown, clock).await
        }
        Command::Support(config) => {
            let listener =
                serve_on(config.backend.listen.unwrap_or(csp_support::DEFAULT_ADDR)).await?;
            csp_support::run(config, listener, shutdown, clock).await
        }
        _ => Ok(()),
    };
    if let Some(metrics) = metrics {
        // The service has stopped; so has the metrics listener (same signal),
        // unless the service failed first.
        metrics.abort();
        if let Ok(Err(error)) = metrics.await {
            tracing::warn!(error = %format!("{error:#}"), "the metrics listener failed");
        }
    }
    served
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let spec = [
        csp_catalog::SPEC,
        csp_ordering::SPEC,
        csp_licensing::SPEC,
        csp_audit::SPEC,
        csp_support::SPEC,
    ]
    .into_iter()
    .find(|spec| spec.service.as_str() == args.service)
    .ok_or_else(|| {
        anyhow::anyhow!(
            "no service named {}; choose catalog, ordering, licensing, audit or support",
            csp_kit::error::quoted(&args.service)
        )
    })?;
    let db =
        csp_store::backend::open_database(spec.service.as_str(), &args.backend, spec.migrations)
            .await?;
    db.close().await;
    Ok(())
}

async fn catalog(action: CatalogAction) -> anyhow::Result<()> {
    use csp_proto::catalog::v1 as pb;
    use csp_proto::catalog::v1::catalog_internal_service_client::CatalogInternalServiceClient;

    let target = match &action {
        CatalogAction::Import { target, .. } | CatalogAction::History { target, .. } => target,
    };
    let identity = target
        .identity
        .resolve(csp_kit::service_name::ServiceName::Operator)?;
    let url = target.catalog.catalog_url.clone();
    let channel = csp_kit::peer::signed_channel_with_timeout(
        &url,
        &identity.signer,
        Duration::from_secs(600),
    )?;
    let mut client = CatalogInternalServiceClient::new(channel)
        .max_encoding_message_size(csp_catalog::use_cases::MAX_IMPORT_BYTES + 4096)
        .max_decoding_message_size(64 << 20);
    let failed = |status: tonic::Status| {
        anyhow::anyhow!(
            "the catalog at {url} refused: {}",
            csp::describe_status(&status)
        )
    };
    match action {
        CatalogAction::Import {
            file,
            dry_run,
            operator,
            details,
            ..
        } => {
            let started = std::time::Instant::now();
            let content = tokio::fs::read(&file)
                .await
                .with_context(|| format!("cannot read {}", file.display()))?;
            let lines = match csp_catalog::price_list::check(&content) {
                Ok(lines) => lines,
                Err(errors) => {
                    for error in &errors {
                        eprintln!("{}: {error}", file.display());
                    }
                    anyhow::bail!(
                        "{} has {} error{}; nothing was imported",
                        file.display(),
                        errors.len(),
                        if errors.len() == 1 { "" } else { "s" }
                    );
                }
            };
            eprintln!(
                "{}: {lines} prices read and checked in {:.2} s; sending to the catalog at {url}",
                file.display(),
                started.elapsed().as_secs_f64()
            );
            let operator = operator
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "operator".to_owned());
            let file_name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let response = client
                .import_price_list(pb::ImportPriceListRequest {
                    content,
                    file_name,
                    imported_by: operator,
                    dry_run,
                })
                .await
                .map_err(failed)?
                .into_inner();
            println!("{}", response.summary);
            if let Some(changes) = &response.changes {
                print_changes(changes, details || dry_run);
            }
            eprintln!("done in {:.2} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        CatalogAction::History { version, limit, .. } => {
            if let Some(version) = version {
                let found = client
                    .get_price_list(pb::GetPriceListRequest { version })
                    .await
                    .map_err(failed)?
                    .into_inner();
                if let Some(list) = &found.price_list {
                    print_price_list(list);
                }
                if let Some(changes) = &found.changes {
                    print_changes(changes, true);
                }
                return Ok(());
            }
            let (mut shown, mut page_token) = (0, String::new());
            loop {
                let page = client
                    .list_price_lists(pb::ListPriceListsRequest {
                        page_size: 100,
                        page_token,
                    })
                    .await
                    .map_err(failed)?
                    .into_inner();
                for list in page.price_lists.iter().take(limit - shown) {
                    print_price_list(list);
                    shown += 1;
                }
                if shown == 0 {
                    println!("no price list imported yet");
                }
                if shown >= limit || page.next_page_token.is_empty() {
                    return Ok(());
                }
                page_token = page.next_page_token;
            }
        }
    }
}

fn print_price_list(list: &csp_proto::catalog::v1::PriceList) {
    let at = list
        .imported_at
        .as_ref()
        .and_then(csp_kit::clock::from_timestamp)
        .map(csp_kit::clock::to_rfc3339)
        .unwrap_or_default();
    println!(
        "version {}  {at}  by {}  {} ({} lines, sha256 {})\n    {}",
        list.version,
        list.imported_by,
        list.file_name,
        list.line_count,
        list.checksum,
        list.summary
    );
}

fn print_changes(changes: &csp_proto::catalog::v1::PriceListChanges, details: bool) {
    let groups = [
        ("market added", &changes.markets_added),
        ("market removed", &changes.markets_removed),
        ("market changed", &changes.markets_changed),
        ("product added", &changes.products_added),
        ("product removed", &changes.products_removed),
        ("product changed", &changes.products_changed),
        ("SKU added", &changes.skus_added),
        ("SKU removed", &changes.skus_removed),
        ("SKU changed", &changes.skus_changed),
    ];
    for (what, ids) in groups {
        for id in ids {
            println!("  {what}: {id}");
        }
    }
    if changes.price_changes.is_empty() {
        return;
    }
    if !details {
        println!(
            "  {} price changes (--details lists them)",
            changes.price_changes.len()
        );
        return;
    }
    let date = |t: Option<&prost_types::Timestamp>| {
        t.and_then(csp_kit::clock::from_timestamp)
            .map(csp_kit::clock::to_date)
    };
    let money = |m: Option<&csp_proto::common::v1::Money>| match m {
        Some(m) => format!(
            "{} {}",
            csp_catalog::price_list::format_price(m.minor_units, m.minor_unit_digits),
            m.currency_code
        ),
        None => "-".to_owned(),
    };
    for c in &changes.price_changes {
        let from = date(c.effective_from.as_ref()).unwrap_or_default();
        let until = c
            .effective_until
            .as_ref()
            .and_then(csp_kit::clock::from_timestamp)
            .map(|t| csp_kit::clock::to_date(t - csp_kit::clock::DAY))
            .unwrap_or_else(|| "no end".to_owned());
        println!(
            "  price {} in {} ({from} to {until}): {} -> {}",
            c.sku_id,
            c.market,
            money(c.before.as_ref()),
            money(c.after.as_ref())
        );
    }
}

async fn content(args: ContentCommand) -> anyhow::Result<()> {
    use csp_licensing::domain::Selection;
    let mut store_args = args.store.clone();
    if store_args.store.is_none() {
        store_args.store = Some(csp_content::default_store(&args.data_dir));
    }
    let store = csp_content::ContentStore::open_unsigned(&store_args)?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join("licensing.db").display()));
    let db = csp_store::db::Db::connect_existing(&url).await.with_context(|| {
        format!(
            "cannot open licensing's database {} (start the system once, or point --database-url at it)",
            csp_store::db::redact_url(&url)
        )
    })?;
    let files = csp_licensing::content::SoftwareFiles::new(db.clone(), store);
    let selection = |version: String, language: String, file_type: String| Selection {
        version,
        language,
        file_type,
    };
    let done = match args.action {
        ContentAction::Put {
            product,
            version,
            language,
            file_type,
            file,
        } => {
            let opened = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("cannot open {}", file.display()))?;
            let total = opened.metadata().await?.len();
            let started = std::time::Instant::now();
            let mut last = started;
            let stored = files
                .put(
                    &product,
                    &selection(version, language, file_type),
                    opened,
                    |done| {
                        if last.elapsed() >= Duration::from_secs(1) {
                            last = std::time::Instant::now();
                            eprintln!(
                                "stored {} of {} ({}%)",
                                mib(done),
                                mib(total),
                                done * 100 / total.max(1)
                            );
                        }
                    },
                )
                .await;
            stored.map(|f| {
                println!(
                    "stored {} ({} bytes, SHA-256 {}) in {:.1} s",
                    f.object_key,
                    f.size_bytes,
                    f.sha256,
                    started.elapsed().as_secs_f64()
                );
            })
        }
        ContentAction::List => files.list().await.map(|listed| {
            if listed.is_empty() {
                println!("no software files stored");
            }
            for l in listed {
                let state = match l.stored_size {
                    Some(size) if i64::try_from(size).ok() == Some(l.file.size_bytes) => "",
                    Some(_) => "  (the store holds a different size: store it again)",
                    None => "  (MISSING from the store: store it again)",
                };
                println!(
                    "{}  {} bytes  sha256 {}{state}",
                    l.file.object_key, l.file.size_bytes, l.file.sha256
                );
            }
        }),
        ContentAction::Remove {
            product,
            version,
            language,
            file_type,
        } => files
            .remove(&product, &selection(version, language, file_type))
            .await
            .map(|had| {
                if had {
                    println!(
                        "removed: no link is issued for it any more; links handed out before now \
                         lead to a missing file (404) until a file is stored again"
                    );
                } else {
                    println!("nothing was stored for that selection");
                }
            }),
    };
    db.close().await;
    done
}

/// `bytes` in MiB, for progress lines.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

async fn outbox(args: OutboxArgs) -> anyhow::Result<()> {
    use csp_kit::clock::Clock as _;
    use csp_store::outbox;
    let db = csp_store::db::Db::connect_existing(&args.database_url).await?;
    let has_outbox = outbox::backlog(&db).await.is_ok();
    anyhow::ensure!(
        has_outbox,
        "{} has no outbox: point --database-url at the database of a service that sends events (ordering, licensing, support)",
        csp_store::db::redact_url(&args.database_url)
    );
    match args.action {
        OutboxAction::List => {
            let backlog = outbox::backlog(&db).await?;
            if backlog.is_empty() {
                println!("no messages waiting");
            }
            for (destination, count) in backlog {
                println!("{count} message(s) waiting for {destination}");
            }
            let dead = outbox::dead_letters(&db).await?;
            println!("{} dead letter(s)", dead.len());
            for letter in dead {
                println!(
                    "  {} -> {} (stream {}, {} attempt(s)): {}",
                    letter.event_id,
                    letter.destination,
                    letter.stream,
                    letter.attempts,
                    letter.reason
                );
            }
        }
        OutboxAction::Replay { event_ids, all } => {
            let ids = if all {
                outbox::dead_letters(&db)
                    .await?
                    .into_iter()
                    .map(|d| d.event_id)
                    .collect()
            } else {
                event_ids
            };
            let now = csp_kit::clock::SystemClock.now();
            for id in ids {
                if outbox::replay(&db, &id, now).await? {
                    println!("replayed {id}");
                } else {
                    anyhow::bail!("no dead letter with event id {id}");
                }
            }
        }
    }
    db.close().await;
    Ok(())
}

fn verify_log(args: VerifyLogArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let bundle = if args.bundle.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the bundle from stdin")?
    } else {
        std::fs::read_to_string(&args.bundle)
            .with_context(|| format!("cannot read {}", args.bundle.display()))?
    };
    let previous = match &args.previous {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let report = csp_audit::bundle::verify(&bundle, &args.public_key, previous.as_deref())?;
    anyhow::ensure!(
        report.complete || args.partial,
        "the bundle holds part of the log (a date range), so deleted records cannot be found \
         in it: export the whole log, or pass --partial to check only what it holds"
    );
    if report.intact() {
        println!(
            "intact: {} records of {} proven in the signed tree of {} leaves{}",
            report.checked,
            report.origin,
            report.tree_size,
            if report.complete {
                ""
            } else {
                " (a partial export: deletions not checked)"
            }
        );
        return Ok(());
    }
    for problem in &report.problems {
        println!("{problem}");
    }
    anyhow::bail!(
        "{} problems in {} records (signed tree of {} leaves)",
        report.problems.len(),
        report.checked,
        report.tree_size
    )
}

/// Prints fresh keys for one deployment in `format`.
fn generate_keys(log_name: &str, format: KeysFormat) -> anyhow::Result<()> {
    use csp_kit::identity::keys::KeySet;
    use csp_kit::service_name::ServiceName;

    anyhow::ensure!(
        !log_name.is_empty()
            && log_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._/:-".contains(c)),
        "--log-name may hold only letters, digits and . _ / : - (such as audit.example.com/log)"
    );
    let keys = KeySet::generate()?;
    let secret = || csp_kit::config::generate_secret().map(|s| s.expose().to_owned());
    let (jwt, licensing, postgres, content) = (secret()?, secret()?, secret()?, secret()?);
    let (audit_key, audit_verifier) = csp_audit::log::generate(log_name)?;
    let identity = |service: ServiceName| keys.key(service).to_config().expose().to_owned();
    match format {
        KeysFormat::Env => {
            println!("# Fresh keys for one csp deployment (csp keys generate). Every line but the");
            println!(
                "# trust list is secret: keep them in a secret manager, never in a repository."
            );
            println!();
            println!("# Every service: the same trust list (public).");
            println!("CSP_IDENTITY_TRUST={}", keys.trust());
            for service in ServiceName::ALL {
                println!();
                println!("# {service}");
                println!("CSP_IDENTITY_KEY={}", identity(service));
                match service {
                    ServiceName::Gateway => {
                        println!(
                            "# and CSP_OIDC_ISSUERS, CSP_OIDC_AUDIENCE: the identity providers users sign in with"
                        );
                        println!(
                            "# with a file:// content store, the same CSP_CONTENT_SIGNING_KEY as licensing:"
                        );
                        println!("CSP_CONTENT_SIGNING_KEY={content}");
                    }
                    ServiceName::Licensing => {
                        println!("CSP_LICENSING_KEY={licensing}");
                        println!(
                            "# with a file:// content store (the gateway serves it); cloud stores need their own credentials:"
                        );
                        println!("CSP_CONTENT_SIGNING_KEY={content}");
                    }
                    ServiceName::Support => {
                        println!("# with a file:// content store, for attachments:");
                        println!("CSP_CONTENT_SIGNING_KEY={content}");
                    }
                    ServiceName::Audit => {
                        println!("CSP_AUDIT_KEY={audit_key}");
                        println!("# the activity log's public key, for auditors: {audit_verifier}");
                    }
                    _ => {}
                }
            }
        }
        KeysFormat::Compose => {
            println!(
                "# deploy/.env for deploy/compose.yaml (csp keys generate --format compose). Secret."
            );
            println!("CSP_IDENTITY_TRUST={}", keys.trust());
            for service in ServiceName::ALL {
                println!(
                    "CSP_{}_IDENTITY_KEY={}",
                    service.as_str().to_uppercase(),
                    identity(service)
                );
            }
            // compose's gateway takes development tokens (see compose.yaml).
            println!("CSP_JWT_SECRET={jwt}");
            println!("CSP_LICENSING_KEY={licensing}");
            println!("CSP_CONTENT_SIGNING_KEY={content}");
            println!("CSP_AUDIT_KEY={audit_key}");
            println!("CSP_POSTGRES_PASSWORD={postgres}");
            println!("# the activity log's public key, for auditors: {audit_verifier}");
        }
        KeysFormat::Kubernetes => {
            println!("# The Secret csp-keys the manifests in deploy/k8s read (csp keys generate");
            println!(
                "# --format kubernetes). Secret: apply it or store it in your secret manager."
            );
            println!("# The activity log's public key, for auditors: {audit_verifier}");
            println!("apiVersion: v1");
            println!("kind: Secret");
            println!("metadata:");
            println!("  name: csp-keys");
            println!("type: Opaque");
            println!("stringData:");
            for service in ServiceName::ALL {
                println!("  {service}-identity-key: \"{}\"", identity(service));
            }
            println!("  identity-trust: \"{}\"", keys.trust());
            println!("  licensing-key: \"{licensing}\"");
            println!("  audit-key: \"{audit_key}\"");
        }
    }
    Ok(())
}
