//! Per-target interval statistics and latency histograms.
//!
//! A dense HDR histogram over 1 µs .. 60 s at 3 significant digits holds ~19,500 counters
//! (about 150 KiB as `u64`), yet a target probed every 10 s sees one sample per phase per
//! interval. [`SampleSet`] therefore keeps the raw microsecond values (4 bytes each) and only
//! turns into a dense histogram once it holds [`SPARSE_LIMIT`] samples, so memory follows the
//! samples actually recorded: an idle-ish target costs a few hundred bytes per interval, a busy
//! one at most one dense histogram per phase. Encoding for the wire builds the HDR histogram on
//! demand; values are identical either way because recording into HDR happens exactly once.
//!
//! Samples belong to the interval of their probe's *intended* start, so a probe that starts in
//! one interval and ends in the next is counted once, in the first. [`TargetRecorder`] keeps
//! every interval that still has samples until [`TargetRecorder::take_through`] removes it, so
//! rotation can neither lose nor double-count a sample, even one that arrives late.

use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use vantage_probe::ProbeResult;
use vantage_protocol::histogram::{clamp_micros, new_latency_histogram};
use vantage_protocol::report::DnsAnswers;
use vantage_protocol::{Outcome, Phase};

/// Raw samples kept before a set becomes a dense histogram; 1,024 × 4 bytes = 4 KiB.
pub const SPARSE_LIMIT: usize = 1024;

#[derive(Debug, Clone)]
enum Repr {
    Sparse(Vec<u32>),
    Dense(Box<Histogram<u64>>),
}

/// Latency samples of one phase in one interval, in microseconds.
#[derive(Debug, Clone)]
pub struct SampleSet {
    significant_digits: u8,
    repr: Repr,
}

impl SampleSet {
    /// `significant_digits` must be 1..=5 (checked when the recorder is configured).
    pub fn new(significant_digits: u8) -> Self {
        SampleSet {
            significant_digits,
            repr: Repr::Sparse(Vec::new()),
        }
    }

    pub fn record(&mut self, d: Duration) {
        self.record_micros(d.as_micros().min(u64::MAX as u128) as u64);
    }

    pub fn record_micros(&mut self, micros: u64) {
        let v = clamp_micros(micros);
        match &mut self.repr {
            Repr::Sparse(values) if values.len() < SPARSE_LIMIT => values.push(v as u32),
            Repr::Sparse(_) => {
                let mut h = self.to_histogram();
                h.saturating_record(v);
                self.repr = Repr::Dense(Box::new(h));
            }
            Repr::Dense(h) => h.saturating_record(v),
        }
    }

