//! The metric data the exporters send, built from one interval's statistics (pure): per target
//! and phase a `Latency` distribution in milliseconds, per target and outcome a `Probes` count,
//! and the split of a request's worth of data into batches within `PutMetricData`'s limits.

use super::distribution::{Distribution, MAX_VALUES};
use crate::recorder::IntervalStats;
use vantage_protocol::{Outcome, Phase};

/// The latency metric: one distribution per target, phase and interval.
pub const LATENCY_METRIC: &str = "Latency";
/// The probe count metric: one value per target, outcome and interval.
pub const PROBES_METRIC: &str = "Probes";
/// Region dimension of targets that belong to no Region (global endpoint, DNS, control).
pub const NO_REGION: &str = "global";
/// `PutMetricData`'s limit on metric data per request.
pub const MAX_DATA_PER_REQUEST: usize = 1_000;
/// `PutMetricData`'s payload limit is 1 MB; batches aim below it, by [`Datum::encoded_size`].
pub const MAX_REQUEST_BYTES: usize = 900_000;

/// Metric unit, as CloudWatch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Milliseconds,
    Count,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Milliseconds => "Milliseconds",
            Unit::Count => "Count",
        }
    }
}

/// One metric datum: values with their counts (at most [`MAX_VALUES`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub metric: &'static str,
    /// Name and value pairs, in a fixed order per metric.
    pub dimensions: Vec<(&'static str, String)>,
    /// Start of the interval, Unix milliseconds.
    pub timestamp_ms: u64,
    pub unit: Unit,
    pub values: Vec<f64>,
    pub counts: Vec<f64>,
}

impl Datum {
    /// An upper estimate of the datum's size in a query-protocol request body, where every
    /// value and count is a `MetricData.member.N.Values.member.M=...` pair (the longest of the
    /// encodings the SDK may use).
    pub fn encoded_size(&self) -> usize {
        let dimensions: usize = self
            .dimensions
            .iter()
            .map(|(n, v)| 2 * 60 + n.len() + 3 * v.len())
            .sum();
        200 + self.metric.len() + dimensions + 2 * 56 * self.values.len()
    }
}

/// A target's identity in the exported dimensions.
#[derive(Debug, Clone, Copy)]
pub struct TargetMeta<'a> {
    pub service: &'a str,
    pub id: &'a str,
    pub region: Option<&'a str>,
}

/// Every datum of one target's interval: a `Latency` distribution per phase that saw samples
/// (split over several datums when it has more than [`MAX_VALUES`] values) and a `Probes`
/// count per outcome that occurred.
/// `layout` is an (empty) histogram of the recorder's precision: bucket boundaries only, so a
/// sparse interval never builds a dense histogram here.
pub fn target_data(
    target: TargetMeta<'_>,
    vantage: &str,
    stats: &IntervalStats,
    timestamp_ms: u64,
    layout: &hdrhistogram::Histogram<u64>,
    significant_digits: u8,
) -> Vec<Datum> {
    let base = |last: (&'static str, String)| {
        vec![
            ("Service", target.service.to_owned()),
            ("Target", target.id.to_owned()),
            ("Region", target.region.unwrap_or(NO_REGION).to_owned()),
            ("Vantage", vantage.to_owned()),
            last,
        ]
    };
    let mut out = Vec::new();
    for phase in Phase::ALL {
        let set = stats.phase(phase);
        if set.is_empty() {
            continue;
        }
        let dist = Distribution::from_buckets(set.buckets(layout), layout, significant_digits);
        for chunk in dist.chunks(MAX_VALUES) {
            out.push(Datum {
                metric: LATENCY_METRIC,
                dimensions: base(("Phase", phase.as_str().to_owned())),
                timestamp_ms,
                unit: Unit::Milliseconds,
                values: chunk.iter().map(|(v, _)| *v as f64 / 1_000.0).collect(),
                counts: chunk.iter().map(|(_, c)| *c as f64).collect(),
            });
        }
    }
    for outcome in Outcome::ALL {
        let n = stats.outcome_count(outcome);
        if n > 0 {
            out.push(Datum {
                metric: PROBES_METRIC,
                dimensions: base(("Outcome", outcome.as_str().to_owned())),
                timestamp_ms,
                unit: Unit::Count,
                values: vec![n as f64],
                counts: vec![1.0],
            });
        }
    }
    out
}

