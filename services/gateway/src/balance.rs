//! The replicas of one backend, and forwarding a call to one of them: what
//! the gateway's gRPC routes and its download listener both send through.
//!
//! A backend is configured as one or more URLs (`http://licensing:50063`, or
//! `http://10.0.0.5:50063,http://10.0.0.6:50063`). Every address their hosts
//! resolve to is a replica (a Kubernetes headless Service resolves to every
//! ready pod); the list is resolved again every few seconds. Calls go to the
//! replicas in turn, each over its own long-lived HTTP/2 connection, so load
//! spreads over all of them instead of sticking to the first.
//!
//! A call that certainly reached no service ([`not_processed`]: the
//! connection was refused, a draining replica's GOAWAY left it out, ...) is
//! sent to the next replica, and the refusing one is skipped for a moment.
//! That needs the request body again: bodies up to [`RETRY_BUFFER`] are held
//! until the call is sent; larger ones (ticket attachments) stream through
//! and are sent once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body as AxumBody;
use bytes::{Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt as _;

use csp_kit::shutdown::Shutdown;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Request bodies up to this size are kept so the call can be sent to
/// another replica when the first did not take it.
pub const RETRY_BUFFER: usize = 4 * 1024 * 1024;

/// How often the URLs' hosts are resolved again.
const REFRESH: Duration = Duration::from_secs(5);

/// How long a replica that refused a connection is skipped.
const BENCH: Duration = Duration::from_secs(2);

/// One backend's replicas.
pub struct Replicas {
    /// The backend's name, for messages.
    pub name: &'static str,
    /// `host:port` of each configured URL.
    targets: Vec<String>,
    origins: RwLock<Vec<Arc<Origin>>>,
    next: AtomicUsize,
}

/// One replica.
pub struct Origin {
    addr: SocketAddr,
    /// `http://ADDR`, the scheme and authority of requests to it.
    uri: http::Uri,
    benched_until: RwLock<Option<Instant>>,
}

impl Origin {
    fn new(addr: SocketAddr) -> Option<Arc<Origin>> {
        let uri = format!("http://{addr}").parse().ok()?;
        Some(Arc::new(Origin {
            addr,
            uri,
            benched_until: RwLock::new(None),
        }))
    }

    fn is_benched(&self, now: Instant) -> bool {
        self.benched_until
            .read()
            .map(|until| until.is_some_and(|until| now < until))
            .unwrap_or(false)
    }

    /// Skips this replica for a moment.
    fn bench(&self) {
        if let Ok(mut until) = self.benched_until.write() {
            *until = Some(Instant::now() + BENCH);
        }
    }

    /// `http://ADDR`.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// The replica's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Replicas {
    /// The replicas behind `urls` (comma-separated `http://HOST:PORT`),
    /// resolved once now; [`Replicas::refresh_until`] keeps them current.
    pub async fn resolve(name: &'static str, urls: &str) -> anyhow::Result<Arc<Replicas>> {
        let mut targets = Vec::new();
        for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let uri: http::Uri = url
                .parse()
                .ok()
                .filter(|u: &http::Uri| {
                    u.scheme_str() == Some("http")
                        && u.authority().is_some_and(|a| a.port_u16().is_some())
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the {name} URL {url:?} is not an http://HOST:PORT URL (several are separated by commas)"
                    )
                })?;
            if let Some(authority) = uri.authority() {
                targets.push(authority.as_str().to_owned());
            }
        }
        anyhow::ensure!(!targets.is_empty(), "no URL is configured for {name}");
        let replicas = Arc::new(Replicas {
            name,
            targets,
            origins: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
        });
        replicas.refresh().await;
        Ok(replicas)
    }

    /// Resolves the targets again every few seconds until `shutdown`.
    pub async fn refresh_until(self: Arc<Self>, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.clone().wait() => return,
                _ = tokio::time::sleep(REFRESH) => self.refresh().await,
            }
        }
    }

    /// Resolves every target; keeps the known replicas (and their state)
    /// that still resolve, adds new ones. When nothing resolves (DNS down),
    /// keeps the last list.
    async fn refresh(&self) {
        let mut resolved: Vec<SocketAddr> = Vec::new();
        for target in &self.targets {
            match tokio::net::lookup_host(target.as_str()).await {
                Ok(addrs) => resolved.extend(addrs),
                Err(error) => {
                    tracing::warn!(backend = self.name, %target, %error, "cannot resolve a backend address");
                }
            }
        }
        resolved.sort();
        resolved.dedup();
        if resolved.is_empty() {
            return;
        }
        let Ok(mut origins) = self.origins.write() else {
            return;
        };
        let before: Vec<SocketAddr> = origins.iter().map(|o| o.addr).collect();
        if before == resolved {
            return;
        }
        let kept: Vec<Arc<Origin>> = resolved
            .iter()
            .filter_map(|addr| {
                origins
                    .iter()
                    .find(|o| o.addr == *addr)
                    .cloned()
                    .or_else(|| Origin::new(*addr))
            })
            .collect();
        tracing::info!(backend = self.name, replicas = ?resolved, "backend replicas");
        *origins = kept;
    }

    /// The next replica in turn that is not benched (or, when all are, the
    /// next one anyway).
    pub fn pick(&self) -> Option<Arc<Origin>> {
        let origins = self.origins.read().ok()?;
        if origins.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        (0..origins.len())
            .map(|i| &origins[(start + i) % origins.len()])
            .find(|o| !o.is_benched(now))
            .or_else(|| origins.get(start % origins.len()))
            .cloned()
    }

    /// How many replicas there are now.
    pub fn len(&self) -> usize {
        self.origins.read().map(|o| o.len()).unwrap_or(0)
    }

    /// Whether none resolved yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request body, held in memory when small enough to be sent again.
