//! The sliding window: what every vantage reported about every target, by interval.
//!
//! Reports are merged into the interval they belong to, whenever they arrive (an agent may
//! send one interval in several parts, or late from its spool). Latency is kept as sparse
//! `(value, count)` pairs of the decoded HDR histogram ([`sparse`]) — a handful of buckets per
//! interval instead of a dense array — so a thousand endpoints seen from thirty vantages fit in
//! memory, and quantiles over the window are exact at the histogram's precision. Each merge
//! also updates its unit's tally ([`tally`]), so an evaluation reads every (unit, vantage)
//! view off a running sum instead of rescanning the window ([`rescan`], kept as the
//! reference); [`traffic`] answers where each layer shows traffic going.

mod rescan;
mod sparse;
mod tally;
mod traffic;

pub use sparse::SparseLatency;
pub use traffic::LayerTraffic;

use crate::model::{KindTotals, RegionObservation, VantageSample};
use crate::prepare::PreparedReport;
use std::collections::{BTreeMap, HashMap};
use tally::Tallies;
use vantage_protocol::config::TargetKind;
use vantage_protocol::Outcome;

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

/// One target's buckets, per vantage by interval start (Unix ms), with the kind and unit it
/// was first merged with.
#[derive(Debug)]
struct TargetSeries {
    kind: TargetKind,
    /// The unit (service in Region) the target counts for; `None` for global, DNS, control.
    unit: Option<String>,
    vantages: PerVantage,
}

/// A target's series, one slot per vantage id ([`Window::vantage_id`]): a merge finds its
/// series by index, not by comparing vantage names.
#[derive(Debug, Default)]
struct PerVantage(Vec<Option<Series>>);

impl PerVantage {
    fn get_mut(&mut self, id: usize) -> Option<&mut Series> {
        self.0.get_mut(id).and_then(Option::as_mut)
    }

    fn insert(&mut self, id: usize, series: Series) -> &mut Series {
        if self.0.len() <= id {
            self.0.resize_with(id + 1, || None);
        }
        self.0[id].insert(series)
    }

    /// Every series with its vantage's name (in id order, not name order).
    fn iter<'a>(&'a self, names: &'a [String]) -> impl Iterator<Item = (&'a str, &'a Series)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(move |(id, s)| s.as_ref().map(|s| (names[id].as_str(), s)))
    }

    fn values(&self) -> impl Iterator<Item = &Series> {
        self.0.iter().flatten()
    }

    /// Drops the series `keep` refuses.
    fn retain(&mut self, mut keep: impl FnMut(&mut Series) -> bool) {
        for slot in &mut self.0 {
            if slot.as_mut().is_some_and(|s| !keep(s)) {
                *slot = None;
            }
        }
    }
}

/// One (target, vantage) series: its buckets by interval start (Unix ms).
#[derive(Debug, Default)]
struct Series {
    intervals: BTreeMap<u64, Bucket>,
    /// The slot of its unit's tally for the vantage, if it counts for a unit.
    tally: Option<usize>,
}

impl TargetSeries {
    /// Whether the target's buckets count for its unit's observations (status and deep).
    fn observed_unit(&self) -> Option<&str> {
        match &self.unit {
            Some(unit) if self.kind != TargetKind::Global => Some(unit),
            _ => None,
        }
    }
}

/// The window of every series, by target id (looked up by hash at every merge).
#[derive(Debug, Default)]
pub struct Window {
    targets: HashMap<String, TargetSeries>,
    /// Vantage names by id, and ids by name: each report's vantage is looked up once.
    names: Vec<String>,
    ids: HashMap<String, usize>,
    /// Per (unit, vantage): the parts of each interval and their sum over the last range.
    tallies: Tallies,
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
    pub fn merge<S: AsRef<str>>(&mut self, report: PreparedReport<S>) -> Merged {
        let mut merged = Merged::default();
        let (vantage, start) = (report.vantage.as_str(), report.interval_start_ms);
        let vantage_id = self.vantage_id(vantage);
        for t in report.targets {
            merged.targets += 1;
            merged.attempts = merged.attempts.saturating_add(t.bucket.attempts);
            // Only targets the fleet file plans get here, so this map stays that size.
            let target = match self.targets.get_mut(t.id.as_ref()) {
                Some(target) => target,
                None => self
                    .targets
                    .entry(t.id.as_ref().to_owned())
                    .or_insert(TargetSeries {
                        kind: t.kind,
                        unit: t.region,
                        vantages: PerVantage::default(),
                    }),
            };
            let series = match target.vantages.get_mut(vantage_id) {
                Some(series) => series,
                None => {
                    let tally = match &target.unit {
                        Some(unit) if target.kind != TargetKind::Global => {
                            Some(self.tallies.slot(unit, vantage))
                        }
                        _ => None,
                    };
                    let series = Series {
                        intervals: BTreeMap::new(),
                        tally,
                    };
                    target.vantages.insert(vantage_id, series)
                }
            };
            let bucket = series.intervals.entry(start);
            if let Some(slot) = series.tally {
                let new = matches!(bucket, std::collections::btree_map::Entry::Vacant(_));
                let status = target.kind == TargetKind::Status;
                self.tallies.record(slot, start, status, new, &t.bucket);
            }
            bucket.or_default().add(t.bucket);
        }
        merged
    }