    pub fn len(&self) -> u64 {
        match &self.repr {
            Repr::Sparse(v) => v.len() as u64,
            Repr::Dense(h) => h.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds every sample of `other`. Order does not matter: a ∪ b and b ∪ a give equal
    /// histograms.
    pub fn merge(&mut self, other: &SampleSet) {
        match (&mut self.repr, &other.repr) {
            (Repr::Sparse(a), Repr::Sparse(b)) if a.len() + b.len() <= SPARSE_LIMIT => {
                a.extend_from_slice(b)
            }
            _ => {
                let mut h = self.to_histogram();
                h.add(other.to_histogram())
                    .expect("latency histograms share one range");
                self.repr = Repr::Dense(Box::new(h));
            }
        }
    }

    /// The samples as an HDR histogram over 1 µs .. 60 s.
    pub fn to_histogram(&self) -> Histogram<u64> {
        match &self.repr {
            Repr::Dense(h) => (**h).clone(),
            Repr::Sparse(values) => {
                let mut h = new_latency_histogram(self.significant_digits)
                    .expect("precision validated at configuration");
                for v in values {
                    h.saturating_record(u64::from(*v));
                }
                h
            }
        }
    }

    /// Every recorded HDR bucket as (its highest equivalent value, count), in increasing order:
    /// what `to_histogram().iter_recorded()` yields, without building a dense histogram for a
    /// sparse set. `template` is any histogram of this set's precision (only its bucket layout
    /// is read).
    pub fn buckets(&self, template: &Histogram<u64>) -> Vec<(u64, u64)> {
        match &self.repr {
            Repr::Dense(h) => h
                .iter_recorded()
                .map(|b| (b.value_iterated_to(), b.count_at_value()))
                .collect(),
            Repr::Sparse(values) => {
                let mut v: Vec<u64> = values
                    .iter()
                    .map(|x| template.highest_equivalent(u64::from(*x)))
                    .collect();
                v.sort_unstable();
                let mut out: Vec<(u64, u64)> = Vec::new();
                for x in v {
                    match out.last_mut() {
                        Some(last) if last.0 == x => last.1 += 1,
                        _ => out.push((x, 1)),
                    }
                }
                out
            }
        }
    }

    /// The raw microsecond samples while the set is still sparse (unordered); None once dense.
    pub fn sparse_values(&self) -> Option<&[u32]> {
        match &self.repr {
            Repr::Sparse(v) => Some(v),
            Repr::Dense(_) => None,
        }
    }

    pub fn significant_digits(&self) -> u8 {
        self.significant_digits
    }

    /// Heap bytes held, for the memory figures in the docs and benchmarks.
    pub fn heap_bytes(&self) -> usize {
        match &self.repr {
            Repr::Sparse(v) => v.capacity() * 4,
            Repr::Dense(h) => std::mem::size_of::<Histogram<u64>>() + h.distinct_values() * 8,
        }
    }
}

/// What one target saw during one interval.
#[derive(Debug, Clone)]
pub struct IntervalStats {
    /// Probes run (each ends in exactly one outcome).
    pub attempts: u64,
    /// Slots skipped because the previous probe or the scheduler ran late.
    pub missed_slots: u64,
    /// Count per outcome, indexed by [`Outcome::index`].
    pub outcomes: [u64; Outcome::COUNT],
    /// Which Region answered, by the Region header; few distinct values.
    pub answered_by: Vec<(String, u64)>,
    /// Latency samples per phase, indexed by [`Phase::index`]. `total` holds the probes that
    /// were ok (a failure's latency says nothing about serving), measured from the intended
    /// start.
    pub phases: [SampleSet; Phase::COUNT],
    /// Latest notAfter seen for the leaf certificate.
    pub cert_not_after: Option<SystemTime>,
    /// Largest delay between a probe's intended and actual start.
    pub max_start_lag: Duration,
    /// DNS targets: answer records per Region, unmatched ones and the TTL range, over every
    /// resolution of the interval that answered.
    pub dns: Option<DnsAnswers>,
}

impl IntervalStats {
    pub fn new(significant_digits: u8) -> Self {
        IntervalStats {
            attempts: 0,
            missed_slots: 0,
            outcomes: [0; Outcome::COUNT],
            answered_by: Vec::new(),
            phases: std::array::from_fn(|_| SampleSet::new(significant_digits)),
            cert_not_after: None,
            max_start_lag: Duration::ZERO,
            dns: None,
        }
    }

    /// Records one probe that was meant to start `start_lag` before it did.
    pub fn record(&mut self, result: &ProbeResult, start_lag: Duration) {
        self.attempts += 1;
        self.outcomes[result.outcome.index()] += 1;
        self.max_start_lag = self.max_start_lag.max(start_lag);
        for (phase, d) in result.timings.iter() {
            if phase == Phase::Total {
                // Latency of good answers only: a fast 503 must not make a failing Region look
                // quick (weights follow this figure).
                if result.outcome.is_ok() {
                    self.phases[phase.index()].record(d + start_lag);
                }
            } else {
                self.phases[phase.index()].record(d);
            }
        }
        if let Some(region) = &result.answered_by {
            self.count_answer(region, 1);
        }
        if result.cert_not_after.is_some() {
            self.cert_not_after = result.cert_not_after;
        }
        if let Some(observed) = &result.dns {
            let dns = self.dns.get_or_insert_with(DnsAnswers::default);
            for a in &observed.answers {
                match &a.region {
                    Some(r) => *dns.regions.entry(r.clone()).or_default() += 1,
                    None => dns.unmatched += 1,
                }
                dns.ttl_min = Some(dns.ttl_min.map_or(a.ttl, |t| t.min(a.ttl)));
                dns.ttl_max = Some(dns.ttl_max.map_or(a.ttl, |t| t.max(a.ttl)));
            }
        }
    }

    fn count_answer(&mut self, region: &str, n: u64) {
        match self.answered_by.iter_mut().find(|(r, _)| r == region) {
            Some((_, c)) => *c += n,
            None => self.answered_by.push((region.to_owned(), n)),
        }
    }

    pub fn outcome_count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome.index()]
    }

