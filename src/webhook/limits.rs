//! Connection limits of the webhook server: a bounded number of open connections, and no
//! connection that sits idle (or trickles a byte now and then) for longer than the idle timeout.
//!
//! hyper bounds the time for request headers and the TLS handshake is bounded by the acceptor;
//! this bounds what those leave open: idle keep-alive connections, half-sent bodies, and the
//! number of sockets a crowd of slow clients can hold (each costs a file descriptor).

use axum_server::accept::Accept;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections beyond this are closed right after accept. The apiserver keeps a few
    /// connections per replica; this leaves room for many apiservers while staying far below
    /// the default file-descriptor limit of 1024.
    pub max_connections: usize,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The acceptor under TLS: takes a connection slot and watches the raw stream for idleness
/// (`RustlsAcceptor::new(..).acceptor(LimitedAcceptor::new(..))`).
#[derive(Clone)]
pub struct LimitedAcceptor {
    slots: Arc<Semaphore>,
    idle_timeout: Duration,
}

impl LimitedAcceptor {
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            idle_timeout: limits.idle_timeout,
        }
    }
}

impl<I, S> Accept<I, S> for LimitedAcceptor {
    type Stream = Guarded<I>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!("webhook connection limit reached, closing a new connection");
            return std::future::ready(Err(io::Error::other("connection limit reached")));
        };
        std::future::ready(Ok((Guarded::new(stream, slot, self.idle_timeout), service)))
    }
}

/// A stream holding a connection slot until dropped, failing with `TimedOut` once idle too long.
pub struct Guarded<I> {
    inner: I,
    _slot: OwnedSemaphorePermit,
    idle_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<I> Guarded<I> {
    fn new(inner: I, slot: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        Self {
            inner,
            _slot: slot,
            idle_timeout,
            deadline: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    fn active(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle_timeout);
    }

    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection closed")),
            Poll::Pending => Ok(()),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.check_idle(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                self.active();
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.check_idle(cx)?;
                Poll::Pending
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_times_out_and_activity_keeps_it_open() {
        let (client, server) = tokio::io::duplex(64);
        let slots = Arc::new(Semaphore::new(1));
        let permit = slots.clone().try_acquire_owned().unwrap();
        let mut guarded = Guarded::new(server, permit, Duration::from_secs(10));
        let mut client = client;
        let mut buf = [0u8; 4];
        // activity within the timeout keeps it open
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(8)).await;
            client.write_all(b"x").await.unwrap();
            assert_eq!(guarded.read(&mut buf).await.unwrap(), 1);
        }
        assert_eq!(slots.available_permits(), 0, "the slot is held while open");
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(guarded);
        assert_eq!(slots.available_permits(), 1, "the slot is returned");
    }
}
