//! From an interval's HDR histogram to CloudWatch distributions: `Values`/`Counts` arrays of at
//! most [`MAX_VALUES`] entries per datum. Pure, no I/O.
//!
//! The rule: walk the histogram's recorded buckets in increasing order (each bucket stands for
//! its highest equivalent value, as HDR's own percentiles do). A bucket joins the current
//! group when its value is within a factor `1 + 10^-d` of the group's lowest value, `d` being
//! the histogram's significant digits; a group is emitted as its highest value with the summed
//! count. HDR keeps buckets finer than `10^-d` (a power-of-two sub-bucket count), so this merges
//! only buckets that are equivalent at the configured precision. If more than [`MAX_VALUES`]
//! groups remain, they are split over several datums of the same metric and timestamp, which
//! CloudWatch aggregates into one distribution: no precision is given up to fit the limit.
//!
//! Consequence (checked by a property test): for every quantile `q`, the nearest-rank
//! percentile of the emitted values lies between HDR's `value_at_quantile(q)` and that value
//! times `1 + 10^-d`.

use hdrhistogram::Histogram;

/// CloudWatch's limit on distinct values in one `MetricDatum`.
pub const MAX_VALUES: usize = 150;

/// A histogram as (value, count) pairs in increasing value order, values in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Distribution {
    pub points: Vec<(u64, u64)>,
}

impl Distribution {
    /// The groups of `histogram` by the rule of this module, at `significant_digits` (1..=5).
    pub fn from_histogram(histogram: &Histogram<u64>, significant_digits: u8) -> Self {
        let buckets = histogram
            .iter_recorded()
            .map(|b| (b.value_iterated_to(), b.count_at_value()));
        Self::from_buckets(buckets, histogram, significant_digits)
    }

    /// The same from recorded buckets (highest equivalent value, count) in increasing order,
    /// as [`SampleSet::buckets`](crate::recorder::SampleSet::buckets) gives them; `layout` is
    /// a histogram of the same precision (its bucket boundaries only).
    pub fn from_buckets(
        buckets: impl IntoIterator<Item = (u64, u64)>,
        layout: &Histogram<u64>,
        significant_digits: u8,
    ) -> Self {
        let scale = 10u128.pow(u32::from(significant_digits.clamp(1, 5)));
        let mut points: Vec<(u64, u64)> = Vec::new();
        let mut group_low = 0u64;
        for (value, count) in buckets {
            match points.last_mut() {
                // value ≤ low × (1 + 10^-d), in integers.
                Some(last) if u128::from(value) * scale <= u128::from(group_low) * (scale + 1) => {
                    last.0 = value;
                    last.1 += count;
                }
                _ => {
                    group_low = layout.lowest_equivalent(value);
                    points.push((value, count));
                }
            }
        }
        Distribution { points }
    }

    pub fn total(&self) -> u64 {
        self.points.iter().map(|(_, c)| c).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The datums' shares: consecutive runs of at most `max` points.
    pub fn chunks(&self, max: usize) -> impl Iterator<Item = &[(u64, u64)]> {
        self.points.chunks(max.max(1))
    }

    /// Nearest-rank percentile, the way HDR computes it: the value of the point that holds
    /// rank `ceil(q × total)` (at least 1). None when empty.
    pub fn value_at_quantile(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.min(1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (v, c) in &self.points {
            seen += c;
            if seen >= rank {
                return Some(*v);
            }
        }
        self.points.last().map(|(v, _)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vantage_protocol::histogram::{new_latency_histogram, HIGHEST_MICROS};

    #[test]
    fn few_samples_are_kept_exactly() {
        let mut h = new_latency_histogram(3).unwrap();
        for v in [1_000u64, 1_000, 2_500, 90_000] {
            h.record(v).unwrap();
        }
        let d = Distribution::from_histogram(&h, 3);
        let values: Vec<u64> = d.points.iter().map(|p| p.0).collect();
        assert_eq!(values, vec![1_000, 2_501, 90_047]);
        assert_eq!(d.points[0].1, 2);
        assert_eq!(d.total(), 4);
    }

    #[test]
    fn a_wide_histogram_splits_into_datums_of_at_most_150_values() {
        let mut h = new_latency_histogram(3).unwrap();
        // 2,000 values 1 % apart: every one distinct at 3 digits.
        let mut v = 1_000f64;
        for _ in 0..2_000 {
            h.record((v as u64).min(HIGHEST_MICROS)).unwrap();
            v *= 1.01;
        }
        let d = Distribution::from_histogram(&h, 3);
        assert!(d.points.len() > MAX_VALUES, "{}", d.points.len());
        assert!(d.chunks(MAX_VALUES).all(|c| c.len() <= MAX_VALUES));
        let summed: u64 = d.chunks(MAX_VALUES).flatten().map(|p| p.1).sum();
        assert_eq!(summed, h.len());
    }

    proptest! {
        #[test]
        fn percentiles_stay_within_the_histogram_precision(
            digits in 1u8..=4,
            samples in proptest::collection::vec((1u64..=HIGHEST_MICROS, 1u64..50), 1..400),
            small in proptest::collection::vec(1u64..5_000, 0..400),
        ) {
            let mut h = new_latency_histogram(digits).unwrap();
            for (v, n) in &samples { h.record_n(*v, *n).unwrap(); }
            for v in &small { h.record(*v).unwrap(); }
            let d = Distribution::from_histogram(&h, digits);
            prop_assert_eq!(d.total(), h.len());
            // The sample set's own buckets (sparse below 1,024 samples) give the same points.
            let mut set = crate::recorder::SampleSet::new(digits);
            for (v, n) in &samples { for _ in 0..*n { set.record_micros(*v); } }
            for v in &small { set.record_micros(*v); }
            let layout = new_latency_histogram(digits).unwrap();
            prop_assert_eq!(&Distribution::from_buckets(set.buckets(&layout), &layout, digits), &d);
            prop_assert!(d.points.windows(2).all(|w| w[0].0 < w[1].0));
            // Reassembled from the datums, as CloudWatch aggregates them.
            let reassembled = Distribution {
                points: d.chunks(MAX_VALUES).flat_map(|c| c.iter().copied()).collect(),
            };
            prop_assert!(d.chunks(MAX_VALUES).all(|c| c.len() <= MAX_VALUES));
            let tolerance = 1.0 + 10f64.powi(-i32::from(digits));
            for q in [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
                let want = h.value_at_quantile(q);
                let got = reassembled.value_at_quantile(q).unwrap();
                // q = 0: HDR reports the lowest equivalent value, we the bucket's highest.
                let want = if q == 0.0 { h.highest_equivalent(want) } else { want };
                prop_assert!(got >= want, "q={q}: {got} < {want}");
                prop_assert!(got as f64 <= want as f64 * tolerance, "q={q}: {got} vs {want}");
            }
        }
    }
}
