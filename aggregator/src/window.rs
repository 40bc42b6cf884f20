//! The sliding window: what every vantage reported about every target, by interval.
//!
//! Reports are merged into the interval they belong to, whenever they arrive (an agent may
//! send one interval in several parts, or late from its spool). Latency is kept as sparse
//! `(value, count)` pairs of the decoded HDR histogram — a handful of buckets per interval
//! instead of a dense array — so a thousand endpoints seen from thirty vantages fit in memory,
//! and quantiles over the window are exact at the histogram's precision.

use crate::model::{KindTotals, RegionObservation, VantageSample};
use crate::prepare::PreparedReport;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use vantage_protocol::config::TargetKind;
use vantage_protocol::Outcome;

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

    /// Samples from pairs already sorted by value, each value once (what the decoder gives).
    pub(crate) fn from_sorted(pairs: Vec<(u64, u64)>) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        SparseLatency(pairs)
    }

    /// Samples from `(value, count)` pairs in any order, a value possibly repeated.
    fn from_pairs(mut pairs: Vec<(u64, u64)>) -> Self {
        pairs.sort_unstable_by_key(|p| p.0);
        pairs.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 = kept.1.saturating_add(next.1);
            }
            same
        });
        SparseLatency(pairs)
    }

    pub fn len(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, (_, c)| sum.saturating_add(*c))
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
                    out.push((x.0, x.1.saturating_add(y.1)));
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
            seen = c.saturating_add(seen);
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
    /// Which Region answered: the Region header of the global endpoint's responses, or for
    /// the DNS target the answer records mapped to Regions.
    pub answered_by: BTreeMap<String, u64>,
    /// DNS target only: answer records that map to no Region.
    pub unmatched: u64,
    /// The attempts that failed, by outcome (empty while none failed): how a target fails,
    /// for the evidence an alert gives.
    pub failed: BTreeMap<Outcome, u64>,
}

/// Where one layer (the global endpoint's HTTP answers, or DNS) shows traffic going over a
/// range of intervals, summed over vantages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LayerTraffic {
    /// Answers per Region.
    pub counts: BTreeMap<String, u64>,
    /// DNS answers that map to no Region (always 0 for HTTP).
    pub unmatched: u64,
    /// Per Region, the start (Unix ms) of the latest interval in which it answered.
    pub last_interval_ms: BTreeMap<String, u64>,
    /// Start of the latest interval in which this layer answered at all.
    pub latest_ms: Option<u64>,
}

impl LayerTraffic {
    /// Adds one series' intervals in `[from_ms, to_ms)`.
    fn add(&mut self, intervals: &BTreeMap<u64, Bucket>, from_ms: u64, to_ms: u64) {
        for (start, b) in intervals.range(from_ms..to_ms) {
            self.unmatched = self.unmatched.saturating_add(b.unmatched);
            if b.unmatched > 0 || b.answered_by.values().any(|n| *n > 0) {
                self.latest_ms = self.latest_ms.max(Some(*start));
            }
            for (r, n) in &b.answered_by {
                if *n == 0 {
                    continue;
                }
                let count = self.counts.entry(r.clone()).or_default();
                *count = count.saturating_add(*n);
                let last = self.last_interval_ms.entry(r.clone()).or_default();
                *last = (*last).max(*start);
            }
        }
    }
}

impl Bucket {
    fn add(&mut self, other: Bucket) {
        // Saturating: parts of one interval are each checked, their sum is not.
        self.attempts = self.attempts.saturating_add(other.attempts);
        self.failures = self.failures.saturating_add(other.failures);
        self.missed_slots = self.missed_slots.saturating_add(other.missed_slots);
        self.unmatched = self.unmatched.saturating_add(other.unmatched);
        // The first part of an interval (the usual case) is moved in, not copied.
        if self.total.is_empty() {
            self.total = other.total;
        } else {
            self.total.merge(&other.total);
        }
        for (outcome, n) in other.failed {
            let count = self.failed.entry(outcome).or_default();
            *count = count.saturating_add(n);
        }
        if self.answered_by.is_empty() {
            self.answered_by = other.answered_by;
        } else {
            for (r, n) in other.answered_by {
                let count = self.answered_by.entry(r).or_default();
                *count = count.saturating_add(n);
            }
        }
    }
}

