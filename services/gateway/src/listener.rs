//! The public download listener's guards against clients that hold
//! connections without using them: a cap on open connections (a connection
//! over it waits in the kernel's accept queue until another closes) and an
//! idle timeout (a connection that sends nothing for that long, mid-request
//! or between requests, is closed). Built on axum's `Listener` trait, so the
//! server itself is unchanged.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The guards' settings.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Seconds a download connection may stay silent (mid-request or
    /// between requests) before it is closed.
    #[arg(long, env = "CSP_HTTP_IDLE_TIMEOUT", default_value_t = HttpLimits::DEFAULT.idle_timeout_secs)]
    pub idle_timeout_secs: u64,
    /// Download connections open at once; more wait until one closes.
    #[arg(long, env = "CSP_HTTP_MAX_CONNECTIONS", default_value_t = HttpLimits::DEFAULT.max_connections)]
    pub max_connections: usize,
}

impl HttpLimits {
    /// Ten seconds of silence, 1,024 connections.
    pub const DEFAULT: HttpLimits = HttpLimits {
        idle_timeout_secs: 10,
        max_connections: 1024,
    };
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A TCP listener that caps open connections and times out silent ones.
pub struct Guarded {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl Guarded {
    /// `inner` under `limits`.
    pub fn new(inner: TcpListener, limits: HttpLimits) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            idle: Duration::from_secs(limits.idle_timeout_secs.max(1)),
        }
    }
}

impl Listener for Guarded {
    type Io = GuardedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // Wait for a free slot before taking the next connection off the
        // accept queue.
        let permit = loop {
            match self.slots.clone().acquire_owned().await {
                Ok(permit) => break permit,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        let stream = GuardedStream {
            inner: stream,
            idle: self.idle,
            deadline: Box::pin(tokio::time::sleep(self.idle)),
            _permit: permit,
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that holds its slot and fails its reads once nothing has
/// moved either way for the idle time.
pub struct GuardedStream {
    inner: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        // A response the client is taking (a file download) is progress
        // too: only a connection silent both ways times out.
        if let Poll::Ready(Ok(n)) = &written
            && *n > 0
        {
            let next = Instant::now() + self.idle;
            self.deadline.as_mut().reset(next);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The client's address, as the guarded listener accepted it (what
/// `ConnectInfo` gives the download handlers).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Guarded>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Guarded>) -> Self {
        Peer(*stream.remote_addr())
    }
}
