//! Connection limits of the webhook servers (the seed webhook and the garden admission share them):
//! a bounded number of open connections that no crowd of idle or trickling clients can hold, no
//! connection that sits idle for longer than the idle timeout, and a deadline for each request
//! that a client cannot extend by sending a byte now and then.
//!
//! - The TLS handshake is bounded by the acceptor, the request headers by hyper
//!   (`header_read_timeout`), the whole request (body and answer) by `request_deadline`
//!   ([`within_deadline`], applied to every route by `serve_tls`).
//! - When every slot is taken, the slots are shared by client address: a new connection from a
//!   client holding fewer slots than the biggest holder takes a slot of that holder at once,
//!   whatever its age. So a crowd of connections from one pod can never lock out the apiserver,
//!   however fast it reconnects.
//! - Otherwise a new connection takes the slot of one held for over a second (from a client with
//!   at least as many slots as its own), which is closed: first of those the server never answered
//!   a byte (no TLS handshake done), then the longest-quiet. A burst of honest connections (all
//!   young) queues for slots instead of cutting each other off.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_server::accept::Accept;
use futures::task::AtomicWaker;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most; one more closes the longest-quiet one. The apiserver keeps a few
    /// connections per replica; this leaves room for many apiservers while staying far below the
    /// default file-descriptor limit of 1024.
    pub max_connections: usize,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
    /// A request (from its headers on: body, decision, answer) is answered within this, else
    /// with 408 and the connection closed. Below the apiserver's webhook timeouts (5 and 10 s)
    /// would cut slow but honest answers; the apiserver gives up at its own timeout anyway.
    pub request_deadline: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            idle_timeout: Duration::from_secs(60),
            request_deadline: Duration::from_secs(10),
        }
    }
}

/// Middleware: the whole request within `deadline` (`axum::middleware::from_fn_with_state`).
pub async fn within_deadline(
    axum::extract::State(deadline): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                ?deadline,
                "a request was not complete within its deadline: closing the connection"
            );
            let mut response = (
                StatusCode::REQUEST_TIMEOUT,
                format!("the request was not complete within {deadline:?}"),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// The address of a connection's client: slots are shared fairly among clients.
pub trait PeerIp {
    /// `None` when unknown; such connections count as one client.
    fn peer_ip(&self) -> Option<IpAddr>;
}

impl PeerIp for tokio::net::TcpStream {
    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_addr().ok().map(|a| a.ip().to_canonical())
    }
}

/// One open connection as the table sees it.
struct Slot {
    source: Option<IpAddr>,
    /// Milliseconds since the table's start at the last byte read or written.
    last_active: AtomicU64,
    /// The server has sent something (the TLS handshake got that far).
    answered: AtomicBool,
    evicted: AtomicBool,
    waker: AtomicWaker,
}

/// Every open connection, for eviction when full.
struct Table {
    max: usize,
    start: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<(Instant, Slot)>>>,
    /// Connections waiting for a slot.
    waiting: AtomicU64,
    /// New connections closed for want of a slot since the last warning, and when that was
    /// (milliseconds since start): one line per [`REFUSAL_REPORT`], not one per connection, as a
    /// crowd reconnects thousands of times a second.
    refused: AtomicU64,
    refusal_reported: AtomicU64,
    released: tokio::sync::Notify,
}

/// A connection younger than this is never closed for a new one: an honest review is answered
/// well within it, so a burst of honest connections queues instead of cutting each other off.
const MIN_AGE_FOR_EVICTION: Duration = Duration::from_secs(1);
/// How long a new connection waits for a slot before it is closed.
const WAIT_FOR_SLOT: Duration = Duration::from_secs(5);
/// At most one warning about refused connections this often.
const REFUSAL_REPORT: Duration = Duration::from_secs(10);

