//! Builds [`IntervalReport`]s from recorded intervals. Pure: the daemon hands in what the
//! recorders released and the identity of the agent; nothing here reads a clock.

use crate::recorder::IntervalStats;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use vantage_protocol::config::TargetKind;
use vantage_protocol::histogram::encode_base64;
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
        .filter_map(|p| {
            encode_base64(&s.phase(p).to_histogram())
                .ok()
                .map(|h| (p, h))
        })
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
