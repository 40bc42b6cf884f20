//! The lease's rules, pure: from the stored record and a reading of the caller's own clock
//! (Unix ms, an argument, never read here) they say whether the lease may be taken, whether
//! its holder may still act on it, and what the next record is. The stores apply the same
//! rules as their write conditions, so what the keeper believes and what a conditional write
//! accepts cannot drift apart.
//!
//! Clocks differ between replicas by up to `max_clock_skew`. The holder stops acting
//! `max_clock_skew` before its expiry and a taker waits until `max_clock_skew` after it, so two
//! replicas whose clocks agree within that bound never both believe they hold the lease (the
//! property test below checks this over random clocks, offsets and schedules). Tokens only
//! grow: every takeover writes a larger one, and a renewal keeps it.

use serde::Serialize;
use std::time::Duration;

/// The lease item as stored: who holds it, the fencing token of their tenure, and when it
/// ends on the holder's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRecord {
    pub holder: String,
    /// Grows by one at every takeover; every weight change carries it.
    pub token: u64,
    /// Unix ms on the holder's clock; 0 once released.
    pub expires_ms: u64,
}

/// The lease's timing, in milliseconds, as the rules use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub duration_ms: u64,
    pub max_clock_skew_ms: u64,
}

impl LeaseTiming {
    pub fn new(duration: Duration, max_clock_skew: Duration) -> Self {
        LeaseTiming {
            duration_ms: duration.as_millis() as u64,
            max_clock_skew_ms: max_clock_skew.as_millis() as u64,
        }
    }

    /// The write condition of a takeover at `now_ms`: a stored record whose expiry is before
    /// this is free to take (`expires_ms + max_clock_skew < now`).
    pub fn stale_before(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.max_clock_skew_ms)
    }

    /// May a replica whose clock reads `now_ms` take the lease over `record`? When there is
    /// none, or its expiry lies more than the skew bound in the past.
    pub fn may_take(&self, record: Option<&LeaseRecord>, now_ms: u64) -> bool {
        record.is_none_or(|r| takeover_allowed(r, self.stale_before(now_ms)))
    }

    /// Is `me` still the holder, locally: the record names it and its expiry lies more than
    /// the skew bound ahead. Only then may it write weights.
    pub fn locally_valid(&self, record: &LeaseRecord, me: &str, now_ms: u64) -> bool {
        record.holder == me && now_ms.saturating_add(self.max_clock_skew_ms) < record.expires_ms
    }

    /// The record a takeover by `me` at `now_ms` writes: the next token, a fresh expiry.
    pub fn takeover(&self, record: Option<&LeaseRecord>, me: &str, now_ms: u64) -> LeaseRecord {
        LeaseRecord {
            holder: me.to_owned(),
            token: record.map_or(1, |r| r.token + 1),
            expires_ms: now_ms + self.duration_ms,
        }
    }

    /// The record a renewal of `held` at `now_ms` writes: same holder and token, later expiry.
    pub fn renewal(&self, held: &LeaseRecord, now_ms: u64) -> LeaseRecord {
        LeaseRecord {
            expires_ms: now_ms + self.duration_ms,
            ..held.clone()
        }
    }
}

/// The store's condition for writing `next` as a takeover over `stored`: expired before
/// `stale_before_ms` (see [`LeaseTiming::stale_before`]), and `next` carries a larger token,
/// so a token is never handed out twice even when the lease was released in between.
pub fn takeover_condition(
    stored: Option<&LeaseRecord>,
    next: &LeaseRecord,
    stale_before_ms: u64,
) -> bool {
    stored.is_none_or(|r| takeover_allowed(r, stale_before_ms) && r.token < next.token)
}

fn takeover_allowed(stored: &LeaseRecord, stale_before_ms: u64) -> bool {
    stored.expires_ms < stale_before_ms
}

