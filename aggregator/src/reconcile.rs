//! One control-plane pass: make one kind of backend state agree with a decision. The caller
//! hands in what the backend holds (observed, possibly cached); the pass [`plan`]s the
//! difference, keeps the changes of its kind (health, or weights) and applies only those, so a
//! pass with nothing to change writes nothing. A failure is reported in the result rather than
//! raised: the plane that ran it retries with backoff. The heartbeat is not here: it belongs to
//! the data plane and never waits for a pass (see [`crate::planes`]).

use crate::backend::ObservedState;
use crate::backend::{plan, Backend, BackendError, Change, DesiredRegion, DesiredState};
use crate::config::AggregatorConfig;
use crate::model::Decision;
use crate::service::names;
use serde::Serialize;

/// Which changes a pass makes: taking Regions out or in (health) never waits behind weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaneKind {
    Health,
    Weights,
}

impl PlaneKind {
    pub fn label(self) -> &'static str {
        match self {
            PlaneKind::Health => "health",
            PlaneKind::Weights => "weights",
        }
    }

    fn covers(self, change: &Change) -> bool {
        matches!(
            (self, change),
            (PlaneKind::Health, Change::Health { .. })
                | (PlaneKind::Weights, Change::Weight { .. })
        )
    }
}

/// How the last control-plane passes went, as `GET /v1/state` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileResult {
    pub ok: bool,
    /// Changes applied.
    pub changes: Vec<Change>,
    /// Weight changes planned but held back by `weights.min_interval`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<Change>,
    /// The failure's code only ([`BackendError::code`]): AWS's message text can name
    /// accounts, roles and resources, and the state is served to whoever may read it.
    pub error: Option<String>,
    /// The whole error text, for the operator's own decision log and stderr; never served.
    #[serde(skip)]
    pub detail: Option<String>,
    pub duration_seconds: f64,
}

impl ReconcileResult {
    /// Both planes' results as one: ok when both are, changes and deferrals together, the
    /// first error.
    pub fn combine(health: ReconcileResult, weights: ReconcileResult) -> ReconcileResult {
        ReconcileResult {
            ok: health.ok && weights.ok,
            changes: health.changes.into_iter().chain(weights.changes).collect(),
            deferred: health
                .deferred
                .into_iter()
                .chain(weights.deferred)
                .collect(),
            error: health.error.or(weights.error),
            detail: health.detail.or(weights.detail),
            duration_seconds: health.duration_seconds + weights.duration_seconds,
        }
    }
}

/// The backend's target for a decision: every unit's (service in Region) service flag and
/// weight, keyed by unit.
pub(crate) fn desired_of(decision: &Decision, config: &AggregatorConfig) -> DesiredState {
    decision
        .regions
        .iter()
        .map(|r| {
            (
                config.unit(&r.service, &r.region),
                DesiredRegion {
                    in_service: r.in_service,
                    weight: r.weight,
                },
            )
        })
        .collect()
}

/// The changes of `kind` that would make `observed` agree with `desired`.
pub(crate) fn planned(
    kind: PlaneKind,
    desired: &DesiredState,
    observed: &ObservedState,
) -> Vec<Change> {
    plan(desired, observed)
        .into_iter()
        .filter(|c| kind.covers(c))
        .collect()
}

/// What the backend holds once `changes` were applied to `observed`, so the next pass need
/// not read it back.
pub(crate) fn after_applying(observed: &mut ObservedState, changes: &[Change]) {
    for c in changes {
        let entry = observed.entry(c.region().to_owned()).or_default();
        match c {
            Change::Health { in_service, .. } => entry.in_service = Some(*in_service),
            Change::Weight { to, .. } => entry.weight = Some(*to),
        }
    }
}

