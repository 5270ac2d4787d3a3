//! Test support: the whole system in-process on ephemeral ports, with its own
//! databases (SQLite in a temporary directory, or fresh PostgreSQL databases
//! when `CSP_TEST_POSTGRES_URL` is set), tokens for any role, and clients.

/// sqlx, for tests that look behind a service's API.
pub use sqlx;

pub mod azurite;
pub mod grpcurl;
pub mod http;
pub mod logs;
pub mod oidc;
pub mod raw;

use std::path::PathBuf;
use std::time::Duration;

use csp::{Addresses, RunningSystem, Storage, SystemConfig};
use csp_kit::config::Secret;
use csp_kit::roles::Role;
pub use csp_kit::service_name::ServiceName;
use csp_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use csp_proto::common::v1::Money;
use csp_proto::ordering::v1::ordering_service_client::OrderingServiceClient;
use csp_proto::ordering::v1::{CreateCustomerRequest, Order, OrderLineRequest, PlaceOrderRequest};
use csp_proto::support::v1::{
    Contact, CreateTicketRequest, Impact, IssueType, RefundRequest, refund_request,
};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

/// The environment variable that switches tests to PostgreSQL: a URL of a
/// server where the tests may create and drop databases.
pub const POSTGRES_ENV: &str = "CSP_TEST_POSTGRES_URL";

/// The key test systems sign local file URLs with.
pub fn content_signing_key() -> Secret {
    Secret::new("test-content-signing-key-0123456789-0123456789")
}

/// The content store of a test system on `storage`: a directory beside its
/// data, signed with [`content_signing_key`], served at `public_url` (the
/// system's own gateway when `None`).
pub fn content_args(storage: &Storage, public_url: Option<String>) -> csp_content::ContentArgs {
    let data_dir = match storage {
        Storage::Sqlite(dir) => dir.clone(),
        Storage::Postgres { files, .. } => files.clone(),
    };
    csp_content::ContentArgs {
        store: Some(csp_content::file_url(&data_dir.join("content"))),
        public_url,
        signing_key: Some(content_signing_key()),
        ..Default::default()
    }
}

/// The key test systems seal product keys and link tokens with.
pub fn sealing_key() -> Secret {
    Secret::new("test-sealing-key-0123456789-0123456789")
}

/// The key test systems sign audit checkpoints with.
pub fn audit_key() -> Secret {
    Secret::new("test-audit-key-0123456789-0123456789")
}

/// The user-token secret of test systems.
pub fn jwt_secret() -> Secret {
    Secret::new("test-jwt-secret-0123456789-0123456789")
}

/// The identity keys of test systems: fresh for each test process, one per
/// service.
pub fn identity_keys() -> &'static csp_kit::identity::keys::KeySet {
    static KEYS: std::sync::OnceLock<csp_kit::identity::keys::KeySet> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        csp_kit::identity::keys::KeySet::generate()
            .unwrap_or_else(|error| panic!("cannot generate identity keys: {error}"))
    })
}

/// The identity options of `service` in test systems (development mode for
/// the short test secrets).
pub fn identity_args(service: ServiceName) -> csp_kit::identity::IdentityArgs {
    identity_keys().args_for(service, true)
}

/// Signs identities as `service` does in test systems.
pub fn signer(service: ServiceName) -> std::sync::Arc<csp_kit::identity::Signer> {
    std::sync::Arc::new(csp_kit::identity::Signer::new(
        identity_keys().key(service).clone(),
    ))
}

/// Verifies callers as `service` does in test systems.
pub fn verifier(service: ServiceName) -> std::sync::Arc<csp_kit::identity::Verifier> {
    identity_args(service)
        .resolve(service)
        .unwrap_or_else(|error| panic!("cannot resolve {service}'s identity: {error}"))
        .verifier
}

