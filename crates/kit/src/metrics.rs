//! Prometheus metrics, one registry per process, served on `GET /metrics`
//! (OpenMetrics text) by [`serve`]:
//!
//! - `csp_grpc_server_handled` (counter): calls finished, by service, method
//!   and gRPC status code (`OK`, `NOT_FOUND`, ...; `CANCELLED` when the caller
//!   went away first).
//! - `csp_grpc_server_handling_seconds` (histogram): call latency, by service
//!   and method, from the request to the end of the response.
//! - `csp_outbox_backlog` and `csp_outbox_dead_letters` (gauges): messages
//!   waiting, and dead letters, per service and destination.
//! - `csp_db_pool_connections` (gauge, by service and `state` = `idle` or
//!   `in_use`) and `csp_db_pool_max_connections`.
//! - `csp_http_server_responses` (counter): plain HTTP answers (the
//!   gateway's download links), by service, route and status code.
//! - `csp_gateway_limited_calls` (counter): calls the gateway refused by a
//!   per-user or per-partner limit, by scope.
//! - `csp_gateway_large_request_mib` (gauge, by gateway `listener`): MiB of
//!   large request messages (attachments) let through to the backends and
//!   not answered yet; the large-request budget bounds it.
//!
//! Methods outside the descriptor set and health (reflection, unknown paths)
//! are counted as `other`, so a caller cannot grow the label set. Database
//! gauges are read when scraped, from every database registered with
//! [`watch_database`] (`csp-store` reports a service's database).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as _, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tonic::body::Body;

use crate::shutdown::Shutdown;

/// A label set of `N` labels.
type Labels<const N: usize> = [(&'static str, String); N];

/// The process's metrics.
struct Metrics {
    registry: Registry,
    handled: Family<Labels<3>, Counter>,
    latency: Family<Labels<2>, Histogram, fn() -> Histogram>,
    outbox_backlog: Family<Labels<2>, Gauge>,
    dead_letters: Family<Labels<2>, Gauge>,
    pool_connections: Family<Labels<2>, Gauge>,
    pool_max: Family<Labels<1>, Gauge>,
    http_responses: Family<Labels<3>, Counter>,
    limited: Family<Labels<2>, Counter>,
    large_in_flight: Family<Labels<2>, Gauge>,
    signed_urls: Family<Labels<3>, Counter>,
    content_bytes: Family<Labels<1>, Counter>,
    known_methods: HashSet<String>,
    databases: Mutex<Vec<Watched>>,
    /// One scrape at a time: gauges are cleared and refilled per scrape.
    scrape: tokio::sync::Mutex<()>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("csp");
        let handled = Family::<Labels<3>, Counter>::default();
        registry.register(
            "grpc_server_handled",
            "gRPC calls finished, by service, method and status code",
            handled.clone(),
        );
        let latency = Family::<Labels<2>, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "grpc_server_handling_seconds",
            "gRPC call latency, from the request to the end of the response",
            latency.clone(),
        );
        let outbox_backlog = Family::<Labels<2>, Gauge>::default();
        registry.register(
            "outbox_backlog",
            "Outbox messages waiting for delivery, by destination",
            outbox_backlog.clone(),
        );
        let dead_letters = Family::<Labels<2>, Gauge>::default();
        registry.register(
            "outbox_dead_letters",
            "Outbox messages a receiver rejected, waiting for replay, by destination",
            dead_letters.clone(),
        );
        let pool_connections = Family::<Labels<2>, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections, idle or in use",
            pool_connections.clone(),
        );
        let pool_max = Family::<Labels<1>, Gauge>::default();
        registry.register(
            "db_pool_max_connections",
            "The most connections the database pool opens",
            pool_max.clone(),
        );
        let http_responses = Family::<Labels<3>, Counter>::default();
        registry.register(
            "http_server_responses",
            "Plain HTTP answers (download links), by service, route and status code",
            http_responses.clone(),
        );
        let limited = Family::<Labels<2>, Counter>::default();
        registry.register(
            "gateway_limited_calls",
            "Calls refused by a per-user or per-partner limit, by scope",
            limited.clone(),
        );
        let large_in_flight = Family::<Labels<2>, Gauge>::default();
        registry.register(
            "gateway_large_request_mib",
            "MiB of large request messages let through to the backends and not answered yet",
            large_in_flight.clone(),
        );
        let signed_urls = Family::<Labels<3>, Counter>::default();
        registry.register(
            "content_signed_urls",
            "Short-lived signed URLs issued to object storage, by service, backend and purpose",
            signed_urls.clone(),
        );
        let content_bytes = Family::<Labels<1>, Counter>::default();
        registry.register(
            "content_local_served_bytes",
            "Bytes of content the local object store backend served through the gateway",
            content_bytes.clone(),
        );
        Metrics {
            registry,
            http_responses,
            signed_urls,
            content_bytes,
            limited,
            large_in_flight,
            handled,
            latency,
            outbox_backlog,
            dead_letters,
            pool_connections,
            pool_max,
            known_methods: known_methods(),
            databases: Mutex::new(Vec::new()),
            scrape: tokio::sync::Mutex::new(()),
        }
    })
}