impl Table {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A slot for a new connection. When all are taken, one held for longer than
    /// [`MIN_AGE_FOR_EVICTION`] is told to close: one the server never sent a byte to (a client
    /// that has not even completed a TLS handshake) before any other, the longest-quiet among
    /// them. Without such a connection the new one waits (up to [`WAIT_FOR_SLOT`]; as many
    /// waiting as there are slots at most) for one to end.
    async fn admit(self: &Arc<Self>, source: Option<IpAddr>) -> Option<(u64, Arc<(Instant, Slot)>)> {
        let deadline = Instant::now() + WAIT_FOR_SLOT;
        let mut waiting = false;
        let admitted = loop {
            let released = self.released.notified();
            if let Some(admitted) = self.try_admit(source) {
                break Some(admitted);
            }
            if !waiting {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max as u64 {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                waiting = true;
            }
            let recheck = (Instant::now() + Duration::from_millis(100)).min(deadline);
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep_until(recheck) => {}
            }
            if Instant::now() >= deadline {
                break self.try_admit(source);
            }
        };
        if waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        admitted
    }

    fn try_admit(self: &Arc<Self>, source: Option<IpAddr>) -> Option<(u64, Arc<(Instant, Slot)>)> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= self.max.max(1) {
            let victim = Self::victim(&open, source)?;
            if let Some(s) = open.remove(&victim) {
                s.1.evicted.store(true, Ordering::Release);
                s.1.waker.wake();
            }
            tracing::debug!("webhook connection limit reached: closing a connection that holds a slot without use");
        }
        let slot = Arc::new((
            Instant::now(),
            Slot {
                source,
                last_active: AtomicU64::new(self.now()),
                answered: AtomicBool::new(false),
                evicted: AtomicBool::new(false),
                waker: AtomicWaker::new(),
            },
        ));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        open.insert(id, slot.clone());
        Some((id, slot))
    }

    /// The connection to close for a new one from `source`, if any may be: of the client holding
    /// the most slots when that is more than `source` would hold (whatever its age), else one held
    /// for over [`MIN_AGE_FOR_EVICTION`] by a client with at least as many slots as `source`, its
    /// own first. Among those, one never answered before any other, then the longest-quiet.
    fn victim(open: &HashMap<u64, Arc<(Instant, Slot)>>, source: Option<IpAddr>) -> Option<u64> {
        let mut held: HashMap<Option<IpAddr>, usize> = HashMap::new();
        for s in open.values() {
            *held.entry(s.1.source).or_default() += 1;
        }
        let own = held.get(&source).copied().unwrap_or(0);
        let (crowd, most) = held.iter().max_by_key(|(_, n)| **n).map(|(s, n)| (*s, *n))?;
        let candidates: Box<dyn Iterator<Item = _>> = if most > own + 1 {
            Box::new(open.iter().filter(|(_, s)| s.1.source == crowd))
        } else {
            Box::new(open.iter().filter(|(_, s)| {
                s.0.elapsed() >= MIN_AGE_FOR_EVICTION && held.get(&s.1.source).copied().unwrap_or(0) >= own
            }))
        };
        candidates
            .min_by_key(|(_, s)| {
                (
                    s.1.source != source,
                    s.1.answered.load(Ordering::Relaxed),
                    s.1.last_active.load(Ordering::Relaxed),
                )
            })
            .map(|(id, _)| *id)
    }

    /// Counts a connection closed for want of a slot; warns once per [`REFUSAL_REPORT`].
    fn report_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let (now, last) = (self.now(), self.refusal_reported.load(Ordering::Relaxed));
        let due = last == 0 || now.saturating_sub(last) >= REFUSAL_REPORT.as_millis() as u64;
        if due
            && self
                .refusal_reported
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let refused = self.refused.swap(0, Ordering::Relaxed);
            tracing::warn!(
                refused,
                max_connections = self.max,
                "webhook connection limit reached and no slot became free: closed new connections"
            );
        }
    }

    fn release(&self, id: u64) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        self.released.notify_waiters();
    }
}

