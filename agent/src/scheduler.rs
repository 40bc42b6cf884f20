//! Runs every target on its own slot grid.
//!
//! Slot `n` of a target starts at `origin + offset + n·interval`, computed from the slot
//! number rather than by adding intervals to the last start, so a schedule never drifts. The
//! offsets of targets are spread across their interval (stratified, with jitter inside each
//! stratum), so a thousand targets never fire in the same millisecond.
//!
//! A target has at most one probe in flight: a dead target must not pile up connections. When
//! a probe overruns its slot, the next probe starts at once and its latency is measured from
//! its intended start; slots that passed entirely during the overrun are counted as missed
//! (never silently dropped), so coordinated omission shows in the figures instead of hiding.

use crate::recorder::{IntervalClock, TargetRecorder};
use rand::Rng;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep_until, Instant};
use vantage_probe::{ProbeResult, Prober};
use vantage_runtime::sync::lock;

/// A target's slot grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotGrid {
    pub origin: Instant,
    pub offset: Duration,
    pub interval: Duration,
}

/// The slot to run next and how many slots before it were skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPlan {
    pub slot: u64,
    pub missed: u64,
}

impl SlotGrid {
    pub fn new(origin: Instant, offset: Duration, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "probe interval must be positive");
        SlotGrid {
            origin,
            offset,
            interval,
        }
    }

    /// Intended start of slot `n`.
    pub fn slot_start(&self, n: u64) -> Instant {
        let nanos = self.interval.as_nanos().saturating_mul(u128::from(n));
        self.origin + self.offset + Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
    }

    /// After running slot `last` (None before the first), at time `now`: the next slot is the
    /// one after `last`, unless later slots have already started, in which case the most
    /// recent started slot runs (late, measured from its own start) and those in between are
    /// missed.
    pub fn next(&self, last: Option<u64>, now: Instant) -> SlotPlan {
        let candidate = last.map_or(0, |l| l + 1);
        let first = self.origin + self.offset;
        if now <= first {
            return SlotPlan {
                slot: candidate,
                missed: 0,
            };
        }
        let latest_started = ((now - first).as_nanos() / self.interval.as_nanos()) as u64;
        if latest_started > candidate {
            SlotPlan {
                slot: latest_started,
                missed: latest_started - candidate,
            }
        } else {
            SlotPlan {
                slot: candidate,
                missed: 0,
            }
        }
    }
}

/// Offsets for `intervals.len()` targets: target `i` starts at fraction `(i + u)/n` of its own
/// interval, `u` uniform in [0, 1). Stratifying keeps starts apart; the jitter keeps fleets of
/// agents with the same target list from lining up with each other.
pub fn spread_offsets(intervals: &[Duration], rng: &mut impl Rng) -> Vec<Duration> {
    let n = intervals.len().max(1) as f64;
    intervals
        .iter()
        .enumerate()
        .map(|(i, interval)| interval.mul_f64((i as f64 + rng.random::<f64>()) / n))
        .collect()
}

/// Something that can be probed on a schedule; [`Prober`] in production, a scripted fake in
/// paused-clock tests.
pub trait ProbeTarget: Send + Sync + 'static {
    fn probe(&self) -> impl Future<Output = ProbeResult> + Send;

    /// Called after each probe with its result and how late it started (metrics hook).
    fn observe(&self, _result: &ProbeResult, _start_lag: Duration) {}

    /// Called when slots were skipped.
    fn observe_missed(&self, _slots: u64) {}
}

impl ProbeTarget for Prober {
    fn probe(&self) -> impl Future<Output = ProbeResult> + Send {
        Prober::probe(self)
    }
}

/// A target being scheduled: how to probe it, how often, and where its samples go.
pub struct ScheduledTarget<P> {
    pub probe: P,
    pub grid: SlotGrid,
    pub recorder: Arc<Mutex<TargetRecorder>>,
}

