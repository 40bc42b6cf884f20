//! The figures of a run, computed from its events alone: per fault how long detection,
//! moving traffic and coming back took; transitions no fault explains (false transitions);
//! take-outs beyond one per `fail` (flaps); alerts; with `--services`, per service which
//! Regions went out and came back; and the table printed at the end. Faults and transitions
//! are matched per unit (one service in one Region; the Region alone for a single API).

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
    /// Transitions no fault explains: a take-out of a unit no `fail` covers (nor a `recover`
    /// of it within `slack_seconds`, its evidence still in the window), or a put-back while a
    /// `fail` covers it.
    pub false_transitions: usize,
    /// How long after a `recover` a take-out still counts as the fault's (window + two
    /// evaluations).
    pub slack_seconds: f64,
    /// Take-outs beyond one per `fail`.
    pub flaps: usize,
    pub alerts: usize,
    /// Aggregator replicas in the run (1: the single aggregator).
    pub aggregators: usize,
    /// Replicas stopped, and times a replica took the weights lease.
    pub replica_downs: usize,
    pub lease_acquisitions: usize,
    /// With `--services`: each service's Regions, out and back (empty for a single API).
    pub services: Vec<ServiceOutcome>,
    /// `region_wide` events: a Region down for every service at once (not counting the
    /// `cleared` ones that end such an outage).
    pub region_wide: usize,
    pub events: Vec<Event>,
}

/// One service's Regions over the run (`--services`).
#[derive(Debug, Clone, Serialize)]
pub struct ServiceOutcome {
    pub service: String,
    pub regions: Vec<UnitOutcome>,
}

/// One Region of one service: when it went out and when it came back, in seconds since the
/// start.
#[derive(Debug, Clone, Serialize)]
pub struct UnitOutcome {
    pub region: String,
    pub out: Vec<f64>,
    pub back: Vec<f64>,
}

impl ServiceOutcome {
    /// `eu-west-1 out @12.0s, back @30.0s; us-east-1 out @14.0s (still out)`, or that every
    /// Region stayed in.
    fn line(&self) -> String {
        let moved: Vec<String> = self
            .regions
            .iter()
            .filter(|r| !r.out.is_empty() || !r.back.is_empty())
            .map(|r| {
                let mut parts: Vec<String> = Vec::new();
                let mut times: Vec<(f64, &str)> = r.out.iter().map(|t| (*t, "out")).collect();
                times.extend(r.back.iter().map(|t| (*t, "back")));
                times.sort_by(|a, b| a.0.total_cmp(&b.0));
                for (t, what) in &times {
                    parts.push(format!("{what} @{t:.1}s"));
                }
                let still_out = times.last().is_some_and(|(_, w)| *w == "out");
                format!(
                    "{} {}{}",
                    r.region,
                    parts.join(", "),
                    if still_out { " (still out)" } else { "" }
                )
            })
            .collect();
        if moved.is_empty() {
            "every Region stayed in".to_owned()
        } else {
            moved.join("; ")
        }
    }
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
        out += &format!(
            "false transition = a take-out of a Region no fail covers (nor a recover within \
             {:.0} s: the window plus two evaluations), or a put-back while a fail covers it; \
             flap = a take-out beyond one per fail; alerts = alerts raised (one that holds \
             counts once)\n",
            self.slack_seconds
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
        if !self.services.is_empty() {
            out += "per service, Regions out and back:\n";
            for s in &self.services {
                out += &format!("  {:<16} {}\n", s.service, s.line());
            }
            if self.region_wide > 0 {
                out += &format!(
                    "region-wide outages (a Region out for every service): {}\n",
                    self.region_wide
                );
            }
        }
        out += "Route 53's own health checks: about 30 s at best (fast 10 s checks x 3), then DNS TTL.\n";
        out
    }
}

/// Whether event `e` is about a unit a fault on `region` (and `service`, if it names one)
/// reaches.
fn reaches(e: &Event, region: &str, service: Option<&str>) -> bool {
    e.region.as_deref() == Some(region) && service.is_none_or(|s| e.service.as_deref() == Some(s))
}

