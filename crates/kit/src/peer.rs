//! Calling other csp services: lazily connected channels that sign every
//! call with this service's identity, and the one way to read a peer's
//! failure ([`PeerError`]): whether to try again later, whether the thing
//! asked for does not exist there, or whether the request can never succeed
//! as sent. The outbox relay, the refund workflow and every use case that
//! calls a peer decide by it.

use std::sync::Arc;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::ApiError;
use crate::identity::{ServiceIdentity, Signer};

/// A channel whose calls carry this service's signed identity.
pub type Signed = InterceptedService<PeerChannel, ServiceIdentity>;

/// The longest a call to a peer may take.
const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// A lazily connected channel to `url` that signs calls with `signer`.
pub fn signed_channel(url: &str, signer: &Arc<Signer>) -> anyhow::Result<Signed> {
    signed_channel_with_timeout(url, signer, PEER_TIMEOUT)
}

/// The same, with calls allowed `timeout` (an operator's long import).
pub fn signed_channel_with_timeout(
    url: &str,
    signer: &Arc<Signer>,
    timeout: std::time::Duration,
) -> anyhow::Result<Signed> {
    let channel = Endpoint::from_shared(url.to_owned())
        .map_err(|error| anyhow::anyhow!("{url:?} is not a valid URL: {error}"))?
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(timeout)
        .connect_lazy();
    // A peer named by IP address and port may be a backend of this very
    // process (`csp up`): then calls skip the socket.
    let addr = url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .and_then(|authority| authority.parse().ok());
    Ok(InterceptedService::new(
        PeerChannel { channel, addr },
        ServiceIdentity::new(signer.clone()),
    ))
}

/// A peer's channel: over the network, or, when the peer is a backend of
/// this process ([`crate::inproc`]), straight to the stack it serves.
#[derive(Clone, Debug)]
pub struct PeerChannel {
    channel: Channel,
    addr: Option<std::net::SocketAddr>,
}

impl tower::Service<http::Request<tonic::body::Body>> for PeerChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Each call takes its own handle of the channel (below), which waits
        // for it to be ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        use tower::ServiceExt as _;
        if let Some(backend) = self.addr.and_then(crate::inproc::lookup) {
            // As over the wire: the client's extensions stay here, and the
            // call is held to the shorter of its deadline and the peer limit.
            *request.extensions_mut() = http::Extensions::default();
            let limit = request
                .headers()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .and_then(crate::server::parse_grpc_timeout)
                .map_or(PEER_TIMEOUT, |asked| asked.min(PEER_TIMEOUT));
            return Box::pin(async move {
                let answer = backend.oneshot(request.map(axum::body::Body::new));
                match tokio::time::timeout(limit, answer).await {
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(never)) => match never {},
                    Err(_) => Ok(crate::inproc::timed_out()),
                }
            });
        }
        Box::pin(self.channel.clone().oneshot(request))
    }
}

/// What a peer's failure means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The peer could not take or finish the call now (down, draining,
    /// overloaded, timed out, misconfigured, or broken inside): the same
    /// call may succeed later.
    Transient,
    /// What the call named does not exist there (NOT_FOUND).
    NotFound,
    /// The request can never succeed as sent (INVALID_ARGUMENT,
    /// FAILED_PRECONDITION, OUT_OF_RANGE, ALREADY_EXISTS): retrying the same
    /// request is pointless.
    Rejected,
}

impl Failure {
    /// How a gRPC status code reads.
    pub fn of(code: Code) -> Self {
        match code {
            Code::NotFound => Failure::NotFound,
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::AlreadyExists => Failure::Rejected,
            _ => Failure::Transient,
        }
    }
}

/// A call to another csp service that failed.
#[derive(Debug)]
pub struct PeerError {
    /// The peer, for example `catalog`.
    pub peer: &'static str,
    /// What the failure means.
    pub failure: Failure,
    /// The peer's status, for details and logs (never shown to our callers
    /// whole).
    pub status: Status,
}

impl PeerError {
    /// Reads `status` from `peer`.
    pub fn new(peer: &'static str, status: Status) -> Self {
        Self {
            peer,
            failure: Failure::of(status.code()),
            status,
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        self.failure == Failure::Transient
    }

    /// Whether the peer said the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        self.failure == Failure::NotFound
    }

    /// One line for logs and operator records: peer, code and message.
    pub fn describe(&self) -> String {
        format!(
            "{}: {:?}: {}",
            self.peer,
            self.status.code(),
            self.status.message()
        )
    }
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl std::error::Error for PeerError {}

/// A failure the use case did not handle itself: a transient one is
/// UNAVAILABLE (the caller may retry); anything else means this service
/// sent its peer something it should not have, which is INTERNAL (logged,
/// not shown).
impl From<PeerError> for ApiError {
    fn from(error: PeerError) -> Self {
        match error.failure {
            Failure::Transient => {
                tracing::warn!(peer = error.peer, error = %error.describe(), "a peer is unavailable");
                ApiError::Unavailable(format!(
                    "the {} service is unavailable; try again",
                    error.peer
                ))
            }
            Failure::NotFound | Failure::Rejected => ApiError::Internal(anyhow::Error::new(error)),
        }
    }
}

/// Extension for results of generated clients: `client.call(r).await.peer("catalog")?`.
pub trait PeerResult<T> {
    /// Reads the failure as coming from `peer`.
    fn peer(self, peer: &'static str) -> Result<T, PeerError>;
}

impl<T> PeerResult<T> for Result<tonic::Response<T>, Status> {
    fn peer(self, peer: &'static str) -> Result<T, PeerError> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| PeerError::new(peer, status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_code_one_way() {
        assert_eq!(Failure::of(Code::Unavailable), Failure::Transient);
        assert_eq!(Failure::of(Code::DeadlineExceeded), Failure::Transient);
        assert_eq!(Failure::of(Code::Internal), Failure::Transient);
        assert_eq!(Failure::of(Code::Unauthenticated), Failure::Transient);
        assert_eq!(Failure::of(Code::NotFound), Failure::NotFound);
        assert_eq!(Failure::of(Code::InvalidArgument), Failure::Rejected);
        assert_eq!(Failure::of(Code::FailedPrecondition), Failure::Rejected);
        assert_eq!(Failure::of(Code::OutOfRange), Failure::Rejected);
    }

    #[test]
    fn unhandled_failures_never_show_the_peers_text() {
        let status: Status = ApiError::from(PeerError::new(
            "catalog",
            Status::unavailable("connection refused to 10.0.0.7"),
        ))
        .into();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("10.0.0.7"));
        let status: Status = ApiError::from(PeerError::new(
            "catalog",
            Status::invalid_argument("secret"),
        ))
        .into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