/// Probes one target on its grid until `shutdown` turns true. Waiting for a `concurrency`
/// permit counts as lateness, like any other late start.
pub async fn run_target<P: ProbeTarget>(
    target: Arc<ScheduledTarget<P>>,
    clock: IntervalClock,
    concurrency: Option<Arc<Semaphore>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = None;
    while !*shutdown.borrow() {
        let plan = target.grid.next(last, Instant::now());
        if plan.missed > 0 {
            target.probe.observe_missed(plan.missed);
            let mut rec = lock(&target.recorder);
            for slot in plan.slot - plan.missed..plan.slot {
                rec.record_missed(clock.index_of(target.grid.slot_start(slot)), 1);
            }
        }
        let intended = target.grid.slot_start(plan.slot);
        tokio::select! {
            _ = sleep_until(intended) => {}
            _ = shutdown.changed() => break,
        }
        let _permit = match &concurrency {
            Some(s) => Some(
                s.clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore never closed"),
            ),
            None => None,
        };
        let started = Instant::now();
        // Boxed: the probe future is ~10 KB, and held inline it would sit in every idle
        // target's task (10,000 targets: ~100 MB) instead of only while a probe runs.
        let result = Box::pin(target.probe.probe()).await;
        let start_lag = started.saturating_duration_since(intended);
        target.probe.observe(&result, start_lag);
        lock(&target.recorder).record(clock.index_of(intended), &result, start_lag);
        last = Some(plan.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use vantage_probe::PhaseTimings;
    use vantage_protocol::{Outcome, Phase};

    /// A probe that takes a scripted time on tokio's (paused) clock and notes when it started.
    struct ScriptedProbe {
        durations: Mutex<std::collections::VecDeque<Duration>>,
        default: Duration,
        starts: Mutex<Vec<Instant>>,
    }

    impl ScriptedProbe {
        fn new(default: Duration, script: &[Duration]) -> Self {
            ScriptedProbe {
                durations: Mutex::new(script.iter().copied().collect()),
                default,
                starts: Mutex::new(Vec::new()),
            }
        }
    }

    impl ProbeTarget for ScriptedProbe {
        async fn probe(&self) -> ProbeResult {
            let start = Instant::now();
            self.starts.lock().unwrap().push(start);
            let d = self
                .durations
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(self.default);
            tokio::time::sleep(d).await;
            let mut t = PhaseTimings::default();
            t.set(Phase::Total, start.elapsed());
            let mut r = ProbeResult::synthetic(Outcome::Ok, t);
            r.status = Some(200);
            r
        }
    }

    fn target(
        probe: ScriptedProbe,
        offset: Duration,
        interval: Duration,
    ) -> Arc<ScheduledTarget<ScriptedProbe>> {
        Arc::new(ScheduledTarget {
            probe,
            grid: SlotGrid::new(Instant::now(), offset, interval),
            recorder: Arc::new(Mutex::new(TargetRecorder::new(3))),
        })
    }

    #[test]
    fn next_slot_skips_only_fully_passed_slots() {
        let origin = tokio::time::Instant::now();
        let g = SlotGrid::new(origin, Duration::from_millis(100), Duration::from_secs(1));
        let at = |ms| origin + Duration::from_millis(ms);
        assert_eq!(g.next(None, at(0)), SlotPlan { slot: 0, missed: 0 });
        assert_eq!(g.next(Some(0), at(500)), SlotPlan { slot: 1, missed: 0 });
        // Slot 1 started at 1.1 s; at 1.5 s it is late but not missed.
        assert_eq!(g.next(Some(0), at(1_500)), SlotPlan { slot: 1, missed: 0 });
        // At 3.6 s slots 1 and 2 are past; slot 3 (3.1 s) runs late.
        assert_eq!(g.next(Some(0), at(3_600)), SlotPlan { slot: 3, missed: 2 });
        assert_eq!(g.slot_start(3), at(3_100));
    }

    #[test]
    fn offsets_are_spread_over_the_interval() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let interval = Duration::from_secs(10);
        let offsets = spread_offsets(&vec![interval; 1000], &mut rng);
        assert!(offsets.iter().all(|o| *o < interval));
        // One per 10 ms stratum: no 10 ms window holds more than two starts.
        let mut ms: Vec<u128> = offsets.iter().map(|o| o.as_millis()).collect();
        ms.sort();
        assert!(ms.windows(3).all(|w| w[2] - w[0] >= 10), "{ms:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_drift_over_a_thousand_intervals() {
        let interval = Duration::from_secs(1);
        let offset = Duration::from_millis(250);
        // Each probe takes 300 ms: the next start must still be on the grid, not 300 ms later.
        let t = target(
            ScriptedProbe::new(Duration::from_millis(300), &[]),
            offset,
            interval,
        );
        let origin = t.grid.origin;
        let clock = IntervalClock::new(origin, Duration::from_secs(10));
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run_target(t.clone(), clock, None, rx));
        tokio::time::sleep(Duration::from_millis(1_000 * 1000 + 100)).await;
        stop.send(true).unwrap();
        task.await.unwrap();
        let starts = t.probe.starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 1000);
        for (n, s) in starts.iter().enumerate() {
            assert_eq!(*s, origin + offset + interval * n as u32, "slot {n}");
        }
        let intervals = t.recorder.lock().unwrap().take_through(u64::MAX);
        assert_eq!(intervals.len(), 100);
        assert!(intervals
            .iter()
            .all(|(_, s)| s.attempts == 10 && s.missed_slots == 0));
        assert!(intervals
            .iter()
            .all(|(_, s)| s.phase(Phase::Total).to_histogram().max() <= 300_100));
    }

    #[tokio::test(start_paused = true)]
    async fn overruns_are_measured_from_the_intended_start_and_missed_slots_counted() {
        let interval = Duration::from_secs(1);
        // Slot 0 takes 3.5 s: slots 1 and 2 pass entirely, slot 3 (3 s) starts 0.5 s late.
        let script = [Duration::from_millis(3_500)];
        let t = target(
            ScriptedProbe::new(Duration::from_millis(10), &script),
            Duration::ZERO,
            interval,
        );
        let origin = t.grid.origin;
        let clock = IntervalClock::new(origin, Duration::from_secs(2));
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run_target(t.clone(), clock, None, rx));
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        stop.send(true).unwrap();
        task.await.unwrap();
        let starts = t.probe.starts.lock().unwrap().clone();
        let ms: Vec<u128> = starts.iter().map(|s| (*s - origin).as_millis()).collect();
        assert_eq!(ms, vec![0, 3_500, 4_000, 5_000]);
        let rec = t.recorder.lock().unwrap().take_through(u64::MAX);
        let by_interval: Vec<(u64, u64, u64)> = rec
            .iter()
            .map(|(i, s)| (*i, s.attempts, s.missed_slots))
            .collect();
        // Interval 0 = [0, 2 s): slot 0 ran, slot 1 missed. Interval 1 = [2, 4 s): slot 2
        // missed, slot 3 ran late. Interval 2: slots 4 and 5.
        assert_eq!(by_interval, vec![(0, 1, 1), (1, 1, 1), (2, 2, 0)]);
        // Slot 3 answered in 10 ms but started 500 ms late: total is 510 ms.
        let late = rec[1].1.phase(Phase::Total).to_histogram();
        assert_eq!(late.max(), late.highest_equivalent(510_000));
        assert!(late.min() >= 509_000);
        assert_eq!(rec[1].1.max_start_lag, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn many_targets_never_fire_together() {
        let interval = Duration::from_secs(10);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let offsets = spread_offsets(&vec![interval; 500], &mut rng);
        let clock = IntervalClock::new(Instant::now(), interval);
        let (stop, rx) = watch::channel(false);
        let mut targets = Vec::new();
        let mut tasks = Vec::new();
        for offset in offsets {
            let t = target(
                ScriptedProbe::new(Duration::from_millis(5), &[]),
                offset,
                interval,
            );
            tasks.push(tokio::spawn(run_target(t.clone(), clock, None, rx.clone())));
            targets.push(t);
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        stop.send(true).unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        let mut starts: Vec<Instant> = targets
            .iter()
            .flat_map(|t| t.probe.starts.lock().unwrap().clone())
            .collect();
        assert_eq!(starts.len(), 1500);
        starts.sort();
        // 500 starts per 10 s = one per 20 ms on average; stratified, none closer than... the
        // jitter allows two in adjacent strata to touch, but never three in one stratum width.
        assert!(starts
            .windows(3)
            .all(|w| w[2] - w[0] >= Duration::from_millis(20)));
    }
}
