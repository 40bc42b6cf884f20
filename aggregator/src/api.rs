//! The HTTP API, on axum: `POST /v1/reports` (see [`crate::ingest`]), `GET /v1/state` (the
//! last [`crate::evaluate::Snapshot`], 503 before the first evaluation) and
//! `POST /v1/overrides`. Every answer is JSON, errors included: any other method on those
//! paths is a 405 and any other path a 404, each with a `reason`. Bodies are read with a
//! bound before anything is buffered: the report cap from the config, 64 KiB for overrides.
//! Connections are accepted by the shared server loop ([`vantage_runtime::http_server`]), which
//! bounds heads, stalled and idle connections and their number, and terminates TLS if asked.

use crate::backend::Backend;
use crate::ingest::{IngestError, Ingested};
use crate::service::{names, unix_ms, Aggregator, OverrideRequest};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::any;
use axum::{Extension, Router};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use vantage_protocol::auth;
use vantage_protocol::report::REPORTS_PATH;
use vantage_runtime::http_server::{self, Limits, TowerToHyperService};

/// Largest `POST /v1/overrides` body.
const MAX_OVERRIDES_BYTES: usize = 64 * 1024;

type Shared<B> = State<Arc<Aggregator<B>>>;

/// How the API listens: the connection limits and, when the aggregator terminates TLS itself,
/// the acceptor (see [`vantage_runtime::tls_server`]).
#[derive(Clone, Default)]
pub struct ServeOptions {
    pub limits: Limits,
    pub tls: Option<TlsAcceptor>,
}

/// Serves the HTTP API on `listener` with the default limits, in plain HTTP, until `stop`
/// turns true.
pub async fn serve<B: Backend>(
    aggregator: Arc<Aggregator<B>>,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) {
    serve_with(aggregator, listener, ServeOptions::default(), stop).await
}

/// Serves the HTTP API on `listener` until `stop` turns true (or its sender is gone), through
/// the shared server loop ([`vantage_runtime::http_server`]): header and idle timeouts, the
/// connection cap and head bounds of `options.limits`, TLS when given. Then it stops
/// accepting; requests in flight get the drain limit to finish.
pub async fn serve_with<B: Backend>(
    aggregator: Arc<Aggregator<B>>,
    listener: TcpListener,
    options: ServeOptions,
    mut stop: watch::Receiver<bool>,
) {
    let app = router(aggregator);
    // The peer address reaches the handlers as axum's `ConnectInfo`, one layer per connection.
    let make_service = move |peer: SocketAddr| {
        TowerToHyperService::new(app.clone().layer(Extension(ConnectInfo(Peer(peer)))))
    };
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    if let Err(e) = http_server::serve(
        listener,
        make_service,
        options.limits,
        options.tls,
        shutdown,
    )
    .await
    {
        tracing::error!(error = %e, "the API listener failed");
    }
}

/// Every path takes any method and checks it in its handler. axum's method routing would
/// answer a wrong method with an empty 405 carrying `Allow`, and a GET route would answer HEAD;
/// this API answers both with its JSON 405, as it always has.
fn router<B: Backend>(aggregator: Arc<Aggregator<B>>) -> Router {
    Router::new()
        .route(REPORTS_PATH, any(reports::<B>))
        .route("/v1/state", any(state::<B>))
        .route("/v1/overrides", any(overrides::<B>))
        .fallback(not_found)
        .with_state(aggregator)
}

