//! Each evaluation of the aggregator during a run: when it happens (just after an interval's
//! reports have landed, so every evaluation sees the same complete intervals) and what it
//! turns into: the global endpoint routed by the new weights, `region_out`/`region_in`,
//! `alert`, `weights` and `plan_applied` events, and `traffic_moved` once a failed Region's
//! weight is 0 and the global endpoint has since routed connections, none of them to it.

use crate::events::Events;
use crate::net::Network;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use vantage_aggregator::service::Snapshot;

/// Ticks every `evaluate_every`, at 60 % into each wall-clock period (agents collect an
/// interval a quarter interval after it ends).
pub(crate) fn evaluation_ticks(start: Instant, evaluate_every: Duration) -> Interval {
    let phase = {
        let now_ms = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let every_ms = evaluate_every.as_millis().max(1) as u64;
        let target = every_ms * 6 / 10;
        Duration::from_millis((target + every_ms - now_ms % every_ms) % every_ms)
    };
    let mut tick = tokio::time::interval_at(start + phase, evaluate_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// What the run remembers between evaluations.
pub(crate) struct Decisions {
    start: Instant,
    /// The weights last announced.
    weights: BTreeMap<String, u8>,
    /// Failed Region → (time its weight went to 0, connections routed in all then, to it
    /// then, traffic_moved reported).
    zeroed: BTreeMap<String, (f64, u64, u64, bool)>,
}

impl Decisions {
    pub(crate) fn new(start: Instant) -> Decisions {
        Decisions {
            start,
            weights: BTreeMap::new(),
            zeroed: BTreeMap::new(),
        }
    }

    /// Acts on one evaluation: routes the global endpoint and emits what changed. Returns
    /// the connections the global endpoint has routed per Region, for the view.
    pub(crate) fn record(
        &mut self,
        snapshot: &Snapshot,
        regions: &[String],
        net: &Network,
        events: &mut Events,
    ) -> BTreeMap<String, (u64, u64)> {
        let new_weights: BTreeMap<String, u8> = snapshot
            .decision
            .regions
            .iter()
            .map(|r| (r.region.clone(), if r.in_service { r.weight } else { 0 }))
            .collect();
        net.routing.set_weights(new_weights.clone());
        for t in &snapshot.decision.transitions {
            let name = if t.in_service {
                "region_in"
            } else {
                "region_out"
            };
            events.emit(
                name,
                Some(&t.region),
                None,
                t.reason.clone(),
                serde_json::Value::Null,
            );
        }
        for a in &snapshot.decision.alerts {
            events.emit(
                "alert",
                a.region.as_deref(),
                None,
                a.message.clone(),
                serde_json::json!({"kind": a.kind}),
            );
        }
        if new_weights != self.weights {
            events.emit(
                "weights",
                None,
                None,
                format!("{new_weights:?}"),
                serde_json::to_value(&new_weights).unwrap_or_default(),
            );
            self.weights = new_weights;
        }
        if !snapshot.reconcile.changes.is_empty() {
            let changes: Vec<String> = snapshot
                .reconcile
                .changes
                .iter()
                .map(|c| c.to_string())
                .collect();
            events.emit(
                "plan_applied",
                None,
                None,
                changes.join("; "),
                serde_json::to_value(&snapshot.reconcile.changes).unwrap_or_default(),
            );
        }
        self.traffic_moved(regions, net, events)
    }

    /// Traffic has moved once the failed Region's weight is 0 and the global endpoint has
    /// since routed a few connections, none of them to it.
    fn traffic_moved(
        &mut self,
        regions: &[String],
        net: &Network,
        events: &mut Events,
    ) -> BTreeMap<String, (u64, u64)> {
        let routed = net.routing.routed();
        let total = net.routing.total();
        for r in regions {
            let out = self.weights.get(r) == Some(&0);
            let to_r = routed.get(r).map_or(0, |(n, _)| *n);
            if !(net.faults.is_failed(r) && out) {
                self.zeroed.remove(r);
                continue;
            }
            let (at, total_then, to_r_then, reported) = self.zeroed.entry(r.clone()).or_insert((
                self.start.elapsed().as_secs_f64(),
                total,
                to_r,
                false,
            ));
            if !*reported && total >= *total_then + 3 && to_r == *to_r_then {
                *reported = true;
                let since = total - *total_then;
                let at = *at;
                events.emit(
                    "traffic_moved",
                    Some(r),
                    None,
                    format!("weight 0 since t = {at:.1} s; {since} global-endpoint connections since, none to {r}"),
                    serde_json::json!({"moved_at": at, "connections_since": since}),
                );
            }
        }
        routed
    }
}
