//! Each evaluation during a run: when it happens (just after an interval's reports have
//! landed, so every evaluation sees the same complete intervals) and what it turns into: the
//! replicas' votes combined as Route 53 would ([`crate::combine`]), the global endpoint routed
//! by the lease holder's weights, `region_out`/`region_in` (the single aggregator's, or
//! Route 53's with the votes behind it), `alert`, `weights` and `plan_applied` events, and
//! `traffic_moved` once a failed Region's weight is 0 and the global endpoint has since routed
//! connections, none of them to it. With `--services` all of it is per unit (one service in one
//! Region): weights, votes and routing by unit key, events naming the service.

use crate::combine::{combine, weight_writer, write_weights, CombinedRegion};
use crate::events::Events;
use crate::net::Network;
use crate::replicas::{Replica, Replicas};
use crate::scenario::DemoOptions;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use vantage_aggregator::alerts::{AlertBook, AlertState};

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
    /// The weights last announced (what the global endpoints route by), by unit key.
    weights: BTreeMap<String, u8>,
    /// The weighted records as the lease holder last wrote them, and which replica that was.
    records: BTreeMap<String, u8>,
    writer: Option<String>,
    /// Route 53's view after the last evaluation, by unit key.
    pub(crate) combined: BTreeMap<String, CombinedRegion>,
    /// Failed unit → (time its weight went to 0, connections its service's global endpoint
    /// had routed then, to it then, traffic_moved reported).
    zeroed: BTreeMap<String, (f64, u64, u64, bool)>,
    /// Each replica's alerts as states: an alert is told when raised, repeated and resolved,
    /// never once per evaluation.
    alert_books: BTreeMap<String, AlertBook>,
}

impl Decisions {
    pub(crate) fn new(start: Instant) -> Decisions {
        Decisions {
            start,
            weights: BTreeMap::new(),
            records: BTreeMap::new(),
            writer: None,
            combined: BTreeMap::new(),
            zeroed: BTreeMap::new(),
            alert_books: BTreeMap::new(),
        }
    }

    /// Acts on one round of decisions (`fresh`: the replicas that decided since the last
    /// round): combines the replicas' votes as Route 53 would, routes the global endpoint and
    /// emits what changed. Returns the connections the global endpoints have routed per
    /// unit, for the view.
    pub(crate) fn record(
        &mut self,
        replicas: &Replicas,
        fresh: &[String],
        options: &DemoOptions,
        net: &Network,
        events: &mut Events,
    ) -> BTreeMap<String, (u64, u64)> {
        let single = !replicas.replicated();
        let units: Vec<String> = options.units().into_iter().map(|u| u.key).collect();
        for replica in replicas.members.iter().filter(|r| fresh.contains(&r.id)) {
            let Some(snapshot) = &replica.last else {
                continue;
            };
            if single {
                // The single aggregator's transitions are the Region's transitions.
                for t in &snapshot.decision.transitions {
                    let name = if t.in_service {
                        "region_in"
                    } else {
                        "region_out"
                    };
                    events.emit_for(
                        name,
                        options.event_service(&t.service),
                        Some(&t.region),
                        None,
                        t.reason.clone(),
                        serde_json::Value::Null,
                    );
                }
            }
            let book = self.alert_books.entry(replica.id.clone()).or_default();
            let told = book.update(
                &snapshot.decision.alerts,
                snapshot.at_ms,
                vantage_aggregator::alerts::DEFAULT_ALERT_REPEAT,
            );
            for (state, a) in told {
                let mut detail = serde_json::json!({"kind": a.kind, "state": state});
                if !single {
                    detail["replica"] = replica.id.clone().into();
                }
                let (name, text) = if state == AlertState::Resolved {
                    ("alert_resolved", format!("resolved: {}", a.message))
                } else {
                    ("alert", a.message.clone())
                };
                events.emit_for(
                    name,
                    options.event_service(&a.service),
                    a.region.as_deref(),
                    None,
                    text,
                    detail,
                );
            }
        }

        // Weights: only the lease holder's reach the records; without one they stay put.
        let writer = if single {
            replicas.members.first().filter(|r| r.is_up())
        } else {
            let holders = replicas
                .members
                .iter()
                .filter_map(|r| Some((r.id.as_str(), r.holds_lease()?)));
            weight_writer(holders).and_then(|id| replicas.members.iter().find(|r| r.id == id))
        };
        let written: Option<BTreeMap<String, u8>> = writer.and_then(|r| r.last.as_ref()).map(|s| {
            s.decision
                .regions
                .iter()
                .map(|r| {
                    let unit = options.unit_key(&r.service, &r.region);
                    (unit, if r.in_service { r.weight } else { 0 })
                })
                .collect()
        });
        self.records = write_weights(&self.records, written.as_ref());
        let combined = combine(&units, &replicas.votes(), &self.records);
        if !single {
            self.combined_transitions(replicas, &combined, options, events);
        }
        self.combined = combined;

        let new_weights: BTreeMap<String, u8> = self
            .combined
            .iter()
            .map(|(region, c)| (region.clone(), c.weight))
            .collect();
        net.routing.set_weights(new_weights.clone());
        let writer = writer.map(|r| r.id.clone());
        // With replicas, a new writer is news too: weights resume after a lease failover.
        let new_writer = !single && writer.is_some() && writer != self.writer;
        if new_weights != self.weights || new_writer {
            let reason = match (&writer, single) {
                (_, true) => format!("{new_weights:?}"),
                (Some(id), false) => format!("{new_weights:?} (written by lease holder {id})"),
                (None, false) => format!("{new_weights:?} (no lease holder: records unchanged)"),
            };
            let detail = if single {
                serde_json::to_value(&new_weights).unwrap_or_default()
            } else {
                serde_json::json!({"weights": new_weights, "writer": writer})
            };
            events.emit("weights", None, None, reason, detail);
            self.weights = new_weights;
        }
        if writer.is_some() {
            self.writer = writer;
        }
        if single {
            let changes: Vec<String> = replicas
                .members
                .iter()
                .filter(|r| fresh.contains(&r.id))
                .filter_map(|r| r.last.as_ref())
                .flat_map(|s| s.reconcile.changes.iter().map(|c| c.to_string()))
                .collect();
            if !changes.is_empty() {
                let all: Vec<_> = replicas
                    .members
                    .iter()
                    .filter_map(|r| r.last.as_ref())
                    .flat_map(|s| s.reconcile.changes.clone())
                    .collect();
                events.emit(
                    "plan_applied",
                    None,
                    None,
                    changes.join("; "),
                    serde_json::to_value(&all).unwrap_or_default(),
                );
            }
        }
        self.traffic_moved(options, net, events)
    }

