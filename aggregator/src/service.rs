//! The running aggregator: ingest, the evaluation loop and the HTTP API.
//!
//! - `POST /v1/reports`: authenticated (HMAC, shared code in `vantage-protocol`), size-capped
//!   (413), parsed and validated (400 with the reason), deduplicated by agent and sequence
//!   (409), ignored when older than the window (200, `stale`), merged into its interval.
//! - Every `evaluate_every`: observations over the window → [`crate::decide::evaluate`] →
//!   desired state → reconcile (observe, plan, apply only the difference, heartbeat) → decision
//!   log, metrics, persisted state.
//! - `GET /v1/state`: verdicts, weights, reasons, traffic on the global endpoint, overrides,
//!   last reconcile. `POST /v1/overrides`: pin Regions up or down, freeze automation.
//!
//! State survives restarts: the decision state and overrides are written to `state_file`
//! after every evaluation (temp file + rename) and read back at start, so a Region that was
//! out stays out until it has earned its way back (`recover_after` up evaluations).

use crate::backend::{plan, Backend, Change, DesiredRegion, DesiredState};
use crate::config::AggregatorConfig;
use crate::decide;
use crate::model::{Decision, ModelState, Overrides, Pin};
use crate::window::Window;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use vantage_protocol::auth;
use vantage_protocol::report::IntervalReport;

/// Aggregator metric names.
pub mod names {
    pub const REPORTS_TOTAL: &str = "vantage_aggregator_reports_total";
    pub const REPORT_TARGETS_TOTAL: &str = "vantage_aggregator_report_targets_total";
    pub const REGION_IN_SERVICE: &str = "vantage_region_in_service";
    pub const REGION_WEIGHT: &str = "vantage_region_weight";
    pub const REGION_TRANSITIONS_TOTAL: &str = "vantage_region_transitions_total";
    pub const ALERTS_TOTAL: &str = "vantage_aggregator_alerts_total";
    pub const RECONCILE_TOTAL: &str = "vantage_reconcile_total";
    pub const RECONCILE_SECONDS: &str = "vantage_reconcile_duration_seconds";
    pub const RECONCILE_CHANGES_TOTAL: &str = "vantage_reconcile_changes_total";
    pub const WINDOW_SERIES: &str = "vantage_aggregator_window_series";
    pub const GLOBAL_TRAFFIC_SHARE: &str = "vantage_global_traffic_share";
}

/// How a report was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Accepted { targets: u64 },
    Duplicate,
    Stale,
}

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("report body over {0} bytes")]
    TooLarge(u64),
    #[error("authentication failed: {0}")]
    Auth(#[from] auth::AuthError),
    #[error("malformed report: {0}")]
    Malformed(String),
    #[error("invalid report: {0}")]
    Invalid(#[from] vantage_protocol::report::ReportError),
    #[error("vantage {0:?} is not in the fleet file")]
    UnknownVantage(String),
    #[error("report is for fleet {0:?}, this aggregator serves {1:?}")]
    WrongFleet(String, String),
    #[error("interval starts {0} s in the future: check the agent's clock")]
    Future(u64),
}

impl IngestError {
    fn status(&self) -> StatusCode {
        match self {
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Auth(_) => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            IngestError::TooLarge(_) => "too_large",
            IngestError::Auth(_) => "auth",
            IngestError::Malformed(_) => "malformed",
            IngestError::Invalid(_) => "invalid",
            IngestError::UnknownVantage(_) | IngestError::WrongFleet(..) => "unknown_sender",
            IngestError::Future(_) => "clock",
        }
    }
}

/// The last evaluation, as `GET /v1/state` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub at_ms: u64,
    pub backend: &'static str,
    pub decision: Decision,
    pub overrides: Overrides,
    /// Which Region answered the global endpoint's probes in the window.
    pub global_traffic: BTreeMap<String, u64>,
    pub reconcile: ReconcileResult,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileResult {
    pub ok: bool,
    pub changes: Vec<Change>,
    pub error: Option<String>,
    pub duration_seconds: f64,
}

/// What is persisted between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    model: ModelState,
    overrides: Overrides,
}

/// Seen sequence numbers per agent, with the interval each belonged to (for pruning).
#[derive(Default)]
struct Seen(HashMap<String, BTreeMap<u64, u64>>);

impl Seen {
    /// Records `seq`; false if it was already there.
    fn insert(&mut self, agent: &str, seq: u64, interval_ms: u64) -> bool {
        let seqs = self.0.entry(agent.to_owned()).or_default();
        if seqs.contains_key(&seq) {
            return false;
        }
        seqs.insert(seq, interval_ms);
        true
    }

