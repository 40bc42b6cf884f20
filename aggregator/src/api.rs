//! The HTTP API, on axum: `POST /v1/reports` (see [`crate::ingest`]; the key id and timestamp
//! are checked from the headers before the body is read, and at most [`MAX_PENDING_UPLOADS`]
//! bodies are read and ingested at once), `GET /v1/state` (the
//! last [`crate::evaluate::Snapshot`], 503 before the first evaluation; a bearer token when
//! `aggregator.state_token_env` is set), `GET /` (the status page, [`crate::status_page`],
//! behind the same token) and `POST /v1/overrides` (signed with an admin key,
//! whatever the peer; applied by [`crate::overrides`]). Every answer but the page is JSON, errors included: any other method on those
//! paths is a 405 and any other path a 404, each with a `reason`. Bodies are read with a
//! bound before anything is buffered: the report cap from the config, 64 KiB for overrides.
//! Connections are accepted by the shared server loop ([`vantage_runtime::http_server`]), which
//! bounds heads, stalled and idle connections and their number, and terminates TLS if asked.

use crate::backend::Backend;
use crate::ingest::{IngestError, Ingested};
use crate::overrides::{Caller, OverrideRequest};
use crate::service::{names, unix_ms, Aggregator};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::any;
use axum::{Extension, Router};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;
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
        .route("/", any(status_page::<B>))
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
    let result = receive(&aggregator, &headers, body).await;
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
            let mut response = json(
                e.status(),
                serde_json::json!({"status": "rejected", "reason": e.to_string()}),
            );
            if matches!(e, IngestError::Busy) {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            response
        }
    }
}

/// Most report uploads past the header check at once: each may buffer up to
/// `max_report_bytes` before its signature can be checked, and decode after.
pub const MAX_PENDING_UPLOADS: usize = 16;
/// How long a report body may take to arrive once its upload holds a slot.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies larger than this are checked and decoded on the blocking pool, off the async workers.
const BLOCKING_INGEST_BYTES: usize = 64 * 1024;

/// Header checks first (a request that can never verify is answered before its body is read),
/// then a slot among [`MAX_PENDING_UPLOADS`], the body within [`BODY_READ_TIMEOUT`], and
/// ingest, on the blocking pool when the body is large.
async fn receive<B: Backend>(
    aggregator: &Arc<Aggregator<B>>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Ingested, IngestError> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let config = aggregator.config();
    auth::precheck(
        header,
        |id| config.keys.get(id).map(Vec::as_slice),
        unix_ms(SystemTime::now()) / 1000,
        auth::DEFAULT_MAX_SKEW_SECS,
    )?;
    let _permit = aggregator
        .uploads
        .try_acquire()
        .map_err(|_| IngestError::Busy)?;
    let body = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        read_capped(body, config.max_report_bytes),
    )
    .await
    .map_err(|_| IngestError::SlowBody(BODY_READ_TIMEOUT.as_secs()))??;
    let owned: HashMap<&'static str, String> = [
        auth::HEADER_KEY_ID,
        auth::HEADER_TIMESTAMP,
        auth::HEADER_SIGNATURE,
    ]
    .into_iter()
    .filter_map(|n| header(n).map(|v| (n, v.to_owned())))
    .collect();
    let large = body.len() > BLOCKING_INGEST_BYTES;
    let ingest = {
        let aggregator = aggregator.clone();
        move || aggregator.ingest(|n| owned.get(n).cloned(), &body, SystemTime::now())
    };
    if large {
        tokio::task::spawn_blocking(ingest)
            .await
            .unwrap_or_else(|e| Err(IngestError::Malformed(format!("ingest failed: {e}"))))
    } else {
        ingest()
    }
}

async fn state<B: Backend>(
    method: Method,
    State(aggregator): Shared<B>,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    if let Some(refused) = refuse_reader(&aggregator, &headers) {
        return refused;
    }
    match aggregator.snapshot() {
        Some(s) => json(StatusCode::OK, serde_json::to_value(s).unwrap_or_default()),
        None => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "starting", "reason": "no evaluation yet"}),
        ),
    }
}

