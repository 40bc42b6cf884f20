//! Rule 6: the guards that stand between the measurements and Route 53. Pins overrule
//! everything; a freeze or the change budget holds automated transitions back; the floor
//! (`min_healthy`) fails open, keeping or putting back the healthiest Regions rather than
//! let capacity fall below it. Only automated transitions spend the change budget.

use super::{hysteresis, Outcome, Work};
use crate::model::{ModelState, Pin, Policy, Verdict};
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::time::Duration;

/// The automated transitions still inside the trailing `change_window` at `now`.
pub(super) fn recent_changes(
    policy: &Policy,
    previous: &ModelState,
    now: Duration,
) -> VecDeque<Duration> {
    previous
        .recent_transitions
        .iter()
        .copied()
        .filter(|&t| now.saturating_sub(t) < policy.change_window)
        .collect()
}

/// Pins decide their Regions outright (rule 6a), whatever the other rules propose.
pub(super) fn apply_pins(work: &mut [Work<'_>], now: Duration) {
    for w in work {
        let Some(pin) = w.pin else { continue };
        let against = matches!(
            (pin, w.tally.verdict),
            (Pin::Up, Verdict::Down) | (Pin::Down, Verdict::Up)
        );
        w.outcome = Outcome::Pinned { pin, against };
        w.state.in_service = pin == Pin::Up;
        if w.state.in_service != w.was_in {
            w.state.since = now;
        }
    }
}

/// The Regions of a correlated failure: at least `correlated_fraction` of all Regions (and at
/// least two), not pinned, down now, whose down verdicts began within `correlated_window` of
/// each other. It lasts as long as they stay down; Regions that went down far apart are
/// separate failures.
pub(super) struct Correlated {
    pub(super) down: Vec<usize>,
    pub(super) of: usize,
}

/// Rule 6a½: when too many Regions turned down together, every take-out candidate is held
/// (the Region stays in) and the caller raises one `correlated_failure` alert. Regions
/// already out stay out; pins still act (they were applied before).
pub(super) fn hold_correlated(policy: &Policy, work: &mut [Work<'_>]) -> Option<Correlated> {
    let of = work.len();
    if !(policy.correlated_fraction > 0.0 && policy.correlated_fraction <= 1.0) {
        return None;
    }
    let needed = ((policy.correlated_fraction * of as f64).ceil() as usize).max(2);
    let mut down: Vec<(Duration, usize)> = (0..of)
        .filter_map(|i| {
            let w = &work[i];
            let since = w.state.down_since?;
            (w.pin.is_none() && w.tally.verdict == Verdict::Down).then_some((since, i))
        })
        .collect();
    down.sort();
    // The most Regions whose down verdicts began within one window of each other.
    let (mut best, mut start) = ((0, 0), 0);
    for end in 0..down.len() {
        while down[end].0.saturating_sub(down[start].0) > policy.correlated_window {
            start += 1;
        }
        if end + 1 - start > best.1 - best.0 {
            best = (start, end + 1);
        }
    }
    if best.1 - best.0 < needed {
        return None;
    }
    let mut cluster: Vec<usize> = down[best.0..best.1].iter().map(|(_, i)| *i).collect();
    cluster.sort_unstable();
    for w in work.iter_mut() {
        if w.outcome == (Outcome::Candidate { in_service: false }) {
            w.outcome = Outcome::CorrelatedHeld {
                down: cluster.len(),
                of,
            };
        }
    }
    Some(Correlated { down: cluster, of })
}

/// Freeze, change limit and floor (rules 6b to 6d); applies the transitions.
pub(super) fn apply_limits(
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
        // Put-backs spend the budget first: holding one back only idles healthy capacity.
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

    // The floor beats freeze and budget alike: capacity matters more than either.
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
}

fn apply_automated(
    policy: &Policy,
    w: &mut Work<'_>,
    recent: &mut VecDeque<Duration>,
    now: Duration,
) {
    hysteresis::charge_penalty(policy, &mut w.state, now);
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
