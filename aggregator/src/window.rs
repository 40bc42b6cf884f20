//! The sliding window: what every vantage reported about every target, by interval.
//!
//! Reports are merged into the interval they belong to, whenever they arrive (an agent may
//! send one interval in several parts, or late from its spool). Latency is kept as sparse
//! `(value, count)` pairs of the decoded HDR histogram — a handful of buckets per interval
//! instead of a dense array — so a thousand endpoints seen from thirty vantages fit in memory,
//! and quantiles over the window are exact at the histogram's precision.

use crate::model::{RegionObservation, VantageSample};
use std::collections::BTreeMap;
use std::time::Duration;
use vantage_protocol::config::TargetKind;
use vantage_protocol::report::{IntervalReport, ReportError};
use vantage_protocol::{Outcome, Phase};

/// Latency samples as sorted `(value µs, count)` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseLatency(Vec<(u64, u64)>);

impl SparseLatency {
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> Self {
        SparseLatency(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn len(&self) -> u64 {
        self.0.iter().map(|(_, c)| c).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `other`'s samples (both sorted; the result stays sorted and merged).
    pub fn merge(&mut self, other: &SparseLatency) {
        let mut out = Vec::with_capacity(self.0.len() + other.0.len());
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    out.push((x.0, x.1 + y.1));
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    out.push(**x);
                    a.next();
                }
                (Some(_), Some(y)) => {
                    out.push(**y);
                    b.next();
                }
                (Some(x), None) => {
                    out.push(**x);
                    a.next();
                }
                (None, Some(y)) => {
                    out.push(**y);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.0 = out;
    }

    /// The value at quantile `q` (HdrHistogram's rule: the smallest recorded value with at
    /// least `ceil(q × count)` samples at or below it).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.len();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (v, c) in &self.0 {
            seen += c;
            if seen >= rank {
                return Some(*v);
            }
        }
        self.0.last().map(|(v, _)| *v)
    }
}

/// One vantage's view of one target in one interval.
#[derive(Debug, Clone, Default)]
pub struct Bucket {
    pub attempts: u64,
    pub failures: u64,
    pub missed_slots: u64,
    /// Total latency of the probes that got a response.
    pub total: SparseLatency,
    pub answered_by: BTreeMap<String, u64>,
}

impl Bucket {
    fn add(&mut self, other: Bucket) {
        self.attempts += other.attempts;
        self.failures += other.failures;
        self.missed_slots += other.missed_slots;
        self.total.merge(&other.total);
        for (r, n) in other.answered_by {
            *self.answered_by.entry(r).or_default() += n;
        }
    }
}

/// Key of a series: target id and vantage.
type SeriesKey = (String, String);

/// The window of every series, by interval start (Unix ms).
#[derive(Debug, Default)]
pub struct Window {
    series: BTreeMap<SeriesKey, BTreeMap<u64, Bucket>>,
    kinds: BTreeMap<String, (TargetKind, Option<String>)>,
}

/// What a merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    pub targets: u64,
    pub attempts: u64,
}

impl Window {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes every histogram first, so a bad report changes nothing.
    pub fn merge(&mut self, report: &IntervalReport) -> Result<Merged, ReportError> {
        let mut buckets = Vec::with_capacity(report.targets.len());
        for t in &report.targets {
            // Every histogram is decoded, so a malformed one rejects the report; only total
            // latency is kept.
            let decoded = t.decode_histograms()?;
            let total = decoded
                .get(&Phase::Total)
                .map(SparseLatency::from_histogram)
                .unwrap_or_default();
            let ok = t.outcomes.get(&Outcome::Ok).copied().unwrap_or(0);
            buckets.push((
                t,
                Bucket {
                    attempts: t.attempts,
                    failures: t.attempts.saturating_sub(ok),
                    missed_slots: t.missed_slots,
                    total,
                    answered_by: t.answered_by.clone(),
                },
            ));
        }
        let mut merged = Merged::default();
        for (t, bucket) in buckets {
            merged.targets += 1;
            merged.attempts += bucket.attempts;
            self.kinds
                .entry(t.target.clone())
                .or_insert_with(|| (t.kind, t.region.clone()));
            self.series
                .entry((t.target.clone(), report.vantage.clone()))
                .or_default()
                .entry(report.interval_start_ms)
                .or_default()
                .add(bucket);
        }
        Ok(merged)
    }