    fn prune(&mut self, oldest_interval_ms: u64) {
        self.0.retain(|_, seqs| {
            seqs.retain(|_, interval| *interval >= oldest_interval_ms);
            !seqs.is_empty()
        });
    }
}

/// The aggregator: shared by the HTTP handlers and the evaluation loop.
pub struct Aggregator<B> {
    config: AggregatorConfig,
    backend: B,
    window: Mutex<Window>,
    seen: Mutex<Seen>,
    model: Mutex<ModelState>,
    overrides: Mutex<Overrides>,
    last: Mutex<Option<Snapshot>>,
    decision_log: Option<Mutex<Box<dyn std::io::Write + Send>>>,
    /// Wakes the loop early (overrides changed).
    wake: Notify,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<B: Backend> Aggregator<B> {
    /// Loads persisted state, if any. `decision_log` receives one JSON line per transition,
    /// applied change and alert.
    pub fn new(
        config: AggregatorConfig,
        backend: B,
        decision_log: Option<Box<dyn std::io::Write + Send>>,
    ) -> Result<Self, std::io::Error> {
        let persisted = match &config.state_file {
            Some(path) => load_state(path)?,
            None => Persisted::default(),
        };
        if !persisted.model.regions.is_empty() {
            let out: Vec<&String> = persisted
                .model
                .regions
                .iter()
                .filter(|(_, r)| !r.in_service)
                .map(|(name, _)| name)
                .collect();
            tracing::info!(
                ?out,
                "resumed decision state: Regions out of service stay out until they recover"
            );
        }
        Ok(Aggregator {
            backend,
            window: Mutex::new(Window::new()),
            seen: Mutex::new(Seen::default()),
            model: Mutex::new(persisted.model),
            overrides: Mutex::new(persisted.overrides),
            last: Mutex::new(None),
            decision_log: decision_log.map(Mutex::new),
            wake: Notify::new(),
            config,
        })
    }

    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn snapshot(&self) -> Option<Snapshot> {
        lock(&self.last).clone()
    }

    /// Verifies, parses, deduplicates and merges one report.
    pub fn ingest(
        &self,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Ingested, IngestError> {
        if body.len() as u64 > self.config.max_report_bytes {
            return Err(IngestError::TooLarge(self.config.max_report_bytes));
        }
        let headers: HashMap<&str, String> = [
            auth::HEADER_KEY_ID,
            auth::HEADER_TIMESTAMP,
            auth::HEADER_SIGNATURE,
        ]
        .into_iter()
        .filter_map(|n| header(n).map(|v| (n, v)))
        .collect();
        let now_secs = unix_ms(now) / 1000;
        auth::verify(
            |n| headers.get(n).map(String::as_str),
            |id| self.config.keys.get(id).map(Vec::as_slice),
            body,
            now_secs,
            auth::DEFAULT_MAX_SKEW_SECS,
        )?;
        let report: IntervalReport =
            serde_json::from_slice(body).map_err(|e| IngestError::Malformed(e.to_string()))?;
        report.validate()?;
        let fleet = self.config.fleet.fleet.name.get_ref();
        if &report.fleet != fleet {
            return Err(IngestError::WrongFleet(report.fleet, fleet.clone()));
        }
        if self.config.fleet.vantage(&report.vantage).is_none() {
            return Err(IngestError::UnknownVantage(report.vantage));
        }
        let now_ms = unix_ms(now);
        if report.interval_start_ms > now_ms + auth::DEFAULT_MAX_SKEW_SECS * 1000 {
            return Err(IngestError::Future(
                (report.interval_start_ms - now_ms) / 1000,
            ));
        }
        let window_ms = self.config.window.as_millis() as u64;
        if report.interval_start_ms + report.interval_ms + window_ms < now_ms {
            return Ok(Ingested::Stale);
        }
        // Decode before recording the sequence number: a report refused as malformed may be
        // sent again, corrected, with the same number.
        let mut window = lock(&self.window);
        if !lock(&self.seen).insert(&report.agent_id, report.seq, report.interval_start_ms) {
            return Ok(Ingested::Duplicate);
        }
        match window.merge(&report) {
            Ok(m) => Ok(Ingested::Accepted { targets: m.targets }),
            Err(e) => {
                lock(&self.seen)
                    .0
                    .get_mut(&report.agent_id)
                    .map(|s| s.remove(&report.seq));
                Err(e.into())
            }
        }
    }

    /// Replaces overrides: `pin` entries with `None` unpin.
    pub fn set_overrides(&self, request: OverrideRequest) -> Result<Overrides, String> {
        let mut o = lock(&self.overrides);
        for (region, pin) in request.pin {
            if !self.config.regions.contains(&region) {
                return Err(format!("unknown Region {region:?}"));
            }
            match pin {
                Some(p) => {
                    o.pinned.insert(region, p);
                }
                None => {
                    o.pinned.remove(&region);
                }
            }
        }
        if let Some(f) = request.freeze {
            o.frozen = f;
        }
        let now = o.clone();
        drop(o);
        self.log_event(serde_json::json!({"event": "overrides", "overrides": now}));
        self.wake.notify_one();
        Ok(now)
    }

    /// The decision at `now` from the window, without changing anything.
    fn decide_now(
        &self,
        now_ms: u64,
    ) -> (
        ModelState,
        Decision,
        BTreeMap<String, u64>,
        usize,
        Overrides,
    ) {
        let from_ms = self.window_start(now_ms);
        let (observations, traffic, series) = {
            let mut w = lock(&self.window);
            let keep_from =
                from_ms.saturating_sub(self.config.fleet.report_interval().as_millis() as u64);
            w.prune(keep_from);
            lock(&self.seen).prune(keep_from);
            (
                w.observations(
                    &self.config.regions,
                    from_ms,
                    now_ms,
                    self.config.latency_quantile,
                    self.config.weight_quantile,
                ),
                w.global_traffic(from_ms, now_ms),
                w.series(),
            )
        };
        let overrides = lock(&self.overrides).clone();
        let previous = lock(&self.model).clone();
        let (state, decision) = decide::evaluate(
            &self.config.policy,
            &self.config.weights,
            &self.config.regions,
            &previous,
            &observations,
            &overrides,
            Duration::from_millis(now_ms),
        );
        (state, decision, traffic, series, overrides)
    }

    /// Start of the window at `now_ms`. The interval in progress has not been reported yet,
    /// so the window reaches one interval further back: it always holds `window` worth of
    /// reported intervals.
    fn window_start(&self, now_ms: u64) -> u64 {
        let interval_ms = self.config.fleet.report_interval().as_millis() as u64;
        // +1: an interval starting exactly `window + interval` ago ended a whole window ago.
        (now_ms + 1).saturating_sub(self.config.window.as_millis() as u64 + interval_ms)
    }

    /// Each vantage's view of each Region over the window ending at `now`, with latency at the
    /// given quantiles (the demo's live view; the decisions use the configured ones).
    pub fn window_view(
        &self,
        now: SystemTime,
        limit_q: f64,
        weight_q: f64,
    ) -> Vec<crate::model::RegionObservation> {
        let now_ms = unix_ms(now);
        let from_ms = self.window_start(now_ms);
        lock(&self.window).observations(&self.config.regions, from_ms, now_ms, limit_q, weight_q)
    }

    /// What the reconciler would change right now: the desired state and the writes, without
    /// applying them or advancing any state.
    pub async fn plan_now(
        &self,
        now: SystemTime,
    ) -> Result<(DesiredState, Vec<Change>), crate::backend::BackendError> {
        let (_, decision, ..) = self.decide_now(unix_ms(now));
        let desired = desired_of(&decision);
        let observed = self.backend.observe().await?;
        let changes = plan(&desired, &observed);
        Ok((desired, changes))
    }

    /// One evaluation and reconcile pass at `now`.
    pub async fn evaluate(&self, now: SystemTime) -> Snapshot {
        let now_ms = unix_ms(now);
        let (state, decision, traffic, series, overrides) = self.decide_now(now_ms);
        *lock(&self.model) = state.clone();
        let desired = desired_of(&decision);
        let reconcile = self.reconcile(&desired).await;

        for t in &decision.transitions {
            let direction = if t.in_service { "in" } else { "out" };
            metrics::counter!(names::REGION_TRANSITIONS_TOTAL, "region" => t.region.clone(), "direction" => direction).increment(1);
            self.log_event(serde_json::json!({
                "event": if t.in_service { "region_in" } else { "region_out" },
                "at_ms": now_ms, "region": t.region, "reason": t.reason,
            }));
        }
        for a in &decision.alerts {
            metrics::counter!(names::ALERTS_TOTAL, "kind" => format!("{:?}", a.kind)).increment(1);
            self.log_event(serde_json::json!({
                "event": "alert", "at_ms": now_ms, "kind": a.kind, "region": a.region, "reason": a.message,
            }));
        }
        if !reconcile.changes.is_empty() || reconcile.error.is_some() {
            self.log_event(serde_json::json!({
                "event": if reconcile.ok { "plan_applied" } else { "plan_failed" },
                "at_ms": now_ms, "backend": self.backend.name(),
                "changes": reconcile.changes, "error": reconcile.error,
                "reason": decision.regions.iter()
                    .filter(|r| reconcile.changes.iter().any(|c| c.region() == r.region))
                    .map(|r| (r.region.clone(), r.reason.clone()))
                    .collect::<BTreeMap<_, _>>(),
            }));
        }
        for r in &decision.regions {
            metrics::gauge!(names::REGION_IN_SERVICE, "region" => r.region.clone())
                .set(if r.in_service { 1.0 } else { 0.0 });
            metrics::gauge!(names::REGION_WEIGHT, "region" => r.region.clone())
                .set(f64::from(r.weight));
        }
        let answered: u64 = traffic.values().sum();
        for region in &self.config.regions {
            let share = if answered == 0 {
                0.0
            } else {
                traffic.get(region).copied().unwrap_or(0) as f64 / answered as f64
            };
            metrics::gauge!(names::GLOBAL_TRAFFIC_SHARE, "region" => region.clone()).set(share);
        }
        metrics::gauge!(names::WINDOW_SERIES).set(series as f64);

        if let Some(path) = &self.config.state_file {
            let persisted = Persisted {
                model: state,
                overrides: overrides.clone(),
            };
            if let Err(e) = save_state(path, &persisted) {
                tracing::error!(error = %e, path = %path.display(), "cannot persist decision state");
            }
        }
        let snapshot = Snapshot {
            at_ms: now_ms,
            backend: self.backend.name(),
            decision,
            overrides,
            global_traffic: traffic,
            reconcile,
        };
        *lock(&self.last) = Some(snapshot.clone());
        snapshot
    }

    /// Observe, plan, apply the difference, heartbeat.
    async fn reconcile(&self, desired: &DesiredState) -> ReconcileResult {
        let started = tokio::time::Instant::now();
        let backend = self.backend.name();
        let outcome = async {
            let observed = self.backend.observe().await?;
            let changes = plan(desired, &observed);
            if !changes.is_empty() {
                self.backend.apply(&changes, desired).await?;
            }
            self.backend.heartbeat(desired).await?;
            Ok::<_, crate::backend::BackendError>(changes)
        }
        .await;
        let duration_seconds = started.elapsed().as_secs_f64();
        metrics::histogram!(names::RECONCILE_SECONDS, "backend" => backend)
            .record(duration_seconds);
        match outcome {
            Ok(changes) => {
                metrics::counter!(names::RECONCILE_TOTAL, "backend" => backend, "result" => "ok")
                    .increment(1);
                for c in &changes {
                    let kind = match c {
                        Change::Health { .. } => "health",
                        Change::Weight { .. } => "weight",
                    };
                    metrics::counter!(names::RECONCILE_CHANGES_TOTAL, "backend" => backend, "kind" => kind).increment(1);
                }
                ReconcileResult {
                    ok: true,
                    changes,
                    error: None,
                    duration_seconds,
                }
            }
            Err(e) => {
                metrics::counter!(names::RECONCILE_TOTAL, "backend" => backend, "result" => "error").increment(1);
                tracing::error!(error = %e, "reconcile failed; retrying next period");
                ReconcileResult {
                    ok: false,
                    changes: Vec::new(),
                    error: Some(e.to_string()),
                    duration_seconds,
                }
            }
        }
    }

    fn log_event(&self, event: serde_json::Value) {
        tracing::info!(target: "vantage::decisions", "{event}");
        if let Some(log) = &self.decision_log {
            let mut w = lock(log);
            let _ = writeln!(w, "{event}");
            let _ = w.flush();
        }
    }

    /// Evaluates every `evaluate_every` (and at once when overrides change) until `stop`.
    pub async fn run_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.evaluate_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            self.evaluate(SystemTime::now()).await;
        }
    }
}

