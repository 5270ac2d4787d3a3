//! A gRPC server as every csp service runs it: gRPC health, server reflection
//! (v1 and v1alpha, which grpcurl 1.8 speaks), caller identity checks, and
//! graceful shutdown (health turns NOT_SERVING, in-flight calls finish, then
//! the server returns).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::identity::{IdentityLayer, Verifier};
use crate::metrics::MetricsLayer;
use crate::shutdown::Shutdown;
use axum::body as axum_body;

/// Which services reflection lists.
#[derive(Clone, Debug)]
pub enum ReflectionScope {
    /// Every service in the descriptor set (backends).
    All,
    /// Only these services, plus health and reflection (the gateway's public
    /// API).
    Only(Vec<String>),
}

/// The health service name that answers SERVING for as long as the process
/// runs, whatever the readiness: what liveness probes ask, so a service that
/// is migrating, draining or has lost its database is taken out of traffic
/// but not restarted.
pub const LIVENESS: &str = "liveness";

/// Routes holding health and reflection over the csp descriptor set, and the
/// reporter that sets the health status. The overall status ("") starts
/// NOT_SERVING; call [`set_serving`] when the service is ready. [`LIVENESS`]
/// is SERVING from the start.
pub async fn base_routes(scope: ReflectionScope) -> anyhow::Result<(HealthReporter, Routes)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    // Reflection is built on its first call, not at start: its index of
    // every symbol of the descriptor set took 3.3 MB of live heap per process
    // (two versions in each of six servers; 3.5-4 MB of idle RSS), and most
    // processes never answer a reflection call.
    let scope = Arc::new(scope);
    let v1 = BuiltOnFirstCall::new({
        let scope = scope.clone();
        move || {
            reflection_builder(&scope)?
                .build_v1()
                .context("cannot build reflection v1")
        }
    });
    // v1alpha: what grpcurl before 1.8 and Python's grpcio reflection
    // client speak.
    let v1alpha = BuiltOnFirstCall::new(move || {
        reflection_builder(&scope)?
            .build_v1alpha()
            .context("cannot build reflection v1alpha")
    });
    let routes = Routes::new(health).add_service(v1).add_service(v1alpha);
    Ok((reporter, routes))
}

/// The encoded csp files `scope` reflects, with their original bytes (so
/// custom options such as `csp.auth.v1.access` survive). The public part is
/// made once per list of services and kept for the life of the process
/// (reflection borrows it; a process has one gateway, so one list).
fn reflected_files(scope: &ReflectionScope) -> anyhow::Result<&'static [u8]> {
    static PUBLIC: std::sync::Mutex<Vec<(Vec<String>, &'static [u8])>> =
        std::sync::Mutex::new(Vec::new());
    let ReflectionScope::Only(services) = scope else {
        return Ok(csp_proto::FILE_DESCRIPTOR_SET);
    };
    let mut made = PUBLIC
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, files)) = made.iter().find(|(listed, _)| listed == services) {
        return Ok(files);
    }
    let files: &'static [u8] = Box::leak(
        public_descriptor_set(csp_proto::FILE_DESCRIPTOR_SET, services)?.into_boxed_slice(),
    );
    made.push((services.clone(), files));
    Ok(files)
}

/// Reflection over the csp files `scope` reflects, health and the
/// google.rpc error details, listing the services `scope` names.
fn reflection_builder(
    scope: &ReflectionScope,
) -> anyhow::Result<tonic_reflection::server::Builder<'static>> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(reflected_files(scope)?)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc error details, so grpcurl can print them.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET);
    if let ReflectionScope::Only(services) = scope {
        builder = builder
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for service in services {
            builder = builder.with_service_name(service.clone());
        }
    }
    Ok(builder)
}

/// A gRPC service made by `build` on its first call and kept. Should
/// `build` fail, every call answers INTERNAL (the failure is logged once).
struct BuiltOnFirstCall<S, F> {
    service: Arc<std::sync::OnceLock<Option<S>>>,
    build: Arc<F>,
}

impl<S, F> BuiltOnFirstCall<S, F> {
    fn new(build: F) -> Self {
        Self {
            service: Arc::new(std::sync::OnceLock::new()),
            build: Arc::new(build),
        }
    }
}

