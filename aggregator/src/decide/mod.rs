//! The decision core: one pure function, [`evaluate`], turns the window's observations of every
//! configured Region, the state carried from the previous evaluation, the operator's overrides
//! and the current time (`now`, time since an epoch, an argument: nothing here reads a clock,
//! does I/O, keeps globals or draws random numbers) into the next state and a [`Decision`]
//! whose every figure is explained in a human-readable reason. Same inputs, same outputs: every
//! collection that reaches the output is ordered by name ([`BTreeMap`]), and the order of
//! `regions` and `observations` does not matter.
//!
//! The rules, in the order they are applied:
//!
//! 1. **Vantage verdict** ([`vantage_verdict`]): `unknown` with fewer than `min_attempts`
//!    attempts (or none); `down` when failures / attempts > `max_failure_ratio`, or when
//!    `max_latency` is set and the vantage's `limit_latency` is above it; `up` otherwise.
//!    Several samples of one vantage for one Region are merged first (attempts and failures
//!    summed, the larger latency kept), so a vantage is one voice however often it reports.
//! 2. **Region verdict** ([`region_verdict`]): only vantages with data (`up` or `down`) vote.
//!    `needed` = max(2, ⌊n/2⌋ + 1) of the n voters for `Majority`, max(2, k) for `AtLeast(k)`.
//!    `down` when at least `needed` voters say down; otherwise `up` when at least one voter says
//!    up; otherwise (nobody has data, or only too few say down and nobody says up) `unknown`.
//!    Since `needed` ≥ 2, one noisy vantage can never fail a Region, and it cannot keep one out
//!    either while any other vantage sees it up.
//! 3. **New Regions** (configured, absent from the previous state) start in service, streaks 0,
//!    penalty 0, weight from their latency (or an equal share). Regions no longer configured
//!    are dropped from the state; observations of unconfigured Regions are ignored.
//! 4. **Hysteresis**: a `down` verdict adds one to the down streak and zeroes the up streak, `up`
//!    the reverse; `unknown` leaves both unchanged (no data never moves a Region). A Region in
//!    service with down streak ≥ `fail_after` is a take-out candidate; a Region out of service
//!    with up streak ≥ `recover_after` is a put-back candidate if its decayed flap penalty is
//!    ≤ `flap_suppress`, else it is held out by flap damping (the reason says so, with the time
//!    left). `fail_after` and `recover_after` count as at least 1.
//! 5. **Flap damping**: every automated transition (in or out) sets the penalty to its decayed
//!    value ([`decayed_penalty`], halving every `flap_half_life`) plus `flap_penalty`. With the
//!    defaults (1000, suppress above 1500, half-life 5 min) a single failure and recovery is
//!    never suppressed (one transition leaves 1000), but out → in → out within about 9 minutes
//!    leaves more than 1500 and holds the Region out until the penalty decays (about 4.5
//!    minutes when the three transitions come within a minute). Pinned and fail-open transitions
//!    add no penalty: they say nothing about the Region's own stability.
//! 6. **Safety**, in this order:
//!    - (a) **Pins**: `Pin::Down` takes the Region out, `Pin::Up` puts it in, whatever the
//!      measurements and the other rules say; the alert `PinnedAgainstMeasurements` is raised
//!      while the quorum verdict disagrees with the pin. Pinned transitions are manual: they
//!      are not limited by, and do not count toward, `max_changes`. Streaks keep following the
//!      measurements, so when the pin is removed the Region's automated state is current.
//!    - (b) **Freeze**: no automated transition happens; each one held raises `Frozen`.
//!      Weights are frozen too: a Region that stays in service keeps its previous weight (one
//!      that a pin or the floor brings in gets a computed weight, it has none). Streaks and
//!      smoothed latency keep tracking the measurements, so unfreezing acts on current data.
//!    - (c) **Change limit**: at most `max_changes` automated transitions in any trailing
//!      `change_window` (a transition at `t` counts while `now - t < change_window`). When the
//!      budget is short, put-backs go first (healthiest first), then take-outs (sickest first):
//!      a held put-back only leaves healthy capacity idle, while take-outs en masse are exactly
//!      the runaway the limit exists to stop. Each transition held raises `ChangeLimit`.
//!    - (d) **Floor** (`min_healthy`, ARC's ATLEAST rule): the floor is
//!      `min(min_healthy, Regions not pinned down)`. Take-outs that would leave fewer in service
//!      than the floor are cancelled, keeping the healthiest candidates in (lowest failure ratio
//!      across this evaluation's attempts, then lowest smoothed latency, then name; no data
//!      ranks last), raising `FailOpen`; so when every Region is down, the floor's worth of the
//!      healthiest stay in. The floor is computed after the put-backs the budget admits (they
//!      only add capacity) and before the budget is spent on take-outs. If fewer than the floor
//!      are in service even so (a pin was removed or placed, the previous state was thin), the
//!      healthiest Regions out of service and not pinned down are put back (`FailOpen`), even
//!      when frozen or over the change limit: these safety transitions are neither limited by
//!      nor counted toward `max_changes`. Route 53 only fails open once every record is
//!      unhealthy; this rule keeps capacity before that point.
//! 7. **Weights** ([`weights_for`]): a Region's smoothed latency is the EWMA (`ewma_alpha`) of the
//!    median across vantages of this evaluation's `weight_latency` (seconds); with no sample the
//!    previous value is kept. In service: raw = (1/l) / max_j(1/l_j) × 255; a Region without a
//!    latency gets the mean of the others' raw (255 when none has one); rounded and clamped to
//!    [max(floor, 1), 255], because weight 0 means "only when all others are unhealthy" to
//!    Route 53. Dead band: a Region that was in service with a nonzero weight keeps it when the
//!    new value differs by less than `dead_band`. Out of service: 0.
//! 8. **Output**: the decision lists every configured Region in name order with its quorum
//!    verdict, each vantage's verdict, in service, weight, cause and reason; `transitions` lists
//!    the actual transitions (automated, pinned and fail-open) with the same causes and reasons;
//!    alerts come in Region name order. The cause ([`Cause`]) names the rule that settled the
//!    Region; the reason says the same in words, with the figures.
//!
//! Time going backwards (a `now` before a stored time) counts as no time elapsed.
//!
//! Layout: this module observes each Region and runs the rules in order; `verdict` holds rules
//! 1 and 2, `hysteresis` rules 4 and 5, `safety` rule 6, `weights` rule 7 and `explain` the
//! reason and alert texts.

