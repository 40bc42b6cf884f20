//! One reconcile pass: make the backend agree with a decision. Observe what the backend has,
//! [`plan`] the difference, apply only that (a pass with nothing to change writes nothing),
//! then heartbeat whether or not anything changed, because some data-plane signals (a
//! CloudWatch metric behind a health check) must keep flowing every period. A failure is
//! reported in the result rather than raised: the next evaluation simply tries again.

use crate::backend::{plan, Backend, BackendError, Change, DesiredRegion, DesiredState};
use crate::model::Decision;
use crate::service::names;
use serde::Serialize;

/// How the last reconcile pass went, as `GET /v1/state` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileResult {
    pub ok: bool,
    pub changes: Vec<Change>,
    /// The failure's code only ([`BackendError::code`]): AWS's message text can name
    /// accounts, roles and resources, and the state is served to whoever may read it.
    pub error: Option<String>,
    /// The whole error text, for the operator's own decision log and stderr; never served.
    #[serde(skip)]
    pub detail: Option<String>,
    pub duration_seconds: f64,
}

/// The backend's target for a decision: every Region's service flag and weight.
pub(crate) fn desired_of(decision: &Decision) -> DesiredState {
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

/// Observe, plan, apply the difference, heartbeat; with its metrics.
pub(crate) async fn reconcile<B: Backend>(backend: &B, desired: &DesiredState) -> ReconcileResult {
    let started = tokio::time::Instant::now();
    let name = backend.name();
    let outcome = async {
        let observed = backend.observe().await?;
        let changes = plan(desired, &observed);
        if !changes.is_empty() {
            backend.apply(&changes, desired).await?;
        }
        backend.heartbeat(desired).await?;
        Ok::<_, BackendError>(changes)
    }
    .await;
    let duration_seconds = started.elapsed().as_secs_f64();
    metrics::histogram!(names::RECONCILE_SECONDS, "backend" => name).record(duration_seconds);
    match outcome {
        Ok(changes) => {
            metrics::counter!(names::RECONCILE_TOTAL, "backend" => name, "result" => "ok")
                .increment(1);
            for c in &changes {
                let kind = match c {
                    Change::Health { .. } => "health",
                    Change::Weight { .. } => "weight",
                };
                metrics::counter!(names::RECONCILE_CHANGES_TOTAL, "backend" => name, "kind" => kind)
                    .increment(1);
            }
            ReconcileResult {
                ok: true,
                changes,
                error: None,
                detail: None,
                duration_seconds,
            }
        }
        Err(e) => {
            metrics::counter!(names::RECONCILE_TOTAL, "backend" => name, "result" => "error")
                .increment(1);
            tracing::error!(error = %e, "reconcile failed; retrying next period");
            ReconcileResult {
                ok: false,
                changes: Vec::new(),
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
    use crate::backend::{DryRun, ObservedState};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn desired(pairs: &[(&str, bool, u8)]) -> DesiredState {
        pairs
            .iter()
            .map(|&(r, in_service, weight)| (r.to_owned(), DesiredRegion { in_service, weight }))
            .collect()
    }

    #[tokio::test]
    async fn applies_only_the_difference() {
        let backend = DryRun::new();
        let want = desired(&[("eu-west-1", true, 100), ("us-east-1", false, 0)]);
        let first = reconcile(&backend, &want).await;
        assert!(first.ok && first.error.is_none());
        assert_eq!(first.changes.len(), 4);
        assert_eq!(backend.applied(), first.changes);

        let again = reconcile(&backend, &want).await;
        assert!(again.ok);
        assert!(again.changes.is_empty(), "{:?}", again.changes);
        assert_eq!(
            backend.applied().len(),
            4,
            "nothing to change writes nothing"
        );

        let next = desired(&[("eu-west-1", true, 120), ("us-east-1", false, 0)]);
        let third = reconcile(&backend, &next).await;
        assert_eq!(
            third.changes,
            vec![Change::Weight {
                region: "eu-west-1".into(),
                from: Some(100),
                to: 120
            }]
        );
    }

    /// Observes nothing, fails every write, counts heartbeats.
    #[derive(Default)]
    struct Broken {
        heartbeats: AtomicUsize,
    }

    impl Backend for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }
        async fn observe(&self) -> Result<ObservedState, BackendError> {
            Ok(ObservedState::new())
        }
        async fn apply(&self, changes: &[Change], _: &DesiredState) -> Result<(), BackendError> {
            Err(BackendError::Apply {
                change: changes[0].to_string(),
                message: "throttled".into(),
            })
        }
        async fn heartbeat(&self, _: &DesiredState) -> Result<(), BackendError> {
            self.heartbeats.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failure_is_reported_not_raised_and_skips_the_heartbeat() {
        let backend = Broken::default();
        let r = reconcile(&backend, &desired(&[("eu-west-1", true, 100)])).await;
        assert!(!r.ok);
        assert!(r.changes.is_empty());
        assert!(r.detail.as_deref().unwrap().contains("throttled"), "{r:?}");
        assert_eq!(
            r.error.as_deref(),
            Some("apply_failed"),
            "the code, not the text"
        );
        assert_eq!(backend.heartbeats.load(Ordering::Relaxed), 0);

        // Nothing to write: the heartbeat still goes out.
        let r = reconcile(&backend, &DesiredState::new()).await;
        assert!(r.ok);
        assert_eq!(backend.heartbeats.load(Ordering::Relaxed), 1);
    }
}