impl<S, F> Clone for BuiltOnFirstCall<S, F> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
            build: self.build.clone(),
        }
    }
}

impl<S: tonic::server::NamedService, F> tonic::server::NamedService for BuiltOnFirstCall<S, F> {
    const NAME: &'static str = S::NAME;
}

impl<S, F> tower::Service<http::Request<tonic::body::Body>> for BuiltOnFirstCall<S, F>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    F: Fn() -> anyhow::Result<S> + Send + Sync + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let service = self.service.get_or_init(|| match (self.build)() {
            Ok(service) => Some(service),
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), service = S::NAME, "cannot build the service");
                None
            }
        });
        match service.clone() {
            Some(service) => Box::pin(tower::ServiceExt::oneshot(service, request)),
            None => {
                let status = tonic::Status::internal(format!("{} is not available", S::NAME));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The files of an encoded descriptor set that define `services` (full
/// names) and every file they import, transitively: what reflection on the
/// public port may resolve. Internal services live in files of their own
/// that no public file imports, so they are left out. Each kept file keeps
/// its original bytes (custom options such as `csp.auth.v1.access` survive).
pub fn public_descriptor_set(encoded: &[u8], services: &[String]) -> anyhow::Result<Vec<u8>> {
    use prost::Message as _;
    use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};

    // Split the set into its files' encoded bytes (field 1, length-delimited).
    let mut rest = encoded;
    let mut files: Vec<(&[u8], prost_types::FileDescriptorProto)> = Vec::new();
    while !rest.is_empty() {
        let (field, wire_type) = decode_key(&mut rest).context("a malformed descriptor set")?;
        anyhow::ensure!(
            field == 1 && wire_type == WireType::LengthDelimited,
            "a descriptor set holds only files"
        );
        let len = usize::try_from(decode_varint(&mut rest).context("a malformed file length")?)?;
        anyhow::ensure!(len <= rest.len(), "a truncated descriptor set");
        let (bytes, tail) = rest.split_at(len);
        files.push((bytes, prost_types::FileDescriptorProto::decode(bytes)?));
        rest = tail;
    }
    let full_name = |file: &prost_types::FileDescriptorProto, service: &str| {
        format!("{}.{service}", file.package())
    };
    let mut wanted: std::collections::HashSet<String> = files
        .iter()
        .filter(|(_, file)| {
            file.service
                .iter()
                .any(|s| services.contains(&full_name(file, s.name())))
        })
        .map(|(_, file)| file.name().to_owned())
        .collect();
    loop {
        let before = wanted.len();
        for (_, file) in &files {
            if wanted.contains(file.name()) {
                wanted.extend(file.dependency.iter().cloned());
            }
        }
        if wanted.len() == before {
            break;
        }
    }
    let mut out = Vec::with_capacity(encoded.len());
    for (bytes, file) in &files {
        if wanted.contains(file.name()) {
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(bytes.len() as u64, &mut out);
            out.extend_from_slice(bytes);
        }
    }
    Ok(out)
}

/// Sets the overall health status ("") to SERVING or NOT_SERVING.
pub async fn set_serving(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
}

/// How long in-flight calls may take to finish after the shutdown signal.
/// Past it the server closes what is still open and returns, so the process
/// exits inside Kubernetes' default grace period (30 s) even when a peer
/// never lets its connection go.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Serves `routes` on `listener` until `shutdown` fires. With a verifier,
/// every call except health and reflection must carry a valid caller
/// identity that the contract lets call the path. On shutdown, health turns NOT_SERVING first, then the server
/// stops accepting and waits for in-flight calls, at most [`DRAIN_LIMIT`].
/// Every call is counted and timed under `name` ([`MetricsLayer`]).
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    routes: Routes,
    health: HealthReporter,
    identity: Option<Arc<Verifier>>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // The same stack, callable without a socket by the gateway of this
    // process (see `inproc`); withdrawn as soon as shutdown begins.
    let registration = std::sync::Arc::new(crate::inproc::register(
        listener.local_addr()?,
        in_process_stack(name, &routes, identity.clone()),
    ));
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let fired = shutdown.clone();
    let withdrawn = registration.clone();
    let signal = async move {
        shutdown.wait().await;
        withdrawn.withdraw();
        set_serving(&health, false).await;
    };
    let served: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match identity {
        Some(verifier) => Box::pin(
            Server::builder()
                .layer(MetricsLayer::new(name))
                .layer(IdentityLayer::new(verifier))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, signal),
        ),
        None => Box::pin(
            Server::builder()
                .layer(MetricsLayer::new(name))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, signal),
        ),
    };
    // In-process calls hold no connection for tonic to drain: they are
    // waited for alongside, within the same limit.
    let drained = {
        let shutdown = fired.clone();
        let registration = registration.clone();
        async move {
            shutdown.wait().await;
            registration.drained().await;
        }
    };
    let overdue = async move {
        fired.wait().await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        (result, ()) = async { tokio::join!(served, drained) } => result.context("the gRPC server failed"),
        () = overdue => {
            tracing::warn!(
                service = name,
                limit = ?DRAIN_LIMIT,
                "calls or connections still open after the drain limit; closing them"
            );
            Ok(())
        }
    }
}

