//! The data plane and the control plane, apart. AWS's guidance for failover is to recover
//! through the data plane only: during the December 2021 event the Route 53 API was impaired
//! for hours while DNS and health checks kept working. So the evaluation loop only decides and
//! publishes the desired state here; three tasks act on it, none waiting for another:
//!
//! - the **heartbeat** (data plane): publishes each Region's health (the CloudWatch metric
//!   behind its CLOUDWATCH_METRIC health check) every `aggregator.heartbeat_every` and at once
//!   when the desired health changes. It never calls Route 53, so a Route 53 outage, throttling
//!   or AccessDenied cannot stop a take-out from being published.
//! - the **health plane** (control plane): takes Regions out and in where health is a Route 53
//!   object (forced CALCULATED checks), as soon as the decision changes.
//! - the **weights plane** (control plane): at most one weight batch per
//!   `weights.min_interval`; the INSYNC wait after a batch blocks only this task. With several
//!   replicas it writes only while this replica holds the weights lease ([`crate::lease`]),
//!   fences every batch right before writing it, and logs the fencing token with it.
//!
//! Both control-plane tasks share one cached view of what Route 53 holds, read again only after
//! a failure and every `aggregator.observe_every`: after a successful write the view is updated
//! with what was written. Steady state therefore reads Route 53 a few times an hour and writes
//! nothing. Failures back off on the shared [`Backoff`].

use crate::backend::{Backend, BackendError, DesiredState, ObservedState, SAFETY_RULE_CODE};
use crate::lease::{Fence, Lease};
use crate::model::AlertKind;
use crate::reconcile::{self, PlaneKind, ReconcileResult};
use crate::service::{lock, names, unix_ms, Aggregator};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;
use vantage_runtime::Backoff;

/// Retry pacing of a failing plane: from 1 s, doubling, at most 60 s (Route 53's throttling
/// clears within seconds; a longer outage is retried once a minute).
const PLANE_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// How the heartbeat is doing, as `GET /v1/state` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeartbeatStatus {
    pub ok: bool,
    /// When health was last published successfully (Unix ms).
    pub last_ok_ms: Option<u64>,
    pub error: Option<String>,
}

/// What the planes share with the evaluation loop.
pub(crate) struct Planes {
    /// The latest decision's desired state; `None` before the first evaluation.
    desired: watch::Sender<Option<DesiredState>>,
    /// What the backend was last seen or made to hold, and when it was read.
    observed: Mutex<Option<(ObservedState, Instant)>>,
    /// When the last weight batch was written.
    last_weights: Mutex<Option<Instant>>,
    health_result: Mutex<ReconcileResult>,
    weights_result: Mutex<ReconcileResult>,
    heartbeat: Mutex<HeartbeatStatus>,
}

impl Planes {
    pub(crate) fn new() -> Self {
        Planes {
            desired: watch::Sender::new(None),
            observed: Mutex::new(None),
            last_weights: Mutex::new(None),
            health_result: Mutex::new(ReconcileResult::default()),
            weights_result: Mutex::new(ReconcileResult::default()),
            heartbeat: Mutex::new(HeartbeatStatus::default()),
        }
    }

    /// Hands a new desired state to the planes; they wake only if it differs.
    pub(crate) fn publish(&self, desired: DesiredState) {
        self.desired.send_if_modified(|current| {
            if current.as_ref() == Some(&desired) {
                return false;
            }
            *current = Some(desired);
            true
        });
    }

    /// Both control planes' last results as one.
    pub(crate) fn last_result(&self) -> ReconcileResult {
        ReconcileResult::combine(
            lock(&self.health_result).clone(),
            lock(&self.weights_result).clone(),
        )
    }

    /// Makes the next pass read the backend again (this replica just took the weights lease:
    /// the view it cached is as old as another replica's tenure).
    pub(crate) fn forget_observed(&self) {
        *lock(&self.observed) = None;
    }

    pub(crate) fn heartbeat_status(&self) -> HeartbeatStatus {
        lock(&self.heartbeat).clone()
    }
}

/// Each Region's desired health, the part of a decision the heartbeat publishes.
fn health_of(desired: &DesiredState) -> BTreeMap<String, bool> {
    desired
        .iter()
        .map(|(region, want)| (region.clone(), want.in_service))
        .collect()
}

