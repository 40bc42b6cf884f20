//! The observations by rescanning the window: every (target, vantage) series' buckets in range
//! gathered per (unit, vantage), latency samples sorted once per view. This was the
//! evaluation's path before the tallies ([`super::tally`]); it stays as the plain reading of
//! what an observation is, the reference the property test holds the tallies to and the
//! bench's "before" figure.

use super::{SparseLatency, Window};
use crate::model::{RegionObservation, VantageSample};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use vantage_protocol::config::TargetKind;

impl Window {
    /// [`Window::observations`] by a full rescan of the window (nothing is kept between calls).
    pub fn observations_rescan(
        &self,
        regions: &[String],
        from_ms: u64,
        to_ms: u64,
        limit_quantile: f64,
        weight_quantile: f64,
    ) -> Vec<RegionObservation> {
        let configured: HashSet<&str> = regions.iter().map(String::as_str).collect();
        let mut views: HashMap<&str, BTreeMap<&str, View>> = HashMap::new();
        for series in self.targets.values() {
            let Some(region) = series.observed_unit() else {
                continue;
            };
            if !configured.contains(region) {
                continue;
            }
            let kind = series.kind;
            for (vantage, one) in series.vantages.iter(&self.names) {
                let in_range = one.intervals.range(from_ms..to_ms);
                if in_range.clone().next().is_none() {
                    continue;
                }
                let view = views.entry(region).or_default().entry(vantage).or_default();
                let samples = if kind == TargetKind::Status {
                    view.status.get_or_insert_with(Vec::new)
                } else {
                    &mut view.others
                };
                for (_, b) in in_range {
                    view.attempts = view.attempts.saturating_add(b.attempts);
                    view.failures = view.failures.saturating_add(b.failures);
                    samples.extend_from_slice(b.total.pairs());
                }
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
}

/// One vantage's view of one Region while [`Window::observations_rescan`] gathers it.
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