/// Every csp RPC path (`/csp.catalog.v1.CatalogService/ListProducts`), and
/// the health checks.
fn known_methods() -> HashSet<String> {
    let mut known: HashSet<String> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let Ok(pool) = prost_reflect::DescriptorPool::decode(csp_proto::FILE_DESCRIPTOR_SET) else {
        return known;
    };
    known.extend(pool.services().flat_map(|service| {
        service
            .methods()
            .map(|method| format!("/{}/{}", service.full_name(), method.name()))
            .collect::<Vec<_>>()
    }));
    known
}

/// The method label of a request path.
fn method_label(path: &str) -> String {
    if metrics().known_methods.contains(path) {
        path.to_owned()
    } else {
        "other".to_owned()
    }
}

/// Counts one plain HTTP answer of `service` on `route` (a fixed route
/// name, never the request's path: it may hold a secret token).
pub fn count_http(service: &'static str, route: &'static str, status: u16) {
    metrics()
        .http_responses
        .get_or_create(&[
            ("service", service.to_owned()),
            ("route", route.to_owned()),
            ("code", status.to_string()),
        ])
        .inc();
}

/// Counts one call `service` refused by a limit of `scope` (a fixed name:
/// `user_rate`, `partner_rate`, `partner_concurrency`).
pub fn count_limited(service: &'static str, scope: &'static str) {
    metrics()
        .limited
        .get_or_create(&[("service", service.to_owned()), ("scope", scope.to_owned())])
        .inc();
}

/// Counts one signed URL `service` issued for its `backend` (`local`,
/// `azure`, `s3`) and `purpose` (`software`, `attachment`).
pub fn count_signed_url(service: &'static str, backend: &'static str, purpose: &'static str) {
    metrics()
        .signed_urls
        .get_or_create(&[
            ("service", service.to_owned()),
            ("backend", backend.to_owned()),
            ("purpose", purpose.to_owned()),
        ])
        .inc();
}

/// Adds `bytes` the local content backend served through `service`.
pub fn add_content_bytes_served(service: &'static str, bytes: u64) {
    metrics()
        .content_bytes
        .get_or_create(&[("service", service.to_owned())])
        .inc_by(bytes);
}

/// Adds `mib` (negative: takes away) to the large requests `service`, on
/// its `listener` (an address: one series per gateway), has in flight.
pub fn add_large_request_mib(service: &'static str, listener: &str, mib: i64) {
    metrics()
        .large_in_flight
        .get_or_create(&[
            ("service", service.to_owned()),
            ("listener", listener.to_owned()),
        ])
        .inc_by(mib);
}

/// What a database reports on every scrape: its pool, and its outbox where
/// it has one. `csp-store` implements it for a service's database.
#[tonic::async_trait]
pub trait DatabaseGauges: Send + Sync + 'static {
    /// The pool now.
    fn pool(&self) -> PoolGauges;
    /// Messages waiting per destination, and dead letters per destination;
    /// `None` for a database without an outbox (or one that did not answer).
    async fn outbox(&self) -> Option<(Vec<(String, i64)>, Vec<(String, i64)>)>;
}

/// A snapshot of a connection pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGauges {
    /// Connections open.
    pub size: u32,
    /// Of those, idle.
    pub idle: u32,
    /// The most it opens.
    pub max: u32,
}

/// A database reported on every scrape.
#[derive(Clone)]
struct Watched {
    id: u64,
    service: &'static str,
    source: std::sync::Arc<dyn DatabaseGauges>,
}

/// Keeps a database in the scraped gauges until dropped.
#[derive(Debug)]
pub struct DatabaseWatch(u64);

impl Drop for DatabaseWatch {
    fn drop(&mut self) {
        let mut databases = metrics()
            .databases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        databases.retain(|watched| watched.id != self.0);
    }
}

/// Reports `source` under `service` on every scrape, until the returned
/// watch is dropped.
pub fn watch_database(
    service: &'static str,
    source: std::sync::Arc<dyn DatabaseGauges>,
) -> DatabaseWatch {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics()
        .databases
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(Watched {
            id,
            service,
            source,
        });
    DatabaseWatch(id)
}