async fn reports<B: Backend>(
    method: Method,
    State(aggregator): Shared<B>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method != Method::POST {
        return method_not_allowed();
    }
    let result = match read_capped(body, aggregator.config().max_report_bytes).await {
        Err(e) => Err(e),
        Ok(body) => {
            let header = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            aggregator.ingest(header, &body, SystemTime::now())
        }
    };
    match result {
        Ok(Ingested::Accepted { targets }) => {
            metrics::counter!(names::REPORTS_TOTAL, "result" => "accepted").increment(1);
            metrics::counter!(names::REPORT_TARGETS_TOTAL).increment(targets);
            json(
                StatusCode::OK,
                serde_json::json!({"status": "accepted", "targets": targets}),
            )
        }
        Ok(Ingested::Duplicate) => {
            metrics::counter!(names::REPORTS_TOTAL, "result" => "duplicate").increment(1);
            json(
                StatusCode::CONFLICT,
                serde_json::json!({"status": "duplicate"}),
            )
        }
        Ok(Ingested::Stale) => {
            metrics::counter!(names::REPORTS_TOTAL, "result" => "stale").increment(1);
            json(
                StatusCode::OK,
                serde_json::json!({"status": "stale", "reason": "older than the decision window; ignored"}),
            )
        }
        Err(e) => {
            metrics::counter!(names::REPORTS_TOTAL, "result" => "rejected", "reason" => e.label())
                .increment(1);
            tracing::warn!(error = %e, %peer, "report rejected");
            json(
                e.status(),
                serde_json::json!({"status": "rejected", "reason": e.to_string()}),
            )
        }
    }
}

async fn state<B: Backend>(method: Method, State(aggregator): Shared<B>) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    match aggregator.snapshot() {
        Some(s) => json(StatusCode::OK, serde_json::to_value(s).unwrap_or_default()),
        None => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "starting", "reason": "no evaluation yet"}),
        ),
    }
}

async fn overrides<B: Backend>(
    method: Method,
    State(aggregator): Shared<B>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method != Method::POST {
        return method_not_allowed();
    }
    let body = match Limited::new(body, MAX_OVERRIDES_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"reason": "body over 64 KiB"}),
            )
        }
    };
    // Callers on the aggregator's own host need no signature, as `override_key_ids` documents.
    if !peer.ip().is_loopback() {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let now = unix_ms(SystemTime::now()) / 1000;
        let config = aggregator.config();
        let verdict = auth::verify(
            header,
            |id| {
                config
                    .override_key_ids
                    .iter()
                    .any(|a| a == id)
                    .then(|| config.keys.get(id).map(Vec::as_slice))
                    .flatten()
            },
            &body,
            now,
            auth::DEFAULT_MAX_SKEW_SECS,
        );
        if let Err(e) = verdict {
            return json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"reason": format!("overrides need a signed request with a key in aggregator.override_key_ids: {e}")}),
            );
        }
    }
    match serde_json::from_slice::<OverrideRequest>(&body) {
        Err(e) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"reason": format!("expected {{\"pin\": {{\"<region>\": \"up\"|\"down\"|null}}, \"freeze\": bool}}: {e}")}),
        ),
        Ok(request) => match aggregator.set_overrides(request) {
            Ok(o) => json(StatusCode::OK, serde_json::to_value(o).unwrap_or_default()),
            Err(reason) => json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"reason": reason}),
            ),
        },
    }
}

async fn not_found() -> Response {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"reason": "not found"}),
    )
}

fn method_not_allowed() -> Response {
    json(
        StatusCode::METHOD_NOT_ALLOWED,
        serde_json::json!({"reason": "method not allowed"}),
    )
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("static response parts")
}

/// Reads a body of at most `limit` bytes. A larger one is read on and thrown away (up to a
/// bound) before the 413 goes out: a client still writing its body would otherwise see a
/// broken pipe instead of the answer, and retry the same oversized report forever.
async fn read_capped(mut body: Body, limit: u64) -> Result<Bytes, IngestError> {
    const DRAIN_LIMIT: u64 = 64 << 20;
    let mut kept = Vec::new();
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(IngestError::Malformed(
                "the request body was cut short".into(),
            ));
        };
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen <= limit {
                kept.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > limit {
        return Err(IngestError::TooLarge(limit));
    }
    Ok(Bytes::from(kept))
}

/// The peer's address, for the overrides' loopback rule and the rejected-report log line.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);
