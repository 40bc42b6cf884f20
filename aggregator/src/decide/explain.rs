//! The words: every decision carries a reason an operator can act on without reading code
//! (which vantages, what figures, which rule held or moved the Region), and every alert says
//! what was held back and why. Nothing here decides anything; it only describes what the rules
//! in the sibling modules did.

use super::verdict::Tally;
use super::weights::{WeightBasis, WeightCalc};
use super::{hysteresis, Outcome, Work};
use crate::model::{
    Alert, AlertKind, Pin, Policy, RegionState, VantageSample, Verdict, WeightPolicy,
};
use std::time::Duration;

impl Work<'_> {
    /// The Region's whole reason: evidence; streaks; what happened; weight.
    pub(super) fn reason(
        &self,
        policy: &Policy,
        weights: &WeightPolicy,
        now: Duration,
        weight: WeightBasis,
    ) -> String {
        format!(
            "{}: {}; {}; {}; {}",
            self.name,
            self.evidence,
            self.streak,
            self.action_text(policy, now),
            weight_text(weights, self.state.weight, weight)
        )
    }

    fn action_text(&self, policy: &Policy, now: Duration) -> String {
        match self.outcome {
            Outcome::Stay if self.state.in_service => "stays in service".to_owned(),
            Outcome::Stay => "stays out of service".to_owned(),
            // Every candidate is decided by the safety rules; say so rather than panic if not.
            Outcome::Candidate { in_service } => {
                format!("undecided candidate to be {}", direction(in_service))
            }
            Outcome::FlapHeld { penalty } => {
                let left = policy.flap_half_life.as_secs_f64()
                    * (penalty / policy.flap_suppress.max(f64::MIN_POSITIVE)).log2();
                format!(
                    "held out by flap damping: penalty {:.0} > flap_suppress {:.0} \
                     (below it in about {:.0} s)",
                    penalty, policy.flap_suppress, left
                )
            }
            Outcome::Automated => format!(
                "{} (flap penalty now {:.0})",
                direction(self.state.in_service),
                hysteresis::current_penalty(policy, &self.state, now)
            ),
            Outcome::Frozen { in_service } => format!(
                "{}: automation frozen (would be {})",
                kept(in_service),
                direction(in_service)
            ),
            Outcome::ChangeLimit { in_service, recent } => format!(
                "{}: already {} automated transitions in the last {}, max_changes {} \
                 (would be {})",
                kept(in_service),
                recent,
                fmt_duration(policy.change_window),
                policy.max_changes,
                direction(in_service)
            ),
            Outcome::CorrelatedHeld { down, of } => format!(
                "kept in service (correlated failure): {down} of {of} Regions turned down \
                 within {} of each other, more likely the monitoring, the network to them or a shared \
                 dependency than {down} Regions at once; automation holds (pin to act)",
                fmt_duration(policy.correlated_window)
            ),
            Outcome::FailOpenKept { left, floor } => format!(
                "kept in service (fail-open): taking it out would leave {left} in service, \
                 fewer than {floor} (min_healthy {}); chosen as healthiest ({})",
                policy.min_healthy,
                self.health_text()
            ),
            Outcome::FailOpenPutBack { had, floor } => format!(
                "put back in (fail-open): only {had} in service, fewer than {floor} \
                 (min_healthy {}); chosen as healthiest out of service ({})",
                policy.min_healthy,
                self.health_text()
            ),
            Outcome::Pinned { pin, against } => {
                let what = match (self.state.in_service != self.was_in, pin) {
                    (true, Pin::Up) => "put back in by the pin",
                    (true, Pin::Down) => "taken out by the pin",
                    (false, Pin::Up) => "stays in service",
                    (false, Pin::Down) => "stays out of service",
                };
                let against = if against {
                    ", against the measurements"
                } else {
                    ""
                };
                format!("pinned {}: {what}{against}", pin_word(pin))
            }
        }
    }

    /// The figures the floor ranks Regions by.
    fn health_text(&self) -> String {
        let failed = match self.health.failure_ratio {
            Some(ratio) => format!("{:.1}% of attempts failed", ratio * 100.0),
            None => "no attempts".to_owned(),
        };
        match self.state.smoothed_latency {
            Some(latency) => format!("{failed}, smoothed latency {}", fmt_seconds_as_ms(latency)),
            None => failed,
        }
    }

    /// The alert this Region raises, if a rule held it back or a pin overrides the quorum.
    pub(super) fn alert(&self, policy: &Policy) -> Option<Alert> {
        let (kind, message) = match self.outcome {
            Outcome::Stay
            | Outcome::FlapHeld { .. }
            | Outcome::Candidate { .. }
            | Outcome::Automated
            | Outcome::Pinned { against: false, .. } => return None,
            // One alert for the whole correlated failure, raised by the caller.
            Outcome::CorrelatedHeld { .. } => return None,
            Outcome::Frozen { in_service } => (
                AlertKind::Frozen,
                format!(
                    "{}: would be {} ({}) but automation is frozen",
                    self.name,
                    direction(in_service),
                    self.streak
                ),
            ),
            Outcome::ChangeLimit { in_service, recent } => (
                AlertKind::ChangeLimit,
                format!(
                    "{}: held back from being {}: already {} automated transitions in the \
                     last {}, max_changes {}",
                    self.name,
                    direction(in_service),
                    recent,
                    fmt_duration(policy.change_window),
                    policy.max_changes
                ),
            ),
            Outcome::FailOpenKept { left, floor } => (
                AlertKind::FailOpen,
                format!(
                    "{}: kept in service although {}: taking it out would leave {left} in \
                     service, fewer than {floor} (min_healthy {})",
                    self.name, self.streak, policy.min_healthy
                ),
            ),
            Outcome::FailOpenPutBack { had, floor } => (
                AlertKind::FailOpen,
                format!(
                    "{}: put back in service ({}): only {had} in service, fewer than {floor} \
                     (min_healthy {})",
                    self.name, self.evidence, policy.min_healthy
                ),
            ),
            Outcome::Pinned { pin, against: true } => (
                AlertKind::PinnedAgainstMeasurements,
                format!(
                    "{}: pinned {} but {}",
                    self.name,
                    pin_word(pin),
                    self.evidence
                ),
            ),
        };
        Some(Alert {
            kind,
            service: String::new(),
            region: Some(self.name.to_owned()),
            message,
        })
    }
}