/// Body of `POST /v1/overrides`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// Region → "up", "down", or null to unpin.
    #[serde(default)]
    pub pin: BTreeMap<String, Option<Pin>>,
    pub freeze: Option<bool>,
}

fn desired_of(decision: &Decision) -> DesiredState {
    decision
        .regions
        .iter()
        .map(|r| {
            (
                r.region.clone(),
                DesiredRegion {
                    in_service: r.in_service,
                    weight: r.weight,
                },
            )
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn load_state(path: &Path) -> Result<Persisted, std::io::Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("state file {}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(e) => Err(e),
    }
}

fn save_state(path: &Path, state: &Persisted) -> Result<(), std::io::Error> {
    let tmp: PathBuf = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Reads a body of at most `limit` bytes. A larger one is read on and thrown away (up to a
/// bound) before the 413 goes out: a client still writing its body would otherwise see a
/// broken pipe instead of the answer, and retry the same oversized report forever.
async fn read_capped(mut body: Incoming, limit: u64) -> Result<Bytes, IngestError> {
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

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts")
}

/// Serves the HTTP API on `listener` until `stop` turns true.
pub async fn serve<B: Backend>(
    aggregator: Arc<Aggregator<B>>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let aggregator = aggregator.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let aggregator = aggregator.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&aggregator, req, peer).await) }
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
        });
    }
}

