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
//!    verdict, each vantage's verdict, in service, weight and reason; `transitions` lists the
//!    actual transitions (automated, pinned and fail-open) with the same reasons; alerts come in
//!    Region name order.
//!
//! Time going backwards (a `now` before a stored time) counts as no time elapsed.

use crate::model::{
    Alert, AlertKind, Decision, ModelState, Overrides, Pin, Policy, Quorum, RegionDecision,
    RegionObservation, RegionState, Transition, VantageSample, Verdict, WeightPolicy,
};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Smallest latency used for weights, so a zero reading cannot divide by zero.
const MIN_LATENCY_SECONDS: f64 = 1e-6;

/// What one vantage says of one Region: see rule 1 of the module documentation.
pub fn vantage_verdict(policy: &Policy, sample: &VantageSample) -> Verdict {
    if sample.attempts == 0 || sample.attempts < policy.min_attempts {
        Verdict::Unknown
    } else if sample_failure_ratio(sample) > policy.max_failure_ratio
        || latency_exceeded(policy, sample)
    {
        Verdict::Down
    } else {
        Verdict::Up
    }
}

/// The quorum verdict of a Region from its vantages' verdicts: see rule 2 of the module
/// documentation. `Unknown` verdicts do not vote.
pub fn region_verdict(policy: &Policy, verdicts: &[Verdict]) -> Verdict {
    tally(policy, verdicts).verdict
}

/// `penalty`, set at `since`, decayed to `now` with the given half-life. Negative or NaN
/// penalties count as 0; a zero half-life decays everything at once.
pub fn decayed_penalty(penalty: f64, since: Duration, now: Duration, half_life: Duration) -> f64 {
    if penalty.is_nan() || penalty <= 0.0 {
        return 0.0;
    }
    let elapsed = now.saturating_sub(since);
    if elapsed.is_zero() {
        penalty
    } else if half_life.is_zero() {
        0.0
    } else {
        penalty * 0.5f64.powf(elapsed.as_secs_f64() / half_life.as_secs_f64())
    }
}

/// Weights of the Regions in service, keyed like `in_service_latency` (smoothed latency in
/// seconds, `None` when never measured): see rule 7 of the module documentation. `previous`
/// holds the weights last published for Regions that were already in service; a Region absent
/// from it, or with 0 there, gets no dead band.
pub fn weights_for(
    weights: &WeightPolicy,
    in_service_latency: &BTreeMap<String, Option<f64>>,
    previous: &BTreeMap<String, u8>,
) -> BTreeMap<String, u8> {
    compute_weights(weights, in_service_latency, previous)
        .into_iter()
        .map(|(region, calc)| (region, calc.weight))
        .collect()
}