fn direction(in_service: bool) -> &'static str {
    if in_service {
        "put back in"
    } else {
        "taken out"
    }
}

fn kept(in_service: bool) -> &'static str {
    if in_service {
        "kept out of service"
    } else {
        "kept in service"
    }
}

fn pin_word(pin: Pin) -> &'static str {
    match pin {
        Pin::Up => "up",
        Pin::Down => "down",
    }
}

fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Up => "up",
        Verdict::Down => "down",
        Verdict::Unknown => "unknown",
    }
}

/// `weight` is the weight the Region ends the evaluation with.
fn weight_text(weights: &WeightPolicy, weight: u8, basis: WeightBasis) -> String {
    match basis {
        WeightBasis::OutOfService => "weight 0 (out of service)".to_owned(),
        WeightBasis::Frozen { would_be } => {
            format!("weight {weight} (frozen; would be {would_be})")
        }
        WeightBasis::Computed(calc) => describe_weight(weights, &calc),
    }
}

fn describe_weight(weights: &WeightPolicy, calc: &WeightCalc) -> String {
    let source = match (calc.latency, calc.any_latency) {
        (Some(latency), _) => format!("smoothed latency {}", fmt_seconds_as_ms(latency)),
        (None, true) => "no latency: mean of the others".to_owned(),
        (None, false) => "no latency measured: equal share".to_owned(),
    };
    let source = if calc.error_ratio > 0.0 {
        format!(
            "{source}, × {:.2} for {:.1} % errors",
            1.0 - calc.error_ratio,
            calc.error_ratio * 100.0
        )
    } else {
        source
    };
    if calc.kept_by_dead_band {
        format!(
            "weight {} (kept: computed {} is within dead_band {} or {:.0} % of it; {})",
            calc.weight,
            calc.computed,
            weights.dead_band,
            weights.dead_band_ratio * 100.0,
            source
        )
    } else {
        format!("weight {} ({})", calc.weight, source)
    }
}

