//! Broken vantages: before any Region is judged, each vantage is judged. A vantage whose own
//! network fails sees every Region fail at once; counted like the others it would take Regions
//! out (two such vantages make a quorum of three) or, with the correlated-failure hold, freeze
//! the fleet. [`assess_vantages`] finds them, over every service at once, so that their votes
//! stop counting until they look healthy again.
//!
//! The rules, each evaluation, from the window's observations (`max_failure_ratio` and
//! `min_attempts` are the fleet-wide `[policy]`'s for the control target and the pooled ratio,
//! each unit's service's for that unit):
//!
//! - **Control target failing**: a vantage whose control target (`vantages[].control_url`)
//!   failed more than half of `max_failure_ratio` of at least `min_attempts` probes is
//!   suspect. The control target is something outside the fleet chosen to be stable (another
//!   vantage's agent, a stable endpoint), so half the Regions' bar is already far beyond its
//!   normal noise, and its failing says the vantage's own path is broken.
//! - **Everything failing, contradicted**: a vantage with data on at least two units (service
//!   × Region, across every service) whose probes fail in every one of them (more than half of
//!   `max_failure_ratio` each, the Region it runs in included, when it is one) and more than
//!   `max_failure_ratio` of them pooled, is suspect when another vantage, itself not suspect by
//!   either rule, sees one of those units `up`. The pooled ratio is what makes the rule work on
//!   a short window: a vantage dropping 60 % of its connections fails six probes of ten
//!   everywhere, but on five attempts per unit its per-unit verdicts are a coin toss. Only a
//!   clear `up` contradicts (an `up` verdict with no more than half of `max_failure_ratio`
//!   failed): while a real failure spreads, one vantage's window may hold one more failed
//!   interval than another's. Without a contradiction (every vantage sees everything failing) nobody is suspect: that is the
//!   correlated failure the hold in `safety.rs` is for.
//! - A vantage whose control target failed no more than that bar, with at least `min_attempts`
//!   probes, is **confirmed**.
//!
//! How [`super::evaluate`] uses this: a suspect vantage's verdict is shown but does not vote
//! (nor count towards the Region's health and latency). The quorum is counted over the vantages
//! left; its "never fewer than two" floor becomes one only when at least one vantage was left
//! out as suspect and the one vantage left with a verdict on the Region is confirmed by its
//! control target. So a real failure seen by the last healthy vantage, whose own path is proven
//! good, still takes the Region out, while one noisy vantage among healthy ones never can.

use super::verdict::{merge_observations, vantage_verdict};
use crate::config::ServiceConfig;
use crate::model::{Policy, RegionObservation, VantageSample, Verdict};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Why a vantage's votes do not count in this evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum Suspicion {
    /// Its control target failed `failures` of `attempts`.
    ControlFailing { failures: u64, attempts: u64 },
    /// It saw all of the `units` it has verdicts on down, while `contradicted_by` saw
    /// `unit` up.
    EverythingFailing {
        units: usize,
        contradicted_by: String,
        unit: String,
    },
}

/// How far each vantage can be trusted in one evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VantageHealth {
    /// The vantages whose verdicts do not vote, and why.
    pub suspect: BTreeMap<String, Suspicion>,
    /// The vantages whose control target passed.
    pub confirmed: BTreeSet<String>,
}

impl VantageHealth {
    pub fn is_suspect(&self, vantage: &str) -> bool {
        self.suspect.contains_key(vantage)
    }

    pub fn is_confirmed(&self, vantage: &str) -> bool {
        self.confirmed.contains(vantage)
    }
}

impl Suspicion {
    /// The reason in words.
    pub fn describe(&self, vantage: &str) -> String {
        match self {
            Suspicion::ControlFailing { failures, attempts } => format!(
                "vantage {vantage} is suspect: its control target failed {failures} of \
                 {attempts} probes, so its own network is the likeliest cause of what it sees; \
                 its votes do not count until it passes again"
            ),
            Suspicion::EverythingFailing {
                units,
                contradicted_by,
                unit,
            } => format!(
                "vantage {vantage} is suspect: its probes fail in all {units} units it probes \
                 while {contradicted_by} sees {unit} up, so its own network is the likeliest \
                 cause; its votes do not count until its probes pass again"
            ),
        }
    }
}