    /// Forgets every series of the targets `keep` refuses (a reload took them out of the
    /// fleet): nothing decides from them any more. Rare, so the tallies are rebuilt.
    pub fn forget_targets(&mut self, keep: impl Fn(&str) -> bool) {
        self.targets.retain(|target, _| keep(target));
        self.tallies.clear();
        for target in self.targets.values_mut() {
            let status = target.kind == TargetKind::Status;
            let unit = match &target.unit {
                Some(unit) if target.kind != TargetKind::Global => Some(unit),
                _ => None,
            };
            for (id, series) in target.vantages.0.iter_mut().enumerate() {
                let Some(series) = series else {
                    continue;
                };
                series.tally = unit.map(|unit| self.tallies.slot(unit, &self.names[id]));
                let Some(slot) = series.tally else {
                    continue;
                };
                for (start, b) in &series.intervals {
                    self.tallies.record(slot, *start, status, true, b);
                }
            }
        }
    }

    /// Forgets intervals that started before `oldest_start_ms`.
    pub fn prune(&mut self, oldest_start_ms: u64) {
        for series in self.targets.values_mut() {
            series.vantages.retain(|series| {
                series
                    .intervals
                    .retain(|start, _| *start >= oldest_start_ms);
                !series.intervals.is_empty()
            });
        }
        self.tallies.prune(oldest_start_ms);
    }

    /// Per Region (unit) of `regions`, each vantage's view over `[from_ms, to_ms)`: the
    /// Region's status and deep targets together (a failing deep check is a failing Region),
    /// latency from the shallow status target (what clients of the API feel). Read off the
    /// tallies, which slide to the range: the same as [`Self::observations_rescan`].
    pub fn observations(
        &mut self,
        regions: &[String],
        from_ms: u64,
        to_ms: u64,
        limit_quantile: f64,
        weight_quantile: f64,
    ) -> Vec<RegionObservation> {
        self.tallies
            .observations(regions, from_ms, to_ms, limit_quantile, weight_quantile)
    }

    /// Each vantage's control target (`vantages[].control_url`) over `[from_ms, to_ms)`:
    /// attempts and failures, no latency.
    pub fn control_samples(&self, from_ms: u64, to_ms: u64) -> Vec<VantageSample> {
        let Some(series) = self.targets.get(vantage_protocol::config::CONTROL_TARGET) else {
            return Vec::new();
        };
        let mut samples: Vec<VantageSample> = series
            .vantages
            .iter(&self.names)
            .filter_map(|(vantage, series)| {
                let (attempts, failures) = series
                    .intervals
                    .range(from_ms..to_ms)
                    .fold((0u64, 0u64), |(a, f), (_, b)| {
                        (a.saturating_add(b.attempts), f.saturating_add(b.failures))
                    });
                (attempts > 0).then(|| VantageSample {
                    vantage: vantage.to_owned(),
                    attempts,
                    failures,
                    limit_latency: None,
                    weight_latency: None,
                })
            })
            .collect();
        // By vantage name, as the window listed them before vantages had ids.
        samples.sort_by(|a, b| a.vantage.cmp(&b.vantage));
        samples
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
        for series in self.targets.values() {
            let Some(unit) = series.unit.as_ref().filter(|_| series.kind == kind) else {
                continue;
            };
            for (vantage, one) in series.vantages.iter(&self.names) {
                if !counts(vantage) {
                    continue;
                }
                for (_, b) in one.intervals.range(from_ms..to_ms) {
                    let totals = match out.get_mut(unit) {
                        Some(totals) => totals,
                        None => out.entry(unit.clone()).or_default(),
                    };
                    totals.attempts = totals.attempts.saturating_add(b.attempts);
                    totals.failures = totals.failures.saturating_add(b.failures);
                    for (outcome, n) in &b.failed {
                        let count = totals.failed.entry(*outcome).or_default();
                        *count = count.saturating_add(*n);
                    }
                }
            }
        }
        out
    }

    /// Number of (target, vantage) series held.
    pub fn series(&self) -> usize {
        self.targets
            .values()
            .map(|s| s.vantages.values().count())
            .sum()
    }

    /// The id of `vantage`, made if new (vantages are the fleet's: ingest refuses others).
    fn vantage_id(&mut self, vantage: &str) -> usize {
        if let Some(id) = self.ids.get(vantage) {
            return *id;
        }
        self.names.push(vantage.to_owned());
        self.ids.insert(vantage.to_owned(), self.names.len() - 1);
        self.names.len() - 1
    }

    /// Every (target id, series) of targets of `kind`.
    fn targets_of_kind(&self, kind: TargetKind) -> impl Iterator<Item = (&str, &TargetSeries)> {
        self.targets
            .iter()
            .filter(move |(_, s)| s.kind == kind)
            .map(|(id, s)| (id.as_str(), s))
    }
}

#[cfg(test)]
mod tests;