mod evidence;
mod explain;
mod hysteresis;
mod safety;
mod services;
mod vantages;
mod verdict;
mod weights;

pub use evidence::{correlated_cause, RegionChecks};
pub use hysteresis::decayed_penalty;
pub use services::{evaluate_services, region_wide};
pub use vantages::{assess_vantages, Suspicion, VantageHealth};
pub use verdict::{region_verdict, vantage_verdict};
pub use weights::{weights_for, weights_with_errors};

use crate::model::{
    Cause, Decision, ModelState, Overrides, Pin, Policy, RegionDecision, RegionObservation,
    RegionState, Transition, VantageSample, Verdict, WeightPolicy,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use verdict::Tally;

/// One evaluation with every vantage trusted: see the module documentation for the rules.
pub fn evaluate(
    policy: &Policy,
    weights: &WeightPolicy,
    regions: &[String],
    previous: &ModelState,
    observations: &[RegionObservation],
    overrides: &Overrides,
    now: Duration,
) -> (ModelState, Decision) {
    let inputs = Inputs {
        policy,
        weights,
        regions,
        previous,
        observations,
        overrides,
        vantages: &VantageHealth::default(),
    };
    evaluate_with(&inputs, now)
}

/// Everything one evaluation of one service decides from, but the time.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub policy: &'a Policy,
    pub weights: &'a WeightPolicy,
    pub regions: &'a [String],
    pub previous: &'a ModelState,
    pub observations: &'a [RegionObservation],
    pub overrides: &'a Overrides,
    /// Which vantages' verdicts vote ([`assess_vantages`]).
    pub vantages: &'a VantageHealth,
}