/// Installs the npm `packages` (`name@version`) under
/// `target/tools/<tool>` unless every one of them is there already (`.ci/run`
/// installs them first), and returns the directory.
pub fn npm_tools(tool: &str, packages: &[&str]) -> Result<PathBuf, String> {
    let dir = target_dir().join("tools").join(tool);
    let installed = |package: &str| {
        let name = package.rsplit_once('@').map_or(package, |(name, _)| name);
        dir.join("node_modules")
            .join(name)
            .join("package.json")
            .exists()
    };
    if packages.iter().all(|p| installed(p)) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let status = std::process::Command::new("npm")
        .args([
            "install",
            "--silent",
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--prefix",
        ])
        .arg(&dir)
        .args(packages)
        .status()
        .map_err(|e| format!("cannot run npm to install {}: {e}", packages.join(" ")))?;
    if !status.success() {
        return Err(format!(
            "npm could not install {} into {} ({status}); run .ci/run, or install them there",
            packages.join(" "),
            dir.display()
        ));
    }
    Ok(dir)
}

/// A development gateway's settings (test keys, HS256 tokens, default
/// limits, no content store), listening on `listen`, forwarding to
/// `backends`.
pub fn dev_gateway_config(
    listen: std::net::SocketAddr,
    backends: csp_gateway::Backends,
) -> csp_gateway::Config {
    csp_gateway::Config {
        listen: Some(listen),
        http_listen: None,
        jwt_secret: Some(jwt_secret()),
        oidc: Default::default(),
        identity: identity_args(ServiceName::Gateway),
        metrics_listen: None,
        default_deadline: csp_gateway::DEFAULT_DEADLINE_SECS,
        limits: csp_gateway::limits::LimitArgs::default(),
        http_limits: csp_gateway::listener::HttpLimits::default(),
        trusted_proxies: Vec::new(),
        content: Default::default(),
        backends,
    }
}

/// Fresh storage of the configured kind: a temporary SQLite directory, or a
/// new database prefix on the PostgreSQL server of `CSP_TEST_POSTGRES_URL`.
pub fn fresh_storage() -> Storage {
    logs::init();
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => Storage::Postgres {
            server_url: url,
            prefix: format!("t{}", Uuid::new_v4().simple()),
            files: std::env::temp_dir().join(format!("csp-test-{}", Uuid::new_v4().simple())),
        },
        _ => Storage::Sqlite(
            std::env::temp_dir().join(format!("csp-test-{}", Uuid::new_v4().simple())),
        ),
    }
}

/// A system running for one test.
pub struct TestSystem {
    system: Option<RunningSystem>,
    /// Where the services listen.
    pub addresses: Addresses,
    /// The partner of tokens made by [`TestSystem::token`].
    pub partner: Uuid,
    storage: Storage,
    clock: std::sync::Arc<dyn csp_kit::clock::Clock>,
    content: Option<csp_content::ContentArgs>,
}

impl TestSystem {
    /// Starts a system with fresh storage of the configured kind.
    pub async fn start() -> TestSystem {
        TestSystem::start_with(fresh_storage(), csp_kit::clock::system()).await
    }

    /// Starts a system on `storage` (which may hold data of an earlier run).
    pub async fn start_on(storage: Storage) -> TestSystem {
        TestSystem::start_with(storage, csp_kit::clock::system()).await
    }

    /// Starts a system with fresh storage and business time from `clock`.
    pub async fn start_with_clock(clock: std::sync::Arc<dyn csp_kit::clock::Clock>) -> TestSystem {
        TestSystem::start_with(fresh_storage(), clock).await
    }

    /// Starts a system whose audit service is down (its port is free, so
    /// calls to it fail at once); bring it up with [`AuditInstance::start`]
    /// on `addresses.audit`.
    pub async fn start_without_audit() -> TestSystem {
        TestSystem::start_full(
            fresh_storage(),
            csp_kit::clock::system(),
            &["audit"],
            Default::default(),
        )
        .await
    }

    /// Starts a system whose licensing service is down; bring it up with
    /// [`Instance::licensing`] on `addresses.licensing`.
    pub async fn start_without_licensing() -> TestSystem {
        TestSystem::start_full(
            fresh_storage(),
            csp_kit::clock::system(),
            &["licensing"],
            Default::default(),
        )
        .await
    }