    /// Forgets intervals that ended before `oldest_ms`.
    pub fn prune(&mut self, oldest_start_ms: u64) {
        self.series.retain(|_, intervals| {
            intervals.retain(|start, _| *start >= oldest_start_ms);
            !intervals.is_empty()
        });
    }

    /// The buckets of a series with interval start in `[from_ms, to_ms)`, summed.
    fn sum(&self, key: &SeriesKey, from_ms: u64, to_ms: u64) -> Option<Bucket> {
        let intervals = self.series.get(key)?;
        let mut sum = Bucket::default();
        let mut any = false;
        for (_, b) in intervals.range(from_ms..to_ms) {
            sum.add(b.clone());
            any = true;
        }
        any.then_some(sum)
    }

    /// Per configured Region, each vantage's view over `[from_ms, to_ms)`: the Region's status
    /// and deep targets together (a failing deep check is a failing Region), latency from the
    /// shallow status target (what clients of the API feel).
    pub fn observations(
        &self,
        regions: &[String],
        from_ms: u64,
        to_ms: u64,
        limit_quantile: f64,
        weight_quantile: f64,
    ) -> Vec<RegionObservation> {
        let mut by_region: BTreeMap<&str, BTreeMap<&str, (Bucket, Option<SparseLatency>)>> =
            BTreeMap::new();
        for (key, _) in self.series.iter() {
            let (target, vantage) = key;
            let Some((kind, Some(region))) = self.kinds.get(target) else {
                continue;
            };
            if !regions.iter().any(|r| r == region) || *kind == TargetKind::Global {
                continue;
            }
            let Some(b) = self.sum(key, from_ms, to_ms) else {
                continue;
            };
            let entry = by_region
                .entry(region.as_str())
                .or_default()
                .entry(vantage.as_str())
                .or_default();
            if *kind == TargetKind::Status {
                entry.1 = Some(b.total.clone());
            }
            entry.0.add(b);
        }
        regions
            .iter()
            .map(|region| RegionObservation {
                region: region.clone(),
                vantages: by_region
                    .get(region.as_str())
                    .map(|vs| {
                        vs.iter()
                            .map(|(vantage, (b, status_latency))| {
                                let latency = status_latency.as_ref().unwrap_or(&b.total);
                                VantageSample {
                                    vantage: (*vantage).to_owned(),
                                    attempts: b.attempts,
                                    failures: b.failures,
                                    limit_latency: b
                                        .total
                                        .quantile(limit_quantile)
                                        .map(Duration::from_micros),
                                    weight_latency: latency
                                        .quantile(weight_quantile)
                                        .map(Duration::from_micros),
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Which Region answered the global endpoint's probes over `[from_ms, to_ms)`, summed over
    /// vantages: where client traffic actually goes.
    pub fn global_traffic(&self, from_ms: u64, to_ms: u64) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for key in self.series.keys() {
            if !matches!(self.kinds.get(&key.0), Some((TargetKind::Global, _))) {
                continue;
            }
            if let Some(b) = self.sum(key, from_ms, to_ms) {
                for (r, n) in b.answered_by {
                    *out.entry(r).or_default() += n;
                }
            }
        }
        out
    }

    /// Number of (target, vantage) series held.
    pub fn series(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sparse(values: &[u64]) -> SparseLatency {
        let mut h = vantage_protocol::histogram::new_latency_histogram(3).unwrap();
        for v in values {
            h.record(*v).unwrap();
        }
        SparseLatency::from_histogram(&h)
    }

    proptest! {
        #[test]
        fn sparse_merge_matches_hdr(a in proptest::collection::vec(1u64..10_000_000, 0..200), b in proptest::collection::vec(1u64..10_000_000, 0..200)) {
            let mut m = sparse(&a);
            m.merge(&sparse(&b));
            let mut both = a.clone();
            both.extend(&b);
            let mut h = vantage_protocol::histogram::new_latency_histogram(3).unwrap();
            for v in &both { h.record(*v).unwrap(); }
            prop_assert_eq!(m.len(), both.len() as u64);
            let mut ba = sparse(&b);
            ba.merge(&sparse(&a));
            prop_assert_eq!(&ba, &m);
            if !both.is_empty() {
                for q in [0.5, 0.9, 0.99, 1.0] {
                    prop_assert_eq!(m.quantile(q), Some(h.value_at_quantile(q)));
                }
            }
        }
    }
}
