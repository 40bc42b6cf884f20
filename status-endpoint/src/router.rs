//! The HTTP surface, shared by the ECS server and the Lambda adapter:
//! - `GET /status`: liveness; a pre-rendered answer, no dependency touched.
//! - `GET /status/deep`: readiness from the cached, single-flighted round of checks, never
//!   later than the deadline (plus a small margin) whatever the dependencies do.
//! - `GET /metrics`: Prometheus text.
//!
//! [`run_with`] serves it through the shared server loop, with its connection limits; each
//! connection runs [`App`] (`crate::service`), which answers `GET /status` ahead of the routes.
//!
//! Every answer carries `x-vantage-region` and echoes `X-Amzn-Trace-Id` when the caller sent
//! one; deep requests log it, and a round of checks a traced deep request starts passes it on
//! to its HTTP checks (and names it in the round's warnings).

use crate::cache::SingleFlight;
use crate::checks::{self, Check, CheckSpec, LagLimits, Role, Round, Status};
use crate::config::{self, Engine, Settings};
use crate::health::{self, ServiceMeta, View};
use crate::metrics::{self, Metrics};
pub use crate::service::App;
use crate::service::{set_headers, Liveness};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use axum::routing::get;
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use vantage_runtime::http_server::{self, Limits, ServeError};

pub const REGION_HEADER: &str = "x-vantage-region";
pub const TRACE_HEADER: &str = "x-amzn-trace-id";

/// Extra time a deep request may wait beyond the deadline for a round to be published.
const DEADLINE_MARGIN: Duration = Duration::from_millis(200);

/// A check that could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Rendered without secrets: the message may hold the check's URL.
    #[error("{key}: {}", vantage_protocol::config::redact_message(key, message))]
    Check { key: String, message: String },
}

/// A round and its answers for the views without `?exclude`, rendered once per round so that
/// cached answers cost a lookup, not a JSON rendering.
struct Answers {
    round: Round,
    /// Indexed by [`Answers::slot`].
    rendered: [(Status, Bytes); 4],
}

impl Answers {
    fn new(meta: &ServiceMeta, round: Round) -> Self {
        let render = |verbose, authorized| {
            let view = View {
                verbose,
                authorized,
                ..View::default()
            };
            let (status, body) = health::render(meta, &round, &view);
            (status, Bytes::from(body.to_string()))
        };
        Answers {
            rendered: [
                render(false, false),
                render(true, false),
                render(false, true),
                render(true, true),
            ],
            round,
        }
    }

    fn slot(view: &View) -> usize {
        usize::from(view.verbose) | usize::from(view.authorized) << 1
    }

    fn answer(&self, meta: &ServiceMeta, view: &View) -> (Status, Bytes) {
        if view.exclude.is_empty() {
            return self.rendered[Self::slot(view)].clone();
        }
        let (status, body) = health::render(meta, &self.round, view);
        (status, Bytes::from(body.to_string()))
    }
}

struct AppState {
    meta: ServiceMeta,
    deadline: Duration,
    token: Option<String>,
    cache: Arc<SingleFlight<Arc<Answers>>>,
    metrics: Arc<Metrics>,
    /// `/status` answer, rendered once.
    liveness: Bytes,
    region: HeaderValue,
}