/// What [`serve`] serves, as one in-process service: metrics, caller
/// identity (with a verifier), then the routes.
fn in_process_stack(
    name: &'static str,
    routes: &Routes,
    identity: Option<Arc<Verifier>>,
) -> crate::inproc::InProcess {
    let routes = routes.clone();
    match identity {
        Some(verifier) => crate::inproc::InProcess::new(
            tower::ServiceBuilder::new()
                .layer(MetricsLayer::new(name))
                .layer(IdentityLayer::new(verifier))
                .service(routes),
        ),
        None => crate::inproc::InProcess::new(
            tower::ServiceBuilder::new()
                .layer(MetricsLayer::new(name))
                .service(routes),
        ),
    }
}

/// A `grpc-timeout` value: 1 to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Binds a TCP listener, with a message that names the address on failure.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}; is another process using it?"))
}

/// Runs a backend until `shutdown` fires: health, reflection of every
/// service, caller identity checks with `verifier`, and the service's
/// own gRPC services, which `add_services` adds to the routes. For a service
/// with nothing to prepare (tests' stand-ins); the five backends start with
/// `csp_store::backend::Backend`.
pub async fn run_backend(
    name: &'static str,
    listener: TcpListener,
    verifier: &Arc<Verifier>,
    shutdown: Shutdown,
    add_services: impl FnOnce(Routes) -> Routes,
) -> anyhow::Result<()> {
    start_backend(name, listener, verifier, shutdown)
        .await?
        .ready(add_services)
        .await
}

