//! The one way every vantage process serves HTTP (the aggregator's API, the status endpoint,
//! `/metrics`, the demo's page): [`serve`] takes a bound listener, a per-connection service, the
//! [`Limits`], an optional TLS acceptor and a shutdown future. Each connection holds a permit of
//! a semaphore of `max_connections`: at the cap the accept loop waits, so further clients queue
//! in the kernel's accept backlog instead of taking memory or starving the ones being served.
//! A connection must deliver its first request head within `header_read_timeout` of being
//! accepted (TLS handshake included; hyper enforces the same bound on every later HTTP/1 head)
//! and is closed once it has carried no bytes and no request for `idle_timeout`, so a client
//! that opens connections and stalls cannot pin the slots. Heads are bounded in bytes and
//! header count (431 beyond). At shutdown it stops accepting, lets requests in flight finish
//! for `drain_limit`, then closes what is left.

use crate::backoff::Backoff;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// Adapts an axum `Router` (or any tower service) to the hyper service [`serve`] runs.
pub use hyper_util::service::TowerToHyperService;

/// What one listener allows each client. The defaults are [`Limits::API`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From accept to the end of the first request head (TLS handshake included), and for
    /// every later HTTP/1 head from its first byte awaited.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes either way this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the accept backlog.
    pub max_connections: usize,
    /// Bytes of one request head (request line and headers; HTTP/2: the header list).
    pub max_header_bytes: usize,
    /// Header fields in one HTTP/1 request.
    pub max_headers: usize,
    /// At shutdown, requests in flight get this long before their connections are cut.
    pub drain_limit: Duration,
}

impl Limits {
    /// For the aggregator's API and the status endpoint.
    pub const API: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1024,
        max_header_bytes: 16 * 1024,
        max_headers: 64,
        drain_limit: Duration::from_secs(5),
    };
    /// For `/metrics`: a few scrapers at most.
    pub const METRICS: Limits = Limits {
        max_connections: 64,
        ..Limits::API
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::API
    }
}

/// Consecutive failed accepts (not counting per-connection aborts) after which the listener is
/// considered broken: with [`ACCEPT_BACKOFF`], about 25 s of nothing but failures.
const MAX_ACCEPT_FAILURES: u32 = 30;
const ACCEPT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
/// A connection closed for idleness or a missing head gets this long to say goodbye (HTTP/2
/// GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The smallest read buffer hyper accepts for HTTP/1.
const MIN_BUF: usize = 8192;

/// The listener kept failing to accept connections.
#[derive(Debug, thiserror::Error)]
#[error("accepting connections failed {attempts} times in a row: {source}")]
pub struct ServeError {
    /// Consecutive failures.
    pub attempts: u32,
    #[source]
    pub(crate) source: std::io::Error,
}

/// Serves `listener` until `shutdown` resolves; `make_service(peer)` builds the service for
/// each connection. HTTP/1.1 and HTTP/2 are both accepted (over TLS when `tls` is given, by
/// ALPN or prior knowledge). An accept error that belongs to one connection is skipped; others
/// are retried with backoff, and only a listener that fails 30 times in a row (about 25 s) ends
/// `serve` with an error.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    make_service: M,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError>
where
    M: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let http = builder(&limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut failures = 0u32;
    tokio::pin!(shutdown);
    loop {
        // The slot is taken before accepting: at the cap, clients wait in the backlog.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                failures = 0;
                let service = make_service(peer);
                let http = http.clone();
                let drain = drain_rx.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    let activity = Arc::new(Activity::new());
                    let io = Tracked {
                        inner: stream,
                        activity: activity.clone(),
                    };
                    let service = Counted {
                        inner: service,
                        activity: activity.clone(),
                    };
                    match tls {
                        None => drive(io, http, service, activity, limits, drain).await,
                        Some(acceptor) => {
                            let handshake = acceptor.accept(io);
                            match tokio::time::timeout(limits.header_read_timeout, handshake).await
                            {
                                Ok(Ok(io)) => {
                                    drive(io, http, service, activity, limits, drain).await
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, %peer, "TLS handshake failed")
                                }
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                    }
                    drop(permit);
                });
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "connection failed before accept");
            }
            Err(e) => {
                failures += 1;
                if failures >= MAX_ACCEPT_FAILURES {
                    return Err(ServeError {
                        attempts: failures,
                        source: e,
                    });
                }
                let backoff = ACCEPT_BACKOFF.delay(failures);
                tracing::warn!(error = %e, ?backoff, "accepting a connection failed");
                tokio::time::sleep(backoff).await;
            }
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let drained = tokio::time::timeout(limits.drain_limit, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.len(),
            "closing connections still open after the drain limit"
        );
    }
    // Dropping the set aborts whatever is left.
    Ok(())
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        // hyper answers 431 when a head does not fit the read buffer; 8 KiB is its floor.
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF));
    http.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    http
}