pub enum HeldBody {
    /// The whole body, and its trailers if any.
    Held(Bytes, Option<http::HeaderMap>),
    /// Too large to hold: what was read, then the rest, to send once.
    Streaming(AxumBody),
    /// The streaming body has been sent.
    Sent,
}

impl HeldBody {
    /// Reads `body` up to [`RETRY_BUFFER`] bytes.
    pub async fn read(mut body: AxumBody) -> Result<HeldBody, axum::Error> {
        let mut held = BytesMut::new();
        loop {
            match body.frame().await {
                None => return Ok(HeldBody::Held(held.freeze(), None)),
                Some(Err(error)) => return Err(error),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        held.extend_from_slice(&data);
                        if held.len() > RETRY_BUFFER {
                            let rest = Prefixed::body([Frame::data(held.freeze())], body);
                            return Ok(HeldBody::Streaming(rest));
                        }
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().ok();
                        return Ok(HeldBody::Held(held.freeze(), trailers));
                    }
                },
            }
        }
    }

    /// A body to send: a copy of the held one, or the streaming one (once).
    pub fn take(&mut self) -> Option<AxumBody> {
        match self {
            HeldBody::Held(data, trailers) => {
                let mut frames = vec![Ok::<_, std::convert::Infallible>(Frame::data(data.clone()))];
                if let Some(trailers) = trailers {
                    frames.push(Ok(Frame::trailers(trailers.clone())));
                }
                Some(AxumBody::new(http_body_util::StreamBody::new(
                    tokio_stream::iter(frames),
                )))
            }
            HeldBody::Streaming(_) => match std::mem::replace(self, HeldBody::Sent) {
                HeldBody::Streaming(body) => Some(body),
                _ => None,
            },
            HeldBody::Sent => None,
        }
    }
}

/// Frames already read, then the rest of the body.
struct Prefixed {
    prefix: std::collections::VecDeque<Frame<Bytes>>,
    rest: AxumBody,
}

impl Prefixed {
    fn body(prefix: impl IntoIterator<Item = Frame<Bytes>>, rest: AxumBody) -> AxumBody {
        AxumBody::new(Prefixed {
            prefix: prefix.into_iter().collect(),
            rest,
        })
    }
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some(frame) = self.prefix.pop_front() {
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }
}

/// The length the first gRPC message of `body` declares (its 5-byte
/// prefix: a compression flag and a big-endian length), read before
/// anything is sent on, and the body with what was read put back; `None`
/// when the body ends first. Usually the first frame holds the prefix and
/// nothing is copied.
pub async fn first_message_length(
    mut body: AxumBody,
) -> Result<(AxumBody, Option<u32>), axum::Error> {
    let mut frames = Vec::new();
    let mut head = [0u8; 5];
    let mut have = 0;
    while have < head.len() {
        match body.frame().await {
            None => return Ok((Prefixed::body(frames, body), None)),
            Some(Err(error)) => return Err(error),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let take = (head.len() - have).min(data.len());
                    head[have..have + take].copy_from_slice(&data[..take]);
                    have += take;
                }
                let trailers = frame.is_trailers();
                frames.push(frame);
                if trailers {
                    return Ok((Prefixed::body(frames, body), None));
                }
            }
        }
    }
    let declared = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    Ok((Prefixed::body(frames, body), Some(declared)))
}