    /// Starts a system on `storage` with business time from `clock`.
    pub async fn start_with(
        storage: Storage,
        clock: std::sync::Arc<dyn csp_kit::clock::Clock>,
    ) -> TestSystem {
        TestSystem::start_full(storage, clock, &[], Default::default()).await
    }

    /// Starts a system whose partners may keep only `quota` in ticket
    /// attachments.
    pub async fn start_with_attachment_quota(
        quota: csp_support::domain::AttachmentQuota,
    ) -> TestSystem {
        TestSystem::start_full(fresh_storage(), csp_kit::clock::system(), &[], quota).await
    }

    /// Starts a system whose software files live in the store `content`
    /// names (Azurite, a short URL lifetime), with the demo placeholders.
    pub async fn start_with_content(content: csp_content::ContentArgs) -> TestSystem {
        TestSystem::start_configured(
            fresh_storage(),
            csp_kit::clock::system(),
            &[],
            Default::default(),
            Some(content),
        )
        .await
    }

    /// The settings of one more development gateway in front of this
    /// system's backends, listening on `listen` (no download listener); a
    /// test changes what it tests with struct update syntax.
    pub fn gateway_config(&self, listen: std::net::SocketAddr) -> csp_gateway::Config {
        csp_gateway::Config {
            content: self.content_args(None),
            ..dev_gateway_config(listen, self.backends_with(None, None))
        }
    }

    /// This system's backends, with the catalog or licensing elsewhere when
    /// given.
    pub fn backends_with(
        &self,
        catalog: Option<std::net::SocketAddr>,
        licensing: Option<std::net::SocketAddr>,
    ) -> csp_gateway::Backends {
        let a = self.addresses;
        let url = |a: std::net::SocketAddr| format!("http://{a}");
        csp_gateway::Backends::at(
            url(catalog.unwrap_or(a.catalog)),
            url(a.ordering),
            url(licensing.unwrap_or(a.licensing)),
            url(a.audit),
            url(a.support),
        )
    }

    /// Starts a system whose local file URLs work only `secs` seconds.
    pub async fn start_with_url_ttl(secs: u64) -> TestSystem {
        let storage = fresh_storage();
        let content = csp_content::ContentArgs {
            url_ttl_secs: secs,
            ..content_args(&storage, None)
        };
        TestSystem::start_configured(
            storage,
            csp_kit::clock::system(),
            &[],
            Default::default(),
            Some(content),
        )
        .await
    }

    /// The content store settings of this system's services, served at
    /// `public_url` (a local store's gateway).
    pub fn content_args(&self, public_url: Option<String>) -> csp_content::ContentArgs {
        match &self.content {
            Some(content) => csp_content::ContentArgs {
                public_url: public_url.or_else(|| content.public_url.clone()),
                ..content.clone()
            },
            None => content_args(&self.storage, public_url),
        }
    }

    /// Licensing's software files, as `csp content` reaches them (its
    /// database and the content store).
    pub async fn software_files(&self) -> csp_licensing::content::SoftwareFiles {
        let content = self.content_args(None);
        let store = csp_content::ContentStore::open_unsigned(&content)
            .unwrap_or_else(|e| panic!("cannot open the content store: {e:#}"));
        let db = csp_store::db::Db::connect_existing(&self.database_url("licensing").await)
            .await
            .unwrap_or_else(|e| panic!("cannot open licensing's database: {e:#}"));
        csp_licensing::content::SoftwareFiles::new(db, store)
    }

