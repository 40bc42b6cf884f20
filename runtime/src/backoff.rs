//! The one retry delay every vantage client uses (report delivery, Route 53 and CloudWatch
//! calls, a failing listener): exponential, bounded, jittered.
//!
//! "Equal jitter" with a floor: the delay for attempt `n` lies between half of the exponential
//! ceiling and the ceiling, and never below `min`. The fixed half keeps any caller from
//! retrying at once; the random half spreads a burst of callers (every agent after an
//! aggregator restart, every replica after a Route 53 throttle) apart.

use rand::Rng;
use std::time::Duration;

/// Bounds of an exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry, and the smallest delay ever returned.
    pub min: Duration,
    /// The largest delay ever returned.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `min` doubling up to `max` (`max` below `min` means `min`).
    pub const fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max }
    }

    /// The upper end of the delay after `failures` consecutive failures (1 for the first):
    /// `min × 2^(failures-1)`, capped at `max`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let max = self.max.max(self.min);
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(31));
        self.min.saturating_mul(factor).min(max)
    }

    /// How long to wait after `failures` consecutive failures (1 for the first): uniform
    /// between half the [`ceiling`](Self::ceiling) (never less than `min`) and the ceiling.
    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        let floor = (ceiling / 2).max(self.min).min(ceiling);
        if ceiling <= floor {
            return floor;
        }
        rand::rng().random_range(floor..=ceiling)
    }

    /// [`delay`](Self::delay), unless the server said when to come back (`Retry-After`):
    /// then that, within `max`, and never sooner than `min`.
    pub fn delay_or(&self, failures: u32, server_says: Option<Duration>) -> Duration {
        match server_says {
            Some(wait) => wait.clamp(self.min, self.max.max(self.min)),
            None => self.delay(failures),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const B: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

    #[test]
    fn first_retry_waits_the_minimum_and_the_ceiling_doubles_to_the_max() {
        assert_eq!(B.delay(1), Duration::from_millis(500));
        assert_eq!(B.ceiling(2), Duration::from_secs(1));
        assert_eq!(B.ceiling(7), Duration::from_secs(30));
        assert_eq!(B.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        assert_eq!(
            B.delay_or(3, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(B.delay_or(3, Some(Duration::ZERO)), B.min);
        assert_eq!(B.delay_or(3, Some(Duration::from_secs(3600))), B.max);
    }

    proptest! {
        #[test]
        fn delay_is_bounded_and_its_range_never_shrinks(
            min_ms in 1u64..5_000, max_ms in 0u64..120_000, failures in 0u32..100,
        ) {
            let b = Backoff::new(Duration::from_millis(min_ms), Duration::from_millis(max_ms));
            let d = b.delay(failures);
            prop_assert!(d >= b.min);
            prop_assert!(d <= b.max.max(b.min));
            prop_assert!(d <= b.ceiling(failures));
            prop_assert!(b.ceiling(failures) <= b.ceiling(failures.saturating_add(1)));
        }
    }
}
