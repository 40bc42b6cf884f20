//! The last hour as the status page draws it: per unit (service × Region) its verdict, service
//! and weight over time with every transition, per unit and vantage its latency, and the
//! recent decision-log lines. Fed by every evaluation from what it already computed (no extra
//! pass over the window) and bounded: points older than [`HISTORY_SPAN`] are dropped, at most
//! one point per [`TIMELINE_STEP`] (timeline) or [`LATENCY_STEP`] (latency) is kept per series
//! (a transition always is), and [`RECENT_EVENTS`] log lines. 200 services × 3 Regions × 10
//! vantages hold about 10 MB (6,000 latency series of 61 points, 600 timelines of about 125).
//! Pure: time is an argument.

use crate::model::{Decision, RegionObservation, Verdict};
use std::collections::{BTreeMap, VecDeque};

/// How far back the page looks.
pub const HISTORY_SPAN_MS: u64 = 3_600_000;
/// At most one timeline point per unit this often (transitions are always kept).
pub const TIMELINE_STEP_MS: u64 = 30_000;
/// At most one latency point per unit and vantage this often.
pub const LATENCY_STEP_MS: u64 = 60_000;
/// Decision-log lines kept for the page.
pub const RECENT_EVENTS: usize = 50;

/// One unit at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimelinePoint {
    pub at_ms: u64,
    pub in_service: bool,
    pub weight: u8,
    pub verdict: Verdict,
}

/// One vantage's latency of one unit at one evaluation (milliseconds): the weights' quantile
/// (the median by default) and the policy's (`latency_quantile`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyPoint {
    pub at_ms: u64,
    pub typical_ms: Option<f32>,
    pub high_ms: Option<f32>,
}

/// A transition, for the timeline's markers.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub at_ms: u64,
    pub in_service: bool,
    pub cause: String,
}

/// The last hour of every unit.
#[derive(Debug, Default)]
pub struct History {
    pub timeline: BTreeMap<String, VecDeque<TimelinePoint>>,
    pub marks: BTreeMap<String, VecDeque<Mark>>,
    /// Unit → vantage → points.
    pub latency: BTreeMap<String, BTreeMap<String, VecDeque<LatencyPoint>>>,
    pub events: VecDeque<serde_json::Value>,
}

impl History {
    /// Adds one evaluation. `unit_of(service, region)` names a decision's unit, as the
    /// observations are keyed.
    pub fn record(
        &mut self,
        at_ms: u64,
        decision: &Decision,
        observations: &[RegionObservation],
        unit_of: impl Fn(&str, &str) -> String,
    ) {
        let from = at_ms.saturating_sub(HISTORY_SPAN_MS);
        for r in &decision.regions {
            let unit = unit_of(&r.service, &r.region);
            let points = self.timeline.entry(unit.clone()).or_default();
            let changed = points
                .back()
                .is_none_or(|p| p.in_service != r.in_service || p.verdict != r.verdict);
            let due = points
                .back()
                .is_none_or(|p| at_ms >= p.at_ms.saturating_add(TIMELINE_STEP_MS));
            if changed || due {
                points.push_back(TimelinePoint {
                    at_ms,
                    in_service: r.in_service,
                    weight: r.weight,
                    verdict: r.verdict,
                });
            }
            prune(points, from, |p| p.at_ms);
        }
        for t in &decision.transitions {
            let marks = self
                .marks
                .entry(unit_of(&t.service, &t.region))
                .or_default();
            marks.push_back(Mark {
                at_ms,
                in_service: t.in_service,
                cause: serde_json::to_value(t.cause)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            });
        }
        for marks in self.marks.values_mut() {
            prune(marks, from, |m| m.at_ms);
        }
        for o in observations {
            let by_vantage = self.latency.entry(o.region.clone()).or_default();
            for s in &o.vantages {
                let points = by_vantage.entry(s.vantage.clone()).or_default();
                if points
                    .back()
                    .is_none_or(|p| at_ms >= p.at_ms.saturating_add(LATENCY_STEP_MS))
                {
                    points.push_back(LatencyPoint {
                        at_ms,
                        typical_ms: s.weight_latency.map(|d| d.as_secs_f32() * 1e3),
                        high_ms: s.limit_latency.map(|d| d.as_secs_f32() * 1e3),
                    });
                }
                prune(points, from, |p| p.at_ms);
            }
        }
        // Units that left the fleet (a reload) age out with their last point.
        self.timeline.retain(|_, p| !p.is_empty());
        self.marks.retain(|_, m| !m.is_empty());
        for by_vantage in self.latency.values_mut() {
            by_vantage.retain(|_, p| !p.is_empty());
        }
        self.latency.retain(|_, v| !v.is_empty());
    }