/// One evaluation: see the module documentation for the rules.
pub fn evaluate(
    policy: &Policy,
    weights: &WeightPolicy,
    regions: &[String],
    previous: &ModelState,
    observations: &[RegionObservation],
    overrides: &Overrides,
    now: Duration,
) -> (ModelState, Decision) {
    let names: BTreeSet<&str> = regions.iter().map(String::as_str).collect();
    let samples = merge_observations(&names, observations);
    let mut recent: VecDeque<Duration> = previous
        .recent_transitions
        .iter()
        .copied()
        .filter(|&t| now.saturating_sub(t) < policy.change_window)
        .collect();

    let mut work: Vec<Work<'_>> = names
        .iter()
        .map(|&name| {
            observe(
                policy,
                weights,
                name,
                previous.regions.get(name),
                samples.get(name),
                overrides.pinned.get(name).copied(),
                now,
            )
        })
        .collect();

    propose(policy, &mut work, now);
    apply_safety(policy, overrides.frozen, &mut work, &mut recent, now);
    let weight_text = assign_weights(weights, overrides.frozen, &mut work);

    let mut alerts = Vec::new();
    let mut transitions = Vec::new();
    let mut decisions = Vec::with_capacity(work.len());
    let mut next = ModelState {
        regions: BTreeMap::new(),
        recent_transitions: recent,
    };
    for (w, weight_text) in work.into_iter().zip(weight_text) {
        let action = w.action_text(policy, now);
        let reason = format!(
            "{}: {}; {}; {}; {}",
            w.name, w.evidence, w.streak, action, weight_text
        );
        if let Some(alert) = w.alert(policy) {
            alerts.push(alert);
        }
        if w.state.in_service != w.was_in {
            transitions.push(Transition {
                region: w.name.to_owned(),
                in_service: w.state.in_service,
                reason: reason.clone(),
            });
        }
        decisions.push(RegionDecision {
            region: w.name.to_owned(),
            verdict: w.tally.verdict,
            vantages: w.vantages,
            in_service: w.state.in_service,
            weight: w.state.weight,
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

/// Votes of the vantages with data, and the verdict they give.
#[derive(Debug, Clone, Copy)]
struct Tally {
    up: usize,
    down: usize,
    needed: usize,
    verdict: Verdict,
}

fn tally(policy: &Policy, verdicts: &[Verdict]) -> Tally {
    let up = verdicts.iter().filter(|v| **v == Verdict::Up).count();
    let down = verdicts.iter().filter(|v| **v == Verdict::Down).count();
    let voters = up + down;
    let needed = match policy.quorum {
        Quorum::Majority => voters / 2 + 1,
        Quorum::AtLeast(n) => n,
    }
    .max(2);
    let verdict = if voters == 0 {
        Verdict::Unknown
    } else if down >= needed {
        Verdict::Down
    } else if up > 0 {
        Verdict::Up
    } else {
        Verdict::Unknown
    };
    Tally {
        up,
        down,
        needed,
        verdict,
    }
}

fn sample_failure_ratio(sample: &VantageSample) -> f64 {
    if sample.attempts == 0 {
        0.0
    } else {
        sample.failures.min(sample.attempts) as f64 / sample.attempts as f64
    }
}

fn latency_exceeded(policy: &Policy, sample: &VantageSample) -> bool {
    matches!(
        (policy.max_latency, sample.limit_latency),
        (Some(max), Some(latency)) if latency > max
    )
}

/// Observations of configured Regions, one merged sample per (Region, vantage).
fn merge_observations<'a>(
    names: &BTreeSet<&str>,
    observations: &'a [RegionObservation],
) -> BTreeMap<&'a str, BTreeMap<&'a str, VantageSample>> {
    let mut merged: BTreeMap<&str, BTreeMap<&str, VantageSample>> = BTreeMap::new();
    for observation in observations {
        if !names.contains(observation.region.as_str()) {
            continue;
        }
        let region = merged.entry(observation.region.as_str()).or_default();
        for sample in &observation.vantages {
            region
                .entry(sample.vantage.as_str())
                .and_modify(|m| {
                    m.attempts = m.attempts.saturating_add(sample.attempts);
                    m.failures = m.failures.saturating_add(sample.failures);
                    m.limit_latency = m.limit_latency.max(sample.limit_latency);
                    m.weight_latency = m.weight_latency.max(sample.weight_latency);
                })
                .or_insert_with(|| sample.clone());
        }
    }
    merged
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
    /// Candidate held by `max_changes`; `recent` automated transitions already in the window.
    ChangeLimit { in_service: bool, recent: usize },
    /// Take-out cancelled by the floor: `left` would have been in service, `floor` required.
    FailOpenKept { left: usize, floor: usize },
    /// Put back by the floor: only `had` were in service, `floor` required.
    FailOpenPutBack { had: usize, floor: usize },
    /// Pinned; `against` when the quorum verdict disagrees with the pin.
    Pinned { pin: Pin, against: bool },
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

fn observe<'a>(
    policy: &Policy,
    weights: &WeightPolicy,
    name: &'a str,
    previous: Option<&RegionState>,
    samples: Option<&BTreeMap<&str, VantageSample>>,
    pin: Option<Pin>,
    now: Duration,
) -> Work<'a> {
    let mut state = previous.cloned().unwrap_or(RegionState {
        in_service: true,
        down_streak: 0,
        up_streak: 0,
        penalty: 0.0,
        penalty_at: now,
        smoothed_latency: None,
        weight: 0,
        since: now,
    });
    let was_in = state.in_service;

    let empty = BTreeMap::new();
    let samples = samples.unwrap_or(&empty);
    let mut vantages = BTreeMap::new();
    let mut verdicts = Vec::with_capacity(samples.len());
    let mut described = Vec::with_capacity(samples.len());
    let (mut attempts, mut failures) = (0u64, 0u64);
    let mut latencies = Vec::new();
    for (vantage, sample) in samples {
        let verdict = vantage_verdict(policy, sample);
        vantages.insert((*vantage).to_owned(), verdict);
        verdicts.push(verdict);
        described.push(describe_vantage(policy, vantage, sample, verdict));
        attempts = attempts.saturating_add(sample.attempts);
        failures = failures.saturating_add(sample.failures.min(sample.attempts));
        if let Some(latency) = sample.weight_latency {
            latencies.push(latency.as_secs_f64());
        }
    }
    let tally = tally(policy, &verdicts);
    let evidence = describe_tally(&tally, &described.join(", "));

    match tally.verdict {
        Verdict::Down => {
            state.down_streak = state.down_streak.saturating_add(1);
            state.up_streak = 0;
        }
        Verdict::Up => {
            state.up_streak = state.up_streak.saturating_add(1);
            state.down_streak = 0;
        }
        Verdict::Unknown => {}
    }
    if let Some(median) = median(&mut latencies) {
        let alpha = ewma_alpha(weights);
        state.smoothed_latency = Some(match state.smoothed_latency {
            Some(previous) if previous.is_finite() => alpha * median + (1.0 - alpha) * previous,
            _ => median,
        });
    }
    let streak = describe_streak(policy, &state, tally.verdict, was_in);
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

/// Pins, then the hysteresis and flap damping candidates (rules 4, 5, 6a).
fn propose(policy: &Policy, work: &mut [Work<'_>], now: Duration) {
    for w in work {
        if let Some(pin) = w.pin {
            let against = matches!(
                (pin, w.tally.verdict),
                (Pin::Up, Verdict::Down) | (Pin::Down, Verdict::Up)
            );
            w.outcome = Outcome::Pinned { pin, against };
            w.state.in_service = pin == Pin::Up;
        } else if w.was_in && w.state.down_streak >= policy.fail_after.max(1) {
            w.outcome = Outcome::Candidate { in_service: false };
        } else if !w.was_in && w.state.up_streak >= policy.recover_after.max(1) {
            let penalty = decayed_penalty(
                w.state.penalty,
                w.state.penalty_at,
                now,
                policy.flap_half_life,
            );
            w.outcome = if penalty > policy.flap_suppress {
                Outcome::FlapHeld { penalty }
            } else {
                Outcome::Candidate { in_service: true }
            };
        }
    }
}

/// Freeze, change limit and floor (rules 6b to 6d); applies the transitions.
fn apply_safety(
    policy: &Policy,
    frozen: bool,
    work: &mut [Work<'_>],
    recent: &mut VecDeque<Duration>,
    now: Duration,
) {
    let candidates = |work: &[Work<'_>], direction: bool| -> Vec<usize> {
        (0..work.len())
            .filter(|&i| {
                work[i].outcome
                    == Outcome::Candidate {
                        in_service: direction,
                    }
            })
            .collect()
    };
    let mut put_backs = candidates(work, true);
    let mut take_outs = candidates(work, false);
    let floor = policy
        .min_healthy
        .min(work.iter().filter(|w| w.pin != Some(Pin::Down)).count());

    if frozen {
        for i in put_backs.into_iter().chain(take_outs) {
            let in_service = !work[i].was_in;
            work[i].outcome = Outcome::Frozen { in_service };
        }
    } else {
        let max_changes = usize::try_from(policy.max_changes).unwrap_or(usize::MAX);
        put_backs.sort_by(|&a, &b| healthier(&work[a], &work[b]));
        for i in put_backs {
            if recent.len() < max_changes {
                apply_automated(policy, &mut work[i], recent, now);
            } else {
                work[i].outcome = Outcome::ChangeLimit {
                    in_service: true,
                    recent: recent.len(),
                };
            }
        }

        // Take-out candidates are still in service here: the floor decides how many may go.
        let in_service = work.iter().filter(|w| w.state.in_service).count();
        let may_go = in_service.saturating_sub(floor);
        take_outs.sort_by(|&a, &b| healthier(&work[b], &work[a]));
        let left = in_service.saturating_sub(take_outs.len());
        for (rank, i) in take_outs.into_iter().enumerate() {
            if rank >= may_go {
                work[i].outcome = Outcome::FailOpenKept { left, floor };
            } else if recent.len() < max_changes {
                apply_automated(policy, &mut work[i], recent, now);
            } else {
                work[i].outcome = Outcome::ChangeLimit {
                    in_service: false,
                    recent: recent.len(),
                };
            }
        }
    }

    let had = work.iter().filter(|w| w.state.in_service).count();
    if had < floor {
        let mut out: Vec<usize> = (0..work.len())
            .filter(|&i| !work[i].state.in_service && work[i].pin.is_none())
            .collect();
        out.sort_by(|&a, &b| healthier(&work[a], &work[b]));
        for i in out.into_iter().take(floor - had) {
            work[i].state.in_service = true;
            work[i].state.since = now;
            work[i].outcome = Outcome::FailOpenPutBack { had, floor };
        }
    }
    for w in work.iter_mut() {
        if w.state.in_service != w.was_in && matches!(w.outcome, Outcome::Pinned { .. }) {
            w.state.since = now;
        }
    }
}

fn apply_automated(
    policy: &Policy,
    w: &mut Work<'_>,
    recent: &mut VecDeque<Duration>,
    now: Duration,
) {
    let decayed = decayed_penalty(
        w.state.penalty,
        w.state.penalty_at,
        now,
        policy.flap_half_life,
    );
    w.state.penalty = decayed + policy.flap_penalty.max(0.0);
    w.state.penalty_at = now;
    w.state.in_service = !w.was_in;
    w.state.since = now;
    w.outcome = Outcome::Automated;
    recent.push_back(now);
}

/// Healthier first: lower failure ratio, then lower smoothed latency (no data last), then name.
fn healthier(a: &Work<'_>, b: &Work<'_>) -> Ordering {
    cmp_known_first(a.health.failure_ratio, b.health.failure_ratio)
        .then_with(|| cmp_known_first(a.state.smoothed_latency, b.state.smoothed_latency))
        .then_with(|| a.name.cmp(b.name))
}

fn cmp_known_first(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Sets every Region's weight (rule 7, freeze in 6b); returns the weight part of each reason.
fn assign_weights(weights: &WeightPolicy, frozen: bool, work: &mut [Work<'_>]) -> Vec<String> {
    let floor = weights.floor.max(1);
    let latency: BTreeMap<String, Option<f64>> = work
        .iter()
        .filter(|w| w.state.in_service)
        .map(|w| (w.name.to_owned(), w.state.smoothed_latency))
        .collect();
    let previous: BTreeMap<String, u8> = work
        .iter()
        .filter(|w| w.state.in_service && w.was_in)
        .map(|w| (w.name.to_owned(), w.state.weight))
        .collect();
    let calcs = compute_weights(weights, &latency, &previous);
    work.iter_mut()
        .map(|w| {
            let Some(calc) = calcs.get(w.name).filter(|_| w.state.in_service) else {
                w.state.weight = 0;
                return "weight 0 (out of service)".to_owned();
            };
            if frozen && w.was_in && w.state.weight != 0 {
                w.state.weight = w.state.weight.max(floor);
                return format!(
                    "weight {} (frozen; would be {})",
                    w.state.weight, calc.weight
                );
            }
            w.state.weight = calc.weight;
            calc.describe(weights)
        })
        .collect()
}

/// How one weight came about.
#[derive(Debug, Clone, Copy)]
struct WeightCalc {
    weight: u8,
    /// The weight before the dead band.
    computed: u8,
    latency: Option<f64>,
    kept_by_dead_band: bool,
    /// Whether any Region in service has a latency (else all get an equal share).
    any_latency: bool,
}

impl WeightCalc {
    fn describe(&self, weights: &WeightPolicy) -> String {
        let source = match (self.latency, self.any_latency) {
            (Some(latency), _) => format!("smoothed latency {}", fmt_seconds_as_ms(latency)),
            (None, true) => "no latency: mean of the others".to_owned(),
            (None, false) => "no latency measured: equal share".to_owned(),
        };
        if self.kept_by_dead_band {
            format!(
                "weight {} (kept: computed {} is within dead_band {}; {})",
                self.weight, self.computed, weights.dead_band, source
            )
        } else {
            format!("weight {} ({})", self.weight, source)
        }
    }
}

fn compute_weights(
    weights: &WeightPolicy,
    in_service_latency: &BTreeMap<String, Option<f64>>,
    previous: &BTreeMap<String, u8>,
) -> BTreeMap<String, WeightCalc> {
    let floor = weights.floor.max(1);
    let usable = |latency: Option<f64>| {
        latency
            .filter(|l| l.is_finite() && *l >= 0.0)
            .map(|l| l.max(MIN_LATENCY_SECONDS))
    };
    let best_inverse = in_service_latency
        .values()
        .filter_map(|l| usable(*l))
        .map(|l| 1.0 / l)
        .fold(None, |best: Option<f64>, inverse| {
            Some(best.map_or(inverse, |b| b.max(inverse)))
        });
    let raw_of = |latency: f64| match best_inverse {
        Some(best) => (1.0 / latency) / best * 255.0,
        None => 255.0,
    };
    let raws: Vec<f64> = in_service_latency
        .values()
        .filter_map(|l| usable(*l))
        .map(raw_of)
        .collect();
    let share = if raws.is_empty() {
        255.0
    } else {
        raws.iter().sum::<f64>() / raws.len() as f64
    };
    in_service_latency
        .iter()
        .map(|(region, latency)| {
            let latency = usable(*latency);
            let raw = latency.map_or(share, raw_of);
            let computed = raw.round().clamp(f64::from(floor), 255.0) as u8;
            let before = previous.get(region).copied().unwrap_or(0);
            let kept_by_dead_band =
                before != 0 && computed.abs_diff(before) < weights.dead_band && computed != before;
            let weight = if kept_by_dead_band {
                before.max(floor)
            } else {
                computed
            };
            let calc = WeightCalc {
                weight,
                computed,
                latency,
                kept_by_dead_band,
                any_latency: best_inverse.is_some(),
            };
            (region.clone(), calc)
        })
        .collect()
}

fn ewma_alpha(weights: &WeightPolicy) -> f64 {
    if weights.ewma_alpha.is_nan() {
        1.0
    } else {
        weights.ewma_alpha.clamp(f64::MIN_POSITIVE, 1.0)
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

impl Work<'_> {
    fn action_text(&self, policy: &Policy, now: Duration) -> String {
        let direction = |in_service: bool| {
            if in_service {
                "put back in"
            } else {
                "taken out"
            }
        };
        let kept = |in_service: bool| {
            if in_service {
                "kept out of service"
            } else {
                "kept in service"
            }
        };
        match self.outcome {
            Outcome::Stay if self.state.in_service => "stays in service".to_owned(),
            Outcome::Stay => "stays out of service".to_owned(),
            // Every candidate is decided by `apply_safety`; say so rather than panic if not.
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
                decayed_penalty(
                    self.state.penalty,
                    self.state.penalty_at,
                    now,
                    policy.flap_half_life
                )
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
                let pinned = match pin {
                    Pin::Up => "pinned up",
                    Pin::Down => "pinned down",
                };
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
                format!("{pinned}: {what}{against}")
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

    fn alert(&self, policy: &Policy) -> Option<Alert> {
        let direction = |in_service: bool| {
            if in_service {
                "put back in"
            } else {
                "taken out"
            }
        };
        let (kind, message) = match self.outcome {
            Outcome::Stay
            | Outcome::FlapHeld { .. }
            | Outcome::Candidate { .. }
            | Outcome::Automated
            | Outcome::Pinned { against: false, .. } => return None,
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
                    match pin {
                        Pin::Up => "up",
                        Pin::Down => "down",
                    },
                    self.evidence
                ),
            ),
        };
        Some(Alert {
            kind,
            region: Some(self.name.to_owned()),
            message,
        })
    }
}

fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Up => "up",
        Verdict::Down => "down",
        Verdict::Unknown => "unknown",
    }
}

fn describe_vantage(policy: &Policy, vantage: &str, s: &VantageSample, v: Verdict) -> String {
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

fn describe_tally(t: &Tally, vantages: &str) -> String {
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

fn describe_streak(policy: &Policy, state: &RegionState, verdict: Verdict, was_in: bool) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VANTAGES: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn sample(vantage: &str, attempts: u64, failures: u64, latency_ms: u64) -> VantageSample {
        VantageSample {
            vantage: vantage.to_owned(),
            attempts,
            failures,
            limit_latency: Some(Duration::from_millis(latency_ms)),
            weight_latency: Some(Duration::from_millis(latency_ms)),
        }
    }

    /// Every vantage sees `region` with the given failures out of 10, at `latency_ms`.
    fn seen(region: &str, failures: [u64; 3], latency_ms: u64) -> RegionObservation {
        RegionObservation {
            region: region.to_owned(),
            vantages: VANTAGES
                .iter()
                .zip(failures)
                .map(|(v, f)| sample(v, 10, f, latency_ms))
                .collect(),
        }
    }

    fn up(region: &str) -> RegionObservation {
        seen(region, [0, 0, 0], 50)
    }

    fn down(region: &str) -> RegionObservation {
        seen(region, [10, 10, 10], 50)
    }

    fn names(regions: &[&str]) -> Vec<String> {
        regions.iter().map(|r| (*r).to_owned()).collect()
    }

    /// Drives evaluations like the aggregator does, carrying the state.
    struct Sim {
        policy: Policy,
        weights: WeightPolicy,
        regions: Vec<String>,
        state: ModelState,
        overrides: Overrides,
        now: Duration,
    }

    impl Sim {
        fn new(policy: Policy, regions: &[&str]) -> Sim {
            Sim {
                policy,
                weights: WeightPolicy::default(),
                regions: names(regions),
                state: ModelState::default(),
                overrides: Overrides::default(),
                now: Duration::ZERO,
            }
        }

        /// One evaluation at the current time, then time moves on by 5 s.
        fn step(&mut self, observations: &[RegionObservation]) -> Decision {
            let (state, decision) = evaluate(
                &self.policy,
                &self.weights,
                &self.regions,
                &self.state,
                observations,
                &self.overrides,
                self.now,
            );
            self.state = state;
            self.now += secs(5);
            decision
        }
    }

    fn region<'d>(d: &'d Decision, name: &str) -> &'d RegionDecision {
        d.regions.iter().find(|r| r.region == name).expect("region")
    }

    fn in_service(d: &Decision, name: &str) -> bool {
        region(d, name).in_service
    }

    fn alerts(d: &Decision, kind: AlertKind) -> Vec<&str> {
        d.alerts
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| a.region.as_deref().unwrap_or(""))
            .collect()
    }

    #[test]
    fn vantage_verdict_follows_attempts_ratio_and_latency() {
        let mut policy = Policy::default();
        assert_eq!(
            vantage_verdict(&policy, &sample("v", policy.min_attempts - 1, 1, 10)),
            Verdict::Unknown
        );
        assert_eq!(
            vantage_verdict(&policy, &sample("v", 0, 0, 10)),
            Verdict::Unknown
        );
        // Exactly the ratio is not above it.
        assert_eq!(
            vantage_verdict(&policy, &sample("v", 4, 2, 10)),
            Verdict::Up
        );
        assert_eq!(
            vantage_verdict(&policy, &sample("v", 4, 3, 10)),
            Verdict::Down
        );
        policy.max_latency = Some(Duration::from_millis(100));
        assert_eq!(
            vantage_verdict(&policy, &sample("v", 4, 0, 100)),
            Verdict::Up
        );
        assert_eq!(
            vantage_verdict(&policy, &sample("v", 4, 0, 101)),
            Verdict::Down
        );
        policy.min_attempts = 0;
        assert_eq!(
            vantage_verdict(&policy, &sample("v", 0, 0, 10)),
            Verdict::Unknown
        );
    }

    #[test]
    fn region_verdict_needs_a_quorum_of_vantages_with_data() {
        use Verdict::{Down as D, Unknown as U, Up as P};
        let majority = Policy::default();
        assert_eq!(region_verdict(&majority, &[]), U);
        assert_eq!(region_verdict(&majority, &[U, U]), U);
        // One noisy vantage alone can neither fail nor clear a Region.
        assert_eq!(region_verdict(&majority, &[D]), U);
        assert_eq!(region_verdict(&majority, &[D, U, U]), U);
        assert_eq!(region_verdict(&majority, &[D, P]), P);
        assert_eq!(region_verdict(&majority, &[D, P, P]), P);
        assert_eq!(region_verdict(&majority, &[D, D, P]), D);
        assert_eq!(region_verdict(&majority, &[D, D, U]), D);
        // Four voters: a majority is three.
        assert_eq!(region_verdict(&majority, &[D, D, P, P]), P);
        assert_eq!(region_verdict(&majority, &[D, D, D, P]), D);
        let at_least_1 = Policy {
            quorum: Quorum::AtLeast(1),
            ..Policy::default()
        };
        assert_eq!(region_verdict(&at_least_1, &[D, P, P]), P);
        let at_least_3 = Policy {
            quorum: Quorum::AtLeast(3),
            ..Policy::default()
        };
        assert_eq!(region_verdict(&at_least_3, &[D, D, P]), P);
        assert_eq!(region_verdict(&at_least_3, &[D, D, D, P, P]), D);
    }

    #[test]
    fn penalty_halves_every_half_life() {
        let h = secs(300);
        assert_eq!(decayed_penalty(1000.0, secs(10), secs(10), h), 1000.0);
        assert!((decayed_penalty(1000.0, secs(10), secs(310), h) - 500.0).abs() < 1e-9);
        assert!((decayed_penalty(1000.0, secs(0), secs(900), h) - 125.0).abs() < 1e-9);
        // Time going backwards is no time at all.
        assert_eq!(decayed_penalty(1000.0, secs(20), secs(10), h), 1000.0);
        assert_eq!(
            decayed_penalty(1000.0, secs(0), secs(1), Duration::ZERO),
            0.0
        );
        assert_eq!(decayed_penalty(f64::NAN, secs(0), secs(1), h), 0.0);
        assert_eq!(decayed_penalty(-3.0, secs(0), secs(1), h), 0.0);
    }

    #[test]
    fn new_regions_start_in_service_with_weights_from_latency() {
        let mut sim = Sim::new(Policy::default(), &["b", "a", "c"]);
        let d = sim.step(&[seen("a", [0; 3], 50), seen("b", [0; 3], 100)]);
        let names: Vec<&str> = d.regions.iter().map(|r| r.region.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(d.transitions.is_empty());
        assert!(d.regions.iter().all(|r| r.in_service));
        assert_eq!(region(&d, "a").weight, 255);
        assert_eq!(region(&d, "b").weight, 128);
        // c has no latency: the mean of the others' raw weights.
        assert_eq!(region(&d, "c").weight, 191);
        assert_eq!(region(&d, "c").verdict, Verdict::Unknown);
        let c = &sim.state.regions["c"];
        assert_eq!((c.down_streak, c.up_streak, c.penalty), (0, 0, 0.0));
        assert_eq!(sim.state.regions["a"].up_streak, 1);

        let mut sim = Sim::new(Policy::default(), &["a", "b"]);
        let d = sim.step(&[]);
        assert!(d.regions.iter().all(|r| r.in_service && r.weight == 255));
    }

    #[test]
    fn fail_after_counts_exactly_and_reason_has_the_figures() {
        let mut sim = Sim::new(Policy::default(), &["eu-west-1", "us-east-1"]);
        let failing = || RegionObservation {
            region: "eu-west-1".to_owned(),
            vantages: vec![
                sample("us-east-1", 10, 9, 80),
                sample("ap-southeast-1", 10, 10, 80),
                sample("eu-west-1", 10, 0, 80),
            ],
        };
        let d = sim.step(&[failing(), up("us-east-1")]);
        assert!(in_service(&d, "eu-west-1"));
        assert!(region(&d, "eu-west-1")
            .reason
            .contains("down 1 evaluation < fail_after 2; stays in service"));
        let d = sim.step(&[failing(), up("us-east-1")]);
        let eu = region(&d, "eu-west-1");
        assert!(!eu.in_service);
        assert_eq!(eu.weight, 0);
        assert_eq!(eu.verdict, Verdict::Down);
        assert_eq!(eu.vantages["eu-west-1"], Verdict::Up);
        assert_eq!(eu.vantages["us-east-1"], Verdict::Down);
        assert!(
            eu.reason.starts_with(
                "eu-west-1: down by quorum 2/3 (ap-southeast-1 down 10/10 failed, \
                 eu-west-1 up 0/10 failed, us-east-1 down 9/10 failed); \
                 down 2 evaluations ≥ fail_after 2; taken out"
            ),
            "{}",
            eu.reason
        );
        assert_eq!(d.transitions.len(), 1);
        assert_eq!(d.transitions[0].region, "eu-west-1");
        assert!(!d.transitions[0].in_service);
        assert_eq!(d.transitions[0].reason, eu.reason);
        assert_eq!(region(&d, "us-east-1").weight, 255);
        assert_eq!(sim.state.recent_transitions.len(), 1);
        assert_eq!(sim.state.regions["eu-west-1"].penalty, 1000.0);
    }

    #[test]
    fn recover_after_counts_exactly_and_up_resets_the_down_streak() {
        let mut sim = Sim::new(Policy::default(), &["a", "b"]);
        // Down, up, down: the up in between resets the streak, so nothing happens.
        for obs in [down("a"), up("a"), down("a")] {
            let d = sim.step(&[obs, up("b")]);
            assert!(in_service(&d, "a"));
        }
        let d = sim.step(&[down("a"), up("b")]);
        assert!(!in_service(&d, "a"));
        for n in 1..6 {
            let d = sim.step(&[up("a"), up("b")]);
            assert!(!in_service(&d, "a"), "after {n} up evaluations");
            assert!(region(&d, "a")
                .reason
                .contains(&format!("up {n} evaluation")));
        }
        let d = sim.step(&[up("a"), up("b")]);
        assert!(in_service(&d, "a"));
        assert!(region(&d, "a")
            .reason
            .contains("up 6 evaluations ≥ recover_after 6; put back in"));
        assert!(d.transitions[0].in_service);
        assert!(region(&d, "a").weight >= 10);
    }

    #[test]
    fn unknown_holds_the_streaks() {
        let mut sim = Sim::new(Policy::default(), &["a", "b"]);
        let no_data = RegionObservation {
            region: "a".to_owned(),
            vantages: vec![sample("us-east-1", 1, 1, 10)],
        };
        sim.step(&[down("a"), up("b")]);
        for _ in 0..10 {
            let d = sim.step(&[no_data.clone(), up("b")]);
            assert!(in_service(&d, "a"));
            assert_eq!(region(&d, "a").verdict, Verdict::Unknown);
            assert!(region(&d, "a")
                .reason
                .contains("no verdict: streaks held (down 1, up 0)"));
        }
        let d = sim.step(&[down("a"), up("b")]);
        assert!(!in_service(&d, "a"));

        // Out of service, unknown holds the up streak too: 5 up, silence, 1 up.
        for _ in 0..5 {
            sim.step(&[up("a"), up("b")]);
        }
        for _ in 0..10 {
            assert!(!in_service(&sim.step(&[up("b")]), "a"));
        }
        assert!(in_service(&sim.step(&[up("a"), up("b")]), "a"));
    }

    #[test]
    fn pins_beat_measurements_and_do_not_count_as_changes() {
        let policy = Policy {
            max_changes: 0,
            ..Policy::default()
        };
        let mut sim = Sim::new(policy, &["a", "b"]);
        sim.overrides.pinned.insert("a".to_owned(), Pin::Down);
        let d = sim.step(&[up("a"), up("b")]);
        assert!(!in_service(&d, "a"));
        assert_eq!(region(&d, "a").weight, 0);
        assert_eq!(d.transitions.len(), 1);
        assert_eq!(
            alerts(&d, AlertKind::PinnedAgainstMeasurements),
            ["a"],
            "{:?}",
            d.alerts
        );
        assert!(region(&d, "a")
            .reason
            .contains("pinned down: taken out by the pin, against the measurements"));
        assert!(sim.state.recent_transitions.is_empty());
        assert_eq!(sim.state.regions["a"].penalty, 0.0);

        // Pin b up while it is down: it stays in and the alert says the quorum disagrees.
        sim.overrides.pinned.insert("b".to_owned(), Pin::Up);
        for _ in 0..5 {
            let d = sim.step(&[up("a"), down("b")]);
            assert!(in_service(&d, "b"));
            assert!(region(&d, "b").weight >= 10);
            assert_eq!(alerts(&d, AlertKind::PinnedAgainstMeasurements), ["a", "b"]);
        }
        // Unpinned, a comes back by its up streak; but max_changes 0 forbids automation, so
        // only the floor (min_healthy 1) can act, and b is still in service.
        sim.overrides.pinned.clear();
        let d = sim.step(&[up("a"), down("b")]);
        assert!(!in_service(&d, "a"));
        assert!(in_service(&d, "b"));
        assert_eq!(alerts(&d, AlertKind::ChangeLimit), ["a"]);
        assert_eq!(alerts(&d, AlertKind::FailOpen), ["b"]);
    }

    #[test]
    fn freeze_holds_transitions_and_weights() {
        let mut sim = Sim::new(Policy::default(), &["a", "b"]);
        sim.step(&[seen("a", [0; 3], 50), seen("b", [0; 3], 100)]);
        sim.overrides.frozen = true;
        for _ in 0..4 {
            let d = sim.step(&[seen("a", [10; 3], 400), seen("b", [0; 3], 100)]);
            assert!(in_service(&d, "a"));
            assert_eq!(region(&d, "a").weight, 255);
            assert_eq!(region(&d, "b").weight, 128);
            assert!(d.transitions.is_empty());
        }
        let d = sim.step(&[seen("a", [10; 3], 400), seen("b", [0; 3], 100)]);
        assert_eq!(alerts(&d, AlertKind::Frozen), ["a"]);
        assert!(region(&d, "a")
            .reason
            .contains("kept in service: automation frozen (would be taken out)"));
        assert!(region(&d, "b")
            .reason
            .contains("weight 128 (frozen; would be"));
        // Smoothed latency kept tracking while frozen.
        assert!(sim.state.regions["a"].smoothed_latency.unwrap() > 0.3);

        sim.overrides.frozen = false;
        let d = sim.step(&[seen("a", [10; 3], 400), seen("b", [0; 3], 100)]);
        assert!(!in_service(&d, "a"));
        assert_eq!(region(&d, "b").weight, 255);
    }

    #[test]
    fn change_limit_is_a_sliding_window() {
        let policy = Policy {
            max_changes: 2,
            change_window: secs(60),
            fail_after: 1,
            ..Policy::default()
        };
        let mut sim = Sim::new(policy, &["a", "b", "c", "d"]);
        let d = sim.step(&[down("a"), up("b"), up("c"), up("d")]); // t = 0
        assert!(!in_service(&d, "a"));
        let d = sim.step(&[down("a"), down("b"), up("c"), up("d")]); // t = 5
        assert!(!in_service(&d, "b"));
        // c fails from t = 10; the budget is spent until a's change leaves the window at t = 60.
        for t in (10..60).step_by(5) {
            let d = sim.step(&[down("a"), down("b"), down("c"), up("d")]);
            assert!(in_service(&d, "c"), "t = {t}");
            assert_eq!(alerts(&d, AlertKind::ChangeLimit), ["c"]);
            assert!(region(&d, "c")
                .reason
                .contains("already 2 automated transitions in the last 60 s, max_changes 2"));
        }
        assert_eq!(sim.now, secs(60));
        let d = sim.step(&[down("a"), down("b"), down("c"), up("d")]);
        assert!(!in_service(&d, "c"));
        assert_eq!(sim.state.recent_transitions, [secs(5), secs(60)]);
    }

    #[test]
    fn change_limit_prefers_putting_regions_back() {
        let policy = Policy {
            max_changes: 2,
            change_window: secs(60),
            fail_after: 1,
            recover_after: 1,
            flap_penalty: 0.0,
            ..Policy::default()
        };
        let mut sim = Sim::new(policy, &["a", "b", "c", "d"]);
        sim.step(&[down("a"), down("b"), up("c"), up("d")]);
        sim.now = secs(100);
        // Budget 2: a and b back in first, c's take-out waits.
        let d = sim.step(&[up("a"), up("b"), down("c"), up("d")]);
        assert!(in_service(&d, "a") && in_service(&d, "b") && in_service(&d, "c"));
        assert_eq!(alerts(&d, AlertKind::ChangeLimit), ["c"]);
        // With one left, the healthier put-back wins.
        sim.now = secs(200);
        sim.step(&[down("a"), down("b"), up("c"), up("d")]);
        sim.now = secs(300);
        sim.policy.max_changes = 1;
        let d = sim.step(&[seen("a", [0, 0, 0], 90), seen("b", [0, 0, 0], 40), up("c")]);
        assert!(!in_service(&d, "a"));
        assert!(in_service(&d, "b"));
    }

    #[test]
    fn fail_open_keeps_the_healthiest_in() {
        let policy = Policy {
            fail_after: 1,
            ..Policy::default()
        };
        let mut sim = Sim::new(policy, &["a", "b", "c"]);
        // All down; b fails least.
        let d = sim.step(&[
            seen("a", [10, 10, 10], 50),
            seen("b", [6, 6, 10], 50),
            seen("c", [9, 9, 9], 50),
        ]);
        assert!(!in_service(&d, "a") && in_service(&d, "b") && !in_service(&d, "c"));
        assert_eq!(alerts(&d, AlertKind::FailOpen), ["b"]);
        assert!(region(&d, "b").reason.contains(
            "kept in service (fail-open): taking it out would leave 0 in service, \
             fewer than 1 (min_healthy 1)"
        ));
        assert_eq!(region(&d, "b").weight, 255);

        // min_healthy 2, equal failures: the lower latency wins, then the name.
        let policy = Policy {
            fail_after: 1,
            min_healthy: 2,
            ..Policy::default()
        };
        let mut sim = Sim::new(policy, &["a", "b", "c"]);
        let d = sim.step(&[
            seen("a", [10; 3], 90),
            seen("b", [10; 3], 80),
            seen("c", [10; 3], 80),
        ]);
        assert!(!in_service(&d, "a") && in_service(&d, "b") && in_service(&d, "c"));
        assert_eq!(alerts(&d, AlertKind::FailOpen), ["b", "c"]);
        // When one recovers, it goes back in and a fail-open one can leave.
        sim.policy.recover_after = 1;
        let d = sim.step(&[up("a"), seen("b", [10; 3], 80), seen("c", [10; 3], 80)]);
        assert!(in_service(&d, "a"));
        assert_eq!(
            d.regions.iter().filter(|r| r.in_service).count(),
            2,
            "{d:#?}"
        );
    }

    #[test]
    fn floor_puts_regions_back_after_a_pin_is_lifted() {
        let policy = Policy {
            min_healthy: 2,
            ..Policy::default()
        };
        let mut sim = Sim::new(policy, &["a", "b", "c"]);
        sim.overrides.pinned.insert("a".to_owned(), Pin::Down);
        sim.overrides.pinned.insert("b".to_owned(), Pin::Down);
        let d = sim.step(&[down("a"), seen("b", [8; 3], 50), up("c")]);
        assert_eq!(d.regions.iter().filter(|r| r.in_service).count(), 1);
        // Pins lifted while frozen: the floor still applies, the healthier of a and b returns.
        sim.overrides.pinned.clear();
        sim.overrides.frozen = true;
        let d = sim.step(&[down("a"), seen("b", [8; 3], 50), up("c")]);
        assert!(!in_service(&d, "a") && in_service(&d, "b") && in_service(&d, "c"));
        assert_eq!(alerts(&d, AlertKind::FailOpen), ["b"]);
        assert!(region(&d, "b")
            .reason
            .contains("put back in (fail-open): only 1 in service, fewer than 2"));
        assert!(sim.state.recent_transitions.is_empty());
    }

    #[test]
    fn flapping_region_is_held_out_until_the_penalty_decays() {
        // Evaluations every 5 s for 30 minutes. b: down at 0 and 5 (out at 5), up from 10 (in
        // at 35, penalty 1000 decayed to 933 allows it), down at 40 and 45 (out at 45, penalty
        // 1933 decayed + 1000 = 2889), then up for good: held out until 2889 decays to 1500,
        // 300 s × log2(2889 / 1500) = 284 s after 45, so back in at the evaluation at 330 s.
        let mut sim = Sim::new(Policy::default(), &["a", "b", "c"]);
        let mut changes = Vec::new();
        let mut held = 0;
        while sim.now <= secs(1800) {
            let t = sim.now.as_secs();
            let b = if t < 10 || (40..50).contains(&t) {
                down("b")
            } else {
                up("b")
            };
            let d = sim.step(&[up("a"), b, up("c")]);
            for tr in &d.transitions {
                changes.push((t, tr.region.clone(), tr.in_service));
            }
            if region(&d, "b").reason.contains("held out by flap damping") {
                held += 1;
            }
        }
        let b = |t: u64, in_service: bool| (t, "b".to_owned(), in_service);
        assert_eq!(
            changes,
            [b(5, false), b(35, true), b(45, false), b(330, true)]
        );
        // Up streak reaches 6 at 75; held from 75 to 325.
        assert_eq!(held, (325 - 75) / 5 + 1);
        assert!(sim.state.regions["b"].in_service);
    }

    #[test]
    fn weights_follow_inverse_latency_with_floor_and_dead_band() {
        let w = WeightPolicy::default();
        let lat = |pairs: &[(&str, Option<f64>)]| -> BTreeMap<String, Option<f64>> {
            pairs.iter().map(|(r, l)| ((*r).to_owned(), *l)).collect()
        };
        let none = BTreeMap::new();
        let got = weights_for(
            &w,
            &lat(&[("a", Some(0.05)), ("b", Some(0.1)), ("c", Some(10.0))]),
            &none,
        );
        assert_eq!(got["a"], 255);
        assert_eq!(got["b"], 128);
        assert_eq!(got["c"], 10, "floor");
        let got = weights_for(&w, &lat(&[("a", None), ("b", None)]), &none);
        assert!(got.values().all(|w| *w == 255));
        let got = weights_for(&w, &lat(&[("a", Some(0.0)), ("b", Some(f64::NAN))]), &none);
        assert_eq!((got["a"], got["b"]), (255, 255));
        // Dead band: 128 → 133 is within 8, keep; 128 → 100 is not.
        let previous: BTreeMap<String, u8> = [("b".to_owned(), 133u8)].into();
        let got = weights_for(&w, &lat(&[("a", Some(0.05)), ("b", Some(0.1))]), &previous);
        assert_eq!(got["b"], 133);
        let previous: BTreeMap<String, u8> = [("b".to_owned(), 100u8)].into();
        let got = weights_for(&w, &lat(&[("a", Some(0.05)), ("b", Some(0.1))]), &previous);
        assert_eq!(got["b"], 128);
        let floor0 = WeightPolicy {
            floor: 0,
            ..WeightPolicy::default()
        };
        let got = weights_for(
            &floor0,
            &lat(&[("a", Some(0.001)), ("b", Some(100.0))]),
            &none,
        );
        assert_eq!(got["b"], 1, "a weight in service is never 0");
    }

    #[test]
    fn smoothed_latency_is_an_ewma_of_the_vantage_median() {
        let mut sim = Sim::new(Policy::default(), &["a"]);
        let obs = |ms: [u64; 3]| RegionObservation {
            region: "a".to_owned(),
            vantages: VANTAGES
                .iter()
                .zip(ms)
                .map(|(v, ms)| sample(v, 10, 0, ms))
                .collect(),
        };
        sim.step(&[obs([100, 900, 200])]);
        assert!((sim.state.regions["a"].smoothed_latency.unwrap() - 0.2).abs() < 1e-12);
        sim.step(&[obs([300, 300, 1])]);
        assert!((sim.state.regions["a"].smoothed_latency.unwrap() - 0.23).abs() < 1e-12);
        sim.step(&[]);
        assert!((sim.state.regions["a"].smoothed_latency.unwrap() - 0.23).abs() < 1e-12);
    }

    #[test]
    fn one_vantage_reporting_twice_is_still_one_voice() {
        let mut sim = Sim::new(Policy::default(), &["a", "b"]);
        let noisy = RegionObservation {
            region: "a".to_owned(),
            vantages: vec![
                sample("us-east-1", 10, 10, 50),
                sample("us-east-1", 10, 10, 50),
            ],
        };
        for _ in 0..5 {
            let d = sim.step(&[noisy.clone(), noisy.clone(), up("b")]);
            assert!(in_service(&d, "a"));
            assert_eq!(region(&d, "a").verdict, Verdict::Unknown);
        }
    }

    // ---- Property tests ----

    /// One evaluation's inputs: time step, per Region per vantage a sample, pins, freeze.
    #[derive(Debug, Clone)]
    struct Step {
        advance: u64,
        samples: Vec<Vec<Option<(u64, u64, u64)>>>,
        pins: Vec<Option<Pin>>,
        frozen: bool,
    }

    const MAX_REGIONS: usize = 4;

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            1u32..4,
            1u32..6,
            0usize..=MAX_REGIONS + 1,
            0u32..4,
            5u64..90,
            prop_oneof![
                Just(Quorum::Majority),
                (0usize..4).prop_map(Quorum::AtLeast)
            ],
            proptest::option::of(50u64..500),
            0.0f64..2000.0,
        )
            .prop_map(
                |(fail, recover, min_healthy, max_changes, window, quorum, max_ms, penalty)| {
                    Policy {
                        fail_after: fail,
                        recover_after: recover,
                        min_healthy,
                        max_changes,
                        change_window: secs(window),
                        quorum,
                        max_latency: max_ms.map(Duration::from_millis),
                        flap_penalty: penalty,
                        ..Policy::default()
                    }
                },
            )
    }

    fn arb_weights() -> impl Strategy<Value = WeightPolicy> {
        (0.05f64..=1.0, 0u8..50, 0u8..20).prop_map(|(ewma_alpha, floor, dead_band)| WeightPolicy {
            ewma_alpha,
            floor,
            dead_band,
        })
    }

    fn arb_sample() -> impl Strategy<Value = Option<(u64, u64, u64)>> {
        proptest::option::weighted(0.85, (0u64..12, 0u64..12, 1u64..800))
    }

    fn arb_steps(pins: bool) -> impl Strategy<Value = Vec<Step>> {
        let pin = if pins {
            proptest::option::weighted(0.1, prop_oneof![Just(Pin::Up), Just(Pin::Down)]).boxed()
        } else {
            Just(None).boxed()
        };
        let step = (
            1u64..15,
            proptest::collection::vec(
                proptest::collection::vec(arb_sample(), VANTAGES.len()),
                MAX_REGIONS,
            ),
            proptest::collection::vec(pin, MAX_REGIONS),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(advance, samples, pins, frozen)| Step {
                advance,
                samples,
                pins,
                frozen,
            });
        proptest::collection::vec(step, 1..60)
    }

    fn region_names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}")).collect()
    }

    fn observations(step: &Step, n: usize) -> Vec<RegionObservation> {
        (0..n)
            .map(|r| RegionObservation {
                region: format!("r{r}"),
                vantages: VANTAGES
                    .iter()
                    .zip(&step.samples[r])
                    .filter_map(|(v, s)| {
                        s.map(|(attempts, failures, ms)| {
                            sample(v, attempts, failures.min(attempts), ms)
                        })
                    })
                    .collect(),
            })
            .collect()
    }

    fn overrides(step: &Step, n: usize) -> Overrides {
        Overrides {
            pinned: (0..n)
                .filter_map(|r| step.pins[r].map(|p| (format!("r{r}"), p)))
                .collect(),
            frozen: step.frozen,
        }
    }

    /// Runs the steps; `reverse` feeds Regions and observations in reverse order.
    fn run(
        policy: &Policy,
        weights: &WeightPolicy,
        n: usize,
        steps: &[Step],
        reverse: bool,
    ) -> Vec<(ModelState, Decision, Overrides)> {
        let mut regions = region_names(n);
        if reverse {
            regions.reverse();
        }
        let mut state = ModelState::default();
        let mut now = secs(1_000);
        let mut out = Vec::with_capacity(steps.len());
        for step in steps {
            now += secs(step.advance);
            let mut obs = observations(step, n);
            if reverse {
                obs.reverse();
                obs.iter_mut().for_each(|o| o.vantages.reverse());
            }
            let ov = overrides(step, n);
            let (next, decision) = evaluate(policy, weights, &regions, &state, &obs, &ov, now);
            state = next.clone();
            out.push((next, decision, ov));
        }
        out
    }

    /// Transitions that automation made: not pinned, not fail-open.
    fn automated(decision: &Decision, ov: &Overrides) -> usize {
        decision
            .transitions
            .iter()
            .filter(|t| !ov.pinned.contains_key(&t.region) && !t.reason.contains("fail-open"))
            .count()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// P1: one vantage alone never takes a Region out: the others are up, or have no data.
        #[test]
        fn p1_one_vantage_alone_never_takes_a_region_out(
            policy in arb_policy(),
            weights in arb_weights(),
            n in 1usize..=MAX_REGIONS,
            mut steps in arb_steps(false),
            others_up in proptest::collection::vec(any::<bool>(), 64),
        ) {
            // Vantage 0 says whatever it likes; the others see no failure, or too little.
            for (step, up) in steps.iter_mut().zip(others_up.iter().cycle()) {
                for region in &mut step.samples {
                    for s in region.iter_mut().skip(1) {
                        *s = s.map(|(a, _, ms)| {
                            if *up { (a.max(policy.min_attempts.max(1)), 0, ms.min(40)) }
                            else { (a.min(policy.min_attempts.saturating_sub(1)), a, ms) }
                        });
                    }
                }
            }
            for (_, d, _) in run(&policy, &weights, n, &steps, false) {
                for r in &d.regions {
                    prop_assert_ne!(r.verdict, Verdict::Down, "{}", r.reason);
                }
                prop_assert!(d.transitions.iter().all(|t| t.in_service), "{:#?}", d.transitions);
            }
        }

        /// P2 to P5, and the shape of the decision.
        #[test]
        fn p2_to_p5_safety_invariants(
            policy in arb_policy(),
            weights in arb_weights(),
            n in 1usize..=MAX_REGIONS,
            steps in arb_steps(true),
        ) {
            let runs = run(&policy, &weights, n, &steps, false);
            let floor = weights.floor.max(1);
            let mut automated_at: Vec<(Duration, usize)> = Vec::new();
            for (state, d, ov) in &runs {
                let names: Vec<&str> = d.regions.iter().map(|r| r.region.as_str()).collect();
                let expected = region_names(n);
                prop_assert_eq!(names, expected.iter().map(String::as_str).collect::<Vec<_>>());
                prop_assert_eq!(state.regions.len(), n);
                // P2: weights.
                for r in &d.regions {
                    if r.in_service {
                        prop_assert!(r.weight >= floor, "{}", r.reason);
                    } else {
                        prop_assert_eq!(r.weight, 0, "{}", &r.reason);
                    }
                    prop_assert_eq!(state.regions[&r.region].in_service, r.in_service);
                }
                // P3: the floor, unless pins force fewer.
                let not_pinned_down =
                    ov.pinned.values().filter(|p| **p == Pin::Down).count();
                let required = policy.min_healthy.min(n - not_pinned_down);
                let serving = d.regions.iter().filter(|r| r.in_service).count();
                prop_assert!(serving >= required, "{} < {}: {:#?}", serving, required, d);
                // Pins always win.
                for (region, pin) in &ov.pinned {
                    let r = d.regions.iter().find(|r| &r.region == region).unwrap();
                    prop_assert_eq!(r.in_service, *pin == Pin::Up);
                }
                let count = automated(d, ov);
                let recorded = state.recent_transitions.iter().filter(|t| **t == d.at).count();
                prop_assert_eq!(count, recorded);
                if ov.frozen {
                    prop_assert_eq!(count, 0);
                }
                automated_at.push((d.at, count));
            }
            // P5: at most max_changes automated transitions in any window.
            for &(end, _) in &automated_at {
                let in_window: usize = automated_at
                    .iter()
                    .filter(|(t, _)| *t <= end && end - *t < policy.change_window)
                    .map(|(_, c)| c)
                    .sum();
                prop_assert!(in_window <= policy.max_changes as usize);
            }
            // P4: same inputs, same outputs, whatever the order of Regions and observations.
            let again = run(&policy, &weights, n, &steps, false);
            prop_assert_eq!(&runs, &again);
            let reversed = run(&policy, &weights, n, &steps, true);
            prop_assert_eq!(&runs, &reversed);
        }
    }
}