    async fn start_full(
        storage: Storage,
        clock: std::sync::Arc<dyn csp_kit::clock::Clock>,
        held_back: &'static [&'static str],
        attachment_quota: csp_support::domain::AttachmentQuota,
    ) -> TestSystem {
        TestSystem::start_configured(storage, clock, held_back, attachment_quota, None).await
    }

    async fn start_configured(
        storage: Storage,
        clock: std::sync::Arc<dyn csp_kit::clock::Clock>,
        held_back: &'static [&'static str],
        attachment_quota: csp_support::domain::AttachmentQuota,
        content: Option<csp_content::ContentArgs>,
    ) -> TestSystem {
        let system = csp::start(SystemConfig {
            storage: storage.clone(),
            clock: clock.clone(),
            addresses: Addresses::ephemeral(),
            jwt_secret: jwt_secret(),
            oidc: Default::default(),
            identity_keys: identity_keys().clone(),
            seed_demo_catalog: true,
            sealing_key: sealing_key(),
            content: content
                .clone()
                .unwrap_or_else(|| content_args(&storage, None)),
            attachment_quota,
            audit_key: audit_key(),
            audit_log_name: csp_audit::log::DEFAULT_LOG_NAME.to_owned(),
            held_back,
        })
        .await
        .unwrap_or_else(|error| panic!("the system did not start: {error:#}"));
        TestSystem {
            addresses: system.addresses,
            system: Some(system),
            partner: Uuid::new_v4(),
            storage,
            clock,
            content,
        }
    }

    /// The storage this system runs on.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// A token of another partner with `roles` (for isolation tests).
    pub fn token_of(&self, partner: Uuid, roles: &[Role]) -> String {
        mint(partner, roles, Duration::from_secs(600))
    }

    /// A token of this system's partner with `roles`.
    pub fn token(&self, roles: &[Role]) -> String {
        mint(self.partner, roles, Duration::from_secs(600))
    }

    /// A channel to the gateway.
    pub async fn gateway(&self) -> Channel {
        connect(self.addresses.gateway).await
    }

    /// A catalog client through the gateway, authenticated with `roles`.
    pub async fn catalog(
        &self,
        roles: &[Role],
    ) -> CatalogServiceClient<InterceptedService<Channel, Bearer>> {
        CatalogServiceClient::with_interceptor(
            self.gateway().await,
            Bearer::new(&self.token(roles)),
        )
    }

    /// An ordering client through the gateway, authenticated with `roles`.
    pub async fn ordering(
        &self,
        roles: &[Role],
    ) -> csp_proto::ordering::v1::ordering_service_client::OrderingServiceClient<
        InterceptedService<Channel, Bearer>,
    > {
        csp_proto::ordering::v1::ordering_service_client::OrderingServiceClient::with_interceptor(
            self.gateway().await,
            Bearer::new(&self.token(roles)),
        )
    }

    /// A customer of this partner in the US (admin agent) with one order of
    /// one of each of `skus`, placed through the gateway.
    pub async fn purchase(&self, domain: &str, skus: &[&str]) -> (String, Order) {
        purchase_with(&mut self.ordering(&[Role::AdminAgent]).await, domain, skus).await
    }

    /// A licensing client through the gateway, authenticated with `roles`.
    pub async fn licensing(
        &self,
        roles: &[Role],
    ) -> csp_proto::licensing::v1::licensing_service_client::LicensingServiceClient<
        InterceptedService<Channel, Bearer>,
    > {
        csp_proto::licensing::v1::licensing_service_client::LicensingServiceClient::with_interceptor(
            self.gateway().await,
            Bearer::new(&self.token(roles)),
        )
    }

    /// A support client through the gateway, authenticated with `roles`,
    /// able to carry 10 MiB attachments both ways.
    pub async fn support(
        &self,
        roles: &[Role],
    ) -> csp_proto::support::v1::support_service_client::SupportServiceClient<
        InterceptedService<Channel, Bearer>,
    > {
        csp_proto::support::v1::support_service_client::SupportServiceClient::with_interceptor(
            self.gateway().await,
            Bearer::new(&self.token(roles)),
        )
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// An audit client through the gateway, authenticated with `roles`.
    pub async fn audit(
        &self,
        roles: &[Role],
    ) -> csp_proto::audit::v1::audit_service_client::AuditServiceClient<
        InterceptedService<Channel, Bearer>,
    > {
        csp_proto::audit::v1::audit_service_client::AuditServiceClient::with_interceptor(
            self.gateway().await,
            Bearer::new(&self.token(roles)),
        )
    }

    /// The audit intake, called directly as licensing (the producer of key
    /// and download records) would.
    pub async fn audit_intake(
        &self,
    ) -> csp_proto::audit::v1::audit_intake_service_client::AuditIntakeServiceClient<
        InterceptedService<Channel, csp_kit::identity::ServiceIdentity>,
    > {
        csp_proto::audit::v1::audit_intake_service_client::AuditIntakeServiceClient::with_interceptor(
            connect(self.addresses.audit).await,
            csp_kit::identity::ServiceIdentity::new(signer(ServiceName::Licensing)),
        )
    }

    /// The catalog service's internal API, called directly with `caller`'s
    /// identity (the operator's, as `csp catalog import` calls it).
    pub async fn catalog_internal(
        &self,
        caller: ServiceName,
    ) -> csp_proto::catalog::v1::catalog_internal_service_client::CatalogInternalServiceClient<
        InterceptedService<Channel, csp_kit::identity::ServiceIdentity>,
    > {
        csp_proto::catalog::v1::catalog_internal_service_client::CatalogInternalServiceClient::with_interceptor(
            connect(self.addresses.catalog).await,
            csp_kit::identity::ServiceIdentity::new(signer(caller)),
        )
        .max_encoding_message_size(80 << 20)
    }

    /// The ordering service's internal API, called directly as the support
    /// service would.
    pub async fn ordering_internal(
        &self,
    ) -> csp_proto::ordering::v1::ordering_internal_service_client::OrderingInternalServiceClient<
        InterceptedService<Channel, csp_kit::identity::ServiceIdentity>,
    >{
        csp_proto::ordering::v1::ordering_internal_service_client::OrderingInternalServiceClient::with_interceptor(
            connect(self.addresses.ordering).await,
            csp_kit::identity::ServiceIdentity::new(signer(ServiceName::Support)),
        )
    }

    /// The URL of a service's own database.
    pub async fn database_url(&self, service: &str) -> String {
        match &self.storage {
            Storage::Sqlite(dir) => {
                format!("sqlite://{}", dir.join(format!("{service}.db")).display())
            }
            Storage::Postgres {
                server_url, prefix, ..
            } => {
                csp_store::db::ensure_postgres_database(server_url, &format!("{prefix}_{service}"))
                    .await
                    .unwrap_or_else(|error| panic!("{error:#}"))
            }
        }
    }

    /// A connection to a service's own database, to look behind its API.
    pub async fn service_db(&self, service: &str) -> csp_store::db::Db {
        let url = self.database_url(service).await;
        csp_store::db::Db::connect(&url)
            .await
            .unwrap_or_else(|error| panic!("cannot open the {service} database: {error:#}"))
    }

    /// Stops the services but keeps the storage (to start again on it).
    pub async fn stop_keeping_data(mut self) -> Storage {
        if let Some(system) = self.system.take() {
            system
                .stop()
                .await
                .unwrap_or_else(|error| panic!("the system did not stop cleanly: {error:#}"));
        }
        self.storage.clone()
    }

    /// Stops the services and removes the storage.
    pub async fn stop(self) {
        let storage = self.stop_keeping_data().await;
        remove_storage(&storage).await;
    }
}

