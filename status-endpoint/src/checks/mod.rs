//! Dependency checks and their results. A [`CheckSpec`] pairs one dependency ([`Check`]: an
//! Aurora writer or reader, the Region's Lambda function, a DynamoDB table, an extra HTTP or
//! TCP dependency) with
//! its name, timeout and criticality; [`run_round`] runs every check at once under one deadline
//! and returns a [`Round`] that is cached and rendered by the rest of the crate.
//!
//! A check never fails by panicking or hanging: each runs in its own task under its own
//! timeout (never longer than the round's deadline), and a check that does not finish in time
//! is reported as `fail` with "timed out after …".

pub mod dynamodb;
pub mod http;
pub mod lambda;
pub mod mysql;
pub mod postgres;
pub mod tcp;
pub mod tls;

use serde::Serialize;
use std::sync::Arc;

tokio::task_local! {
    /// The `X-Amzn-Trace-Id` of the request that started the round (set by the deep handler),
    /// which HTTP checks pass on so the dependency joins the caller's trace.
    pub static TRACE: Option<::http::HeaderValue>;
}

/// The trace of the current task, if a traced request started it.
pub fn current_trace() -> Option<::http::HeaderValue> {
    TRACE.try_with(Clone::clone).ok().flatten()
}
use std::time::{Duration, SystemTime};

/// A health status, ordered by severity: `Fail > Warn > Pass`, so the status of a set of
/// observations is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }

    /// The gauge value exported in /metrics: 0 pass, 1 warn, 2 fail.
    pub fn as_number(self) -> u8 {
        self as u8
    }
}

/// `componentType` of draft-inadarei-api-health-check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentType {
    Datastore,
    Component,
    System,
}

/// The measurement every check reports: how long the check took.
pub const RESPONSE_TIME: &str = "responseTime";

/// One measurement of one check: one entry under `checks["component:measurement"]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// `responseTime`, `replicationLag`, `state`, ...
    pub measurement: &'static str,
    pub value: Option<serde_json::Value>,
    pub unit: Option<&'static str>,
    pub status: Status,
    /// Detail for authorised callers: error text, why a warning was raised.
    pub output: Option<String>,
    /// The other Region this measurement is about (a DynamoDB replica or heartbeat peer):
    /// a label of its metric.
    pub peer: Option<String>,
}

impl Observation {
    pub fn new(measurement: &'static str, status: Status) -> Self {
        Observation {
            measurement,
            value: None,
            unit: None,
            status,
            output: None,
            peer: None,
        }
    }

    pub fn peer(mut self, peer: impl Into<String>) -> Self {
        self.peer = Some(peer.into());
        self
    }

    pub fn value(
        mut self,
        value: impl Into<serde_json::Value>,
        unit: Option<&'static str>,
    ) -> Self {
        self.value = Some(value.into());
        self.unit = unit;
        self
    }

    pub fn output(mut self, output: impl Into<String>) -> Self {
        self.output = Some(output.into());
        self
    }
}

/// What a check found when it completed: the status of the dependency itself (reported on the
/// `responseTime` measurement) plus any further measurements (replication lag, function state).
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub status: Status,
    pub output: Option<String>,
    pub extra: Vec<Observation>,
}

impl Probe {
    pub fn pass() -> Self {
        Probe {
            status: Status::Pass,
            output: None,
            extra: Vec::new(),
        }
    }

    /// Raises the status to `status` (never lowers it) and records why.
    pub fn raise(&mut self, status: Status, why: impl Into<String>) {
        if status > self.status {
            self.status = status;
        }
        let why = why.into();
        self.output = Some(match self.output.take() {
            Some(before) => format!("{before}; {why}"),
            None => why,
        });
    }

    /// Adds context for authorised callers (how the connection is carried) after whatever
    /// [`Probe::raise`] recorded, without touching the status.
    pub fn note(&mut self, context: impl Into<String>) {
        let context = context.into();
        self.output = Some(match self.output.take() {
            Some(before) => format!("{before}; {context}"),
            None => context,
        });
    }
}