pub(super) fn describe_vantage(
    policy: &Policy,
    vantage: &str,
    s: &VantageSample,
    v: Verdict,
) -> String {
    if v == Verdict::Unknown {
        return format!(
            "{vantage} unknown {} attempts < min_attempts {}",
            s.attempts,
            policy.min_attempts.max(1)
        );
    }
    let mut text = format!(
        "{vantage} {} {}/{} failed",
        verdict_word(v),
        s.failures.min(s.attempts),
        s.attempts
    );
    if let (Some(max), Some(latency)) = (policy.max_latency, s.limit_latency) {
        if latency > max {
            text.push_str(&format!(
                " with latency {} > max_latency {}",
                fmt_seconds_as_ms(latency.as_secs_f64()),
                fmt_seconds_as_ms(max.as_secs_f64())
            ));
        }
    }
    text
}

pub(super) fn describe_tally(t: &Tally, vantages: &str) -> String {
    let voters = t.up + t.down;
    let list = if vantages.is_empty() {
        String::new()
    } else {
        format!(" ({vantages})")
    };
    match t.verdict {
        Verdict::Down => format!("down by quorum {}/{}{list}", t.down, voters),
        Verdict::Up if t.down == 0 => format!("up: 0/{voters} down{list}"),
        Verdict::Up => format!(
            "up: {}/{} down, below quorum {}{list}",
            t.down, voters, t.needed
        ),
        Verdict::Unknown if vantages.is_empty() => "unknown: no vantage reported".to_owned(),
        Verdict::Unknown if voters == 0 => format!("unknown: no vantage has enough data{list}"),
        Verdict::Unknown => format!(
            "unknown: {}/{} down, below quorum {}, none up{list}",
            t.down, voters, t.needed
        ),
    }
}

pub(super) fn describe_streak(
    policy: &Policy,
    state: &RegionState,
    verdict: Verdict,
    was_in: bool,
) -> String {
    let evaluations = |n: u32| if n == 1 { "evaluation" } else { "evaluations" };
    let against = |n: u32, limit: u32| if n >= limit { "≥" } else { "<" };
    match verdict {
        Verdict::Down if was_in => {
            let (n, limit) = (state.down_streak, policy.fail_after.max(1));
            format!(
                "down {n} {} {} fail_after {limit}",
                evaluations(n),
                against(n, limit)
            )
        }
        Verdict::Up if !was_in => {
            let (n, limit) = (state.up_streak, policy.recover_after.max(1));
            format!(
                "up {n} {} {} recover_after {limit}",
                evaluations(n),
                against(n, limit)
            )
        }
        Verdict::Down => format!(
            "down {} {}",
            state.down_streak,
            evaluations(state.down_streak)
        ),
        Verdict::Up => format!("up {} {}", state.up_streak, evaluations(state.up_streak)),
        Verdict::Unknown => format!(
            "no verdict: streaks held (down {}, up {})",
            state.down_streak, state.up_streak
        ),
    }
}

fn fmt_seconds_as_ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1000.0)
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

/// The one alert of a correlated failure: which Regions, which vantages see them down, and
/// each Region's evidence.
pub(super) fn correlated_alert(
    policy: &Policy,
    work: &[Work<'_>],
    c: &super::safety::Correlated,
) -> Alert {
    let regions: Vec<&str> = c.down.iter().map(|&i| work[i].name).collect();
    let mut vantages: Vec<&str> = c
        .down
        .iter()
        .flat_map(|&i| {
            work[i]
                .vantages
                .iter()
                .filter(|(_, v)| **v == Verdict::Down)
                .map(|(name, _)| name.as_str())
        })
        .collect();
    vantages.sort_unstable();
    vantages.dedup();
    let evidence: Vec<String> = c
        .down
        .iter()
        .map(|&i| format!("{}: {}", work[i].name, work[i].evidence))
        .collect();
    Alert {
        kind: AlertKind::CorrelatedFailure,
        service: String::new(),
        region: None,
        message: format!(
            "correlated failure: {} of {} Regions turned down within {} of each other ({}), \
             seen by {}; \
             automation holds: no take-outs, every Region in service stays in, pins still \
             act. Evidence: {}",
            regions.len(),
            c.of,
            fmt_duration(policy.correlated_window),
            regions.join(", "),
            vantages.join(", "),
            evidence.join("; ")
        ),
    }
}