/// The acceptor under TLS: takes a connection slot and watches the raw stream for idleness
/// (`RustlsAcceptor::new(..).acceptor(LimitedAcceptor::new(..))`).
#[derive(Clone)]
pub struct LimitedAcceptor {
    table: Arc<Table>,
    idle_timeout: Duration,
}

impl LimitedAcceptor {
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            table: Arc::new(Table {
                max: limits.max_connections,
                start: Instant::now(),
                next_id: AtomicU64::new(0),
                open: Mutex::new(HashMap::new()),
                waiting: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                refusal_reported: AtomicU64::new(0),
                released: tokio::sync::Notify::new(),
            }),
            idle_timeout: limits.idle_timeout,
        }
    }
}

impl<I: PeerIp + Send + 'static, S: Send + 'static> Accept<I, S> for LimitedAcceptor {
    type Stream = Guarded<I>;
    type Service = S;
    type Future = futures::future::BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let (table, idle_timeout) = (self.table.clone(), self.idle_timeout);
        let source = stream.peer_ip();
        Box::pin(async move {
            let Some((id, slot)) = table.admit(source).await else {
                table.report_refusal();
                return Err(io::Error::other("connection limit reached"));
            };
            Ok((Guarded::new(stream, table, id, slot, idle_timeout), service))
        })
    }
}

/// A stream holding a connection slot until dropped, failing once idle too long or evicted.
pub struct Guarded<I> {
    inner: I,
    table: Arc<Table>,
    id: u64,
    /// (opened at, state)
    slot: Arc<(Instant, Slot)>,
    idle_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<I> Guarded<I> {
    fn new(inner: I, table: Arc<Table>, id: u64, slot: Arc<(Instant, Slot)>, idle_timeout: Duration) -> Self {
        Self {
            inner,
            table,
            id,
            slot,
            idle_timeout,
            deadline: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    fn active(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle_timeout);
        self.slot.1.last_active.store(self.table.now(), Ordering::Relaxed);
    }

    fn check_evicted(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.slot.1.waker.register(cx.waker());
        if self.slot.1.evicted.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            ));
        }
        Ok(())
    }

    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection closed")),
            Poll::Pending => Ok(()),
        }
    }
}

