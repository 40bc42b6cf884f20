//! Where the aggregator raises notification events: transitions and the alerts people must
//! hear of at once (from the evaluation), overrides (from the API), repeated control-plane
//! failures (from the planes). With replicas only the lease holder notifies, so one change is
//! told once; a single aggregator always does.

use super::silence::SilenceChange;
use super::NotifyEvent;
use crate::alerts::{ActiveAlert, AlertState};
use crate::backend::Backend;
use crate::model::{AlertKind, Decision};
use crate::reconcile::{PlaneKind, ReconcileResult};
use crate::service::{lock, Aggregator};
use vantage_protocol::config::EventKind;

impl<B: Backend> Aggregator<B> {
    /// True when this process may notify: no lease, or it holds it.
    fn notifies(&self) -> bool {
        self.lease_status().is_none_or(|l| l.held)
    }

    /// Builds an event of this fleet and queues it; nothing when no sink is configured or
    /// another replica holds the lease.
    pub(crate) fn notify_with(
        &self,
        kind: EventKind,
        at_ms: u64,
        service: Option<&str>,
        region: Option<&str>,
        reason: String,
        by: Option<&str>,
    ) {
        let Some(n) = &self.notifier else { return };
        if !self.notifies() {
            return;
        }
        let mut event: NotifyEvent = n.event(kind, at_ms, service, region, reason);
        if let Some(by) = by {
            event = event.with_by(by);
        }
        n.notify(event);
    }

    /// A service's name for events: `None` would be the fleet-wide kind.
    fn service_name(&self, service: &str) -> String {
        if service.is_empty() {
            self.config().fleet.fleet.name.get_ref().clone()
        } else {
            service.to_owned()
        }
    }

    /// `override`, with who and the request's nonce in its id (two overrides in one
    /// millisecond are two events).
    pub(crate) fn notify_override(
        &self,
        at_ms: u64,
        service: Option<&str>,
        reason: String,
        by: &str,
        nonce: &str,
    ) {
        let Some(n) = &self.notifier else { return };
        if !self.notifies() {
            return;
        }
        let mut event = n
            .event(EventKind::Override, at_ms, service, None, reason)
            .with_by(by);
        event.id = format!("{}/{nonce}", event.id);
        n.notify(event);
    }

    /// `region_out` / `region_in` for every transition.
    pub(crate) fn notify_transitions(&self, now_ms: u64, decision: &Decision) {
        for t in &decision.transitions {
            let kind = if t.in_service {
                EventKind::RegionIn
            } else {
                EventKind::RegionOut
            };
            let service = self.service_name(&t.service);
            self.notify_with(
                kind,
                now_ms,
                Some(&service),
                Some(&t.region),
                t.reason.clone(),
                None,
            );
        }
    }

    /// `correlated_failure` and `fail_open` when raised (not when repeated or resolved).
    pub(crate) fn notify_alert(&self, now_ms: u64, state: AlertState, a: &ActiveAlert) {
        let kind = match a.kind {
            AlertKind::CorrelatedFailure => EventKind::CorrelatedFailure,
            AlertKind::FailOpen => EventKind::FailOpen,
            _ => return,
        };
        if state != AlertState::Raised {
            return;
        }
        let service = self.service_name(&a.service);
        self.notify_with(
            kind,
            now_ms,
            Some(&service),
            a.region.as_deref(),
            a.message.clone(),
            None,
        );
    }

    /// `agent_silent` lines (decision log) and events: a vantage with no report for
    /// `agent_silent_after` report intervals, and again when it reports.
    pub(crate) fn check_silence(&self, now_ms: u64) {
        let config = self.config();
        let vantages: Vec<String> = config
            .fleet
            .vantages
            .iter()
            .map(|v| v.region.get_ref().clone())
            .collect();
        let after =
            config.fleet.report_interval() * config.fleet.notifications.agent_silent_after();
        let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        let changes = lock(&self.silence).check(&vantages, now_ms, after_ms);
        for change in changes {
            match change {
                SilenceChange::Silent { vantage, last_ms } => {
                    let since = last_ms.map_or("since the aggregator started".to_owned(), |ms| {
                        format!("since {}", vantage_protocol::config::format_rfc3339_ms(ms))
                    });
                    let reason = format!(
                        "vantage {vantage} has not reported for {} s ({since}): its verdicts no longer count",
                        after.as_secs()
                    );
                    self.log_event(serde_json::json!({
                        "event": "agent_silent", "at_ms": now_ms, "vantage": vantage,
                        "state": "silent", "last_report_ms": last_ms, "reason": reason,
                    }));
                    self.notify_with(
                        EventKind::AgentSilent,
                        now_ms,
                        None,
                        Some(&vantage),
                        reason,
                        None,
                    );
                }
                SilenceChange::Reporting { vantage } => {
                    self.log_event(serde_json::json!({
                        "event": "agent_silent", "at_ms": now_ms, "vantage": vantage,
                        "state": "reporting", "reason": format!("vantage {vantage} reports again"),
                    }));
                }
            }
        }
    }

    /// `reconcile_failed` once a plane has failed `reconcile_failed_after` passes in a row
    /// (told once per run of failures; only the error's code, never AWS's message text).
    pub(crate) fn notify_plane_result(
        &self,
        kind: PlaneKind,
        result: &ReconcileResult,
        now_ms: u64,
    ) {
        let after = self.config().fleet.notifications.reconcile_failed_after();
        let i = match kind {
            PlaneKind::Health => 0,
            PlaneKind::Weights => 1,
        };
        let failures = {
            let mut f = lock(&self.plane_failures);
            f[i] = if result.ok { 0 } else { f[i].saturating_add(1) };
            f[i]
        };
        if failures == after {
            let reason = format!(
                "the {} plane failed {failures} passes in a row ({}); Route 53 may not match the decision",
                kind.label(),
                result.error.as_deref().unwrap_or("error")
            );
            self.notify_with(EventKind::ReconcileFailed, now_ms, None, None, reason, None);
        }
    }
}