/// Accept errors that concern one connection (it went away while queued), not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy)]
enum Stalled {
    NoRequestHead,
    Idle,
}

async fn drive<I, S, B>(
    io: I,
    http: auto::Builder<TokioExecutor>,
    service: Counted<S>,
    activity: Arc<Activity>,
    limits: Limits,
    mut drain: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        stalled = watchdog(&activity, &limits) => {
            tracing::debug!(?stalled, "closing a stalled connection");
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
        // Also taken when `serve` is gone without a word: either way, finish and close.
        () = async { drop(drain.wait_for(|draining| *draining).await) } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Resolves when the connection has had no first request head within the header timeout, or
/// has been idle (no request in flight, no bytes) for the idle timeout.
///
/// It sleeps until the earliest moment the connection could be due and then looks again, so
/// requests never wake it: a request costs no wake-up of the connection's task and no re-armed
/// timer, which at tens of thousands of requests a second showed in the profile
/// (bench-status). Nothing can make a connection due sooner than that moment: a request that
/// starts after this look ends after it too, and its end counts as activity, so the idle
/// bound it leads to is at least `now + idle_timeout` away.
async fn watchdog(activity: &Activity, limits: &Limits) -> Stalled {
    loop {
        let now = Instant::now();
        let deadline = if !activity.started.load(Ordering::Acquire) {
            let deadline = activity.accepted + limits.header_read_timeout;
            if now >= deadline {
                return Stalled::NoRequestHead;
            }
            // A first request may start and end meanwhile: then the idle bound applies.
            deadline.min(now + limits.idle_timeout)
        } else if activity.in_flight.load(Ordering::Acquire) == 0 {
            let deadline = activity.last() + limits.idle_timeout;
            if now >= deadline {
                return Stalled::Idle;
            }
            deadline
        } else {
            // A request in flight is never idle; its end is activity: look again then at the
            // earliest.
            now + limits.idle_timeout
        };
        tokio::time::sleep_until(deadline).await;
    }
}

/// What the watchdog reads: when the connection last moved bytes, and its requests.
struct Activity {
    accepted: Instant,
    /// Milliseconds after `accepted` of the last read or write that moved bytes.
    last_ms: AtomicU64,
    /// A request head has been read (the service was called).
    started: AtomicBool,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            accepted: Instant::now(),
            last_ms: AtomicU64::new(0),
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.accepted.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Release);
    }

    fn last(&self) -> Instant {
        self.accepted + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }
}

/// The connection's IO, noting every read and write that moved bytes.
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The connection's service, counting requests in flight so a slow handler is never "idle".
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

/// Holds one in-flight count until the response head is ready (or the request is dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, R> hyper::service::Service<Request<Incoming>> for Counted<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = R>,
    S::Future: Send + 'static,
{
    type Response = R;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<R, S::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.activity.started.store(true, Ordering::Release);
        self.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self.activity.clone());
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            drop(guard);
            result
        })
    }
}