/// Whether a failed forward certainly reached no service, so sending it to
/// another replica cannot run it twice: the connection was refused, the
/// request was cancelled before it was written (its connection closed), or
/// the replica refused the stream (REFUSED_STREAM, or a GOAWAY that left it
/// out: a draining replica's).
pub fn not_processed(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if cause.downcast_ref::<h2::Error>().is_some_and(|h2| {
            h2.reason() == Some(h2::Reason::REFUSED_STREAM) || (h2.is_go_away() && h2.is_remote())
        }) {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Calls a backend of this process directly (see `csp_kit::inproc`),
/// holding the call to its `grpc-timeout` as the backend's server would.
async fn call_in_process(
    backend: csp_kit::inproc::InProcess,
    request: http::Request<AxumBody>,
) -> http::Response<tonic::body::Body> {
    use tower::ServiceExt as _;
    let deadline = request
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(csp_kit::server::parse_grpc_timeout);
    let answer = backend.oneshot(request);
    let answer = match deadline {
        Some(deadline) => match tokio::time::timeout(deadline, answer).await {
            Ok(answer) => answer,
            Err(_) => return csp_kit::inproc::timed_out(),
        },
        None => answer.await,
    };
    match answer {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The most header bytes the gateway takes in one backend answer.
const MAX_ANSWER_HEADERS: u32 = 1024 * 1024;

/// The HTTP/2 client every call leaves the gateway by: HTTP/2 only (prior
/// knowledge), no Nagle delay, keep-alive pings so idle connections stay
/// usable; one pooled connection per replica.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, AxumBody>,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new()
    }
}

impl Forwarder {
    /// A forwarder with its own connection pool.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http2_only(true)
            // hyper's default of 16 KiB lets h2 accept only about five
            // CONTINUATION frames; an answer with larger headers was a
            // connection error (GOAWAY "too_many_continuations") that failed
            // every call in flight on the connection the gateway shares for
            // all partners. With 1 MiB such an answer reaches its one caller
            // (backends keep their own errors under a few KiB).
            .http2_max_header_list_size(MAX_ANSWER_HEADERS)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(true)
            .build(connector);
        Self { client }
    }

    /// Sends `request` (its path; the authority is the chosen replica's) to
    /// one of `replicas`; to the next when one did not take it, as long as
    /// the body could be held. Failures are gRPC answers (UNAVAILABLE).
    pub async fn send(
        &self,
        replicas: &Replicas,
        request: http::Request<AxumBody>,
    ) -> http::Response<tonic::body::Body> {
        let (parts, body) = request.into_parts();
        let mut body = match HeldBody::read(body).await {
            Ok(body) => body,
            Err(error) => {
                tracing::info!(%error, "the caller's request body ended early");
                return tonic::Status::cancelled("the request body could not be read").into_http();
            }
        };
        let unavailable = || {
            tonic::Status::unavailable(format!(
                "the {} service is unavailable; try again shortly",
                replicas.name
            ))
            .into_http()
        };
        let attempts = replicas.len().max(1);
        for attempt in 1..=attempts {
            let Some(origin) = replicas.pick() else {
                tracing::warn!(
                    backend = replicas.name,
                    "no replica of the backend resolved"
                );
                return unavailable();
            };
            let Some(this_body) = body.take() else {
                break;
            };
            let mut uri = origin.uri().clone().into_parts();
            uri.path_and_query = parts.uri.path_and_query().cloned();
            let Ok(uri) = http::Uri::from_parts(uri) else {
                return tonic::Status::internal("cannot build the backend URI").into_http();
            };
            let mut request = http::Request::new(this_body);
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = uri;
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers.clone();
            if let Some(backend) = csp_kit::inproc::lookup(origin.addr()) {
                return call_in_process(backend, request).await;
            }
            match self.client.request(request).await {
                Ok(response) => return response.map(tonic::body::Body::new),
                Err(error) if not_processed(&error) && attempt < attempts => {
                    origin.bench();
                    tracing::info!(backend = replicas.name, replica = %origin.uri(), error = ?error, "a replica did not take the call; trying the next");
                }
                Err(error) => {
                    if not_processed(&error) {
                        origin.bench();
                    }
                    tracing::warn!(backend = replicas.name, replica = %origin.uri(), error = ?error, "backend unavailable");
                    return unavailable();
                }
            }
        }
        unavailable()
    }

    /// A tower service sending to `replicas` through this forwarder, for
    /// tonic clients (`LicensingInternalServiceClient::new(..)`).
    pub fn to(&self, replicas: Arc<Replicas>) -> ReplicaChannel {
        ReplicaChannel {
            forwarder: self.clone(),
            replicas,
        }
    }
}

/// A gRPC channel to a backend's replicas, over a [`Forwarder`].
#[derive(Clone)]
pub struct ReplicaChannel {
    forwarder: Forwarder,
    replicas: Arc<Replicas>,
}

impl tower::Service<http::Request<tonic::body::Body>> for ReplicaChannel {
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

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let request = request.map(AxumBody::new);
            Ok(this.forwarder.send(&this.replicas, request).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replicas_are_taken_in_turn_and_a_refusing_one_is_skipped() {
        let replicas = Replicas::resolve("test", "http://127.0.0.1:1001, http://127.0.0.1:1002")
            .await
            .unwrap();
        assert_eq!(replicas.len(), 2);
        let a = replicas.pick().unwrap().addr;
        let b = replicas.pick().unwrap().addr;
        assert_ne!(a, b);
        let first = replicas.pick().unwrap();
        first.bench();
        for _ in 0..4 {
            assert_ne!(replicas.pick().unwrap().addr, first.addr);
        }
    }

    #[tokio::test]
    async fn bad_urls_are_refused_with_the_backend_named() {
        for url in ["", "https://x:1", "http://no-port", "licensing:50063"] {
            let error = match Replicas::resolve("licensing", url).await {
                Ok(_) => panic!("{url:?} was accepted"),
                Err(error) => error.to_string(),
            };
            assert!(error.contains("licensing"), "{error}");
        }
    }

    /// Issue 13: a backend answer whose headers pass the client's limit
    /// fails that one call, never the other calls sharing its connection.
    #[tokio::test]
    async fn an_oversized_answer_fails_alone_and_spares_calls_on_its_connection() {
        let router = axum::Router::new()
            .route(
                "/slow",
                axum::routing::post(|| async {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    ([("grpc-status", "0")], "")
                }),
            )
            .route(
                "/big",
                axum::routing::post(|| async {
                    let message = "x".repeat(200 * 1024);
                    (
                        [("grpc-status", "3".to_owned()), ("grpc-message", message)],
                        "",
                    )
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let replicas = Arc::new(
            Replicas::resolve("test", &format!("http://{addr}"))
                .await
                .unwrap(),
        );
        let forwarder = Forwarder::new();
        let call = |path: &'static str| {
            let (forwarder, replicas) = (forwarder.clone(), replicas.clone());
            async move {
                let request = http::Request::post(path)
                    .version(http::Version::HTTP_2)
                    .body(AxumBody::from("x"))
                    .unwrap();
                let response = forwarder.send(&replicas, request).await;
                let status = response.headers().get("grpc-status").cloned();
                status.map(|s| s.to_str().unwrap_or_default().to_owned())
            }
        };
        // One call first, so both share a warm connection.
        assert_eq!(call("/slow").await.as_deref(), Some("0"));
        let slow = tokio::spawn(call("/slow"));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let big = call("/big").await;
        assert_ne!(
            big.as_deref(),
            Some("0"),
            "the oversized answer is not a success"
        );
        assert_eq!(
            slow.await.unwrap().as_deref(),
            Some("0"),
            "the call in flight beside the oversized answer succeeded"
        );
    }

    #[tokio::test]
    async fn small_bodies_are_held_and_large_ones_stream_once() {
        let mut small = HeldBody::read(AxumBody::from("hello")).await.unwrap();
        for _ in 0..2 {
            let body = small.take().unwrap();
            let bytes = body.collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], b"hello");
        }
        let big = vec![7u8; RETRY_BUFFER + 10];
        let mut large = HeldBody::read(AxumBody::from(big.clone())).await.unwrap();
        let body = large.take().unwrap();
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), big.len());
        assert!(large.take().is_none(), "a streamed body is sent once");
    }

    #[tokio::test]
    async fn the_first_message_length_is_read_and_the_body_kept_whole() {
        // A gRPC message of 300 bytes whose prefix arrives split over frames.
        let mut encoded = vec![0u8];
        encoded.extend_from_slice(&300u32.to_be_bytes());
        encoded.extend(std::iter::repeat_n(9u8, 300));
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::copy_from_slice(&encoded[..2]))),
            Ok(Frame::data(Bytes::copy_from_slice(&encoded[2..4]))),
            Ok(Frame::data(Bytes::copy_from_slice(&encoded[4..]))),
        ];
        let body = AxumBody::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)));
        let (body, declared) = first_message_length(body).await.unwrap();
        assert_eq!(declared, Some(300));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], &encoded[..]);

        let (body, declared) = first_message_length(AxumBody::from(vec![0u8, 0, 0]))
            .await
            .unwrap();
        assert_eq!(declared, None, "ended before a whole prefix");
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 3);
    }
}
