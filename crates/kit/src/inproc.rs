//! Calls between the services of one process without a socket. When the
//! whole system runs in one process (`csp up`, the tests), each backend
//! registers the stack it serves (the same layers as on its TCP listener:
//! metrics, caller identity, its routes) under its listen address, and the
//! gateway calls a replica found here directly instead of over loopback
//! HTTP/2: no encoding, no socket, no thread hand-off for the hop. Services
//! in other processes are not found here and are called over the network as
//! always. A backend is withdrawn the moment its shutdown begins, so calls
//! then go to the network (and fail over) as with a draining server.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use std::task::{Context, Poll};

use axum::body::Body as AxumBody;
use tokio::sync::mpsc;

/// A backend's served stack, callable in process.
pub type InProcess = tower::util::BoxCloneSyncService<
    http::Request<AxumBody>,
    http::Response<tonic::body::Body>,
    Infallible,
>;

type Registry = RwLock<HashMap<SocketAddr, (u64, InProcess)>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// A backend's place in the registry; dropping it (or [`Registration::withdraw`])
/// takes the backend out, unless another one has registered at the same
/// address since.
#[derive(Debug)]
pub struct Registration {
    addr: SocketAddr,
    id: u64,
    /// Closed once the registry's copy and every call in flight (until its
    /// answer's body ends) are gone.
    calls: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

/// Whether in-process calls are made: `CSP_IN_PROCESS=off` sends every call
/// over the network, as between processes (CI runs the gateway's tests so).
fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        !matches!(
            std::env::var("CSP_IN_PROCESS").as_deref(),
            Ok("off" | "0" | "false")
        )
    })
}

/// Registers `service` as the backend listening at `addr`. A panic in a
/// call made through the registry fails that call only (INTERNAL), as in an
/// HTTP/2 stream's own task; dropping the call cancels it; each is counted
/// until its answer's body ends, for [`Registration::drained`].
pub fn register(addr: SocketAddr, service: InProcess) -> Registration {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let (tracker, calls) = mpsc::channel(1);
    let tracked = InProcess::new(Tracked {
        inner: service,
        tracker,
    });
    registry()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(addr, (id, tracked));
    Registration {
        addr,
        id,
        calls: tokio::sync::Mutex::new(calls),
    }
}

impl Registration {
    /// Waits until the backend is withdrawn and every call made in process
    /// has ended (its answer's body included): the in-process part of a
    /// graceful shutdown.
    pub async fn drained(&self) {
        self.withdraw();
        let mut calls = self.calls.lock().await;
        while calls.recv().await.is_some() {}
    }

    /// Takes the backend out now.
    pub fn withdraw(&self) {
        let mut registry = registry()
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if registry
            .get(&self.addr)
            .is_some_and(|(id, _)| *id == self.id)
        {
            registry.remove(&self.addr);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// The backend of this process listening at `addr`, if there is one.
pub fn lookup(addr: SocketAddr) -> Option<InProcess> {
    if !enabled() {
        return None;
    }
    registry()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&addr)
        .map(|(_, service)| service.clone())
}

/// The answer to an in-process call past its deadline: what tonic's server
/// answers over the network (CANCELLED, "Timeout expired"), so callers see
/// the same status in one process or several.
pub fn timed_out() -> http::Response<tonic::body::Body> {
    tonic::Status::cancelled("Timeout expired").into_http()
}

/// A registered stack: each call's panic kept to it, counted until its body
/// ends.
#[derive(Clone)]
struct Tracked {
    inner: InProcess,
    tracker: mpsc::Sender<()>,
}

impl tower::Service<http::Request<AxumBody>> for Tracked {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<AxumBody>) -> Self::Future {
        use futures_util::FutureExt as _;
        use tower::ServiceExt as _;
        let guard = self.tracker.clone();
        // A panic in the handler fails this call only (as in an HTTP/2
        // stream's own task), not the caller's task; dropping the future
        // cancels the call.
        let call = std::panic::AssertUnwindSafe(self.inner.clone().oneshot(request)).catch_unwind();
        Box::pin(async move {
            let answer = match call.await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::error!("an in-process call panicked inside its handler");
                    tonic::Status::internal("the service failed while handling the call")
                        .into_http()
                }
            };
            Ok(answer.map(|body| {
                tonic::body::Body::new(Counted {
                    body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// An answer's body that keeps its call counted until it ends or is
/// dropped.
struct Counted {
    body: tonic::body::Body,
    _guard: mpsc::Sender<()>,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answering(code: &'static str) -> InProcess {
        InProcess::new(tower::service_fn(
            move |_req: http::Request<AxumBody>| async move {
                let mut response = http::Response::new(tonic::body::Body::empty());
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static(code));
                Ok::<_, Infallible>(response)
            },
        ))
    }

    #[tokio::test]
    async fn a_registered_backend_is_found_until_withdrawn_and_a_newer_one_stays() {
        use tower::ServiceExt as _;
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        assert!(lookup(addr).is_none());
        let first = register(addr, answering("0"));
        let found = lookup(addr).unwrap_or_else(|| panic!("registered"));
        let answer = found
            .oneshot(http::Request::new(AxumBody::empty()))
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(answer.headers()["grpc-status"], "0");
        // A restart on the same address registers anew; the old
        // registration going away does not take the new one out.
        let second = register(addr, answering("14"));
        drop(first);
        assert!(lookup(addr).is_some());
        second.withdraw();
        assert!(lookup(addr).is_none());
    }

    #[tokio::test]
    async fn draining_waits_for_calls_in_flight_and_a_panic_is_an_internal_error() {
        use tower::ServiceExt as _;
        let addr = SocketAddr::from(([127, 0, 0, 1], 2));
        let slow = InProcess::new(tower::service_fn(
            |req: http::Request<AxumBody>| async move {
                if req.uri().path() == "/panic" {
                    panic!("a handler bug");
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
            },
        ));
        let registration = register(addr, slow);
        let backend = lookup(addr).unwrap_or_else(|| panic!("registered"));
        let panicked = backend
            .clone()
            .oneshot(
                http::Request::builder()
                    .uri("/panic")
                    .body(AxumBody::empty())
                    .unwrap_or_else(|e| panic!("{e}")),
            )
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(panicked.headers()["grpc-status"], "13");
        let started = std::time::Instant::now();
        let call = tokio::spawn(async move {
            // The answer (and its body) is dropped when the call ends.
            let _ = backend.oneshot(http::Request::new(AxumBody::empty())).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        registration.drained().await;
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(150),
            "drained before the call ended: {:?}",
            started.elapsed()
        );
        assert!(call.await.is_ok());
        assert!(lookup(addr).is_none());
    }
}