/// The figures of a run, from its events.
pub fn summarize(options: &DemoOptions, events: &[Event], elapsed: Duration) -> DemoSummary {
    let first = |from: f64, name: &str, region: &str, service: Option<&str>| {
        events
            .iter()
            .find(|e| e.t >= from && e.event == name && reaches(e, region, service))
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
        let service = s.fault.service();
        match &s.fault {
            Fault::Fail { region, .. } => {
                o.detected_after = first(at, "region_out", region, service).map(|e| e.t - at);
                o.traffic_moved_after = first(at, "traffic_moved", region, service)
                    .and_then(|e| e.detail["moved_at"].as_f64())
                    .map(|moved| (moved - at).max(0.0));
            }
            Fault::Recover { region, .. } => {
                o.back_after = first(at, "region_in", region, service).map(|e| e.t - at)
            }
            _ => {}
        }
        outcomes.push(o);
    }
    // Replay faults against transitions, unit by unit, to find the ones no fault explains.
    let unit_of = |e: &Event| {
        let region = e.region.as_deref().unwrap_or("");
        options.unit_key(e.service.as_deref().unwrap_or(""), region)
    };
    let mut failed: BTreeMap<String, bool> = BTreeMap::new();
    let mut recovered_at: BTreeMap<String, f64> = BTreeMap::new();
    // The demo's window is three probe intervals and it decides every interval.
    let slack = 5.0 * options.probe_interval.as_secs_f64();
    let mut false_transitions = 0;
    let mut outs: BTreeMap<String, usize> = BTreeMap::new();
    let mut transitions = 0;
    let mut timeline: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.event.as_str(), "fault" | "region_out" | "region_in"))
        .collect();
    timeline.sort_by(|a, b| a.t.total_cmp(&b.t));
    for e in timeline {
        // A fault event lists the units it reached when they are not just its Region.
        let fault_units = || -> Vec<String> {
            match e.detail["units"].as_array() {
                Some(units) => units
                    .iter()
                    .filter_map(|u| u.as_str().map(str::to_owned))
                    .collect(),
                None => vec![e.region.clone().unwrap_or_default()],
            }
        };
        match e.event.as_str() {
            "fault" if e.reason.starts_with("fail ") => {
                for u in fault_units() {
                    failed.insert(u, true);
                }
            }
            "fault" if e.reason.starts_with("recover ") => {
                for u in fault_units() {
                    failed.insert(u.clone(), false);
                    recovered_at.insert(u, e.t);
                }
            }
            "region_out" => {
                transitions += 1;
                let unit = unit_of(e);
                let just_recovered = recovered_at.get(&unit).is_some_and(|at| e.t - at <= slack);
                if !failed.get(&unit).copied().unwrap_or(false) && !just_recovered {
                    false_transitions += 1;
                }
                *outs.entry(unit).or_default() += 1;
            }
            "region_in" => {
                transitions += 1;
                if failed.get(&unit_of(e)).copied().unwrap_or(false) {
                    false_transitions += 1;
                }
            }
            _ => {}
        }
    }
    let mut fails: BTreeMap<String, usize> = BTreeMap::new();
    for s in &options.faults {
        if matches!(s.fault, Fault::Fail { .. }) {
            for u in options.fault_units(&s.fault) {
                *fails.entry(u).or_default() += 1;
            }
        }
    }
    let flaps = outs
        .iter()
        .map(|(u, n)| n.saturating_sub(fails.get(u).copied().unwrap_or(0)))
        .sum();
    let count = |name: &str| events.iter().filter(|e| e.event == name).count();
    DemoSummary {
        seconds: elapsed.as_secs_f64(),
        faults: outcomes,
        transitions,
        false_transitions,
        slack_seconds: slack,
        flaps,
        // Alerts raised, not evaluations that saw one: repeats of one that holds do not count.
        alerts: events
            .iter()
            .filter(|e| e.event == "alert" && e.detail["state"] != "repeated")
            .count(),
        aggregators: options.aggregators,
        replica_downs: count("replica_down"),
        lease_acquisitions: count("lease_acquired"),
        services: service_outcomes(options, events),
        region_wide: events
            .iter()
            .filter(|e| e.event == "region_wide" && e.detail["state"] != "cleared")
            .count(),
        events: Vec::new(),
    }
}