/// One evaluation: see the module documentation for the rules; suspect vantages do not vote
/// (`vantages.rs`).
pub fn evaluate_with(inputs: &Inputs<'_>, now: Duration) -> (ModelState, Decision) {
    let Inputs {
        policy,
        weights,
        regions,
        previous,
        observations,
        overrides,
        vantages: _,
    } = *inputs;
    let names: BTreeSet<&str> = regions.iter().map(String::as_str).collect();
    let samples = verdict::merge_observations(&names, observations);
    let mut recent = safety::recent_changes(policy, previous, now);

    let mut work: Vec<Work<'_>> = names
        .iter()
        .map(|&name| observe(inputs, name, samples.get(name), now))
        .collect();

    hysteresis::propose(policy, &mut work, now);
    safety::apply_pins(&mut work, now);
    let correlated = safety::hold_correlated(policy, &mut work);
    safety::apply_limits(policy, overrides.frozen, &mut work, &mut recent, now);
    let weight_bases = weights::assign(weights, overrides.frozen, &mut work);

    let mut alerts: Vec<crate::model::Alert> = correlated
        .map(|c| explain::correlated_alert(policy, &work, &c))
        .into_iter()
        .collect();
    let mut transitions = Vec::new();
    let mut decisions = Vec::with_capacity(work.len());
    let mut next = ModelState {
        regions: BTreeMap::new(),
        recent_transitions: recent,
        services_recent: BTreeMap::new(),
    };
    for (w, weight_basis) in work.into_iter().zip(weight_bases) {
        let reason = w.reason(policy, weights, now, weight_basis);
        let cause = w.outcome.cause(w.state.in_service);
        if let Some(alert) = w.alert(policy) {
            alerts.push(alert);
        }
        if w.state.in_service != w.was_in {
            transitions.push(Transition {
                service: String::new(),
                region: w.name.to_owned(),
                in_service: w.state.in_service,
                cause,
                reason: reason.clone(),
            });
        }
        decisions.push(RegionDecision {
            service: String::new(),
            region: w.name.to_owned(),
            verdict: w.tally.verdict,
            vantages: w.vantages,
            in_service: w.state.in_service,
            weight: w.state.weight,
            cause,
            reason,
        });
        next.regions.insert(w.name.to_owned(), w.state);
    }
    let decision = Decision {
        at: now,
        regions: decisions,
        transitions,
        alerts,
    };
    (next, decision)
}

/// How healthy a Region looked in this evaluation, for the floor's choice.
#[derive(Debug, Clone, Copy)]
struct Health {
    /// Failures / attempts over all vantages' attempts; `None` without attempts.
    failure_ratio: Option<f64>,
}

/// What happens to a Region in this evaluation, decided step by step.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// No candidate: stays as it was.
    Stay,
    /// Put-back candidate held out while the penalty (decayed to now) is above `flap_suppress`.
    FlapHeld { penalty: f64 },
    /// Take-out (`in_service: false`) or put-back candidate, not decided yet.
    Candidate { in_service: bool },
    /// Automated transition applied.
    Automated,
    /// Candidate held because automation is frozen.
    Frozen { in_service: bool },
    /// Take-out held: `down` of the `of` Regions turned down within `correlated_window`.
    CorrelatedHeld { down: usize, of: usize },
    /// Candidate held by `max_changes`; `recent` automated transitions already in the window.
    ChangeLimit { in_service: bool, recent: usize },
    /// Take-out cancelled by the floor: `left` would have been in service, `floor` required.
    FailOpenKept { left: usize, floor: usize },
    /// Put back by the floor: only `had` were in service, `floor` required.
    FailOpenPutBack { had: usize, floor: usize },
    /// Pinned; `against` when the quorum verdict disagrees with the pin.
    Pinned { pin: Pin, against: bool },
}