async fn handle<B: Backend>(
    aggregator: &Aggregator<B>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let limit = aggregator.config.max_report_bytes;
    match (req.method(), req.uri().path()) {
        (&Method::POST, vantage_protocol::report::REPORTS_PATH) => {
            let (parts, body) = req.into_parts();
            let result = match read_capped(body, limit).await {
                Err(e) => Err(e),
                Ok(body) => {
                    let header = |n: &str| {
                        parts
                            .headers
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
                    json_response(
                        StatusCode::OK,
                        serde_json::json!({"status": "accepted", "targets": targets}),
                    )
                }
                Ok(Ingested::Duplicate) => {
                    metrics::counter!(names::REPORTS_TOTAL, "result" => "duplicate").increment(1);
                    json_response(
                        StatusCode::CONFLICT,
                        serde_json::json!({"status": "duplicate"}),
                    )
                }
                Ok(Ingested::Stale) => {
                    metrics::counter!(names::REPORTS_TOTAL, "result" => "stale").increment(1);
                    json_response(
                        StatusCode::OK,
                        serde_json::json!({"status": "stale", "reason": "older than the decision window; ignored"}),
                    )
                }
                Err(e) => {
                    metrics::counter!(names::REPORTS_TOTAL, "result" => "rejected", "reason" => e.label()).increment(1);
                    tracing::warn!(error = %e, %peer, "report rejected");
                    json_response(
                        e.status(),
                        serde_json::json!({"status": "rejected", "reason": e.to_string()}),
                    )
                }
            }
        }
        (&Method::GET, "/v1/state") => match aggregator.snapshot() {
            Some(s) => json_response(StatusCode::OK, serde_json::to_value(s).unwrap_or_default()),
            None => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "starting", "reason": "no evaluation yet"}),
            ),
        },
        (&Method::POST, "/v1/overrides") => {
            let (parts, body) = req.into_parts();
            let body = match Limited::new(body, 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return json_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        serde_json::json!({"reason": "body over 64 KiB"}),
                    )
                }
            };
            if !peer.ip().is_loopback() {
                let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
                let now = unix_ms(SystemTime::now()) / 1000;
                let allowed = &aggregator.config.override_key_ids;
                let verdict = auth::verify(
                    header,
                    |id| {
                        allowed
                            .iter()
                            .any(|a| a == id)
                            .then(|| aggregator.config.keys.get(id).map(Vec::as_slice))
                            .flatten()
                    },
                    &body,
                    now,
                    auth::DEFAULT_MAX_SKEW_SECS,
                );
                if let Err(e) = verdict {
                    return json_response(
                        StatusCode::UNAUTHORIZED,
                        serde_json::json!({"reason": format!("overrides need a signed request with a key in aggregator.override_key_ids: {e}")}),
                    );
                }
            }
            match serde_json::from_slice::<OverrideRequest>(&body) {
                Err(e) => json_response(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"reason": format!("expected {{\"pin\": {{\"<region>\": \"up\"|\"down\"|null}}, \"freeze\": bool}}: {e}")}),
                ),
                Ok(request) => match aggregator.set_overrides(request) {
                    Ok(o) => {
                        json_response(StatusCode::OK, serde_json::to_value(o).unwrap_or_default())
                    }
                    Err(reason) => json_response(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"reason": reason}),
                    ),
                },
            }
        }
        (_, "/v1/reports" | "/v1/state" | "/v1/overrides") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"reason": "method not allowed"}),
        ),
        _ => json_response(
            StatusCode::NOT_FOUND,
            serde_json::json!({"reason": "not found"}),
        ),
    }
}

/// Serves the API and evaluates on schedule until `stop` turns true.
pub async fn run<B: Backend>(
    aggregator: Arc<Aggregator<B>>,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) {
    let server = tokio::spawn(serve(aggregator.clone(), listener, stop.clone()));
    aggregator.run_loop(stop).await;
    let _ = server.await;
}