impl<B: Backend> Aggregator<B> {
    /// Publishes the desired health once (the data plane). Never touches Route 53.
    pub async fn heartbeat_now(&self) -> Result<(), BackendError> {
        let Some(desired) = self.planes.desired.borrow().clone() else {
            return Ok(());
        };
        let result = self.backend().heartbeat(&desired).await;
        let mut status = lock(&self.planes.heartbeat);
        match &result {
            Ok(()) => {
                metrics::counter!(names::HEARTBEATS_TOTAL, "result" => "ok").increment(1);
                *status = HeartbeatStatus {
                    ok: true,
                    last_ok_ms: Some(unix_ms(SystemTime::now())),
                    error: None,
                };
            }
            Err(e) => {
                metrics::counter!(names::HEARTBEATS_TOTAL, "result" => "error").increment(1);
                status.ok = false;
                // The code only, as for the control planes: the state is served.
                status.error = Some(e.code());
            }
        }
        result
    }

    /// One pass of one control plane with the current desired state. The weights plane holds
    /// its changes back (reported as `deferred`) until `weights.min_interval` has passed since
    /// its last batch.
    pub async fn reconcile_plane(&self, kind: PlaneKind) -> ReconcileResult {
        let Some(desired) = self.planes.desired.borrow().clone() else {
            return ReconcileResult {
                ok: true,
                ..ReconcileResult::default()
            };
        };
        let (result, fencing_token) = self.plane_pass(kind, &desired).await;
        let slot = match kind {
            PlaneKind::Health => &self.planes.health_result,
            PlaneKind::Weights => &self.planes.weights_result,
        };
        let previous = std::mem::replace(&mut *lock(slot), result.clone());
        self.log_plane_result(kind, &result, fencing_token);
        self.notify_plane_result(kind, &result, unix_ms(SystemTime::now()));
        // A safety rule's refusal is an alert once, not once per retry.
        if result.error.as_deref() == Some(SAFETY_RULE_CODE)
            && previous.error.as_deref() != Some(SAFETY_RULE_CODE)
        {
            metrics::counter!(names::ALERTS_TOTAL, "kind" => format!("{:?}", AlertKind::ArcSafetyRule))
                .increment(1);
            self.log_event(serde_json::json!({
                "event": "alert", "at_ms": unix_ms(SystemTime::now()),
                "kind": AlertKind::ArcSafetyRule, "region": null,
                "reason": format!(
                    "ARC safety net agrees with min_healthy: {}",
                    result.detail.as_deref().unwrap_or("a safety rule refused the change")
                ),
            }));
        }
        result
    }

    /// Both control planes once, health first: what `evaluate` does inline for the demo and
    /// tests. The background planes run the same passes.
    pub async fn reconcile_now(&self) -> ReconcileResult {
        let health = self.reconcile_plane(PlaneKind::Health).await;
        let weights = self.reconcile_plane(PlaneKind::Weights).await;
        ReconcileResult::combine(health, weights)
    }