    /// Keeps a decision-log line for the page (the newest [`RECENT_EVENTS`]).
    pub fn log(&mut self, event: &serde_json::Value) {
        if self.events.len() == RECENT_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event.clone());
    }
}

fn prune<T>(points: &mut VecDeque<T>, from_ms: u64, at: impl Fn(&T) -> u64) {
    while points.front().is_some_and(|p| at(p) < from_ms) {
        points.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cause, RegionDecision, Transition, VantageSample};
    use std::time::Duration;

    fn decision(in_service: bool, transition: bool) -> Decision {
        Decision {
            at: Duration::ZERO,
            regions: vec![RegionDecision {
                service: "orders".into(),
                region: "eu-west-1".into(),
                verdict: if in_service {
                    Verdict::Up
                } else {
                    Verdict::Down
                },
                vantages: BTreeMap::new(),
                in_service,
                weight: if in_service { 200 } else { 0 },
                cause: Cause::Steady,
                reason: String::new(),
            }],
            transitions: if transition {
                vec![Transition {
                    service: "orders".into(),
                    region: "eu-west-1".into(),
                    in_service,
                    cause: Cause::QuorumDown,
                    reason: String::new(),
                }]
            } else {
                Vec::new()
            },
            alerts: Vec::new(),
        }
    }

    fn seen(ms: u64) -> Vec<RegionObservation> {
        vec![RegionObservation {
            region: "eu-west-1".into(),
            vantages: vec![VantageSample {
                vantage: "us-east-1".into(),
                attempts: 10,
                failures: 0,
                limit_latency: Some(Duration::from_millis(ms * 2)),
                weight_latency: Some(Duration::from_millis(ms)),
            }],
        }]
    }

    #[test]
    fn points_are_thinned_transitions_kept_and_the_hour_bounded() {
        let mut h = History::default();
        let unit = |_: &str, r: &str| r.to_owned();
        // Every 5 s for two hours; out of service between 1:30:00 and 1:31:00.
        for i in 0..1440u64 {
            let at = i * 5_000;
            let out = (1080..1092).contains(&i);
            let transition = i == 1080 || i == 1092;
            h.record(at, &decision(!out, transition), &seen(40 + i % 7), unit);
        }
        let timeline = &h.timeline["eu-west-1"];
        assert!(timeline.front().unwrap().at_ms >= 7_200_000 - 5_000 - HISTORY_SPAN_MS);
        // 120 steps in the hour, plus the points where the verdict changed.
        assert!(timeline.len() <= 125, "{}", timeline.len());
        assert!(timeline
            .iter()
            .any(|p| !p.in_service && p.at_ms == 1080 * 5_000));
        assert_eq!(h.marks["eu-west-1"].len(), 2);
        assert_eq!(h.marks["eu-west-1"][0].cause, "quorum_down");
        let latency = &h.latency["eu-west-1"]["us-east-1"];
        assert!(latency.len() <= 61, "{}", latency.len());
        assert!(latency.iter().all(|p| p.typical_ms.is_some()));
    }

    #[test]
    fn the_log_keeps_the_newest_lines() {
        let mut h = History::default();
        for i in 0..(RECENT_EVENTS + 10) {
            h.log(&serde_json::json!({ "n": i }));
        }
        assert_eq!(h.events.len(), RECENT_EVENTS);
        assert_eq!(h.events.front().unwrap()["n"], 10);
    }
}