/// A fresh database of the configured kind (SQLite, or PostgreSQL when
/// `CSP_TEST_POSTGRES_URL` is set); the storage contract suites use the same.
pub use csp_store::testing::TestDb;

/// A fresh [`TestDb`], with the test log installed first (as every test
/// system does).
pub async fn test_db() -> TestDb {
    logs::init();
    TestDb::new().await
}

/// A second licensing replica on a system's database, behind a second
/// gateway of its own: what a deployment with several replicas runs.
pub struct Replica {
    /// The second gateway's gRPC address.
    pub gateway: std::net::SocketAddr,
    /// The second gateway's download listener.
    pub gateway_http: std::net::SocketAddr,
    trigger: csp_kit::shutdown::ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Replica {
    /// Starts the replica and its gateway.
    pub async fn licensing_and_gateway(system: &TestSystem) -> Replica {
        let bind = || async {
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("cannot bind: {e}"))
        };
        let (licensing, gateway, gateway_http) = (bind().await, bind().await, bind().await);
        let addr = |l: &tokio::net::TcpListener| l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (licensing_addr, gateway_addr, http_addr) =
            (addr(&licensing), addr(&gateway), addr(&gateway_http));
        let url = |a: std::net::SocketAddr| format!("http://{a}");
        let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
        let a = system.addresses;
        let licensing_config = csp_licensing::Config {
            backend: csp_kit::config::BackendArgs {
                listen: Some(licensing_addr),
                database_url: Some(system.database_url("licensing").await),
                data_dir: PathBuf::from("data"),
                identity: identity_args(ServiceName::Licensing),
                metrics_listen: None,
            },
            catalog: url(a.catalog).into(),
            ordering: url(a.ordering).into(),
            audit: url(a.audit).into(),
            sealing_key: Some(sealing_key()),
            download_base_url: url(http_addr),
            content: system.content_args(Some(url(http_addr))),
        };
        let gateway_config = csp_gateway::Config {
            http_listen: Some(http_addr),
            backends: system.backends_with(None, Some(licensing_addr)),
            ..system.gateway_config(gateway_addr)
        };
        let tasks = vec![
            tokio::spawn(csp_licensing::run(
                licensing_config,
                licensing,
                shutdown.clone(),
                system.clock.clone(),
            )),
            tokio::spawn(csp_gateway::run(
                gateway_config,
                gateway,
                gateway_http,
                shutdown,
            )),
        ];
        wait_serving(licensing_addr).await;
        wait_serving(gateway_addr).await;
        Replica {
            gateway: gateway_addr,
            gateway_http: http_addr,
            trigger,
            tasks,
        }
    }

