//! Builds [`IntervalReport`]s from recorded intervals. Pure: the daemon hands in what the
//! recorders released and the identity of the agent; nothing here reads a clock.

use crate::recorder::{IntervalStats, SampleSet};
use base64::Engine as _;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use vantage_protocol::config::TargetKind;
use vantage_protocol::histogram::{
    clamp_micros, encode_base64, DEFLATE_ABOVE_BYTES, HIGHEST_MICROS, LOWEST_MICROS,
};
use vantage_protocol::report::{version_for, IntervalReport, TargetReport};
use vantage_protocol::{Outcome, Phase};

/// Who sends the reports.
#[derive(Debug, Clone)]
pub struct ReportIdentity {
    pub fleet: String,
    pub agent_id: String,
    pub vantage: String,
}

/// Maps interval numbers to wall-clock time: interval `k` starts at
/// `epoch_ms + k × interval` Unix milliseconds, and `epoch_ms` is a multiple of the interval,
/// so every agent's intervals line up whatever time it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignedIntervals {
    /// Monotonic instant of the start of interval 0.
    pub origin: Instant,
    /// Unix milliseconds of the start of interval 0.
    pub epoch_ms: u64,
    pub length: Duration,
}

impl AlignedIntervals {
    /// Aligns on the interval boundary at or before `now`.
    pub fn align(now: Instant, now_unix: SystemTime, length: Duration) -> Self {
        let length_ms = (length.as_millis() as u64).max(1);
        let now_ms = now_unix
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let epoch_ms = now_ms - now_ms % length_ms;
        let into_interval = Duration::from_millis(now_ms - epoch_ms);
        AlignedIntervals {
            origin: now.checked_sub(into_interval).unwrap_or(now),
            epoch_ms,
            length: Duration::from_millis(length_ms),
        }
    }

    pub fn start_ms(&self, index: u64) -> u64 {
        self.epoch_ms + index * self.length.as_millis() as u64
    }
}

/// One target's share of a report: its id, kind and Region, and what it saw.
pub struct TargetInterval<'a> {
    pub id: &'a str,
    pub kind: TargetKind,
    pub region: Option<&'a str>,
    pub stats: &'a IntervalStats,
}

pub fn target_report(t: &TargetInterval<'_>) -> TargetReport {
    let s = t.stats;
    let outcomes: BTreeMap<Outcome, u64> = Outcome::ALL
        .into_iter()
        .filter(|o| s.outcome_count(*o) > 0)
        .map(|o| (o, s.outcome_count(o)))
        .collect();
    let histograms = Phase::ALL
        .into_iter()
        .filter(|p| !s.phase(*p).is_empty())
        .filter_map(|p| encode_samples(s.phase(p)).map(|h| (p, h)))
        .collect();
    TargetReport {
        target: t.id.to_owned(),
        kind: t.kind,
        region: t.region.map(str::to_owned),
        attempts: s.attempts,
        missed_slots: s.missed_slots,
        outcomes,
        answered_by: s.answered_by.iter().cloned().collect(),
        cert_not_after: s.cert_not_after.and_then(|t| {
            t.duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs() as i64)
        }),
        histograms,
        // A DNS target whose resolutions all failed still says so: zero answers.
        dns: (t.kind == TargetKind::Dns).then(|| s.dns.clone().unwrap_or_default()),
    }
}

/// HdrHistogram's V2 cookie (`0x1c849303 | 0x10`), as `V2Serializer` writes it.
const V2_COOKIE: u32 = 0x1c84_9313;
/// Cookie, payload length, normalising offset, digits, lowest, highest, integer-to-double ratio.
const V2_HEADER: usize = 40;

/// One phase's samples as base64 HdrHistogram text, byte for byte what
/// [`encode_base64`]`(&set.to_histogram())` writes. A sparse set (the usual case: a few samples
/// an interval) is written straight from its values: building the dense histogram first
/// allocates and zeroes ~136 KiB and the serializer another ~157 KiB, which was nearly all of
/// the 28 µs a histogram cost (issue 16). Dense sets, and the rare sparse one whose plain V2
/// is long enough to be deflated, go through the dense path.
pub fn encode_samples(set: &SampleSet) -> Option<String> {
    match set.sparse_values() {
        Some(values) if !values.is_empty() => {
            let plain = sparse_v2(values, set.significant_digits());
            if plain.len() <= DEFLATE_ABOVE_BYTES {
                return Some(base64::engine::general_purpose::STANDARD.encode(plain));
            }
            encode_base64(&set.to_histogram()).ok()
        }
        _ => encode_base64(&set.to_histogram()).ok(),
    }
}

/// Where `Histogram::new_with_bounds(1, _, digits)` puts a value in its counts array (its
/// private `index_for`, with a unit magnitude of 0 since the lowest value is 1 µs).
#[derive(Debug, Clone, Copy)]
struct CountsLayout {
    half_count_magnitude: u32,
    half_count: u64,
    sub_bucket_mask: u64,
    leading_zero_count_base: u32,
}