    /// `region_out` / `region_in` when Route 53's CALCULATED check changes, naming the votes.
    fn combined_transitions(
        &self,
        replicas: &Replicas,
        combined: &BTreeMap<String, CombinedRegion>,
        options: &DemoOptions,
        events: &mut Events,
    ) {
        let is =
            |unit: &str, service: &str, region: &str| options.unit_key(service, region) == unit;
        for (unit, c) in combined {
            let was = self.combined.get(unit).is_none_or(|p| p.in_service);
            if was == c.in_service {
                continue;
            }
            // The reason of a live replica that voted this way, preferring one that has just
            // moved the Region itself.
            let agreeing = replicas.members.iter().filter(|r| {
                r.is_up()
                    && c.votes
                        .get(&r.id)
                        .is_some_and(|v| v.healthy == c.in_service)
            });
            let reason_of = |r: &Replica| -> Option<(String, bool)> {
                let s = r.last.as_ref()?;
                let moved = s
                    .decision
                    .transitions
                    .iter()
                    .find(|t| is(unit, &t.service, &t.region));
                let text = match moved {
                    Some(t) => t.reason.clone(),
                    None => s
                        .decision
                        .regions
                        .iter()
                        .find(|d| is(unit, &d.service, &d.region))?
                        .reason
                        .clone(),
                };
                Some((format!("replica {}: {text}", r.id), moved.is_some()))
            };
            let mut reasons: Vec<(String, bool)> = agreeing.filter_map(reason_of).collect();
            reasons.sort_by_key(|(_, moved)| !moved);
            let voters: Vec<&String> = c
                .votes
                .iter()
                .filter(|(_, v)| v.healthy == c.in_service)
                .map(|(id, _)| id)
                .collect();
            let name = if c.in_service {
                "region_in"
            } else {
                "region_out"
            };
            let reason = format!(
                "Route 53: {} of {} replicas vote healthy (threshold {}); {}",
                c.healthy_votes,
                c.votes.len(),
                c.threshold,
                reasons
                    .first()
                    .map_or("no live replica agrees", |(r, _)| r.as_str())
            );
            let (service, region) = match options.unit(unit) {
                Some(u) => (u.service, u.region),
                None => (None, unit.clone()),
            };
            events.emit_for(
                name,
                service.as_deref(),
                Some(&region),
                None,
                reason,
                serde_json::json!({"voters": voters, "votes": c.votes, "threshold": c.threshold}),
            );
        }
    }

    /// Traffic has moved once the failed unit's weight is 0 and its service's global endpoint
    /// has since routed a few connections, none of them to it.
    fn traffic_moved(
        &mut self,
        options: &DemoOptions,
        net: &Network,
        events: &mut Events,
    ) -> BTreeMap<String, (u64, u64)> {
        let routed = net.routing.routed();
        let by_service = options.units_by_service();
        for u in options.units() {
            let r = &u.key;
            let service_units = u
                .service
                .as_ref()
                .and_then(|s| by_service.get(s))
                .or_else(|| by_service.values().next());
            let total = service_units.map_or(0, |units| net.routing.total_of(units));
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
                let name = &u.region;
                events.emit_for(
                    "traffic_moved",
                    u.service.as_deref(),
                    Some(name),
                    None,
                    format!("weight 0 since t = {at:.1} s; {since} global-endpoint connections since, none to {r}"),
                    serde_json::json!({"moved_at": at, "connections_since": since}),
                );
            }
        }
        routed
    }
}