    /// Stops both.
    pub async fn stop(self) {
        self.trigger.fire();
        for task in self.tasks {
            task.await
                .unwrap_or_else(|e| panic!("a replica task panicked: {e}"))
                .unwrap_or_else(|e| panic!("a replica failed: {e:#}"));
        }
    }
}

/// A service started by a test on a system's database, at an address of the
/// test's choosing: to bring it back after an outage, or to run a second
/// replica.
pub struct Instance {
    trigger: csp_kit::shutdown::ShutdownTrigger,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Audit, started by a test.
pub type AuditInstance = Instance;

impl Instance {
    /// Starts audit on `addr`, on `system`'s audit database and checkpoint file.
    pub async fn start(system: &TestSystem, addr: std::net::SocketAddr) -> Instance {
        let listener = bind_exactly(addr).await;
        let data_dir = match &system.storage {
            Storage::Sqlite(dir) => dir.clone(),
            Storage::Postgres { files, .. } => files.clone(),
        };
        let config = csp_audit::Config {
            backend: csp_kit::config::BackendArgs {
                listen: Some(addr),
                database_url: Some(system.database_url("audit").await),
                data_dir,
                identity: identity_args(ServiceName::Audit),
                metrics_listen: None,
            },
            checkpoint_key: Some(audit_key()),
            log_name: csp_audit::log::DEFAULT_LOG_NAME.to_owned(),
            max_record_age_hours: 168,
            checkpoint_file: None,
        };
        let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
        let task = tokio::spawn(csp_audit::run(
            config,
            listener,
            shutdown,
            system.clock.clone(),
        ));
        Instance::ready(trigger, task, addr).await
    }

    /// Starts licensing on `addr`, on `system`'s licensing database.
    pub async fn licensing(system: &TestSystem, addr: std::net::SocketAddr) -> Instance {
        let listener = bind_exactly(addr).await;
        let a = system.addresses;
        let url = |a: std::net::SocketAddr| format!("http://{a}");
        let config = csp_licensing::Config {
            backend: csp_kit::config::BackendArgs {
                listen: Some(addr),
                database_url: Some(system.database_url("licensing").await),
                data_dir: PathBuf::from("data"),
                identity: identity_args(ServiceName::Licensing),
                metrics_listen: None,
            },
            catalog: url(a.catalog).into(),
            ordering: url(a.ordering).into(),
            audit: url(a.audit).into(),
            sealing_key: Some(sealing_key()),
            download_base_url: url(a.gateway_http),
            content: system.content_args(Some(url(a.gateway_http))),
        };
        let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
        let task = tokio::spawn(csp_licensing::run(
            config,
            listener,
            shutdown,
            system.clock.clone(),
        ));
        Instance::ready(trigger, task, addr).await
    }