impl CountsLayout {
    fn new(digits: u8) -> Self {
        let largest = 2 * 10_u64.pow(u32::from(digits));
        let magnitude = (largest as f64).log2().ceil() as u32;
        let count = 1_u64 << magnitude;
        CountsLayout {
            half_count_magnitude: magnitude - 1,
            half_count: count / 2,
            sub_bucket_mask: count - 1,
            leading_zero_count_base: 64 - (magnitude - 1) - 1,
        }
    }

    fn index(&self, value: u64) -> usize {
        let bucket = self.leading_zero_count_base - (value | self.sub_bucket_mask).leading_zeros();
        let sub_bucket = value >> bucket;
        (((u64::from(bucket) + 1) << self.half_count_magnitude) + sub_bucket - self.half_count)
            as usize
    }
}

/// Plain V2 bytes of a histogram holding `values` (µs, clamped like every recorded sample):
/// the counts from index 0 to the highest recorded one, a run of two or more zeros written as
/// its negated length, each as a zigzag LEB128 varint.
fn sparse_v2(values: &[u32], digits: u8) -> Vec<u8> {
    let layout = CountsLayout::new(digits);
    let mut indices: Vec<usize> = values
        .iter()
        .map(|v| layout.index(clamp_micros(u64::from(*v))))
        .collect();
    indices.sort_unstable();
    let mut out = Vec::with_capacity(V2_HEADER + 4 * indices.len() + 4);
    out.extend_from_slice(&V2_COOKIE.to_be_bytes());
    out.extend_from_slice(&0_u32.to_be_bytes()); // payload length, set below
    out.extend_from_slice(&0_u32.to_be_bytes()); // normalising index offset
    out.extend_from_slice(&u32::from(digits).to_be_bytes());
    out.extend_from_slice(&LOWEST_MICROS.to_be_bytes());
    out.extend_from_slice(&HIGHEST_MICROS.to_be_bytes());
    out.extend_from_slice(&1.0_f64.to_be_bytes());
    let mut next = 0;
    let mut i = 0;
    while i < indices.len() {
        let at = indices[i];
        let run = indices[i..].iter().take_while(|x| **x == at).count();
        i += run;
        match at - next {
            0 => {}
            1 => write_varint(&mut out, 0),
            zeros => write_varint(&mut out, zigzag(-(zeros as i64))),
        }
        write_varint(&mut out, zigzag(run as i64));
        next = at + 1;
    }
    let payload = (out.len() - V2_HEADER) as u32;
    out[4..8].copy_from_slice(&payload.to_be_bytes());
    out
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// LEB128-64b9B as HdrHistogram writes it: 7 bits a byte, the ninth byte (if any) whole.
fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    for _ in 0..8 {
        if v < 0x80 {
            out.push(v as u8);
            return;
        }
        out.push(0x80 | (v & 0x7f) as u8);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The report of one interval. Targets that saw nothing in it are left out.
pub fn build(
    identity: &ReportIdentity,
    seq: u64,
    interval_start_ms: u64,
    interval: Duration,
    targets: &[TargetInterval<'_>],
) -> IntervalReport {
    let targets: Vec<TargetReport> = targets
        .iter()
        .filter(|t| t.stats.attempts > 0 || t.stats.missed_slots > 0)
        .map(target_report)
        .collect();
    IntervalReport {
        // Version 1 unless a DNS target is in it, so older aggregators keep reading the
        // reports of fleets without `[dns]`.
        version: version_for(&targets),
        fleet: identity.fleet.clone(),
        agent_id: identity.agent_id.clone(),
        vantage: identity.vantage.clone(),
        seq,
        interval_start_ms,
        interval_ms: interval.as_millis() as u64,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_probe::{PhaseTimings, ProbeResult};

    proptest::proptest! {
        // A 5-digit dense histogram is megabytes: fewer cases keep the debug run short.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// The sparse writer is byte for byte the dense path: any HdrHistogram reader, and the
        /// aggregator's dedup by body, see no difference.
        #[test]
        fn sparse_encoding_is_the_dense_encoding(
            digits in 1u8..=5,
            values in proptest::collection::vec(
                proptest::prop_oneof![0u64..3_000, 0u64..200_000, 0u64..70_000_000],
                1..300,
            ),
        ) {
            let mut set = SampleSet::new(digits);
            for v in &values {
                set.record_micros(*v);
            }
            proptest::prop_assert!(set.sparse_values().is_some());
            let dense = encode_base64(&set.to_histogram()).unwrap();
            proptest::prop_assert_eq!(encode_samples(&set), Some(dense));
        }
    }

    #[test]
    fn dense_sets_encode_through_the_histogram() {
        let mut set = SampleSet::new(3);
        for v in 0..(crate::recorder::SPARSE_LIMIT as u64 + 10) {
            set.record_micros(100 + v * 13);
        }
        assert!(set.sparse_values().is_none());
        let text = encode_samples(&set).unwrap();
        assert_eq!(text, encode_base64(&set.to_histogram()).unwrap());
        let h = vantage_protocol::histogram::decode_base64(&text).unwrap();
        assert_eq!(h.len(), crate::recorder::SPARSE_LIMIT as u64 + 10);
    }

    #[test]
    fn alignment_puts_interval_zero_on_a_wall_clock_boundary() {
        let now = Instant::now();
        let unix = UNIX_EPOCH + Duration::from_millis(1_700_000_012_345);
        let a = AlignedIntervals::align(now, unix, Duration::from_secs(10));
        assert_eq!(a.epoch_ms, 1_700_000_010_000);
        assert_eq!(now - a.origin, Duration::from_millis(2_345));
        assert_eq!(a.start_ms(3), 1_700_000_040_000);
    }

    #[test]
    fn reports_carry_counts_and_decodable_histograms() {
        let mut stats = IntervalStats::new(3);
        let mut t = PhaseTimings::default();
        t.set(Phase::Connect, Duration::from_micros(300));
        t.set(Phase::Total, Duration::from_millis(12));
        let mut ok = ProbeResult::synthetic(Outcome::Ok, t);
        ok.status = Some(200);
        ok.answered_by = Some("us-east-1".into());
        stats.record(&ok, Duration::ZERO);
        stats.record(
            &ProbeResult::synthetic(Outcome::Connect, PhaseTimings::default()),
            Duration::ZERO,
        );
        let empty = IntervalStats::new(3);
        let identity = ReportIdentity {
            fleet: "f".into(),
            agent_id: "a".into(),
            vantage: "eu-west-1".into(),
        };
        let targets = [
            TargetInterval {
                id: "status:us-east-1",
                kind: TargetKind::Status,
                region: Some("us-east-1"),
                stats: &stats,
            },
            TargetInterval {
                id: "global",
                kind: TargetKind::Global,
                region: None,
                stats: &empty,
            },
        ];
        let r = build(
            &identity,
            9,
            1_700_000_010_000,
            Duration::from_secs(10),
            &targets,
        );
        r.validate().unwrap();
        assert_eq!(
            r.targets.len(),
            1,
            "targets with nothing to say are left out"
        );
        let t = &r.targets[0];
        assert_eq!(
            t.outcomes,
            BTreeMap::from([(Outcome::Ok, 1), (Outcome::Connect, 1)])
        );
        assert_eq!(t.answered_by["us-east-1"], 1);
        let h = t.decode_histograms().unwrap();
        assert_eq!(
            h.keys().copied().collect::<Vec<_>>(),
            vec![Phase::Connect, Phase::Total]
        );
        assert_eq!(h[&Phase::Total].len(), 1);
    }

    #[test]
    fn dns_targets_report_answers_per_region_in_version_2() {
        use vantage_probe::dns::{DnsAnswer, DnsObservation};
        use vantage_probe::PhaseTimings;
        let mut stats = IntervalStats::new(3);
        for (ttl, region) in [(4, Some("eu-west-1")), (2, None)] {
            let mut timings = PhaseTimings::default();
            timings.set(Phase::Dns, Duration::from_micros(800));
            timings.set(Phase::Total, Duration::from_micros(800));
            let mut r = vantage_probe::ProbeResult::synthetic(Outcome::Ok, timings);
            r.dns = Some(DnsObservation {
                answers: vec![DnsAnswer {
                    value: "192.0.2.1".into(),
                    ttl,
                    region: region.map(str::to_owned),
                }],
            });
            stats.record(&r, Duration::ZERO);
        }
        stats.record(
            &vantage_probe::ProbeResult::synthetic(Outcome::Dns, Default::default()),
            Duration::ZERO,
        );
        let identity = ReportIdentity {
            fleet: "f".into(),
            agent_id: "a".into(),
            vantage: "eu-west-1".into(),
        };
        let dns = TargetInterval {
            id: "dns",
            kind: TargetKind::Dns,
            region: None,
            stats: &stats,
        };
        let r = build(&identity, 1, 0, Duration::from_secs(10), &[dns]);
        assert_eq!(r.version, 2);
        r.validate().unwrap();
        let t = &r.targets[0];
        assert_eq!(t.outcomes[&Outcome::Dns], 1);
        let answers = t.dns.as_ref().unwrap();
        assert_eq!(answers.regions["eu-west-1"], 1);
        assert_eq!(
            (answers.unmatched, answers.ttl_min, answers.ttl_max),
            (1, Some(2), Some(4))
        );
        assert_eq!(t.decode_histograms().unwrap()[&Phase::Dns].len(), 2);
        let empty = IntervalStats::new(3);
        let http = TargetInterval {
            id: "global",
            kind: TargetKind::Global,
            region: None,
            stats: &empty,
        };
        assert_eq!(
            build(&identity, 2, 0, Duration::from_secs(10), &[http]).version,
            1
        );
    }
}