    /// One pass, and the fencing token the weight batch it wrote carries (with a lease).
    async fn plane_pass(
        &self,
        kind: PlaneKind,
        desired: &DesiredState,
    ) -> (ReconcileResult, Option<u64>) {
        let observed = match self.observed().await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, plane = kind.label(), "cannot read the backend's state; retrying with backoff");
                return (
                    ReconcileResult {
                        ok: false,
                        error: Some(e.code()),
                        detail: Some(e.to_string()),
                        ..ReconcileResult::default()
                    },
                    None,
                );
            }
        };
        let changes = reconcile::planned(kind, desired, &observed);
        if changes.is_empty() {
            return (
                ReconcileResult {
                    ok: true,
                    ..ReconcileResult::default()
                },
                None,
            );
        }
        let mut fencing_token = None;
        if kind == PlaneKind::Weights {
            let held_back = ReconcileResult {
                ok: true,
                deferred: changes.clone(),
                ..ReconcileResult::default()
            };
            // Another replica holds the lease and writes the weights; this one holds back.
            if self.lease().is_some_and(|l| l.valid_token().is_none()) {
                return (held_back, None);
            }
            let min_interval = self.config().timing.weight_min_interval;
            let last = *lock(&self.planes.last_weights);
            if last.is_some_and(|at| at.elapsed() < min_interval) {
                return (held_back, None);
            }
            if let Some(lease) = self.lease() {
                match self.fence(lease).await {
                    Ok(Some(token)) => fencing_token = Some(token),
                    Ok(None) => return (held_back, None),
                    Err(refused) => return (refused, None),
                }
            }
            *lock(&self.planes.last_weights) = Some(Instant::now());
        }
        let result = reconcile::apply(self.backend(), kind, changes, desired).await;
        let mut cache = lock(&self.planes.observed);
        if result.ok {
            if let Some((state, _)) = cache.as_mut() {
                reconcile::after_applying(state, &result.changes);
            }
        } else {
            // What the failed write left behind is unknown: read it again next time.
            *cache = None;
        }
        let fencing_token = fencing_token.filter(|_| result.ok);
        (result, fencing_token)
    }

    /// Fences a weight batch right before it is written: `Ok(Some(token))` to write it,
    /// `Ok(None)` when the lease is (now) another replica's, `Err` with the refusal when the
    /// store refused our tenure (logged as `lease_lost`) or could not answer.
    async fn fence(&self, lease: &Lease) -> Result<Option<u64>, ReconcileResult> {
        let refused = |code: &str, detail: String| ReconcileResult {
            ok: false,
            error: Some(code.to_owned()),
            detail: Some(detail),
            ..ReconcileResult::default()
        };
        match lease.fence().await {
            Fence::Passed(token) => Ok(Some(token)),
            Fence::NotHeld => Ok(None),
            Fence::Lost(event) => {
                self.lease_changed(&event);
                Err(refused(
                    "lease_lost",
                    "the lease store no longer names this replica's tenure: weight batch refused"
                        .into(),
                ))
            }
            Fence::Failed(e) => {
                tracing::error!(error = %e, "cannot fence the weight batch; holding it back");
                Err(refused("lease_unavailable", e.to_string()))
            }
        }
    }

    /// The cached view of the backend, read again when missing or older than `observe_every`.
    async fn observed(&self) -> Result<ObservedState, BackendError> {
        let max_age = self.config().timing.observe_every;
        if let Some((state, at)) = lock(&self.planes.observed).as_ref() {
            if at.elapsed() < max_age {
                return Ok(state.clone());
            }
        }
        metrics::counter!(names::OBSERVE_TOTAL, "backend" => self.backend().name()).increment(1);
        let state = self.backend().observe().await?;
        *lock(&self.planes.observed) = Some((state.clone(), Instant::now()));
        Ok(state)
    }

    /// One decision-log line per pass that applied something or failed.
    fn log_plane_result(
        &self,
        kind: PlaneKind,
        result: &ReconcileResult,
        fencing_token: Option<u64>,
    ) {
        if result.changes.is_empty() && result.error.is_none() {
            return;
        }
        let reasons: BTreeMap<String, String> = self
            .snapshot()
            .map(|s| {
                s.decision
                    .regions
                    .iter()
                    .filter(|r| result.changes.iter().any(|c| c.region() == r.region))
                    .map(|r| (r.region.clone(), r.reason.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut line = serde_json::json!({
            "event": if result.ok { "plan_applied" } else { "plan_failed" },
            "at_ms": unix_ms(SystemTime::now()), "backend": self.backend().name(),
            "plane": kind.label(), "changes": result.changes, "error": result.detail, "code": result.error,
            "reason": reasons,
        });
        // With a lease, every weight change carries the tenure it was written under.
        if let Some(token) = fencing_token {
            line["fencing_token"] = token.into();
        }
        self.log_event(line);
    }

    /// The heartbeat task: publishes health every `heartbeat_every` and at once when it
    /// changes, retrying a failed publication with backoff (never slower than the period).
    pub(crate) async fn run_heartbeat(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let every = self.config().timing.heartbeat_every;
        let mut desired = self.planes.desired.subscribe();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut published: Option<BTreeMap<String, bool>> = None;
        let mut failures = 0u32;
        let mut retry_at: Option<Instant> = None;
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                () = retry => {}
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let health = desired.borrow_and_update().as_ref().map(health_of);
                    if health == published {
                        continue;
                    }
                }
                _ = stop.changed() => return,
            }
            let health = self.planes.desired.borrow().as_ref().map(health_of);
            match self.heartbeat_now().await {
                Ok(()) => {
                    published = health;
                    failures = 0;
                    retry_at = None;
                }
                Err(e) => {
                    failures += 1;
                    let wait = PLANE_BACKOFF.delay(failures).min(every);
                    retry_at = Some(Instant::now() + wait);
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::error!(error = %e, failures, "health heartbeat failed; retrying in {wait:?}");
                    }
                }
            }
        }
    }

    /// A control-plane task: a pass whenever the desired state changes, and every
    /// `evaluate_every` while work is pending (deferred weights, a refresh); after a failure,
    /// not before its backoff.
    pub(crate) async fn run_plane(
        self: Arc<Self>,
        kind: PlaneKind,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut desired = self.planes.desired.subscribe();
        let mut tick = tokio::time::interval(self.config().evaluate_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        let mut not_before: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    desired.borrow_and_update();
                }
                _ = stop.changed() => return,
            }
            if not_before.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            let result = self.reconcile_plane(kind).await;
            if result.ok {
                failures = 0;
                not_before = None;
            } else {
                failures += 1;
                not_before = Some(Instant::now() + PLANE_BACKOFF.delay(failures));
            }
        }
    }
}

#[cfg(test)]
#[path = "planes_tests.rs"]
mod tests;