    /// Starts a second gateway on `addr` in front of `system`'s backends,
    /// with `limits` (and no download listener).
    pub async fn gateway(
        system: &TestSystem,
        addr: std::net::SocketAddr,
        limits: csp_gateway::limits::LimitArgs,
    ) -> Instance {
        Instance::gateway_with(system, addr, limits, None).await
    }

    /// Starts a production gateway (no --dev: no HS256 tokens) on `addr` in
    /// front of `system`'s backends, signing users in through `oidc`.
    pub async fn oidc_gateway(
        system: &TestSystem,
        addr: std::net::SocketAddr,
        oidc: csp_gateway::oidc::OidcArgs,
    ) -> Instance {
        Instance::gateway_with(system, addr, Default::default(), Some(oidc)).await
    }

    async fn gateway_with(
        system: &TestSystem,
        addr: std::net::SocketAddr,
        limits: csp_gateway::limits::LimitArgs,
        oidc: Option<csp_gateway::oidc::OidcArgs>,
    ) -> Instance {
        let listener = bind_exactly(addr).await;
        let http = bind_exactly(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let production = oidc.is_some();
        let config = csp_gateway::Config {
            jwt_secret: (!production).then(jwt_secret),
            oidc: oidc.unwrap_or_default(),
            identity: identity_keys().args_for(ServiceName::Gateway, !production),
            limits,
            ..system.gateway_config(addr)
        };
        let (trigger, shutdown) = csp_kit::shutdown::Shutdown::new();
        let task = tokio::spawn(csp_gateway::run(config, listener, http, shutdown));
        Instance::ready(trigger, task, addr).await
    }

    /// Waits until the service answers health checks, or says why it stopped.
    async fn ready(
        trigger: csp_kit::shutdown::ShutdownTrigger,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
        addr: std::net::SocketAddr,
    ) -> Instance {
        for _ in 0..3000 {
            if task.is_finished() {
                let outcome = task.await;
                panic!("the service stopped at start: {outcome:?}");
            }
            if serving(addr).await {
                return Instance { trigger, task };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the service at {addr} never became SERVING");
    }

    /// Stops it.
    pub async fn stop(self) {
        self.trigger.fire();
        self.task
            .await
            .unwrap_or_else(|e| panic!("the service panicked: {e}"))
            .unwrap_or_else(|e| panic!("the service failed: {e:#}"));
    }
}

/// Whether the server at `addr` answers its health check SERVING.
pub async fn serving(addr: std::net::SocketAddr) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

/// Waits until the server at `addr` is SERVING (at most 60 s).
pub async fn wait_serving(addr: std::net::SocketAddr) {
    for _ in 0..3000 {
        if serving(addr).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} never became SERVING");
}

async fn bind_exactly(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"))
}

/// Removes a test's databases.
pub async fn remove_storage(storage: &Storage) {
    match storage {
        Storage::Sqlite(dir) => {
            let _ = std::fs::remove_dir_all(dir);
        }
        Storage::Postgres {
            server_url,
            prefix,
            files,
        } => {
            let _ = std::fs::remove_dir_all(files);
            for service in ["catalog", "ordering", "licensing", "audit", "support"] {
                csp_store::db::drop_postgres_database(server_url, &format!("{prefix}_{service}"))
                    .await
                    .unwrap_or_else(|error| panic!("cannot drop a test database: {error:#}"));
            }
        }
    }
}

/// A user token signed with the test secret.
pub fn mint(partner: Uuid, roles: &[Role], lifetime: Duration) -> String {
    csp_gateway::auth::mint_dev_token(
        &jwt_secret(),
        partner,
        "test-user",
        "Test User",
        roles,
        lifetime,
    )
    .unwrap_or_else(|error| panic!("cannot mint a token: {error:#}"))
}

/// An ordering client through a gateway, with a bearer token.
pub type OrderingClient = OrderingServiceClient<InterceptedService<Channel, Bearer>>;

/// Creates a customer in the US with `domain`, then one order of one of each
/// of `skus`, through `ordering`; the customer's tenant id and the order.
pub async fn purchase_with(
    ordering: &mut OrderingClient,
    domain: &str,
    skus: &[&str],
) -> (String, Order) {
    let customer = ordering
        .create_customer(CreateCustomerRequest {
            tenant_id: String::new(),
            domain_name: domain.into(),
            company_name: "Customer".into(),
            market: "US".into(),
        })
        .await
        .unwrap_or_else(|status| panic!("cannot create customer {domain}: {status:?}"))
        .into_inner()
        .customer
        .unwrap_or_else(|| panic!("no customer in the answer"))
        .tenant_id;
    let order = ordering
        .place_order(PlaceOrderRequest {
            customer_tenant_id: customer.clone(),
            lines: skus
                .iter()
                .map(|sku| OrderLineRequest {
                    sku_id: (*sku).into(),
                    quantity: 1,
                })
                .collect(),
            request_id: Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_or_else(|status| panic!("cannot order {skus:?}: {status:?}"))
        .into_inner()
        .order
        .unwrap_or_else(|| panic!("no order in the answer"));
    (customer, order)
}

/// An order of `lines` (SKU, quantity) for `customer`, with a fresh
/// request id.
pub fn order_request(customer: &str, lines: &[(&str, i32)]) -> PlaceOrderRequest {
    PlaceOrderRequest {
        customer_tenant_id: customer.into(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| OrderLineRequest {
                sku_id: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        request_id: Uuid::new_v4().to_string(),
    }
}

/// The contact of test tickets.
pub fn contact() -> Option<Contact> {
    Some(Contact {
        name: "Ada Agent".into(),
        email: "ada@partner.example".into(),
        phone: "+1 425 555 0100".into(),
    })
}

/// A refund ticket for `target` of `customer`, asking `minor` US cents back.
pub fn refund_ticket(
    customer: refund_request::Customer,
    target: refund_request::Target,
    minor: i64,
) -> CreateTicketRequest {
    CreateTicketRequest {
        issue_type: IssueType::PurchaseRefund as i32,
        impact: Impact::Moderate as i32,
        title: "Cancel a purchase".into(),
        description: "The customer bought the wrong edition.".into(),
        contact: contact(),
        refund: Some(RefundRequest {
            customer: Some(customer),
            target: Some(target),
            reason: "wrong edition".into(),
            requested_amount: Some(Money {
                currency_code: "USD".into(),
                minor_units: minor,
                minor_unit_digits: 2,
            }),
        }),
        attachments: vec![],
        request_id: Uuid::new_v4().to_string(),
    }
}

/// The value of the sample `name{labels}` in an OpenMetrics text (what
/// `/metrics` serves), when the labels are exactly these, in this order.
pub fn metric_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let prefix = format!("{name}{{{}}} ", labels.join(","));
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// A channel to `addr`.
pub async fn connect(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap_or_else(|error| panic!("bad address {addr}: {error}"))
        .connect()
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {addr}: {error}"))
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    /// For `token`.
    pub fn new(token: &str) -> Self {
        Bearer::raw(&format!("Bearer {token}"))
    }

    /// With the exact `authorization` value given.
    pub fn raw(value: &str) -> Self {
        Bearer(
            value
                .parse()
                .unwrap_or_else(|_| panic!("not valid metadata: {value:?}")),
        )
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Sends a fixed `x-csp-identity` on every call, as a caller holding a
/// signed (or forged) identity would, straight to a backend.
#[derive(Clone)]
pub struct IdentityHeader(pub String);

impl tonic::service::Interceptor for IdentityHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert(
            csp_kit::identity::IDENTITY_HEADER,
            self.0
                .parse()
                .map_err(|_| tonic::Status::internal("the identity is not valid metadata"))?,
        );
        Ok(request)
    }
}

/// The workspace's target directory (for tools the tests fetch once).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}
