//! The figures of a run, computed from its events alone: per fault how long detection,
//! moving traffic and coming back took; transitions no fault explains (false transitions);
//! take-outs beyond one per `fail` (flaps); alerts; and the table printed at the end.

use crate::events::Event;
use crate::scenario::{DemoOptions, Fault};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What happened to one fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultOutcome {
    pub fault: String,
    pub at: f64,
    /// Fault → `region_out`, for `fail`: the detection-to-published-unhealthy time (with
    /// replicas, until Route 53's combined view took the Region out).
    pub detected_after: Option<f64>,
    /// Fault → the global endpoint stopped routing to the Region (its weight went to 0), as
    /// confirmed by connections routed elsewhere afterwards.
    pub traffic_moved_after: Option<f64>,
    /// Recovery → `region_in`, for `recover`.
    pub back_after: Option<f64>,
}

/// The run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub seconds: f64,
    pub faults: Vec<FaultOutcome>,
    pub transitions: usize,
    /// Transitions no fault explains (a Region out while healthy, in while failed).
    pub false_transitions: usize,
    /// Take-outs beyond one per `fail`.
    pub flaps: usize,
    pub alerts: usize,
    /// Aggregator replicas in the run (1: the single aggregator).
    pub aggregators: usize,
    /// Replicas stopped, and times a replica took the weights lease.
    pub replica_downs: usize,
    pub lease_acquisitions: usize,
    pub events: Vec<Event>,
}

impl DemoSummary {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let replicas = if self.aggregators > 1 {
            format!(
                ", {} aggregator replicas, majority {}",
                self.aggregators,
                crate::combine::threshold(self.aggregators)
            )
        } else {
            String::new()
        };
        out += &format!("\nvantage demo summary ({:.0} s{replicas})\n", self.seconds);
        out += &format!(
            "{:<34} {:>12} {:>15} {:>14}\n",
            "fault", "detected", "traffic moved", "back in"
        );
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("+{s:.1} s"));
        for o in &self.faults {
            out += &format!(
                "{:<34} {:>12} {:>15} {:>14}\n",
                format!("{} @{:.0}s", o.fault, o.at),
                f(o.detected_after),
                f(o.traffic_moved_after),
                f(o.back_after)
            );
        }
        out += &format!(
            "transitions {}, false transitions {}, flaps {}, alerts {}\n",
            self.transitions, self.false_transitions, self.flaps, self.alerts
        );
        if self.aggregators > 1 {
            out += &format!(
                "detected = fault to Route 53's combined view taking the Region out \
                 (published unhealthy by {} of {} replicas)\n",
                crate::combine::threshold(self.aggregators),
                self.aggregators
            );
            out += &format!(
                "replicas stopped {}, lease acquisitions {}\n",
                self.replica_downs, self.lease_acquisitions
            );
        }
        out += "Route 53's own health checks: about 30 s at best (fast 10 s checks x 3), then DNS TTL.\n";
        out
    }
}

/// The figures of a run, from its events.
pub fn summarize(options: &DemoOptions, events: &[Event], elapsed: Duration) -> DemoSummary {
    let after = |from: f64, name: &str, region: &str| {
        events
            .iter()
            .find(|e| e.t >= from && e.event == name && e.region.as_deref() == Some(region))
            .map(|e| e.t - from)
    };
    let mut outcomes = Vec::new();
    for s in &options.faults {
        let at = s.at.as_secs_f64();
        let mut o = FaultOutcome {
            fault: s.fault.describe(),
            at,
            detected_after: None,
            traffic_moved_after: None,
            back_after: None,
        };
        match &s.fault {
            Fault::Fail { region } => {
                o.detected_after = after(at, "region_out", region);
                o.traffic_moved_after = events
                    .iter()
                    .find(|e| {
                        e.t >= at
                            && e.event == "traffic_moved"
                            && e.region.as_deref() == Some(region)
                    })
                    .and_then(|e| e.detail["moved_at"].as_f64())
                    .map(|moved| (moved - at).max(0.0));
            }
            Fault::Recover { region } => o.back_after = after(at, "region_in", region),
            _ => {}
        }
        outcomes.push(o);
    }
    // Replay faults against transitions to find the ones no fault explains.
    let mut failed: BTreeMap<&str, bool> = BTreeMap::new();
    let mut false_transitions = 0;
    let mut outs: BTreeMap<&str, usize> = BTreeMap::new();
    let mut transitions = 0;
    let mut timeline: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.event.as_str(), "fault" | "region_out" | "region_in"))
        .collect();
    timeline.sort_by(|a, b| a.t.total_cmp(&b.t));
    for e in timeline {
        let region = e.region.as_deref().unwrap_or("");
        match e.event.as_str() {
            "fault" if e.reason.starts_with("fail ") => {
                failed.insert(region, true);
            }
            "fault" if e.reason.starts_with("recover ") => {
                failed.insert(region, false);
            }
            "region_out" => {
                transitions += 1;
                *outs.entry(region).or_default() += 1;
                if !failed.get(region).copied().unwrap_or(false) {
                    false_transitions += 1;
                }
            }
            "region_in" => {
                transitions += 1;
                if failed.get(region).copied().unwrap_or(false) {
                    false_transitions += 1;
                }
            }
            _ => {}
        }
    }
    let fails: BTreeMap<&str, usize> = options
        .faults
        .iter()
        .filter_map(|s| match &s.fault {
            Fault::Fail { region } => Some(region.as_str()),
            _ => None,
        })
        .fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r).or_default() += 1;
            m
        });
    let flaps = outs
        .iter()
        .map(|(r, n)| n.saturating_sub(fails.get(r).copied().unwrap_or(0)))
        .sum();
    DemoSummary {
        seconds: elapsed.as_secs_f64(),
        faults: outcomes,
        transitions,
        false_transitions,
        flaps,
        alerts: events.iter().filter(|e| e.event == "alert").count(),
        aggregators: options.aggregators,
        replica_downs: events.iter().filter(|e| e.event == "replica_down").count(),
        lease_acquisitions: events
            .iter()
            .filter(|e| e.event == "lease_acquired")
            .count(),
        events: Vec::new(),
    }
}
