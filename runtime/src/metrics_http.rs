//! The `/metrics` listener every vantage process with a Prometheus recorder serves (the agent
//! and the aggregator): text exposition of a `PrometheusHandle`, 404 elsewhere.
//!
//! Upkeep: the exporter buffers every histogram observation as a raw sample until it drains the
//! buffer into the buckets, on each scrape or on `PrometheusHandle::run_upkeep`. A process
//! nobody scrapes would buffer samples forever, so [`serve`] runs upkeep every
//! [`UPKEEP_PERIOD`]; a process that installs a recorder without serving it runs [`upkeep`].

use crate::backoff::Backoff;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Path of the scrape endpoint.
pub const METRICS_PATH: &str = "/metrics";
/// Prometheus text exposition format 0.0.4, as Prometheus' own client libraries label it (the
/// format is UTF-8 by definition; the charset parameter says so to any other reader).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How often [`serve`] drains buffered histogram samples into their buckets.
pub const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// A client gets this long to send its request head, so a stalled connection cannot pin a task.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, scrapes in flight get this long to finish before their connections are cut.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Consecutive failed accepts (not counting per-connection aborts) after which the listener is
/// considered broken: with [`ACCEPT_BACKOFF`], about 25 s of nothing but failures.
const MAX_ACCEPT_FAILURES: u32 = 30;
const ACCEPT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));

/// The listener kept failing to accept connections.
#[derive(Debug, thiserror::Error)]
#[error("serving {METRICS_PATH}: accepting connections failed {attempts} times in a row: {source}")]
pub struct ServeError {
    /// Consecutive failures.
    pub attempts: u32,
    #[source]
    source: std::io::Error,
}

/// Drains buffered histogram samples every `period`, forever.
pub async fn upkeep(handle: PrometheusHandle, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// Serves `GET /metrics` (text exposition, [`CONTENT_TYPE`]) and 404 elsewhere on `listener`
/// until `shutdown` resolves, running the exporter's upkeep every [`UPKEEP_PERIOD`] meanwhile.
///
/// HTTP/1.1 and HTTP/2 (prior knowledge) are both accepted. At shutdown it stops accepting,
/// lets scrapes in flight finish for up to 5 s, then closes what is left. An accept error that
/// belongs to one connection is skipped; others are retried with backoff, and only a listener
/// that fails 30 times in a row (about 25 s) ends `serve` with an error.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    http.http2().timer(TokioTimer::new());
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut upkeep = tokio::time::interval(UPKEEP_PERIOD);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = upkeep.tick() => handle.run_upkeep(),
            // Reaps finished connection tasks so the set does not grow with every scrape.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    failures = 0;
                    connections.spawn(serve_connection(
                        stream,
                        http.clone(),
                        handle.clone(),
                        drain_rx.clone(),
                    ));
                }
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "metrics: connection failed before accept");
                }
                Err(e) => {
                    failures += 1;
                    if failures >= MAX_ACCEPT_FAILURES {
                        return Err(ServeError { attempts: failures, source: e });
                    }
                    let backoff = ACCEPT_BACKOFF.delay(failures);
                    tracing::warn!(error = %e, ?backoff, "metrics: accepting a connection failed");
                    tokio::time::sleep(backoff).await;
                }
            },
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.len(),
            "metrics: closing connections still open after the drain limit"
        );
    }
    // Dropping the set aborts whatever is left.
    Ok(())
}

/// Accept errors that concern one connection (it went away while queued), not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

async fn serve_connection(
    stream: TcpStream,
    http: auto::Builder<TokioExecutor>,
    handle: PrometheusHandle,
    mut drain: watch::Receiver<bool>,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let response = respond(&request, &handle);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        // Also taken when `serve` is gone without a word: either way, finish and close.
        () = async { drop(drain.wait_for(|draining| *draining).await) } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "metrics: connection ended with an error");
    }
}

fn respond(request: &Request<Incoming>, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Bytes| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != METRICS_PATH {
        return reply(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n"));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"method not allowed\n"),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = reply(StatusCode::OK, Bytes::from(handle.render()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}