/// Applies `changes` (already planned and filtered to one plane), with its metrics.
pub(crate) async fn apply<B: Backend>(
    backend: &B,
    kind: PlaneKind,
    changes: Vec<Change>,
    desired: &DesiredState,
) -> ReconcileResult {
    let started = tokio::time::Instant::now();
    let name = backend.name();
    let outcome: Result<(), BackendError> = if changes.is_empty() {
        Ok(())
    } else {
        backend.apply(&changes, desired).await
    };
    let duration_seconds = started.elapsed().as_secs_f64();
    metrics::histogram!(names::RECONCILE_SECONDS, "backend" => name, "plane" => kind.label())
        .record(duration_seconds);
    match outcome {
        Ok(()) => {
            metrics::counter!(names::RECONCILE_TOTAL, "backend" => name, "plane" => kind.label(), "result" => "ok")
                .increment(1);
            for c in &changes {
                let change_kind = match c {
                    Change::Health { .. } => "health",
                    Change::Weight { .. } => "weight",
                };
                metrics::counter!(names::RECONCILE_CHANGES_TOTAL, "backend" => name, "kind" => change_kind)
                    .increment(1);
            }
            ReconcileResult {
                ok: true,
                changes,
                deferred: Vec::new(),
                error: None,
                detail: None,
                duration_seconds,
            }
        }
        Err(e) => {
            metrics::counter!(names::RECONCILE_TOTAL, "backend" => name, "plane" => kind.label(), "result" => "error")
                .increment(1);
            tracing::error!(error = %e, plane = kind.label(), "reconcile failed; retrying with backoff");
            ReconcileResult {
                ok: false,
                changes: Vec::new(),
                deferred: Vec::new(),
                error: Some(e.code()),
                detail: Some(e.to_string()),
                duration_seconds,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::DryRun;

    fn desired(pairs: &[(&str, bool, u8)]) -> DesiredState {
        pairs
            .iter()
            .map(|&(r, in_service, weight)| (r.to_owned(), DesiredRegion { in_service, weight }))
            .collect()
    }

    async fn pass(backend: &DryRun, kind: PlaneKind, want: &DesiredState) -> ReconcileResult {
        let observed = backend.observe().await.unwrap();
        apply(backend, kind, planned(kind, want, &observed), want).await
    }

    #[tokio::test]
    async fn each_plane_applies_only_its_own_difference() {
        let backend = DryRun::new();
        let want = desired(&[("eu-west-1", true, 100), ("us-east-1", false, 0)]);
        let health = pass(&backend, PlaneKind::Health, &want).await;
        assert!(health.ok && health.error.is_none());
        assert_eq!(health.changes.len(), 2);
        assert!(health
            .changes
            .iter()
            .all(|c| matches!(c, Change::Health { .. })));
        let weights = pass(&backend, PlaneKind::Weights, &want).await;
        assert_eq!(weights.changes.len(), 2);
        assert_eq!(backend.applied().len(), 4);

        for kind in [PlaneKind::Health, PlaneKind::Weights] {
            let again = pass(&backend, kind, &want).await;
            assert!(again.ok && again.changes.is_empty(), "{again:?}");
        }
        assert_eq!(
            backend.applied().len(),
            4,
            "nothing to change writes nothing"
        );

        let next = desired(&[("eu-west-1", true, 120), ("us-east-1", false, 0)]);
        assert!(pass(&backend, PlaneKind::Health, &next)
            .await
            .changes
            .is_empty());
        assert_eq!(
            pass(&backend, PlaneKind::Weights, &next).await.changes,
            vec![Change::Weight {
                region: "eu-west-1".into(),
                from: Some(100),
                to: 120
            }]
        );
    }

    #[test]
    fn applied_changes_update_the_cached_view() {
        let mut observed = ObservedState::new();
        after_applying(
            &mut observed,
            &[
                Change::Health {
                    region: "a".into(),
                    in_service: false,
                },
                Change::Weight {
                    region: "a".into(),
                    from: Some(9),
                    to: 0,
                },
            ],
        );
        let want = desired(&[("a", false, 0)]);
        assert!(plan(&want, &observed).is_empty());
    }
}
