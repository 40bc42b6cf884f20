//! Rules 4 and 5: streaks that must persist before a Region moves, and the flap penalty that
//! holds a Region out once it has moved too often. This only proposes candidates; whether a
//! candidate actually moves is for the safety rules.

use super::{Outcome, Work};
use crate::model::{Policy, RegionState, Verdict};
use std::time::Duration;

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

/// An unknown verdict leaves both streaks alone: no data must never move a Region.
pub(super) fn advance_streaks(state: &mut RegionState, verdict: Verdict, now: Duration) {
    match verdict {
        Verdict::Down => {
            if state.down_streak == 0 || state.down_since.is_none() {
                state.down_since = Some(now);
            }
            state.down_streak = state.down_streak.saturating_add(1);
            state.up_streak = 0;
        }
        Verdict::Up => {
            state.up_streak = state.up_streak.saturating_add(1);
            state.down_streak = 0;
            state.down_since = None;
        }
        Verdict::Unknown => {}
    }
}

/// Take-out and put-back candidates of the Regions no pin decides.
pub(super) fn propose(policy: &Policy, work: &mut [Work<'_>], now: Duration) {
    for w in work.iter_mut().filter(|w| w.pin.is_none()) {
        if w.was_in && w.state.down_streak >= policy.fail_after.max(1) {
            w.outcome = Outcome::Candidate { in_service: false };
        } else if !w.was_in && w.state.up_streak >= policy.recover_after.max(1) {
            let penalty = current_penalty(policy, &w.state, now);
            w.outcome = if penalty > policy.flap_suppress {
                Outcome::FlapHeld { penalty }
            } else {
                Outcome::Candidate { in_service: true }
            };
        }
    }
}

/// Charges an automated transition to the Region's flap penalty. Pinned and fail-open
/// transitions are not charged: they say nothing about the Region's own stability.
pub(super) fn charge_penalty(policy: &Policy, state: &mut RegionState, now: Duration) {
    state.penalty = current_penalty(policy, state, now) + policy.flap_penalty.max(0.0);
    state.penalty_at = now;
}

/// The Region's flap penalty decayed to `now`.
pub(super) fn current_penalty(policy: &Policy, state: &RegionState, now: Duration) -> f64 {
    decayed_penalty(state.penalty, state.penalty_at, now, policy.flap_half_life)
}