impl Outcome {
    /// The public cause of this outcome, for a Region ending the evaluation `in_service`.
    fn cause(self, in_service: bool) -> Cause {
        match self {
            // Every candidate is decided by the safety rules; an undecided one has not moved.
            Outcome::Stay | Outcome::Candidate { .. } => Cause::Steady,
            Outcome::FlapHeld { .. } => Cause::FlapSuppressed,
            Outcome::Automated if in_service => Cause::Recovered,
            Outcome::Automated => Cause::QuorumDown,
            Outcome::Frozen { .. } => Cause::Frozen,
            Outcome::ChangeLimit { .. } => Cause::ChangeLimit,
            Outcome::FailOpenKept { .. } | Outcome::FailOpenPutBack { .. } => Cause::FailOpen,
            Outcome::CorrelatedHeld { .. } => Cause::CorrelatedHold,
            Outcome::Pinned { .. } => Cause::Pinned,
        }
    }
}

/// One Region through one evaluation.
struct Work<'a> {
    name: &'a str,
    /// In service before this evaluation (new Regions start in service).
    was_in: bool,
    /// The state being built; `weight` holds the previous weight until weights are assigned.
    state: RegionState,
    tally: Tally,
    vantages: BTreeMap<String, Verdict>,
    /// The quorum verdict with each vantage's figures.
    evidence: String,
    /// The streaks against the thresholds.
    streak: String,
    health: Health,
    pin: Option<Pin>,
    outcome: Outcome,
}

/// Verdicts, streaks and smoothed latency of one Region (rules 1 to 4, the EWMA of rule 7).
fn observe<'a>(
    inputs: &Inputs<'_>,
    name: &'a str,
    samples: Option<&BTreeMap<&str, VantageSample>>,
    now: Duration,
) -> Work<'a> {
    let (policy, weights, health) = (inputs.policy, inputs.weights, inputs.vantages);
    let pin = inputs.overrides.pinned.get(name).copied();
    let mut state = inputs
        .previous
        .regions
        .get(name)
        .cloned()
        .unwrap_or(RegionState {
            in_service: true,
            down_streak: 0,
            up_streak: 0,
            penalty: 0.0,
            penalty_at: now,
            smoothed_latency: None,
            weight: 0,
            since: now,
            down_since: None,
        });
    let was_in = state.in_service;

    let empty = BTreeMap::new();
    let samples = samples.unwrap_or(&empty);
    let mut vantages = BTreeMap::new();
    let mut verdicts = Vec::with_capacity(samples.len());
    let mut described = Vec::with_capacity(samples.len());
    let (mut attempts, mut failures) = (0u64, 0u64);
    let mut latencies = Vec::new();
    // Suspect vantages' verdicts are shown, not counted; the ones that voted are kept for
    // the quorum's floor.
    let (mut excluded, mut voters) = (0usize, Vec::new());
    for (vantage, sample) in samples {
        let verdict = vantage_verdict(policy, sample);
        vantages.insert((*vantage).to_owned(), verdict);
        let described_vantage = explain::describe_vantage(policy, vantage, sample, verdict);
        if health.is_suspect(vantage) {
            excluded += usize::from(verdict != Verdict::Unknown);
            described.push(format!("{described_vantage}, suspect: not counted"));
            continue;
        }
        if verdict != Verdict::Unknown {
            voters.push(*vantage);
        }
        verdicts.push(verdict);
        described.push(described_vantage);
        attempts = attempts.saturating_add(sample.attempts);
        failures = failures.saturating_add(sample.failures.min(sample.attempts));
        if let Some(latency) = sample.weight_latency {
            latencies.push(latency.as_secs_f64());
        }
    }
    let floor = match voters.as_slice() {
        [only] if excluded > 0 && health.is_confirmed(only) => 1,
        _ => 2,
    };
    let tally = verdict::tally_with_floor(policy, &verdicts, floor);
    let evidence = explain::describe_tally(&tally, &described.join(", "));

    hysteresis::advance_streaks(&mut state, tally.verdict, now);
    state.smoothed_latency = weights::smoothed(weights, state.smoothed_latency, &mut latencies);
    let streak = explain::describe_streak(policy, &state, tally.verdict, was_in);
    let health = Health {
        failure_ratio: (attempts > 0).then(|| failures as f64 / attempts as f64),
    };
    Work {
        name,
        was_in,
        state,
        tally,
        vantages,
        evidence,
        streak,
        health,
        pin,
        outcome: Outcome::Stay,
    }
}