/// The metrics as OpenMetrics text, with the database gauges read now.
/// Several databases of one service in one process (tests) add up.
pub async fn render() -> String {
    let m = metrics();
    let _one_at_a_time = m.scrape.lock().await;
    let databases: Vec<Watched> = m
        .databases
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    m.outbox_backlog.clear();
    m.dead_letters.clear();
    m.pool_connections.clear();
    m.pool_max.clear();
    for Watched {
        service, source, ..
    } in databases
    {
        let stats = source.pool();
        let labels = |key: &'static str, value: &str| -> Labels<2> {
            [("service", service.to_owned()), (key, value.to_owned())]
        };
        m.pool_connections
            .get_or_create(&labels("state", "idle"))
            .inc_by(i64::from(stats.idle));
        m.pool_connections
            .get_or_create(&labels("state", "in_use"))
            .inc_by(i64::from(stats.size.saturating_sub(stats.idle)));
        m.pool_max
            .get_or_create(&[("service", service.to_owned())])
            .inc_by(i64::from(stats.max));
        let Some((backlog, dead)) = source.outbox().await else {
            continue;
        };
        for (destination, count) in backlog {
            m.outbox_backlog
                .get_or_create(&labels("destination", &destination))
                .inc_by(count);
        }
        for (destination, count) in dead {
            m.dead_letters
                .get_or_create(&labels("destination", &destination))
                .inc_by(count);
        }
    }
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &m.registry) {
        tracing::error!(%error, "cannot encode the metrics");
    }
    text
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` over HTTP/1.1 on `listener` until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], render().await)
        }),
    );
    tracing::info!(addr = %listener.local_addr()?, "serving metrics on /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.wait())
        .await
        .context("the metrics server failed")
}

/// A tower layer that counts and times every call a server answers.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    service: &'static str,
}

impl MetricsLayer {
    /// Calls are labelled with `service`.
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Measured {
            inner,
            service: self.service,
        }
    }
}

/// The service [`MetricsLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct Measured<S> {
    inner: S,
    service: &'static str,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Measured<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let call = Call {
            service: self.service,
            method: method_label(request.uri().path()),
            started: Instant::now(),
        };
        Box::pin(async move {
            let response = inner.call(request).await?;
            // A trailers-only answer (most errors) carries the status in the
            // headers; otherwise it comes in the trailers at the end.
            let in_headers = grpc_code(response.headers());
            let (parts, body) = response.into_parts();
            let body = Observed {
                inner: body,
                call: Some(call),
                code: in_headers,
            };
            Ok(http::Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// One call being measured.
struct Call {
    service: &'static str,
    method: String,
    started: Instant,
}

impl Call {
    fn finish(self, code: &str) {
        let m = metrics();
        m.handled
            .get_or_create(&[
                ("service", self.service.to_owned()),
                ("method", self.method.clone()),
                ("code", code.to_owned()),
            ])
            .inc();
        m.latency
            .get_or_create(&[
                ("service", self.service.to_owned()),
                ("method", self.method),
            ])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// A response body that records its call when it ends (or is dropped, when
/// the caller went away).
struct Observed {
    inner: Body,
    call: Option<Call>,
    code: Option<&'static str>,
}

impl http_body::Body for Observed {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                    self.code = Some(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                self.code = Some("INTERNAL");
            }
            Poll::Ready(None) => {
                let code = self.code.unwrap_or("UNKNOWN");
                if let Some(call) = self.call.take() {
                    call.finish(code);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            // Ended without reaching the end of the body: a trailers-only
            // answer whose body was never polled keeps its code; otherwise
            // the caller went away.
            let code = match self.code {
                Some(code) if self.inner.is_end_stream() => code,
                _ => "CANCELLED",
            };
            call.finish(code);
        }
    }
}

/// The gRPC status code name in `grpc-status`, if present.
fn grpc_code(headers: &http::HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    let code = tonic::Code::from_bytes(value.as_bytes());
    Some(code_name(code))
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(
            method_label("/csp.catalog.v1.CatalogService/ListProducts"),
            "/csp.catalog.v1.CatalogService/ListProducts"
        );
        assert_eq!(method_label("/no.Such/Thing"), "other");
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(
            method_label("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            "other"
        );
    }

    #[test]
    fn status_codes_are_named_as_grpc_names_them() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(grpc_code(&headers), Some("NOT_FOUND"));
        headers.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert_eq!(grpc_code(&headers), Some("OK"));
        assert_eq!(grpc_code(&http::HeaderMap::new()), None);
    }
}
