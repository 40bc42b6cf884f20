//! The `/metrics` listener every vantage process with a Prometheus recorder serves (the agent
//! and the aggregator): text exposition of a `PrometheusHandle` followed by the standard
//! `process_*` metrics ([`crate::process_metrics`]), 404 elsewhere.
//!
//! Rendering is O(series): at fleet scale (1,000 targets) a few megabytes of text and tens of
//! milliseconds of CPU, so it runs on the blocking pool rather than on a runtime worker, where it
//! would delay every probe scheduled on that worker. The body is gzip-compressed when the
//! scraper accepts it (Prometheus always sends `Accept-Encoding: gzip`): the exposition repeats
//! metric names and label sets on every line and compresses about tenfold, which is what a
//! scrape costs on the wire.
//!
//! Upkeep: the exporter buffers every histogram observation as a raw sample until it drains the
//! buffer into the buckets, on each scrape or on `PrometheusHandle::run_upkeep`. A process
//! nobody scrapes would buffer samples forever, so [`serve`] runs upkeep every
//! [`UPKEEP_PERIOD`]; a process that installs a recorder without serving it runs [`upkeep`].

use crate::http_server::{self, Limits};
use bytes::Bytes;
use flate2::write::GzEncoder;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use metrics_exporter_prometheus::PrometheusHandle;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Path of the scrape endpoint.
pub const METRICS_PATH: &str = "/metrics";
/// Prometheus text exposition format 0.0.4, as Prometheus' own client libraries label it (the
/// format is UTF-8 by definition; the charset parameter says so to any other reader).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Renders running at once. Each holds the whole exposition in memory (megabytes at fleet
/// scale) on a blocking-pool thread: without a bound, the listener's 64 connections could
/// ask for 64 at once. Prometheus scrapes one at a time; a second permit lets a person's
/// `curl` through beside it.
pub const CONCURRENT_RENDERS: usize = 2;
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
    let renders = Arc::new(Semaphore::new(CONCURRENT_RENDERS));
    let make_service = move |_peer| {
        let (handle, renders) = (handle.clone(), renders.clone());
        service_fn(move |request: Request<Incoming>| {
            let (handle, renders) = (handle.clone(), renders.clone());
            async move { Ok::<_, Infallible>(respond(request, handle, renders).await) }
        })
    };
    let server = http_server::serve(listener, make_service, Limits::METRICS, None, shutdown);
    tokio::select! {
        result = server => result,
        // `upkeep` never returns; the arm only keeps it running beside the server.
        () = upkeep(upkeep_handle, UPKEEP_PERIOD) => Ok(()),
    }
}

async fn respond(
    request: Request<Incoming>,
    handle: PrometheusHandle,
    renders: Arc<Semaphore>,
) -> Response<Full<Bytes>> {
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
    let gzip = accepts_gzip(request.headers());
    // The semaphore is never closed: acquiring only waits for a render to finish.
    let Ok(permit) = renders.acquire_owned().await else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"shutting down\n"),
        );
    };
    let body = tokio::task::spawn_blocking(move || {
        let body = exposition(&handle, gzip);
        drop(permit);
        body
    })
    .await;
    let Ok(body) = body else {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(b"rendering failed\n"),
        );
    };
    let mut response = reply(StatusCode::OK, body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// The text exposition of `handle` and the process metrics, gzip-compressed if `gzip`.
pub fn exposition(handle: &PrometheusHandle, gzip: bool) -> Bytes {
    let mut text = handle.render();
    if let Some(stats) = crate::process_metrics::read() {
        text.push_str(&crate::process_metrics::render(&stats));
    }
    if !gzip {
        return Bytes::from(text);
    }
    // The fastest level: the text is so repetitive that it already compresses about tenfold,
    // and a scrape should cost the agent as little CPU as possible.
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(text.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    match encoder
        .write_all(text.as_bytes())
        .and_then(|()| encoder.finish())
    {
        Ok(compressed) => Bytes::from(compressed),
        Err(_) => Bytes::from(text),
    }
}

/// Whether an `Accept-Encoding` header lists `gzip` (or `*`) with a non-zero quality
/// (RFC 9110 section 12.5.3). Several headers count as one comma-separated list.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            if !(name.eq_ignore_ascii_case("gzip") || name == "*") {
                return false;
            }
            // q=0, q=0.0, q=0.00, q=0.000 refuse the coding; anything else accepts it.
            !parts.any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("q")
                        && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        // What Prometheus sends.
        assert!(accepts_gzip(&headers(&["gzip"])));
        assert!(accepts_gzip(&headers(&["deflate, GZIP;q=0.5"])));
        assert!(accepts_gzip(&headers(&["br", "gzip"])));
        assert!(accepts_gzip(&headers(&["*"])));
        assert!(!accepts_gzip(&headers(&[])));
        assert!(!accepts_gzip(&headers(&["identity"])));
        assert!(!accepts_gzip(&headers(&["gzip;q=0"])));
        assert!(!accepts_gzip(&headers(&["gzip; q=0.000"])));
        assert!(!accepts_gzip(&headers(&["x-gzip"])));
    }
}
