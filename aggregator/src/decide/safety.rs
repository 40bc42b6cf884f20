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