/// The 401 for a read without the state token, when `aggregator.state_token_env` sets one.
fn refuse_reader<B: Backend>(aggregator: &Aggregator<B>, headers: &HeaderMap) -> Option<Response> {
    let token = aggregator.config().state_token.clone()?;
    if bearer_matches(headers, token.expose()) {
        return None;
    }
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({"reason": "the state needs Authorization: Bearer <token>, the token in the variable aggregator.state_token_env names"}),
    );
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    Some(r)
}

/// `GET /` (and `?service=NAME`): the status page ([`crate::status_page`]), read-only, behind
/// the same token as `/v1/state`.
async fn status_page<B: Backend>(
    method: Method,
    State(aggregator): Shared<B>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    if let Some(refused) = refuse_reader(&aggregator, &headers) {
        return refused;
    }
    // The only parameter is `service`; its value is a service name, compared, never echoed
    // unescaped.
    let service = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("service="))
            .map(percent_decode)
    });
    let html = aggregator.status_page("/", service.as_deref(), SystemTime::now());
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/html; charset=utf-8")
        .header("content-security-policy", crate::status_page::CSP)
        .header("x-content-type-options", "nosniff")
        .header("cache-control", "no-store")
        .body(Body::from(html))
        .expect("static response parts")
}

/// `%XX` sequences decoded (bytes that are not UTF-8 become U+FFFD); `+` left as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `Authorization` is `Bearer <expected>`, compared in constant time.
fn bearer_matches(headers: &HeaderMap, expected: &[u8]) -> bool {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(given) = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|_| value[7..].trim_ascii())
    else {
        return false;
    };
    bool::from(given.ct_eq(expected))
}

/// One refused override: counted, logged with who and where from, answered with the reason.
fn refuse_override(
    status: StatusCode,
    label: &'static str,
    peer: SocketAddr,
    reason: String,
) -> Response {
    metrics::counter!(names::OVERRIDES_TOTAL, "result" => label).increment(1);
    tracing::warn!(%peer, %status, reason, "override refused");
    json(status, serde_json::json!({"reason": reason}))
}

/// `POST /v1/overrides`: always a signed request, always with an admin key
/// (`aggregator.admin_keys`), whoever the peer is; a TLS sidecar makes every caller loopback.
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
    let config = aggregator.config();
    if config.admin_keys.is_empty() {
        return refuse_override(
            StatusCode::FORBIDDEN,
            "disabled",
            peer,
            "overrides are disabled: no admin keys; add [aggregator.admin_keys.<id>] with env = \"VARIABLE\" or file = \"path\" to the fleet file and sign with `vantage override`".into(),
        );
    }
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let verdict = auth::verify(
        header,
        |id| config.admin_keys.get(id).map(|k| k.expose()),
        &body,
        unix_ms(SystemTime::now()) / 1000,
        auth::DEFAULT_MAX_SKEW_SECS,
    );
    let key_id = match verdict {
        Ok(id) => id,
        Err(auth::AuthError::UnknownKey(id)) if config.keys.contains_key(&id) => {
            return refuse_override(
                StatusCode::FORBIDDEN,
                "agent_key",
                peer,
                format!("key id {id:?} is an agent key; agent keys never authorise overrides: sign with a key in aggregator.admin_keys"),
            )
        }
        Err(e) => {
            return refuse_override(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                peer,
                format!("overrides need a request signed with a key in aggregator.admin_keys (`vantage override` signs): {e}"),
            )
        }
    };
    let request = match serde_json::from_slice::<OverrideRequest>(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse_override(
                StatusCode::BAD_REQUEST,
                "invalid",
                peer,
                format!("expected {{\"nonce\": \"<16..128 chars>\", \"pin\": {{\"<region>\": \"up\"|\"down\"|null}}, \"freeze\": bool, \"force\": bool, \"reason\": \"...\"}}: {e}"),
            )
        }
    };
    let caller = Caller { key_id, peer };
    match aggregator.set_overrides(caller, request, SystemTime::now()) {
        Ok(o) => {
            metrics::counter!(names::OVERRIDES_TOTAL, "result" => "accepted").increment(1);
            json(StatusCode::OK, serde_json::to_value(o).unwrap_or_default())
        }
        Err(e) => refuse_override(e.status(), e.label(), peer, e.to_string()),
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

/// The peer's address, for the log lines of rejected reports and of overrides.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);