    pub fn phase(&self, phase: Phase) -> &SampleSet {
        &self.phases[phase.index()]
    }

    /// Adds `other` into `self`; commutative and count-conserving.
    pub fn merge(&mut self, other: &IntervalStats) {
        self.attempts += other.attempts;
        self.missed_slots += other.missed_slots;
        for (a, b) in self.outcomes.iter_mut().zip(other.outcomes) {
            *a += b;
        }
        for (region, n) in &other.answered_by {
            self.count_answer(region, *n);
        }
        for (a, b) in self.phases.iter_mut().zip(&other.phases) {
            a.merge(b);
        }
        self.cert_not_after = self.cert_not_after.max(other.cert_not_after);
        self.max_start_lag = self.max_start_lag.max(other.max_start_lag);
        if let Some(theirs) = &other.dns {
            let dns = self.dns.get_or_insert_with(DnsAnswers::default);
            for (r, n) in &theirs.regions {
                *dns.regions.entry(r.clone()).or_default() += n;
            }
            dns.unmatched += theirs.unmatched;
            let pick = |a: Option<u32>, b: Option<u32>, f: fn(u32, u32) -> u32| match (a, b) {
                (Some(x), Some(y)) => Some(f(x, y)),
                (x, y) => x.or(y),
            };
            dns.ttl_min = pick(dns.ttl_min, theirs.ttl_min, u32::min);
            dns.ttl_max = pick(dns.ttl_max, theirs.ttl_max, u32::max);
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.phases.iter().map(SampleSet::heap_bytes).sum::<usize>()
            + self.answered_by.capacity() * std::mem::size_of::<(String, u64)>()
    }
}

/// Numbers intervals: interval `k` covers `[origin + k·length, origin + (k+1)·length)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalClock {
    pub origin: Instant,
    pub length: Duration,
}

impl IntervalClock {
    pub fn new(origin: Instant, length: Duration) -> Self {
        assert!(!length.is_zero(), "interval length must be positive");
        IntervalClock { origin, length }
    }

    /// Interval holding `t`; instants before the origin belong to interval 0.
    pub fn index_of(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.origin);
        (since.as_nanos() / self.length.as_nanos()) as u64
    }

    pub fn start_of(&self, index: u64) -> Instant {
        let nanos = self.length.as_nanos().saturating_mul(u128::from(index));
        self.origin + Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
    }
}

/// One target's open intervals, oldest first.
///
/// Each interval's statistics are boxed: inline, every slot of the deque would hold a whole
/// `IntervalStats` (hundreds of bytes) and the deque keeps its capacity of four across drains,
/// so an idle slot cost as much as a used one; boxed, an idle slot is 16 bytes (at 20,000
/// targets: ~1.3 KB less per target).
#[derive(Debug)]
pub struct TargetRecorder {
    significant_digits: u8,
    open: VecDeque<(u64, Box<IntervalStats>)>,
}

impl TargetRecorder {
    pub fn new(significant_digits: u8) -> Self {
        TargetRecorder {
            significant_digits,
            open: VecDeque::new(),
        }
    }

    fn interval(&mut self, index: u64) -> &mut IntervalStats {
        // Intervals arrive nearly in order: search from the back.
        let pos = match self.open.iter().rposition(|(i, _)| *i <= index) {
            Some(p) if self.open[p].0 == index => p,
            Some(p) => {
                let stats = Box::new(IntervalStats::new(self.significant_digits));
                self.open.insert(p + 1, (index, stats));
                p + 1
            }
            None => {
                let stats = Box::new(IntervalStats::new(self.significant_digits));
                self.open.push_front((index, stats));
                0
            }
        };
        &mut self.open[pos].1
    }

    pub fn record(&mut self, index: u64, result: &ProbeResult, start_lag: Duration) {
        self.interval(index).record(result, start_lag);
    }