/// Builds the checks named in `settings`. `aws` is the SDK configuration for the Lambda and
/// DynamoDB checks; when `None` and one is configured, it is loaded from the environment.
/// DynamoDB heartbeat writers start here (they stop when the checks are dropped).
pub async fn build_checks(
    settings: &Settings,
    aws: Option<aws_config::SdkConfig>,
) -> Result<Vec<Arc<CheckSpec>>, BuildError> {
    let mut specs = Vec::new();
    let fail = |key: &str, e: &dyn std::fmt::Display| BuildError::Check {
        key: key.to_owned(),
        message: e.to_string(),
    };
    for (name, role, db) in [
        (config::WRITER, Role::Writer, &settings.writer),
        (config::READER, Role::Reader, &settings.reader),
    ] {
        let Some(db) = db else { continue };
        let key = format!(
            "aurora.{}.url",
            if role == Role::Writer {
                "writer"
            } else {
                "reader"
            }
        );
        let lag = (role == Role::Reader).then_some(LagLimits {
            warn: db.lag_warn,
            fail: db.lag_fail,
        });
        let check = match db.engine {
            Engine::Postgres => Check::Postgres(Box::new(
                checks::postgres::PostgresCheck::new(role, &db.url, &settings.region, lag)
                    .map_err(|e| fail(&key, &e))?,
            )),
            Engine::Mysql => Check::Mysql(
                checks::mysql::MysqlCheck::new(role, &db.url, lag).map_err(|e| fail(&key, &e))?,
            ),
        };
        specs.push(CheckSpec {
            name: name.to_owned(),
            critical: db.critical,
            timeout: db.timeout,
            check,
        });
    }
    let aws = match aws {
        Some(sdk) => Some(sdk),
        None if settings.lambda.is_some() || !settings.dynamodb.is_empty() => {
            // The per-attempt timeout of this configuration serves the Lambda check; the
            // DynamoDB client sets its own (checks::dynamodb::configure).
            let timeout = settings
                .lambda
                .as_ref()
                .map_or(config::DEFAULT_CHECK_TIMEOUT, |l| l.timeout);
            Some(
                checks::lambda::sdk_config(
                    &settings.region,
                    settings.aws_endpoint_url.as_deref(),
                    timeout,
                )
                .await,
            )
        }
        None => None,
    };
    if let (Some(l), Some(sdk)) = (&settings.lambda, &aws) {
        specs.push(CheckSpec {
            name: config::LAMBDA.to_owned(),
            critical: l.critical,
            timeout: l.timeout,
            check: Check::Lambda(checks::lambda::LambdaCheck::new(sdk, &l.function)),
        });
    }
    for d in &settings.dynamodb {
        let Some(sdk) = &aws else { break };
        let spec = checks::dynamodb::DynamoSpec {
            table: d.table.clone(),
            region: settings.region.clone(),
            canary_key: d.canary_key.clone(),
            peers: d.peers.clone(),
            partition_key: d.partition_key.clone(),
            lag: LagLimits {
                warn: d.lag_warn,
                fail: d.lag_fail,
            },
            timeout: d.timeout,
        };
        let client = checks::dynamodb::client(sdk, d.timeout);
        specs.push(CheckSpec {
            name: d.name.clone(),
            critical: d.critical,
            timeout: d.timeout,
            check: Check::Dynamodb(checks::dynamodb::DynamoCheck::new(
                client,
                spec,
                d.heartbeat_every,
            )),
        });
    }
    for (i, h) in settings.http.iter().enumerate() {
        let timeout = h.timeout.unwrap_or(config::DEFAULT_CHECK_TIMEOUT);
        specs.push(CheckSpec {
            name: h.name.clone(),
            critical: h.critical,
            timeout,
            check: Check::Http(
                checks::http::HttpCheck::new(&h.url, timeout)
                    .map_err(|e| fail(&format!("http[{i}].url"), &e))?,
            ),
        });
    }
    for t in &settings.tcp {
        specs.push(CheckSpec {
            name: t.name.clone(),
            critical: t.critical,
            timeout: t.timeout.unwrap_or(config::DEFAULT_CHECK_TIMEOUT),
            check: Check::Tcp(checks::tcp::TcpCheck::new(&t.address)),
        });
    }
    Ok(specs.into_iter().map(Arc::new).collect())
}