/// A backend that is up but not ready: it already answers health checks
/// (NOT_SERVING) and reflection, and answers its own RPCs with UNAVAILABLE
/// until [`Starting::ready`] hands it its services, after its database is
/// migrated. Orchestrators probe it from the first moment.
pub struct Starting {
    name: &'static str,
    health: HealthReporter,
    shutdown: Shutdown,
    slot: Arc<std::sync::OnceLock<Routes>>,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts serving health (NOT_SERVING) and reflection on `listener` at once.
pub async fn start_backend(
    name: &'static str,
    listener: TcpListener,
    verifier: &Arc<Verifier>,
    shutdown: Shutdown,
) -> anyhow::Result<Starting> {
    let (health, routes) = base_routes(ReflectionScope::All).await?;
    set_serving(&health, false).await;
    let slot = Arc::new(std::sync::OnceLock::new());
    let routes = Routes::from(
        routes
            .into_axum_router()
            .fallback_service(Deferred(slot.clone())),
    );
    tracing::info!(service = name, addr = %listener.local_addr()?, "listening; starting up");
    let served = tokio::spawn(serve(
        name,
        listener,
        routes,
        health.clone(),
        Some(verifier.clone()),
        shutdown.clone(),
    ));
    Ok(Starting {
        name,
        health,
        shutdown,
        slot,
        served: Some(served),
    })
}

impl Starting {
    /// Installs the service's own gRPC services, turns health SERVING, and
    /// serves until the shutdown signal.
    pub async fn ready(
        mut self,
        add_services: impl FnOnce(Routes) -> Routes,
    ) -> anyhow::Result<()> {
        let _ = self.slot.set(add_services(Routes::default()));
        set_serving(&self.health, true).await;
        tracing::info!(service = self.name, "serving");
        match self.served.take() {
            Some(served) => served.await.context("the server task failed")?,
            None => Ok(()),
        }
    }
}

/// How often a serving backend checks that its database answers.
pub const DATABASE_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a backend's database answers now; `csp-store` implements it.
pub type Probe = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync,
>;

impl Starting {
    /// Like [`Starting::ready`], and while serving asks `probe` every `every`
    /// whether the database answers: health is NOT_SERVING while it does not
    /// (so readiness probes take the replica out of traffic; liveness stays
    /// SERVING), and SERVING again once it does.
    pub async fn ready_watching(
        self,
        probe: Probe,
        every: std::time::Duration,
        add_services: impl FnOnce(Routes) -> Routes,
    ) -> anyhow::Result<()> {
        let watch = tokio::spawn(watch_database(
            self.name,
            probe,
            self.health.clone(),
            self.shutdown.clone(),
            every,
        ));
        let served = self.ready(add_services).await;
        watch.abort();
        served
    }

    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Turns health NOT_SERVING while the database does not answer, SERVING
/// when it does again; stops at shutdown (which owns the status from then on).
async fn watch_database(
    name: &'static str,
    probe: Probe,
    health: HealthReporter,
    shutdown: Shutdown,
    every: std::time::Duration,
) {
    let mut answering = true;
    loop {
        tokio::select! {
            () = shutdown.clone().wait() => return,
            () = tokio::time::sleep(every) => {}
        }
        let limit = every.min(std::time::Duration::from_secs(3));
        let answers = matches!(tokio::time::timeout(limit, probe()).await, Ok(true));
        if shutdown.is_fired() {
            return;
        }
        if answers != answering {
            answering = answers;
            set_serving(&health, answers).await;
            if answers {
                tracing::info!(service = name, "the database answers again; serving");
            } else {
                tracing::warn!(
                    service = name,
                    "the database does not answer; NOT_SERVING until it does"
                );
            }
        }
    }
}

impl Drop for Starting {
    /// A backend that never became ready (its start-up failed) stops serving.
    fn drop(&mut self) {
        if let Some(served) = self.served.take() {
            served.abort();
        }
    }
}

/// Routes a call to the service's own services once they are installed.
#[derive(Clone)]
struct Deferred(Arc<std::sync::OnceLock<Routes>>);

impl tower::Service<http::Request<axum_body::Body>> for Deferred {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<axum_body::Body>) -> Self::Future {
        use tower::ServiceExt as _;
        match self.0.get() {
            Some(routes) => Box::pin(routes.clone().oneshot(request)),
            None => Box::pin(async {
                Ok(tonic::Status::unavailable(
                    "the service is starting (migrating its database); try again shortly",
                )
                .into_http())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_set_holds_public_services_and_their_imports_with_their_options() {
        let public = crate::access::public_services(csp_proto::FILE_DESCRIPTOR_SET).unwrap();
        let set = public_descriptor_set(csp_proto::FILE_DESCRIPTOR_SET, &public).unwrap();
        let pool = prost_reflect::DescriptorPool::decode(set.as_slice()).unwrap();
        let names: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
        assert!(names.contains(&"csp.licensing.v1.LicensingService".to_owned()));
        assert!(names.contains(&"csp.catalog.v1.CatalogService".to_owned()));
        assert!(
            names.iter().all(|n| !n.contains("Internal")),
            "no internal service is resolvable: {names:?}"
        );
        assert!(
            pool.get_message_by_name("csp.ordering.v1.OrderingEvent")
                .is_none()
        );
        // The roles declared on each public RPC are still there.
        let methods = crate::access::public_methods(&set).unwrap();
        assert!(!methods.is_empty());
        assert_eq!(
            methods.len(),
            crate::access::public_methods(csp_proto::FILE_DESCRIPTOR_SET)
                .unwrap()
                .len()
        );
    }
}
