//! The HTTP API, on axum: `POST /v1/reports` (see [`crate::ingest`]), `GET /v1/state` (the
//! last [`crate::evaluate::Snapshot`], 503 before the first evaluation; a bearer token when
//! `aggregator.state_token_env` is set) and `POST /v1/overrides` (signed with an admin key,
//! whatever the peer; applied by [`crate::overrides`]). Every answer is JSON, errors included: any other method on those
//! paths is a 405 and any other path a 404, each with a `reason`. Bodies are read with a
//! bound before anything is buffered: the report cap from the config, 64 KiB for overrides.

use crate::backend::Backend;
use crate::ingest::{IngestError, Ingested};
use crate::overrides::{Caller, OverrideRequest};
use crate::service::{names, unix_ms, Aggregator};
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::any;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vantage_protocol::auth;
use vantage_protocol::report::REPORTS_PATH;

/// Largest `POST /v1/overrides` body.
const MAX_OVERRIDES_BYTES: usize = 64 * 1024;

type Shared<B> = State<Arc<Aggregator<B>>>;

/// Serves the HTTP API on `listener` until `stop` turns true.
///
/// Then it stops accepting; connections already open finish the request in progress.
pub async fn serve<B: Backend>(
    aggregator: Arc<Aggregator<B>>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let app = router(aggregator).into_make_service_with_connect_info::<Peer>();
    let server = axum::serve(ApiListener(listener), app);
    tokio::select! {
        _ = server => {}
        _ = stop.changed() => {}
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

async fn state<B: Backend>(
    method: Method,
    State(aggregator): Shared<B>,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    if let Some(token) = &aggregator.config().state_token {
        if !bearer_matches(&headers, token.expose()) {
            let mut r = json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"reason": "the state needs Authorization: Bearer <token>, the token in the variable aggregator.state_token_env names"}),
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    match aggregator.snapshot() {
        Some(s) => json(StatusCode::OK, serde_json::to_value(s).unwrap_or_default()),
        None => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "starting", "reason": "no evaluation yet"}),
        ),
    }
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

impl Connected<IncomingStream<'_, ApiListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, ApiListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// The TCP listener with the API's own accept-error handling: log and retry after 50 ms (axum's
/// skips some errors silently and waits a whole second after the others).
struct ApiListener(TcpListener);

impl Listener for ApiListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