/// The routes over a set of checks, with the liveness answer served ahead of them.
pub fn router(settings: &Settings, checks: Vec<Arc<CheckSpec>>) -> App {
    let meta = ServiceMeta {
        service_id: settings.service_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        region: settings.region.clone(),
    };
    let metrics = Arc::new(Metrics::default());
    let deadline = settings.deadline;
    let checks: Arc<[Arc<CheckSpec>]> = checks.into();
    let round_metrics = Arc::clone(&metrics);
    let round_meta = meta.clone();
    let cache = SingleFlight::new(settings.cache_ttl, move || {
        let checks = Arc::clone(&checks);
        let metrics = Arc::clone(&round_metrics);
        let meta = round_meta.clone();
        // Called in the requesting task (before the round is spawned): its trace, if any.
        let trace = checks::current_trace();
        let trace_id = trace
            .as_ref()
            .and_then(|t| t.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        async move {
            let round = checks::TRACE
                .scope(trace, checks::run_round(&checks, deadline))
                .await;
            metrics.round(&round);
            for r in round.results.iter().filter(|r| r.status() != Status::Pass) {
                let output = r.observations.iter().filter_map(|o| o.output.as_deref());
                tracing::warn!(
                    trace_id = %trace_id,
                    check = %r.name,
                    status = r.status().as_str(),
                    output = %output.collect::<Vec<_>>().join("; "),
                    "dependency check not passing"
                );
            }
            Arc::new(Answers::new(&meta, round))
        }
    });
    let state = Arc::new(AppState {
        liveness: Bytes::from(health::liveness(&meta).to_string()),
        region: HeaderValue::from_str(&meta.region).unwrap_or(HeaderValue::from_static("unknown")),
        meta,
        deadline,
        token: settings.token.clone(),
        cache,
        metrics,
    });
    let fast = Liveness {
        length: HeaderValue::from(state.liveness.len()),
        body: state.liveness.clone(),
        region: state.region.clone(),
        metrics: Arc::clone(&state.metrics),
    };
    let routes = axum::Router::new()
        .route("/status", get(liveness))
        .route("/status/deep", get(deep))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    App::new(routes, fast)
}

/// Serves on `listener` with the default [`Limits`] until `shutdown` completes, then drains
/// in-flight requests.
pub async fn run(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_with(app, listener, Limits::API, shutdown).await
}

/// Serves on `listener` through the shared server loop ([`vantage_runtime::http_server`]):
/// header and idle timeouts, the connection cap and head bounds of `limits`, so stalled or
/// idle clients cannot keep `/status` from answering. At `shutdown` it stops accepting and
/// drains requests in flight.
pub async fn run_with(
    app: App,
    listener: tokio::net::TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let make_service = move |_peer| app.clone();
    http_server::serve(listener, make_service, limits, None, shutdown).await
}

async fn liveness(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response<Body> {
    app.metrics.answer(metrics::Path::Status, Status::Pass);
    answer(&app, StatusCode::OK, app.liveness.clone(), &headers)
}

async fn deep(
    State(app): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response<Body> {
    let trace = headers
        .get(TRACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let authorized = health::token_matches(
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        app.token.as_deref(),
    );
    let view = View::from_query(query.as_deref(), authorized);
    let (status, body) = match tokio::time::timeout(
        app.deadline + DEADLINE_MARGIN,
        checks::TRACE.scope(headers.get(TRACE_HEADER).cloned(), app.cache.get()),
    )
    .await
    {
        Ok(Ok(answers)) => answers.answer(&app.meta, &view),
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("dependency checks did not finish within {:?}", app.deadline),
            };
            let mut body = health::liveness(&app.meta);
            body["status"] = serde_json::json!(Status::Fail);
            body["output"] = serde_json::json!(why);
            (Status::Fail, Bytes::from(body.to_string()))
        }
    };
    tracing::debug!(trace_id = trace, status = status.as_str(), "deep status");
    app.metrics.answer(metrics::Path::Deep, status);
    let code = match status {
        Status::Pass | Status::Warn => StatusCode::OK,
        Status::Fail => StatusCode::SERVICE_UNAVAILABLE,
    };
    answer(&app, code, body, &headers)
}

async fn metrics_text(State(app): State<Arc<AppState>>) -> Response<Body> {
    let mut response = Response::new(Body::from(app.metrics.render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

fn answer(app: &AppState, code: StatusCode, body: Bytes, request: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = code;
    set_headers(response.headers_mut(), &app.region, request);
    response
}