/// Why a check could not complete: the dependency is unreachable or broken.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("connecting: {0}")]
    Connect(String),
    /// TLS could not be set up: "TLS handshake with db.example failed: certificate …".
    #[error("{0}")]
    Tls(String),
    #[error("query failed: {0}")]
    Query(String),
    #[error("{0}")]
    Lambda(String),
    #[error("{0}")]
    Http(String),
    #[error("{0}")]
    Dynamodb(String),
}

/// A database URL that cannot work (bad TLS parameters, unreadable CA bundle, a driver's parse
/// error); reported at startup under the URL's configuration key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// Replication lag limits of a reader check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagLimits {
    pub warn: Duration,
    pub fail: Duration,
}

impl LagLimits {
    /// The `replicationLag` observation for a measured lag.
    pub fn observe(&self, lag: Duration, source: &str) -> Observation {
        let status = if lag >= self.fail {
            Status::Fail
        } else if lag >= self.warn {
            Status::Warn
        } else {
            Status::Pass
        };
        let ms = (lag.as_secs_f64() * 1000.0).round() as u64;
        let mut o = Observation::new("replicationLag", status).value(ms, Some("ms"));
        o.output = Some(match status {
            Status::Pass => format!("from {source}"),
            Status::Warn => format!(
                "lag {lag:?} from {source} is over the warn limit {:?}",
                self.warn
            ),
            Status::Fail => format!(
                "lag {lag:?} from {source} is over the fail limit {:?}",
                self.fail
            ),
        });
        o
    }
}

/// Whether a database endpoint is expected to take writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Writer,
    Reader,
}

/// One dependency to check.
pub enum Check {
    // Boxed: tokio_postgres::Config is large, and checks are built once.
    Postgres(Box<postgres::PostgresCheck>),
    Mysql(mysql::MysqlCheck),
    Lambda(lambda::LambdaCheck),
    Dynamodb(dynamodb::DynamoCheck),
    Http(http::HttpCheck),
    Tcp(tcp::TcpCheck),
}

impl Check {
    async fn run(&self) -> Result<Probe, CheckError> {
        match self {
            Check::Postgres(c) => c.run().await,
            Check::Mysql(c) => c.run().await,
            Check::Lambda(c) => c.run().await,
            Check::Dynamodb(c) => c.run().await,
            Check::Http(c) => c.run().await,
            Check::Tcp(c) => c.run().await,
        }
    }

    fn component_type(&self) -> ComponentType {
        match self {
            Check::Postgres(_) | Check::Mysql(_) | Check::Dynamodb(_) => ComponentType::Datastore,
            Check::Lambda(_) | Check::Http(_) => ComponentType::Component,
            Check::Tcp(_) => ComponentType::System,
        }
    }

    /// What the check talks to (host:port/db, function name, URL): detail for authorised callers.
    fn target(&self) -> String {
        match self {
            Check::Postgres(c) => c.target().to_owned(),
            Check::Mysql(c) => c.target().to_owned(),
            Check::Lambda(c) => c.target().to_owned(),
            Check::Dynamodb(c) => c.target().to_owned(),
            Check::Http(c) => c.target().to_owned(),
            Check::Tcp(c) => c.target().to_owned(),
        }
    }
}

/// A named check with its limits.
pub struct CheckSpec {
    /// The component name: `aurora-writer`, `aurora-reader`, `lambda` or a configured name.
    pub name: String,
    /// A failing critical check fails the Region; a failing non-critical check only warns.
    pub critical: bool,
    pub timeout: Duration,
    pub check: Check,
}

/// The result of one check in one round.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub critical: bool,
    pub component_type: ComponentType,
    pub component_id: String,
    /// When the check finished (the `time` field).
    pub time: SystemTime,
    pub elapsed: Duration,
    /// `responseTime` first, then the check's own measurements.
    pub observations: Vec<Observation>,
}

impl CheckResult {
    /// The worst status among the observations.
    pub fn status(&self) -> Status {
        self.observations
            .iter()
            .map(|o| o.status)
            .max()
            .unwrap_or(Status::Pass)
    }