impl<I> Drop for Guarded<I> {
    fn drop(&mut self) {
        self.table.release(self.id);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check_evicted(cx)?;
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
        self.check_evicted(cx)?;
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                self.active();
                if matches!(r, Ok(n) if n > 0) {
                    self.slot.1.answered.store(true, Ordering::Relaxed);
                }
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

    impl PeerIp for tokio::io::DuplexStream {
        fn peer_ip(&self) -> Option<IpAddr> {
            None
        }
    }

    fn acceptor(max: usize, idle: u64) -> LimitedAcceptor {
        LimitedAcceptor::new(ConnectionLimits {
            max_connections: max,
            idle_timeout: Duration::from_secs(idle),
            request_deadline: Duration::from_secs(10),
        })
    }

    async fn guarded(a: &LimitedAcceptor, stream: tokio::io::DuplexStream) -> Guarded<tokio::io::DuplexStream> {
        let accepted: io::Result<(Guarded<_>, ())> = a.accept(stream, ()).await;
        accepted.unwrap().0
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_times_out_and_activity_keeps_it_open() {
        let a = acceptor(1, 10);
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = guarded(&a, server).await;
        let mut buf = [0u8; 4];
        // activity within the timeout keeps it open
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(8)).await;
            client.write_all(b"x").await.unwrap();
            assert_eq!(guarded.read(&mut buf).await.unwrap(), 1);
        }
        assert_eq!(a.table.open.lock().unwrap().len(), 1, "the slot is held while open");
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(guarded);
        assert!(a.table.open.lock().unwrap().is_empty(), "the slot is returned");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_closes_the_longest_quiet_connection_for_a_new_one() {
        let a = acceptor(2, 60);
        let (mut c1, s1) = tokio::io::duplex(64);
        let (mut c2, s2) = tokio::io::duplex(64);
        let mut g1 = guarded(&a, s1).await;
        let mut g2 = guarded(&a, s2).await;
        let mut buf = [0u8; 4];
        tokio::time::advance(Duration::from_secs(2)).await;
        // the first one was active more recently than the second
        c1.write_all(b"x").await.unwrap();
        assert_eq!(g1.read(&mut buf).await.unwrap(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        let (mut c3, s3) = tokio::io::duplex(64);
        let mut g3 = guarded(&a, s3).await;
        let err = g2.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "the quietest one goes");
        c2.write_all(b"y").await.ok();
        for (c, g) in [(&mut c1, &mut g1), (&mut c3, &mut g3)] {
            c.write_all(b"z").await.unwrap();
            assert_eq!(g.read(&mut buf).await.unwrap(), 1, "the others stay open");
        }
        assert_eq!(a.table.open.lock().unwrap().len(), 2);
        drop(g2);
        assert_eq!(
            a.table.open.lock().unwrap().len(),
            2,
            "an evicted slot was already free"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn young_connections_are_not_cut_off_a_new_one_waits_for_a_slot() {
        let a = acceptor(1, 60);
        let (_c1, s1) = tokio::io::duplex(64);
        let g1 = guarded(&a, s1).await;
        let (_c2, s2) = tokio::io::duplex(64);
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { guarded(&a, s2).await }
        });
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "the first connection is young: the second waits"
        );
        drop(g1);
        let g2 = waiting.await.unwrap();
        assert!(!g2.slot.1.evicted.load(Ordering::Acquire));
        // a connection that holds its slot for over a second gives way
        tokio::time::advance(Duration::from_secs(2)).await;
        let (_c3, s3) = tokio::io::duplex(64);
        let _g3 = guarded(&a, s3).await;
        assert!(g2.slot.1.evicted.load(Ordering::Acquire));
    }

    #[tokio::test(start_paused = true)]
    async fn a_crowd_from_one_client_gives_way_to_another_client_at_once() {
        let a = acceptor(4, 60);
        let (pod, apiserver): (IpAddr, IpAddr) = ("10.0.0.7".parse().unwrap(), "10.0.0.1".parse().unwrap());
        let crowd: Vec<_> = (0..4).map(|_| a.table.try_admit(Some(pod)).unwrap().1).collect();
        // all of the crowd is young: another client still gets a slot without waiting
        let (_, first) = a.table.try_admit(Some(apiserver)).expect("a slot for another client");
        assert_eq!(crowd.iter().filter(|s| s.1.evicted.load(Ordering::Acquire)).count(), 1);
        assert!(
            a.table.try_admit(Some(apiserver)).is_some(),
            "3 against 1: the crowd gives way again"
        );
        assert!(
            a.table.try_admit(Some(apiserver)).is_none(),
            "2 against 2 of young connections: no one is cut off"
        );
        // the crowd's new connections only ever replace the crowd's own, however long the other
        // client's connection has been quiet
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..10 {
            let admitted = a.table.try_admit(Some(pod));
            assert!(
                admitted.is_some(),
                "the crowd's old connections give way to its new ones"
            );
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert!(
            !first.1.evicted.load(Ordering::Acquire),
            "the other client keeps its slot"
        );
        let open = a.table.open.lock().unwrap();
        assert_eq!(open.values().filter(|s| s.1.source == Some(apiserver)).count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_connections_are_reported_once_per_period_with_their_count() {
        let a = acceptor(1, 60);
        tokio::time::advance(Duration::from_millis(5)).await;
        for _ in 0..1000 {
            a.table.report_refusal();
        }
        assert_eq!(
            a.table.refused.load(Ordering::Relaxed),
            999,
            "one warning, the rest counted"
        );
        tokio::time::advance(REFUSAL_REPORT).await;
        a.table.report_refusal();
        assert_eq!(
            a.table.refused.load(Ordering::Relaxed),
            0,
            "the next warning carries them"
        );
    }
}
