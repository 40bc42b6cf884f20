//! Where traffic goes by layer, from the window: which Region answered the global endpoint's
//! probes (its Region header) and which Regions the DNS target's answers map to, summed over
//! vantages, per service, with when each Region last answered.

use super::{Bucket, TargetSeries, Window};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use vantage_protocol::config::TargetKind;

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

impl Window {
    /// Which Region answered the global endpoint's probes over `[from_ms, to_ms)`, summed over
    /// vantages: where client traffic actually goes.
    pub fn global_traffic(&self, from_ms: u64, to_ms: u64) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for (_, intervals) in self.series_of_kind(TargetKind::Global) {
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

    /// Every series (one per vantage) of the targets of `kind`, with its target id.
    fn series_of_kind(
        &self,
        kind: TargetKind,
    ) -> impl Iterator<Item = (&str, &BTreeMap<u64, Bucket>)> + '_ {
        self.targets_of_kind(kind)
            .flat_map(|(id, s): (&str, &TargetSeries)| {
                s.vantages.values().map(move |v| (id, &v.intervals))
            })
    }
}