    pub fn record_missed(&mut self, index: u64, slots: u64) {
        self.interval(index).missed_slots += slots;
    }

    /// Removes and returns every interval numbered `index` or lower, oldest first.
    pub fn take_through(&mut self, index: u64) -> Vec<(u64, IntervalStats)> {
        let mut taken = Vec::new();
        self.drain_through(index, |i, s| taken.push((i, *s)));
        taken
    }

    /// Removes every interval numbered `index` or lower and hands each to `each`, oldest
    /// first, still boxed: [`take_through`](Self::take_through) without a vector per target
    /// or a copy of each interval's counters, for the daemon's drain of every recorder (at
    /// 20,000 targets the copies alone were megabytes per drain).
    pub fn drain_through(&mut self, index: u64, mut each: impl FnMut(u64, Box<IntervalStats>)) {
        while self.open.front().is_some_and(|(i, _)| *i <= index) {
            let (i, stats) = self.open.pop_front().expect("front was checked");
            each(i, stats);
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.open.capacity() * std::mem::size_of::<(u64, Box<IntervalStats>)>()
            + self
                .open
                .iter()
                .map(|(_, s)| std::mem::size_of::<IntervalStats>() + s.heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vantage_probe::PhaseTimings;

    fn result(outcome: Outcome, total_micros: u64, region: Option<&str>) -> ProbeResult {
        let mut timings = PhaseTimings::default();
        timings.set(Phase::Connect, Duration::from_micros(total_micros / 4 + 1));
        timings.set(Phase::Total, Duration::from_micros(total_micros));
        let mut r = ProbeResult::synthetic(outcome, timings);
        if outcome != Outcome::Connect {
            r.status = Some(200);
        }
        r.answered_by = region.map(str::to_owned);
        r
    }

    #[test]
    fn dense_and_sparse_sets_agree() {
        let mut small = SampleSet::new(3);
        let mut reference = new_latency_histogram(3).unwrap();
        for v in 1..=(SPARSE_LIMIT as u64 * 3) {
            small.record_micros(v * 37);
            reference.record(v * 37).unwrap();
        }
        assert!(matches!(small.repr, Repr::Dense(_)));
        assert_eq!(small.to_histogram(), reference);
        let mut sparse = SampleSet::new(3);
        sparse.record_micros(0);
        sparse.record_micros(u64::MAX);
        let h = sparse.to_histogram();
        assert_eq!(
            (h.len(), h.min(), h.max()),
            (2, 1, h.highest_equivalent(60_000_000))
        );
    }

    #[test]
    fn total_includes_start_lag_and_only_for_responses() {
        let mut s = IntervalStats::new(3);
        s.record(
            &result(Outcome::Ok, 1_000, Some("eu-west-1")),
            Duration::from_micros(500),
        );
        s.record(&result(Outcome::Connect, 9_000, None), Duration::ZERO);
        assert_eq!(s.attempts, 2);
        assert_eq!(s.phase(Phase::Total).len(), 1);
        assert_eq!(s.phase(Phase::Total).to_histogram().max(), 1_500);
        assert_eq!(s.phase(Phase::Connect).len(), 2);
        assert_eq!(s.answered_by, vec![("eu-west-1".to_owned(), 1)]);
        assert_eq!(s.max_start_lag, Duration::from_micros(500));
    }

    #[test]
    fn interval_clock_numbers_intervals() {
        let origin = Instant::now();
        let c = IntervalClock::new(origin, Duration::from_secs(10));
        assert_eq!(c.index_of(origin), 0);
        assert_eq!(c.index_of(origin + Duration::from_millis(9_999)), 0);
        assert_eq!(c.index_of(origin + Duration::from_secs(10)), 1);
        assert_eq!(c.start_of(3), origin + Duration::from_secs(30));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Record {
            interval: u64,
            micros: u64,
            ok: bool,
        },
        Missed {
            interval: u64,
        },
        Take {
            through: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..8, 1u64..5_000_000, any::<bool>())
                .prop_map(|(interval, micros, ok)| Op::Record { interval, micros, ok }),
            1 => (0u64..8).prop_map(|interval| Op::Missed { interval }),
            2 => (0u64..8).prop_map(|through| Op::Take { through }),
        ]
    }

    fn sample_set(values: &[u64]) -> SampleSet {
        let mut s = SampleSet::new(3);
        for v in values {
            s.record_micros(*v);
        }
        s
    }

    proptest! {
        /// Whatever the interleaving of records and rotations, every sample comes out exactly
        /// once, in the interval it was recorded for.
        #[test]
        fn rotation_loses_and_duplicates_nothing(ops in proptest::collection::vec(op(), 0..300)) {
            let mut rec = TargetRecorder::new(3);
            let mut recorded = std::collections::BTreeMap::<u64, (u64, u64, u64)>::new();
            let mut taken = std::collections::BTreeMap::<u64, (u64, u64, u64)>::new();
            let absorb = |out: Vec<(u64, IntervalStats)>, taken: &mut std::collections::BTreeMap<u64, (u64, u64, u64)>| {
                for (i, s) in out {
                    let e = taken.entry(i).or_default();
                    e.0 += s.attempts;
                    e.1 += s.missed_slots;
                    e.2 += s.phase(Phase::Connect).len();
                }
            };
            for op in ops {
                match op {
                    Op::Record { interval, micros, ok } => {
                        let o = if ok { Outcome::Ok } else { Outcome::Timeout };
                        rec.record(interval, &result(o, micros, None), Duration::ZERO);
                        let e = recorded.entry(interval).or_default();
                        e.0 += 1;
                        e.2 += 1;
                    }
                    Op::Missed { interval } => {
                        rec.record_missed(interval, 1);
                        recorded.entry(interval).or_default().1 += 1;
                    }
                    Op::Take { through } => {
                        let out = rec.take_through(through);
                        prop_assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
                        prop_assert!(out.iter().all(|(i, _)| *i <= through));
                        absorb(out, &mut taken);
                    }
                }
            }
            absorb(rec.take_through(u64::MAX), &mut taken);
            prop_assert_eq!(recorded, taken);
        }

        #[test]
        fn merge_is_commutative_and_conserves_counts(
            a in proptest::collection::vec(1u64..60_000_000, 0..1500),
            b in proptest::collection::vec(1u64..60_000_000, 0..1500),
        ) {
            let (sa, sb) = (sample_set(&a), sample_set(&b));
            let mut ab = sa.clone();
            ab.merge(&sb);
            let mut ba = sb.clone();
            ba.merge(&sa);
            prop_assert_eq!(ab.len(), (a.len() + b.len()) as u64);
            prop_assert_eq!(ab.to_histogram(), ba.to_histogram());
            let mut all = new_latency_histogram(3).unwrap();
            for v in a.iter().chain(&b) { all.record(*v).unwrap(); }
            prop_assert_eq!(ab.to_histogram(), all);
        }

        #[test]
        fn interval_merge_conserves_outcomes(
            xs in proptest::collection::vec((any::<bool>(), 1u64..100_000), 0..50),
            ys in proptest::collection::vec((any::<bool>(), 1u64..100_000), 0..50),
        ) {
            let fill = |v: &[(bool, u64)]| {
                let mut s = IntervalStats::new(3);
                for (ok, m) in v {
                    let o = if *ok { Outcome::Ok } else { Outcome::Connect };
                    s.record(&result(o, *m, Some(if *ok { "a" } else { "b" })), Duration::ZERO);
                }
                s
            };
            let (x, y) = (fill(&xs), fill(&ys));
            let mut xy = x.clone();
            xy.merge(&y);
            let mut yx = y.clone();
            yx.merge(&x);
            prop_assert_eq!(xy.attempts, (xs.len() + ys.len()) as u64);
            prop_assert_eq!(xy.outcomes, yx.outcomes);
            prop_assert_eq!(xy.outcomes.iter().sum::<u64>(), xy.attempts);
            for p in Phase::ALL {
                prop_assert_eq!(xy.phase(p).to_histogram(), yx.phase(p).to_histogram());
            }
            let mut ra = xy.answered_by.clone();
            ra.sort();
            let mut rb = yx.answered_by.clone();
            rb.sort();
            prop_assert_eq!(ra, rb);
        }
    }
}