/// With `--services`: each service's Regions, when they went out and came back.
fn service_outcomes(options: &DemoOptions, events: &[Event]) -> Vec<ServiceOutcome> {
    if !options.named() {
        return Vec::new();
    }
    let times = |name: &str, service: &str, region: &str| -> Vec<f64> {
        events
            .iter()
            .filter(|e| e.event == name && reaches(e, region, Some(service)))
            .map(|e| e.t)
            .collect()
    };
    options
        .services
        .iter()
        .map(|service| ServiceOutcome {
            service: service.clone(),
            regions: options
                .regions
                .iter()
                .map(|region| UnitOutcome {
                    region: region.clone(),
                    out: times("region_out", service, region),
                    back: times("region_in", service, region),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_region_at;

    fn event(t: f64, name: &str, service: Option<&str>, region: &str, reason: &str) -> Event {
        Event {
            t,
            event: name.into(),
            service: service.map(str::to_owned),
            region: Some(region.into()),
            vantage: None,
            reason: reason.into(),
            detail: serde_json::Value::Null,
        }
    }

    fn fault(t: f64, service: Option<&str>, region: &str, units: &[&str]) -> Event {
        let what = match service {
            Some(s) => format!("fail {s}:{region}"),
            None => format!("fail {region}"),
        };
        Event {
            detail: serde_json::json!({ "units": units }),
            ..event(t, "fault", service, region, &what)
        }
    }

    #[test]
    fn faults_and_transitions_are_matched_per_service_and_region() {
        let options = DemoOptions {
            services: vec!["orders".into(), "payments".into()],
            faults: vec![
                parse_region_at("--fail", "payments:eu-west-1@5", false).unwrap(),
                parse_region_at("--fail", "eu-west-1@20", false).unwrap(),
            ],
            ..DemoOptions::embedded_default()
        };
        let mut events = vec![
            fault(5.0, Some("payments"), "eu-west-1", &["payments/eu-west-1"]),
            event(9.0, "region_out", Some("payments"), "eu-west-1", ""),
            fault(
                20.0,
                None,
                "eu-west-1",
                &["orders/eu-west-1", "payments/eu-west-1"],
            ),
            event(24.0, "region_out", Some("orders"), "eu-west-1", ""),
            event(24.0, "region_wide", None, "eu-west-1", ""),
        ];
        let s = summarize(&options, &events, Duration::from_secs(30));
        assert_eq!((s.transitions, s.false_transitions, s.flaps), (2, 0, 0));
        assert_eq!(s.faults[0].detected_after, Some(4.0));
        assert_eq!(s.faults[1].detected_after, Some(4.0));
        assert_eq!(s.region_wide, 1);
        let eu = |i: usize| &s.services[i].regions[1];
        assert_eq!(
            (s.services[0].service.as_str(), &eu(0).out),
            ("orders", &vec![24.0])
        );
        assert_eq!(
            (s.services[1].service.as_str(), &eu(1).out),
            ("payments", &vec![9.0])
        );
        let text = s.render();
        assert!(
            text.contains("payments") && text.contains("eu-west-1 out @9.0s (still out)"),
            "{text}"
        );
        assert!(text.contains("region-wide outages"), "{text}");

        // orders leaving eu-west-1 while only payments failed there is a false transition.
        events.insert(
            2,
            event(10.0, "region_out", Some("orders"), "eu-west-1", ""),
        );
        let s = summarize(&options, &events, Duration::from_secs(30));
        assert_eq!((s.false_transitions, s.flaps), (1, 1), "{}", s.render());
    }

    #[test]
    fn the_single_api_summary_has_no_service_section() {
        let options = DemoOptions::embedded_default();
        let events = vec![
            event(10.0, "fault", None, "us-east-1", "fail us-east-1"),
            event(14.0, "region_out", None, "us-east-1", ""),
            event(25.0, "fault", None, "us-east-1", "recover us-east-1"),
            event(33.0, "region_in", None, "us-east-1", ""),
        ];
        let s = summarize(&options, &events, Duration::from_secs(50));
        assert_eq!((s.transitions, s.false_transitions, s.flaps), (2, 0, 0));
        assert_eq!(s.faults[0].detected_after, Some(4.0));
        assert_eq!(s.faults[1].back_after, Some(8.0));
        assert!(s.services.is_empty());
        assert!(!s.render().contains("per service"));
    }

    #[test]
    fn a_take_out_just_after_a_recover_is_the_faults_a_later_one_is_false() {
        let options = DemoOptions::embedded_default();
        let slack = 5.0 * options.probe_interval.as_secs_f64();
        let events = vec![
            event(10.0, "fault", None, "us-east-1", "fail us-east-1"),
            event(11.0, "fault", None, "us-east-1", "recover us-east-1"),
            // Out on the failed intervals still in the window: the fault's doing.
            event(11.0 + slack, "region_out", None, "us-east-1", ""),
            event(20.0, "region_in", None, "us-east-1", ""),
            // Out long after the recover, no fault: false.
            event(40.0, "region_out", None, "us-east-1", ""),
        ];
        let s = summarize(&options, &events, Duration::from_secs(50));
        assert_eq!((s.transitions, s.false_transitions), (3, 1));
        let text = s.render();
        assert!(text.contains("false transition = a take-out"), "{text}");
        assert!(text.contains(&format!("within {slack:.0} s")), "{text}");
    }
}