    /// The status this check contributes to the overall answer: a non-critical failure warns.
    pub fn effective_status(&self) -> Status {
        match self.status() {
            Status::Fail if !self.critical => Status::Warn,
            s => s,
        }
    }
}

/// Every check's result from one round of dependency checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    pub results: Vec<CheckResult>,
    pub elapsed: Duration,
}

/// Runs every check concurrently, each under `min(its timeout, deadline)`; returns when all
/// have finished or timed out, so within the deadline plus scheduling noise.
pub async fn run_round(checks: &[Arc<CheckSpec>], deadline: Duration) -> Round {
    let started = tokio::time::Instant::now();
    // Spawned tasks do not inherit task-locals: hand the trace to each check's task.
    let trace = current_trace();
    let handles: Vec<_> = checks
        .iter()
        .map(|spec| {
            let spec = Arc::clone(spec);
            let trace = trace.clone();
            tokio::spawn(TRACE.scope(trace, async move { run_one(&spec, deadline).await }))
        })
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for (spec, handle) in checks.iter().zip(handles) {
        results.push(match handle.await {
            Ok(result) => result,
            // A panicking check is a bug, but it must not take the answer down with it.
            Err(e) => failed(spec, started.elapsed(), format!("check aborted: {e}")),
        });
    }
    Round {
        results,
        elapsed: started.elapsed(),
    }
}

async fn run_one(spec: &CheckSpec, deadline: Duration) -> CheckResult {
    let limit = spec.timeout.min(deadline);
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(limit, spec.check.run()).await;
    let elapsed = started.elapsed();
    match outcome {
        Ok(Ok(probe)) => {
            let mut response =
                Observation::new(RESPONSE_TIME, probe.status).value(millis(elapsed), Some("ms"));
            response.output = probe.output;
            let mut observations = vec![response];
            observations.extend(probe.extra);
            CheckResult {
                name: spec.name.clone(),
                critical: spec.critical,
                component_type: spec.check.component_type(),
                component_id: spec.check.target(),
                time: SystemTime::now(),
                elapsed,
                observations,
            }
        }
        Ok(Err(e)) => failed(spec, elapsed, e.to_string()),
        Err(_) => failed(spec, elapsed, format!("timed out after {limit:?}")),
    }
}

fn failed(spec: &CheckSpec, elapsed: Duration, output: String) -> CheckResult {
    CheckResult {
        name: spec.name.clone(),
        critical: spec.critical,
        component_type: spec.check.component_type(),
        component_id: spec.check.target(),
        time: SystemTime::now(),
        elapsed,
        observations: vec![Observation::new(RESPONSE_TIME, Status::Fail)
            .value(millis(elapsed), Some("ms"))
            .output(output)],
    }
}

/// Milliseconds with microsecond resolution, as JSON numbers.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_orders_fail_over_warn_over_pass() {
        assert!(Status::Fail > Status::Warn && Status::Warn > Status::Pass);
        let mut all = vec![Status::Warn, Status::Fail, Status::Pass];
        all.sort();
        assert_eq!(all, [Status::Pass, Status::Warn, Status::Fail]);
    }

    #[test]
    fn lag_limits_pick_the_status() {
        let limits = LagLimits {
            warn: Duration::from_secs(1),
            fail: Duration::from_secs(5),
        };
        let s = |ms| limits.observe(Duration::from_millis(ms), "t").status;
        assert_eq!(s(0), Status::Pass);
        assert_eq!(s(999), Status::Pass);
        assert_eq!(s(1000), Status::Warn);
        assert_eq!(s(4999), Status::Warn);
        assert_eq!(s(5000), Status::Fail);
    }

    #[test]
    fn probe_raise_never_lowers() {
        let mut p = Probe::pass();
        p.raise(Status::Fail, "a");
        p.raise(Status::Warn, "b");
        assert_eq!(p.status, Status::Fail);
        assert_eq!(p.output.as_deref(), Some("a; b"));
    }
}