/// Splits data into request-sized batches: at most `max_count` data and `max_bytes` by
/// [`Datum::encoded_size`] each (a datum larger than `max_bytes` alone goes in its own batch).
pub fn batches(data: Vec<Datum>, max_count: usize, max_bytes: usize) -> Vec<Vec<Datum>> {
    let mut out: Vec<Vec<Datum>> = Vec::new();
    let mut current: Vec<Datum> = Vec::new();
    let mut bytes = 0;
    for d in data {
        let size = d.encoded_size();
        if !current.is_empty() && (current.len() >= max_count || bytes + size > max_bytes) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(d);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> IntervalStats {
        let mut s = IntervalStats::new(3);
        s.attempts = 3;
        s.outcomes[Outcome::Ok.index()] = 2;
        s.outcomes[Outcome::Timeout.index()] = 1;
        for micros in [1_500, 1_500, 2_000_000] {
            s.phases[Phase::Total.index()].record_micros(micros);
        }
        s.phases[Phase::Dns.index()].record_micros(800);
        s
    }

    #[test]
    fn one_latency_datum_per_phase_and_one_count_per_outcome() {
        let meta = TargetMeta {
            service: "payments",
            id: "status:eu-west-1",
            region: Some("eu-west-1"),
        };
        let layout = vantage_protocol::histogram::new_latency_histogram(3).unwrap();
        let data = target_data(meta, "us-east-1", &stats(), 1_000, &layout, 3);
        let latency: Vec<&Datum> = data.iter().filter(|d| d.metric == LATENCY_METRIC).collect();
        assert_eq!(latency.len(), 2);
        let total = latency
            .iter()
            .find(|d| d.dimensions[4] == ("Phase", "total".to_owned()))
            .unwrap();
        assert_eq!(total.values.len(), 2);
        assert_eq!(total.values[0], 1.5);
        assert_eq!(total.counts, vec![2.0, 1.0]);
        assert_eq!(
            total.dimensions.iter().map(|d| d.0).collect::<Vec<_>>(),
            ["Service", "Target", "Region", "Vantage", "Phase"]
        );
        let probes: Vec<(String, f64)> = data
            .iter()
            .filter(|d| d.metric == PROBES_METRIC)
            .map(|d| (d.dimensions[4].1.clone(), d.values[0]))
            .collect();
        assert_eq!(
            probes,
            [("ok".to_owned(), 2.0), ("timeout".to_owned(), 1.0)]
        );
    }

    #[test]
    fn batches_respect_count_and_size() {
        let meta = TargetMeta {
            service: "s",
            id: "global",
            region: None,
        };
        let layout = vantage_protocol::histogram::new_latency_histogram(3).unwrap();
        let data: Vec<Datum> = (0..2_500)
            .flat_map(|i| target_data(meta, "v", &stats(), i, &layout, 3))
            .collect();
        let n = data.len();
        let by_count = batches(data.clone(), MAX_DATA_PER_REQUEST, usize::MAX);
        assert!(by_count.iter().all(|b| b.len() <= MAX_DATA_PER_REQUEST));
        assert_eq!(by_count.iter().map(Vec::len).sum::<usize>(), n);
        let by_size = batches(data, MAX_DATA_PER_REQUEST, 50_000);
        assert!(by_size
            .iter()
            .all(|b| b.iter().map(Datum::encoded_size).sum::<usize>() <= 50_000));
        assert_eq!(by_size.iter().map(Vec::len).sum::<usize>(), n);
    }
}
