//! The `/metrics` listener every vantage process with a Prometheus recorder serves (the agent
//! and the aggregator): text exposition of a `PrometheusHandle` followed by the standard
//! `process_*` metrics ([`crate::process_metrics`]), 404 elsewhere.
//!
//! Upkeep: the exporter buffers every histogram observation as a raw sample until it drains the
//! buffer into the buckets, on each scrape or on `PrometheusHandle::run_upkeep`. A process
//! nobody scrapes would buffer samples forever, so [`serve`] runs upkeep every
//! [`UPKEEP_PERIOD`]; a process that installs a recorder without serving it runs [`upkeep`].

use crate::http_server::{self, Limits};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use metrics_exporter_prometheus::PrometheusHandle;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// Path of the scrape endpoint.
pub const METRICS_PATH: &str = "/metrics";
/// Prometheus text exposition format 0.0.4, as Prometheus' own client libraries label it (the
/// format is UTF-8 by definition; the charset parameter says so to any other reader).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How often [`serve`] drains buffered histogram samples into their buckets.
pub const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// The `/metrics` listener's errors are the shared server's.
pub use crate::http_server::ServeError;

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
/// The server is [`http_server::serve`] with [`Limits::METRICS`]: HTTP/1.1 and HTTP/2, 64
/// connections at most, stalled or idle connections closed, scrapes in flight drained for up to
/// 5 s at shutdown. Only a listener that keeps failing to accept ends `serve` with an error.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let upkeep_handle = handle.clone();
    let make_service = move |_peer| {
        let handle = handle.clone();
        service_fn(move |request: Request<Incoming>| {
            let response = respond(&request, &handle);
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let server = http_server::serve(listener, make_service, Limits::METRICS, None, shutdown);
    tokio::select! {
        result = server => result,
        // `upkeep` never returns; the arm only keeps it running beside the server.
        () = upkeep(upkeep_handle, UPKEEP_PERIOD) => Ok(()),
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
    let mut text = handle.render();
    if let Some(stats) = crate::process_metrics::read() {
        text.push_str(&crate::process_metrics::render(&stats));
    }
    let mut response = reply(StatusCode::OK, Bytes::from(text));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}
