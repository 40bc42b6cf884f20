//! Incremental observations: per (unit, vantage), what the unit's targets (status, deep)
//! showed in each interval, merged at ingest, and their sum over the range the last evaluation
//! asked for. An evaluation then slides that sum (subtracting the intervals that left the
//! range, adding the ones that entered) and reads each vantage's figures off it, instead of
//! rescanning every (target, vantage, interval) bucket and sorting their latency samples: at a
//! thousand units seen from thirty vantages that rescan was most of an evaluation's time.
//! [`super::Window::observations_rescan`] is the rescan, kept as the reference the property
//! test holds this to.
//!
//! Sums saturate, as the window's buckets do; subtraction is exact as long as no sum reached
//! 2^64, which counts bounded by a report's attempts never do.

use super::sparse::SparseLatency;
use super::Bucket;
use crate::model::{RegionObservation, VantageSample};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What a unit's targets showed one vantage: over one interval, or summed over a range.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Part {
    /// (target, interval) buckets: a vantage has a view of the unit when any is in range.
    buckets: u64,
    /// Of them, the status target's: weights take latency from it when any is in range.
    status_buckets: u64,
    attempts: u64,
    failures: u64,
    /// Total latency of the status target's probes.
    status: SparseLatency,
    /// Total latency of the unit's other targets (deep).
    others: SparseLatency,
}

impl Part {
    fn add(&mut self, other: &Part) {
        self.buckets = self.buckets.saturating_add(other.buckets);
        self.status_buckets = self.status_buckets.saturating_add(other.status_buckets);
        self.attempts = self.attempts.saturating_add(other.attempts);
        self.failures = self.failures.saturating_add(other.failures);
        self.status.merge(&other.status);
        self.others.merge(&other.others);
    }

    fn subtract(&mut self, other: &Part) {
        self.buckets = self.buckets.saturating_sub(other.buckets);
        self.status_buckets = self.status_buckets.saturating_sub(other.status_buckets);
        self.attempts = self.attempts.saturating_sub(other.attempts);
        self.failures = self.failures.saturating_sub(other.failures);
        self.status.subtract(&other.status);
        self.others.subtract(&other.others);
    }

    /// Adds one part of a target's bucket; `new` when it opened the bucket.
    fn add_bucket(&mut self, status: bool, new: bool, b: &Bucket) {
        self.buckets = self.buckets.saturating_add(u64::from(new));
        self.status_buckets = self.status_buckets.saturating_add(u64::from(new && status));
        self.attempts = self.attempts.saturating_add(b.attempts);
        self.failures = self.failures.saturating_add(b.failures);
        let samples = if status {
            &mut self.status
        } else {
            &mut self.others
        };
        samples.merge(&b.total);
    }

    /// The vantage's sample: the limit quantile over every target of the unit, the weight
    /// quantile over the status target when it has data in range, else over every target.
    fn sample(&self, vantage: &str, limit_quantile: f64, weight_quantile: f64) -> VantageSample {
        let micros = |us: Option<u64>| us.map(Duration::from_micros);
        // Each list's sample count once, for all three quantile walks.
        let (status, others) = (self.status.len(), self.others.len());
        let weight = if self.status_buckets > 0 {
            self.status.quantile_of(status, weight_quantile)
        } else {
            self.others.quantile_of(others, weight_quantile)
        };
        VantageSample {
            vantage: vantage.to_owned(),
            attempts: self.attempts,
            failures: self.failures,
            limit_latency: micros(SparseLatency::quantile_of_both_given(
                &self.status,
                status,
                &self.others,
                others,
                limit_quantile,
            )),
            weight_latency: micros(weight),
        }
    }
}

/// One (unit, vantage): its parts by interval start, and their sum over the tallied range.
#[derive(Debug, Default)]
struct Tally {
    intervals: BTreeMap<u64, Part>,
    sum: Part,
}

/// Every (unit, vantage) tally, and the range `[from, to)` their sums cover. Tallies live in
/// slots that each series keeps the number of, so a merge reaches its tally without a lookup;
/// a slot is never freed (there is one per unit and vantage of the fleet at most) until
/// [`Tallies::clear`].
#[derive(Debug, Default)]
pub(super) struct Tallies {
    range: (u64, u64),
    /// Slot of each tally, by unit, then by vantage (the order observations list them in).
    index: HashMap<String, BTreeMap<String, usize>>,
    slots: Vec<Tally>,
}

impl Tallies {
    /// The slot of `unit`'s tally for `vantage`, made if new.
    pub(super) fn slot(&mut self, unit: &str, vantage: &str) -> usize {
        let vantages = match self.index.get_mut(unit) {
            Some(v) => v,
            None => self.index.entry(unit.to_owned()).or_default(),
        };
        if let Some(slot) = vantages.get(vantage) {
            return *slot;
        }
        self.slots.push(Tally::default());
        vantages.insert(vantage.to_owned(), self.slots.len() - 1);
        self.slots.len() - 1
    }

    /// Records one part of a bucket of a target (status or not) of the tally in `slot`, in
    /// the interval starting at `start`; `new` when the part opened the bucket.
    pub(super) fn record(&mut self, slot: usize, start: u64, status: bool, new: bool, b: &Bucket) {
        let tally = &mut self.slots[slot];
        tally
            .intervals
            .entry(start)
            .or_default()
            .add_bucket(status, new, b);
        if (self.range.0..self.range.1).contains(&start) {
            tally.sum.add_bucket(status, new, b);
        }
    }

    /// Moves every sum to `[from, to)`: only the intervals that entered or left change it.
    fn slide(&mut self, from: u64, to: u64) {
        let (old, new) = (self.range.0..self.range.1, from..to);
        if old == new {
            return;
        }
        for tally in &mut self.slots {
            let Tally { intervals, sum } = tally;
            for (start, part) in intervals.iter() {
                match (old.contains(start), new.contains(start)) {
                    (true, false) => sum.subtract(part),
                    (false, true) => sum.add(part),
                    _ => {}
                }
            }
        }
        self.range = (from, to);
    }

    /// Forgets the intervals that start before `oldest_start_ms`.
    pub(super) fn prune(&mut self, oldest_start_ms: u64) {
        let range = self.range.0..self.range.1;
        for tally in &mut self.slots {
            if tally
                .intervals
                .first_key_value()
                .is_none_or(|(s, _)| *s >= oldest_start_ms)
            {
                continue;
            }
            let kept = tally.intervals.split_off(&oldest_start_ms);
            for (start, part) in std::mem::replace(&mut tally.intervals, kept) {
                if range.contains(&start) {
                    tally.sum.subtract(&part);
                }
            }
        }
    }

    /// Starts over, keeping the range (after targets were forgotten: their parts are mixed
    /// into their units'); every series must take a new slot.
    pub(super) fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
    }

    /// Per Region of `regions`, each vantage's view over `[from_ms, to_ms)`, by vantage name.
    pub(super) fn observations(
        &mut self,
        regions: &[String],
        from_ms: u64,
        to_ms: u64,
        limit_quantile: f64,
        weight_quantile: f64,
    ) -> Vec<RegionObservation> {
        self.slide(from_ms, to_ms);
        regions
            .iter()
            .map(|region| RegionObservation {
                region: region.clone(),
                vantages: self.index.get(region).map_or_else(Vec::new, |vantages| {
                    vantages
                        .iter()
                        .map(|(v, slot)| (v, &self.slots[*slot].sum))
                        .filter(|(_, sum)| sum.buckets > 0)
                        .map(|(v, sum)| sum.sample(v, limit_quantile, weight_quantile))
                        .collect()
                }),
            })
            .collect()
    }
}