/// The store's condition for a renewal, a fence or a release by `holder` with `token`: the
/// stored record is still theirs, in the same tenure.
pub fn holder_condition(stored: Option<&LeaseRecord>, holder: &str, token: u64) -> bool {
    stored.is_some_and(|r| r.holder == holder && r.token == token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TIMING: LeaseTiming = LeaseTiming {
        duration_ms: 30_000,
        max_clock_skew_ms: 2_000,
    };

    fn record(holder: &str, token: u64, expires_ms: u64) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            token,
            expires_ms,
        }
    }

    #[test]
    fn the_rules_at_their_edges() {
        assert!(TIMING.may_take(None, 0));
        let r = record("a", 4, 100_000);
        // Taken only strictly after expiry + skew; held only strictly before expiry - skew.
        assert!(!TIMING.may_take(Some(&r), 102_000));
        assert!(TIMING.may_take(Some(&r), 102_001));
        assert!(TIMING.locally_valid(&r, "a", 97_999));
        assert!(!TIMING.locally_valid(&r, "a", 98_000));
        assert!(!TIMING.locally_valid(&r, "b", 0));
        assert_eq!(TIMING.takeover(Some(&r), "b", 5).token, 5);
        assert_eq!(TIMING.takeover(None, "b", 5), record("b", 1, 30_005));
        assert_eq!(TIMING.renewal(&r, 90_000), record("a", 4, 120_000));
        // A released lease (expiry 0) is free at once, but only for a larger token.
        let released = record("a", 4, 0);
        assert!(takeover_condition(
            Some(&released),
            &record("b", 5, 1),
            TIMING.stale_before(10_000)
        ));
        assert!(!takeover_condition(
            Some(&released),
            &record("b", 4, 1),
            TIMING.stale_before(10_000)
        ));
        assert!(holder_condition(Some(&r), "a", 4));
        assert!(!holder_condition(Some(&r), "a", 3));
        assert!(!holder_condition(None, "a", 4));
    }

    /// One replica in the simulation: its clock's offset from real time, and the record it
    /// believes it holds.
    #[derive(Debug, Clone)]
    struct Replica {
        offset_ms: i64,
        held: Option<LeaseRecord>,
    }

    /// A step of the schedule: which replica acts, and how much real time passes first.
    fn step() -> impl Strategy<Value = (usize, u64)> {
        (0usize..3, 0u64..15_000)
    }

    proptest! {
        /// Three replicas with clocks within ±skew of real time (so any two differ by up to
        /// twice the bound: the holder's margin and the taker's each cover one) take and
        /// renew the lease through the store's conditional writes in a random order: at no
        /// instant do two believe they hold it, and the stored token never shrinks.
        #[test]
        fn never_two_holders_and_tokens_only_grow(
            offsets in proptest::collection::vec(-2_000i64..=2_000, 3),
            schedule in proptest::collection::vec(step(), 1..200),
        ) {
            let mut replicas: Vec<Replica> = offsets
                .iter()
                .map(|&offset_ms| Replica { offset_ms, held: None })
                .collect();
            let mut stored: Option<LeaseRecord> = None;
            let mut real_ms: u64 = 10_000;
            let clock = |r: &Replica, real: u64| (real as i64 + r.offset_ms) as u64;
            for (who, wait) in schedule {
                // Check the invariant at every millisecond boundary that matters: before and
                // after the wait (validity only ends as time passes, so both ends suffice
                // when no write happens in between).
                for t in [real_ms, real_ms + wait] {
                    let valid = replicas
                        .iter()
                        .enumerate()
                        .filter(|(i, r)| {
                            r.held.as_ref().is_some_and(|h| TIMING.locally_valid(h, &i.to_string(), clock(r, t)))
                        })
                        .count();
                    prop_assert!(valid <= 1, "{valid} holders at {t}: {replicas:?} {stored:?}");
                }
                real_ms += wait;
                let me = who.to_string();
                let now = clock(&replicas[who], real_ms);
                let before = stored.as_ref().map(|r| r.token);
                let r = &mut replicas[who];
                match r.held.clone() {
                    Some(h) => {
                        let next = TIMING.renewal(&h, now);
                        if holder_condition(stored.as_ref(), &me, h.token) {
                            stored = Some(next.clone());
                            r.held = Some(next);
                        } else {
                            r.held = None;
                        }
                    }
                    None if TIMING.may_take(stored.as_ref(), now) => {
                        let next = TIMING.takeover(stored.as_ref(), &me, now);
                        if takeover_condition(stored.as_ref(), &next, TIMING.stale_before(now)) {
                            stored = Some(next.clone());
                            r.held = Some(next);
                        }
                    }
                    None => {}
                }
                let after = stored.as_ref().map(|r| r.token);
                prop_assert!(after >= before, "token went from {before:?} to {after:?}");
            }
        }
    }
}