/// One vantage's view of one Region while [`Window::observations`] gathers it.
#[derive(Debug, Default)]
struct View {
    attempts: u64,
    failures: u64,
    /// Latency samples of the status target, if it has data in the range.
    status: Option<Vec<(u64, u64)>>,
    /// Latency samples of the Region's other targets.
    others: Vec<(u64, u64)>,
}

/// A [`View`] reduced to what a [`VantageSample`] needs.
#[derive(Debug)]
struct Finished {
    attempts: u64,
    failures: u64,
    limit_latency: Option<Duration>,
    weight_latency: Option<Duration>,
}

impl View {
    /// The limit quantile is over every target of the Region; the weight quantile over the
    /// status target when it has data, else over every target.
    fn finish(self, limit_quantile: f64, weight_quantile: f64) -> Finished {
        let micros = |s: &SparseLatency, q: f64| s.quantile(q).map(Duration::from_micros);
        let (limit_latency, weight_latency) = match self.status {
            Some(status) if self.others.is_empty() => {
                let s = SparseLatency::from_pairs(status);
                (micros(&s, limit_quantile), micros(&s, weight_quantile))
            }
            Some(status) => {
                let mut all = self.others;
                all.extend_from_slice(&status);
                let all = SparseLatency::from_pairs(all);
                let s = SparseLatency::from_pairs(status);
                (micros(&all, limit_quantile), micros(&s, weight_quantile))
            }
            None => {
                let all = SparseLatency::from_pairs(self.others);
                (micros(&all, limit_quantile), micros(&all, weight_quantile))
            }
        };
        Finished {
            attempts: self.attempts,
            failures: self.failures,
            limit_latency,
            weight_latency,
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

    /// Merges a report that [`crate::prepare::prepare`] checked and decoded; it cannot fail,
    /// so it runs under the window lock without decoding anything.
    pub fn merge(&mut self, report: PreparedReport) -> Merged {
        let mut merged = Merged::default();
        for t in report.targets {
            merged.targets += 1;
            merged.attempts = merged.attempts.saturating_add(t.bucket.attempts);
            // Only targets the fleet file plans get here, so this map stays that size.
            if !self.kinds.contains_key(&t.id) {
                self.kinds.insert(t.id.clone(), (t.kind, t.region));
            }
            self.series
                .entry((t.id, report.vantage.clone()))
                .or_default()
                .entry(report.interval_start_ms)
                .or_default()
                .add(t.bucket);
        }
        merged
    }

    /// Forgets every series of the targets `keep` refuses (a reload took them out of the
    /// fleet): nothing decides from them any more.
    pub fn forget_targets(&mut self, keep: impl Fn(&str) -> bool) {
        self.series.retain(|(target, _), _| keep(target));
        self.kinds.retain(|target, _| keep(target));
    }

    /// Forgets intervals that ended before `oldest_ms`.
    pub fn prune(&mut self, oldest_start_ms: u64) {
        self.series.retain(|_, intervals| {
            intervals.retain(|start, _| *start >= oldest_start_ms);
            !intervals.is_empty()
        });
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
        // A thousand Regions seen from thirty vantages are 30,000 series: each target is looked
        // up once (series are ordered by target, then vantage), Regions by hash, and latency
        // samples are gathered by reference and sorted once per (Region, vantage).
        let configured: HashSet<&str> = regions.iter().map(String::as_str).collect();
        let mut views: HashMap<&str, BTreeMap<&str, View>> = HashMap::new();
        let mut last: Option<(&str, Option<(TargetKind, &str)>)> = None;
        for ((target, vantage), intervals) in &self.series {
            let wanted = match last {
                Some((t, wanted)) if t == target.as_str() => wanted,
                _ => {
                    let wanted = match self.kinds.get(target) {
                        Some((kind, Some(region)))
                            if *kind != TargetKind::Global
                                && configured.contains(region.as_str()) =>
                        {
                            Some((*kind, region.as_str()))
                        }
                        _ => None,
                    };
                    last = Some((target.as_str(), wanted));
                    wanted
                }
            };
            let Some((kind, region)) = wanted else {
                continue;
            };
            let in_range = intervals.range(from_ms..to_ms);
            if in_range.clone().next().is_none() {
                continue;
            }
            let view = views
                .entry(region)
                .or_default()
                .entry(vantage.as_str())
                .or_default();
            let pairs: usize = in_range.clone().map(|(_, b)| b.total.0.len()).sum();
            let mut status = Vec::new();
            let samples = if kind == TargetKind::Status {
                &mut status
            } else {
                &mut view.others
            };
            samples.reserve(pairs);
            for (_, b) in in_range {
                view.attempts = view.attempts.saturating_add(b.attempts);
                view.failures = view.failures.saturating_add(b.failures);
                samples.extend_from_slice(&b.total.0);
            }
            if kind == TargetKind::Status {
                view.status = Some(status);
            }
        }
        let finished: HashMap<&str, Vec<(&str, Finished)>> = views
            .into_iter()
            .map(|(region, vs)| {
                let vs = vs
                    .into_iter()
                    .map(|(vantage, v)| (vantage, v.finish(limit_quantile, weight_quantile)))
                    .collect();
                (region, vs)
            })
            .collect();
        regions
            .iter()
            .map(|region| RegionObservation {
                region: region.clone(),
                vantages: finished
                    .get(region.as_str())
                    .map(|vs| {
                        vs.iter()
                            .map(|(vantage, f)| VantageSample {
                                vantage: (*vantage).to_owned(),
                                attempts: f.attempts,
                                failures: f.failures,
                                limit_latency: f.limit_latency,
                                weight_latency: f.weight_latency,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Each vantage's control target (`vantages[].control_url`) over `[from_ms, to_ms)`:
    /// attempts and failures, no latency.
    pub fn control_samples(&self, from_ms: u64, to_ms: u64) -> Vec<VantageSample> {
        let target = vantage_protocol::config::CONTROL_TARGET;
        let from = (target.to_owned(), String::new());
        self.series
            .range(from..)
            .take_while(|((t, _), _)| t == target)
            .filter_map(|((_, vantage), intervals)| {
                let (attempts, failures) = intervals
                    .range(from_ms..to_ms)
                    .fold((0u64, 0u64), |(a, f), (_, b)| {
                        (a.saturating_add(b.attempts), f.saturating_add(b.failures))
                    });
                (attempts > 0).then(|| VantageSample {
                    vantage: vantage.clone(),
                    attempts,
                    failures,
                    limit_latency: None,
                    weight_latency: None,
                })
            })
            .collect()
    }

    /// How the targets of `kind` fared per unit over `[from_ms, to_ms)`, summed over the
    /// vantages `counts` accepts.
    pub fn kind_totals(
        &self,
        kind: TargetKind,
        from_ms: u64,
        to_ms: u64,
        counts: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, KindTotals> {
        let mut out: BTreeMap<String, KindTotals> = BTreeMap::new();
        for ((target, vantage), intervals) in &self.series {
            let Some((k, Some(unit))) = self.kinds.get(target) else {
                continue;
            };
            if *k != kind || !counts(vantage) {
                continue;
            }
            for (_, b) in intervals.range(from_ms..to_ms) {
                let totals = out.entry(unit.clone()).or_default();
                totals.attempts = totals.attempts.saturating_add(b.attempts);
                totals.failures = totals.failures.saturating_add(b.failures);
                for (outcome, n) in &b.failed {
                    let count = totals.failed.entry(*outcome).or_default();
                    *count = count.saturating_add(*n);
                }
            }
        }
        out
    }

    /// Which Region answered the global endpoint's probes over `[from_ms, to_ms)`, summed over
    /// vantages: where client traffic actually goes.
    pub fn global_traffic(&self, from_ms: u64, to_ms: u64) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        let mut last: Option<(&str, bool)> = None;
        for ((target, _), intervals) in &self.series {
            let global = match last {
                Some((t, global)) if t == target.as_str() => global,
                _ => {
                    let global = matches!(self.kinds.get(target), Some((TargetKind::Global, _)));
                    last = Some((target.as_str(), global));
                    global
                }
            };
            if !global {
                continue;
            }
            for (_, b) in intervals.range(from_ms..to_ms) {
                for (r, n) in &b.answered_by {
                    match out.get_mut(r) {
                        Some(total) => *total = total.saturating_add(*n),
                        None => {
                            out.insert(r.clone(), *n);
                        }
                    }
                }
            }
        }
        out
    }

    /// Where the targets of `kind` (the global endpoint's HTTP answers, or the DNS target's
    /// answers) show traffic going over `[from_ms, to_ms)`, and when each Region last answered.
    pub fn layer_traffic(&self, kind: TargetKind, from_ms: u64, to_ms: u64) -> LayerTraffic {
        let mut out = LayerTraffic::default();
        for (_, intervals) in self.series_of_kind(kind) {
            out.add(intervals, from_ms, to_ms);
        }
        out
    }

    /// [`Self::layer_traffic`] per service, in one pass: keyed by the service part of the
    /// target ids (`payments` of `payments/global`; `""` for a single-API fleet's bare ids).
    pub fn layer_traffic_by_service(
        &self,
        kind: TargetKind,
        from_ms: u64,
        to_ms: u64,
    ) -> HashMap<&str, LayerTraffic> {
        let mut out: HashMap<&str, LayerTraffic> = HashMap::new();
        for (target, intervals) in self.series_of_kind(kind) {
            let service = target.split_once('/').map_or("", |(s, _)| s);
            out.entry(service)
                .or_default()
                .add(intervals, from_ms, to_ms);
        }
        out
    }

    /// Every series of targets of `kind`, with its target id; each target's kind is looked
    /// up once (series are ordered by target).
    fn series_of_kind(
        &self,
        kind: TargetKind,
    ) -> impl Iterator<Item = (&str, &BTreeMap<u64, Bucket>)> + '_ {
        let mut last: Option<(&str, bool)> = None;
        self.series
            .iter()
            .filter_map(move |((target, _), intervals)| {
                let wanted = match last {
                    Some((t, wanted)) if t == target.as_str() => wanted,
                    _ => {
                        let wanted = matches!(self.kinds.get(target), Some((k, _)) if *k == kind);
                        last = Some((target.as_str(), wanted));
                        wanted
                    }
                };
                wanted.then_some((target.as_str(), intervals))
            })
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

    /// The straightforward reading of [`Window::observations`] and [`Window::global_traffic`]
    /// (sum each series' buckets, then group): the fast versions must agree with it.
    fn reference_sum(w: &Window, key: &SeriesKey, from_ms: u64, to_ms: u64) -> Option<Bucket> {
        let mut sum = Bucket::default();
        let mut any = false;
        for (_, b) in w.series.get(key)?.range(from_ms..to_ms) {
            sum.add(b.clone());
            any = true;
        }
        any.then_some(sum)
    }

    fn reference_observations(
        w: &Window,
        regions: &[String],
        from_ms: u64,
        to_ms: u64,
        lq: f64,
        wq: f64,
    ) -> Vec<RegionObservation> {
        type Seen = (Bucket, Option<SparseLatency>);
        let mut by_region: BTreeMap<&str, BTreeMap<&str, Seen>> = BTreeMap::new();
        for key in w.series.keys() {
            let Some((kind, Some(region))) = w.kinds.get(&key.0) else {
                continue;
            };
            if !regions.contains(region) || *kind == TargetKind::Global {
                continue;
            }
            let Some(b) = reference_sum(w, key, from_ms, to_ms) else {
                continue;
            };
            let entry = by_region
                .entry(region.as_str())
                .or_default()
                .entry(key.1.as_str())
                .or_default();
            if *kind == TargetKind::Status {
                entry.1 = Some(b.total.clone());
            }
            entry.0.add(b);
        }
        let us = |l: &SparseLatency, q| l.quantile(q).map(Duration::from_micros);
        regions
            .iter()
            .map(|region| RegionObservation {
                region: region.clone(),
                vantages: by_region
                    .get(region.as_str())
                    .map(|vs| {
                        vs.iter()
                            .map(|(vantage, (b, status))| VantageSample {
                                vantage: (*vantage).to_owned(),
                                attempts: b.attempts,
                                failures: b.failures,
                                limit_latency: us(&b.total, lq),
                                weight_latency: us(status.as_ref().unwrap_or(&b.total), wq),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    fn reference_global_traffic(w: &Window, from_ms: u64, to_ms: u64) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for key in w.series.keys() {
            if !matches!(w.kinds.get(&key.0), Some((TargetKind::Global, _))) {
                continue;
            }
            if let Some(b) = reference_sum(w, key, from_ms, to_ms) {
                for (r, n) in b.answered_by {
                    *out.entry(r).or_default() += n;
                }
            }
        }
        out
    }

    /// A bucket: (interval index, attempts, failures, latency samples, answered by r0/r1).
    type Part = (u64, u64, u64, Vec<u64>, u64, u64);

    fn window_strategy() -> impl Strategy<Value = Window> {
        // Targets: global, status and deep of Regions r0..r3 (r3 is not configured).
        let target = (0usize..4, 0u8..3);
        let part = (
            0u64..5,
            0u64..20,
            0u64..20,
            proptest::collection::vec(1u64..5_000_000, 0..12),
            0u64..3,
            0u64..3,
        );
        proptest::collection::vec((target, 0usize..3, part), 0..60).prop_map(|entries| {
            let mut w = Window::new();
            for ((region, kind), vantage, (interval, attempts, failures, values, a0, a1)) in entries
            {
                let p: Part = (interval, attempts, failures, values, a0, a1);
                let (id, kind, region) = match kind {
                    0 => ("global".to_owned(), TargetKind::Global, None),
                    1 => (
                        format!("status:r{region}"),
                        TargetKind::Status,
                        Some(format!("r{region}")),
                    ),
                    _ => (
                        format!("deep:r{region}"),
                        TargetKind::Deep,
                        Some(format!("r{region}")),
                    ),
                };
                w.kinds.entry(id.clone()).or_insert((kind, region));
                let answered_by = [("r0", p.4), ("r1", p.5)]
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| (r.to_owned(), n))
                    .collect();
                w.series
                    .entry((id, format!("v{vantage}")))
                    .or_default()
                    .entry(p.0 * 10_000)
                    .or_default()
                    .add(Bucket {
                        attempts: p.1,
                        failures: p.2,
                        missed_slots: 0,
                        total: sparse(&p.3),
                        answered_by,
                        unmatched: 0,
                        failed: BTreeMap::new(),
                    });
            }
            w
        })
    }

    proptest! {
        #[test]
        fn observations_and_traffic_match_the_reference(
            w in window_strategy(),
            from in 0u64..5,
            len in 0u64..5,
            lq in 0.01f64..=1.0,
            wq in 0.01f64..=1.0,
        ) {
            let regions: Vec<String> = ["r0", "r1", "r2"].map(String::from).to_vec();
            let (from_ms, to_ms) = (from * 10_000, (from + len) * 10_000);
            prop_assert_eq!(
                w.observations(&regions, from_ms, to_ms, lq, wq),
                reference_observations(&w, &regions, from_ms, to_ms, lq, wq)
            );
            prop_assert_eq!(w.global_traffic(from_ms, to_ms), reference_global_traffic(&w, from_ms, to_ms));
            // The HTTP layer's counts are the global traffic; no other kind leaks in.
            prop_assert_eq!(
                w.layer_traffic(TargetKind::Global, from_ms, to_ms).counts,
                reference_global_traffic(&w, from_ms, to_ms)
            );
            // Bare ids are one service's: the per-service pass finds the same, under "".
            let by_service = w.layer_traffic_by_service(TargetKind::Global, from_ms, to_ms);
            prop_assert!(by_service.keys().all(|k| k.is_empty()));
            prop_assert_eq!(
                by_service.get("").cloned().unwrap_or_default(),
                w.layer_traffic(TargetKind::Global, from_ms, to_ms)
            );
        }

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