/// Judges every vantage: see the module documentation. `controls` holds each vantage's
/// control-target figures over the window (vantages without one are absent); `fleet_policy` is
/// the fleet-wide policy they, and the pooled ratios, are judged by.
pub fn assess_vantages(
    services: &[ServiceConfig],
    observations: &[RegionObservation],
    controls: &[VantageSample],
    fleet_policy: &Policy,
) -> VantageHealth {
    let mut health = VantageHealth::default();
    let bar = fleet_policy.max_failure_ratio / 2.0;
    for control in controls {
        if control.attempts == 0 || control.attempts < fleet_policy.min_attempts {
            continue;
        }
        let failures = control.failures.min(control.attempts);
        if failures as f64 / control.attempts as f64 > bar {
            health.suspect.insert(
                control.vantage.clone(),
                Suspicion::ControlFailing {
                    failures,
                    attempts: control.attempts,
                },
            );
        } else {
            health.confirmed.insert(control.vantage.clone());
        }
    }

    // What each vantage saw of each unit, judged by the unit's service policy.
    // One pass of totals per vantage; which units each vantage saw up is only gathered in a
    // second pass, and only when some vantage fails everywhere (rare): at 1,000 Regions and
    // 30 vantages a map of 30,000 entries per evaluation was half of the decision's time.
    let merged: Vec<_> = services
        .iter()
        .map(|service| {
            let units = service.units();
            let names: BTreeSet<&str> = units.iter().map(String::as_str).collect();
            (service, merge_observations(&names, observations))
        })
        .collect();
    let judged = || {
        merged.iter().flat_map(|(service, units)| {
            units.iter().flat_map(move |(unit, samples)| {
                samples.iter().filter_map(move |(vantage, sample)| {
                    let verdict = vantage_verdict(&service.policy, sample);
                    if verdict == Verdict::Unknown {
                        return None;
                    }
                    let failures = sample.failures.min(sample.attempts);
                    let failing = failures as f64 / sample.attempts as f64
                        > service.policy.max_failure_ratio / 2.0;
                    let clearly_up = verdict == Verdict::Up && !failing;
                    Some((
                        *unit,
                        *vantage,
                        sample.attempts,
                        failures,
                        failing,
                        clearly_up,
                    ))
                })
            })
        })
    };
    let mut seen: BTreeMap<&str, Seen> = BTreeMap::new();
    for (_, vantage, attempts, failures, failing, _) in judged() {
        let s = seen.entry(vantage).or_default();
        s.attempts = s.attempts.saturating_add(attempts);
        s.failures = s.failures.saturating_add(failures);
        s.all_failing &= failing;
        s.units += 1;
    }
    let everything_failing = |s: &Seen| {
        s.units >= 2
            && s.all_failing
            && s.failures as f64 / s.attempts as f64 > fleet_policy.max_failure_ratio
    };
    let accused: BTreeSet<&str> = seen
        .iter()
        .filter(|(v, s)| everything_failing(s) && !health.is_suspect(v))
        .map(|(v, _)| *v)
        .collect();
    if accused.is_empty() {
        return health;
    }
    let witnesses: BTreeSet<&str> = seen
        .iter()
        .filter(|(v, s)| !everything_failing(s) && !health.is_suspect(v))
        .map(|(v, _)| *v)
        .collect();
    // Units each accused vantage probes, and per unit the witnesses that see it clearly up,
    // in witness order (the first witness by name is the one named).
    let mut probed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut up_by: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (unit, vantage, _, _, _, clearly_up) in judged() {
        if accused.contains(vantage) {
            probed.entry(vantage).or_default().push(unit);
        } else if clearly_up && witnesses.contains(vantage) {
            up_by.entry(unit).or_default().insert(vantage);
        }
    }
    for (vantage, mut units) in probed {
        units.sort_unstable();
        units.dedup();
        let contradiction = witnesses.iter().find_map(|witness| {
            units
                .iter()
                .find(|unit| up_by.get(*unit).is_some_and(|w| w.contains(witness)))
                .map(|unit| (*witness, *unit))
        });
        if let Some((witness, unit)) = contradiction {
            health.suspect.insert(
                vantage.to_owned(),
                Suspicion::EverythingFailing {
                    units: units.len(),
                    contradicted_by: witness.to_owned(),
                    unit: unit.to_owned(),
                },
            );
        }
    }
    health
}

/// One vantage's probes of every unit it has a verdict on.
struct Seen {
    attempts: u64,
    failures: u64,
    all_failing: bool,
    /// Units with a verdict from this vantage.
    units: usize,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            attempts: 0,
            failures: 0,
            all_failing: true,
            units: 0,
        }
    }
}
