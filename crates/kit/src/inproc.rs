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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};

use axum::body::Body as AxumBody;

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
}

/// Registers `service` as the backend listening at `addr`.
pub fn register(addr: SocketAddr, service: InProcess) -> Registration {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    registry()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(addr, (id, service));
    Registration { addr, id }
}

impl Registration {
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
    registry()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&addr)
        .map(|(_, service)| service.clone())
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
}
