//! The agent → aggregator wire format: one [`IntervalReport`] per agent per interval, JSON,
//! `POST /v1/reports`. Histograms are HdrHistogram V2-deflate, base64, values in microseconds.
//!
//! Intervals are aligned to the Unix epoch (`interval_start_ms` is a multiple of
//! `interval_ms`), so reports from every vantage about the same interval line up. An interval
//! may arrive in more than one report when samples come late; the aggregator merges them.
//! `seq` increases by one per report of an agent and lets the aggregator drop duplicates.
//!
//! Versions: 2 added the `dns` target kind and its [`DnsAnswers`]. An agent writes version 1
//! whenever a report has no DNS target, so aggregators that know only version 1 keep accepting
//! every report of a fleet without `[dns]`; a version 2 report is refused by them as a whole,
//! with a 400 that names the version (the agent does not retry a 400). This aggregator accepts
//! all ([`MIN_WIRE_VERSION`]..=[`WIRE_VERSION`]), and a `dns` field only from version 2.
//!
//! Version 3 added the gRPC outcome codes (`grpc_status`, `not_serving`). An older aggregator
//! would fail to parse a report naming them, so an agent writes version 3 only when a report
//! counts one of them, and an older version otherwise: a fleet without gRPC targets (or whose
//! gRPC targets are healthy) keeps working with aggregators of versions 1 and 2. Upgrade
//! aggregators before agents, as for version 2.
//!
//! The string type is a parameter so the aggregator can parse without copying: agents build
//! reports of `String` (the default); ingest parses `&str` borrowed from the request body (no
//! allocation per target id and histogram) and falls back to `String` only when a string
//! carries a JSON escape, which a borrowed `&str` cannot hold.

use crate::config::TargetKind;
use crate::histogram::{decode_base64, HistogramError};
use crate::{Outcome, Phase};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the report format; bumped on incompatible change.
pub const WIRE_VERSION: u32 = 3;
/// The version that added the `dns` target kind.
pub const DNS_WIRE_VERSION: u32 = 2;
/// Oldest version still accepted: version 1 is version 2 without DNS targets.
pub const MIN_WIRE_VERSION: u32 = 1;

/// The version a report with these targets is written in: the oldest one that can carry them.
pub fn version_for<S: AsRef<str>>(targets: &[TargetReportOf<S>]) -> u32 {
    targets
        .iter()
        .map(TargetReportOf::min_version)
        .max()
        .unwrap_or(MIN_WIRE_VERSION)
}

/// Largest number of Regions one DNS target's answers may name (bounds what is decoded).
pub const MAX_DNS_REGIONS: usize = 64;
/// Path the aggregator serves reports on.
pub const REPORTS_PATH: &str = "/v1/reports";

/// A report as agents build it and most code handles it: owned strings.
pub type IntervalReport = IntervalReportOf<String>;
/// One target's part of an [`IntervalReport`].
pub type TargetReport = TargetReportOf<String>;
/// A report parsed with its strings borrowed from the JSON body (ingest's fast path).
pub type IntervalReportRef<'a> = IntervalReportOf<&'a str>;

/// An interval report over the string type `S` (`String`, or `&str` borrowed from the body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "S: Deserialize<'de>"))]
pub struct IntervalReportOf<S> {
    pub version: u32,
    pub fleet: S,
    pub agent_id: S,
    /// Region the agent runs in.
    pub vantage: S,
    /// Per-agent sequence number, from 1, one more for every report.
    pub seq: u64,
    pub interval_start_ms: u64,
    pub interval_ms: u64,
    pub targets: Vec<TargetReportOf<S>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "S: Deserialize<'de>"))]
pub struct TargetReportOf<S> {
    /// `global`, `status:<region>` or `deep:<region>`.
    pub target: S,
    pub kind: TargetKind,
    /// The Region the target belongs to (none for the global endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<S>,
    pub attempts: u64,
    #[serde(default)]
    pub missed_slots: u64,
    /// Non-zero outcome counts; they add up to `attempts`.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Region header values of the answers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answered_by: BTreeMap<String, u64>,
    /// Leaf certificate notAfter, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_not_after: Option<i64>,
    /// Phases with samples only.
    pub histograms: BTreeMap<Phase, S>,
    /// DNS targets only (version 2): the answer records of the interval's resolutions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsAnswers>,
}

/// What a DNS target's resolutions answered in one interval: answer records counted by the
/// Region they map to (the fleet file's `dns_answers`), the ones that map to none, and the
/// range of TTLs seen (what a client's resolver would cache them for).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsAnswers {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub regions: BTreeMap<String, u64>,
    #[serde(default)]
    pub unmatched: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_max: Option<u32>,
}

/// A report that parsed but does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report version {0} is not supported (expected {MIN_WIRE_VERSION} to {WIRE_VERSION})")]
    Version(u32),
    #[error("target {target}: {problem}")]
    Dns {
        target: String,
        problem: &'static str,
    },
    #[error("interval_ms must be positive and interval_start_ms a multiple of it")]
    Interval,
    #[error("seq must start at 1")]
    Seq,
    #[error("target {target}: outcome counts add up to {sum}, attempts is {attempts}")]
    Counts {
        target: String,
        sum: u64,
        attempts: u64,
    },
    #[error("target {target}: histogram {phase}: {source}")]
    Histogram {
        target: String,
        phase: Phase,
        #[source]
        source: HistogramError,
    },
    #[error("target {0} appears twice")]
    DuplicateTarget(String),
    #[error("target {0}: counts overflow a 64-bit sum")]
    Overflow(String),
    #[error("target {target}: a gRPC outcome code needs report version 3, this one is {version}")]
    OutcomeVersion { target: String, version: u32 },
    #[error("target {target}: {answers} answers counted in answered_by, attempts is {attempts}")]
    Answers {
        target: String,
        answers: u64,
        attempts: u64,
    },
}

fn checked_sum<'a>(counts: impl IntoIterator<Item = &'a u64>) -> Option<u64> {
    counts
        .into_iter()
        .try_fold(0u64, |sum, n| sum.checked_add(*n))
}

impl<S: AsRef<str>> IntervalReportOf<S> {
    /// Structural checks, without decoding histograms.
    pub fn validate(&self) -> Result<(), ReportError> {
        if !(MIN_WIRE_VERSION..=WIRE_VERSION).contains(&self.version) {
            return Err(ReportError::Version(self.version));
        }
        if self.interval_ms == 0 || self.interval_start_ms % self.interval_ms != 0 {
            return Err(ReportError::Interval);
        }
        if self.seq == 0 {
            return Err(ReportError::Seq);
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.targets {
            if !seen.insert(t.target.as_ref()) {
                return Err(ReportError::DuplicateTarget(t.target.as_ref().to_owned()));
            }
            // Checked: counts near 2^64 must not wrap around to a sum that matches.
            let sum = checked_sum(t.outcomes.values())
                .ok_or_else(|| ReportError::Overflow(t.target.as_ref().to_owned()))?;
            if sum != t.attempts {
                return Err(ReportError::Counts {
                    target: t.target.as_ref().to_owned(),
                    sum,
                    attempts: t.attempts,
                });
            }
            t.validate_dns(self.version)?;
            if t.min_version() > self.version {
                return Err(ReportError::OutcomeVersion {
                    target: t.target.as_ref().to_owned(),
                    version: self.version,
                });
            }
            let answers = checked_sum(t.answered_by.values())
                .ok_or_else(|| ReportError::Overflow(t.target.as_ref().to_owned()))?;
            if answers > t.attempts {
                return Err(ReportError::Answers {
                    target: t.target.as_ref().to_owned(),
                    answers,
                    attempts: t.attempts,
                });
            }
        }
        Ok(())
    }
}

impl<S: AsRef<str>> TargetReportOf<S> {
    /// The oldest report version that can carry this target: its kind and outcome codes.
    pub fn min_version(&self) -> u32 {
        let kind = if self.kind == TargetKind::Dns {
            DNS_WIRE_VERSION
        } else {
            MIN_WIRE_VERSION
        };
        self.outcomes
            .keys()
            .map(|o| o.min_wire_version())
            .fold(kind, u32::max)
    }

    /// DNS answers belong to DNS targets of version 2 reports, and their counts must add up.
    fn validate_dns(&self, version: u32) -> Result<(), ReportError> {
        let problem = |problem| ReportError::Dns {
            target: self.target.as_ref().to_owned(),
            problem,
        };
        let is_dns = self.kind == TargetKind::Dns;
        if is_dns && version < DNS_WIRE_VERSION {
            return Err(problem("a dns target needs report version 2"));
        }

        let Some(dns) = &self.dns else {
            return Ok(());
        };
        if !is_dns {
            return Err(problem("only a dns target carries DNS answers"));
        }
        if dns.regions.len() > MAX_DNS_REGIONS {
            return Err(problem("DNS answers name too many Regions"));
        }
        checked_sum(dns.regions.values().chain([&dns.unmatched]))
            .ok_or_else(|| ReportError::Overflow(self.target.as_ref().to_owned()))?;
        if let (Some(lo), Some(hi)) = (dns.ttl_min, dns.ttl_max) {
            if lo > hi {
                return Err(problem("ttl_min is above ttl_max"));
            }
        }
        Ok(())
    }

    /// Decodes every histogram.
    pub fn decode_histograms(&self) -> Result<BTreeMap<Phase, Histogram<u64>>, ReportError> {
        self.histograms
            .iter()
            .map(|(phase, text)| {
                decode_base64(text.as_ref())
                    .map(|h| (*phase, h))
                    .map_err(|source| ReportError::Histogram {
                        target: self.target.as_ref().to_owned(),
                        phase: *phase,
                        source,
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::{encode_base64, new_latency_histogram};

    fn report() -> IntervalReport {
        let mut h = new_latency_histogram(3).unwrap();
        h.record(1234).unwrap();
        IntervalReport {
            version: WIRE_VERSION,
            fleet: "orders-api".into(),
            agent_id: "vantage-eu-west-1".into(),
            vantage: "eu-west-1".into(),
            seq: 7,
            interval_start_ms: 1_700_000_000_000,
            interval_ms: 10_000,
            targets: vec![TargetReport {
                target: "status:us-east-1".into(),
                kind: TargetKind::Status,
                region: Some("us-east-1".into()),
                attempts: 3,
                missed_slots: 0,
                outcomes: [(Outcome::Ok, 2), (Outcome::Timeout, 1)].into(),
                answered_by: [("us-east-1".to_owned(), 2)].into(),
                cert_not_after: Some(1_800_000_000),
                histograms: [(Phase::Total, encode_base64(&h).unwrap())].into(),
                dns: None,
            }],
        }
    }

    fn dns_target() -> TargetReport {
        TargetReport {
            target: "dns".into(),
            kind: TargetKind::Dns,
            region: None,
            attempts: 2,
            missed_slots: 0,
            outcomes: [(Outcome::Ok, 2)].into(),
            answered_by: BTreeMap::new(),
            cert_not_after: None,
            histograms: BTreeMap::new(),
            dns: Some(DnsAnswers {
                regions: [("eu-west-1".to_owned(), 2)].into(),
                unmatched: 1,
                ttl_min: Some(1),
                ttl_max: Some(2),
            }),
        }
    }

    #[test]
    fn grpc_outcomes_need_version_3_and_only_they_raise_it() {
        let mut r = report();
        r.targets[0].outcomes = [(Outcome::Ok, 2), (Outcome::NotServing, 1)].into();
        assert_eq!(version_for(&r.targets), 3);
        r.version = 2;
        assert!(matches!(
            r.validate(),
            Err(ReportError::OutcomeVersion { version: 2, .. })
        ));
        r.version = version_for(&r.targets);
        r.validate().unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""not_serving":1"#), "{text}");
        r.targets[0].outcomes = [(Outcome::Ok, 2), (Outcome::GrpcStatus, 1)].into();
        assert_eq!(version_for(&r.targets), 3);
        r.targets[0].outcomes = [(Outcome::Ok, 2), (Outcome::Timeout, 1)].into();
        assert_eq!(version_for(&r.targets), 1);
        r.targets.push(dns_target());
        assert_eq!(version_for(&r.targets), 2);
    }

    #[test]
    fn version_1_is_written_without_dns_targets_and_read_by_this_aggregator() {
        let r = report();
        assert_eq!(version_for(&r.targets), 1);
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("\"dns\""), "{text}");
        // What an agent of the previous release sends: version 1, no dns key anywhere.
        let old = text.replace(&format!("\"version\":{}", r.version), "\"version\":1");
        let back: IntervalReport = serde_json::from_str(&old).unwrap();
        back.validate().unwrap();
    }

    #[test]
    fn dns_targets_need_version_2_and_sane_answers() {
        let mut r = report();
        r.targets.push(dns_target());
        assert_eq!(version_for(&r.targets), 2);
        r.version = version_for(&r.targets);
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(
                r#""dns":{"regions":{"eu-west-1":2},"unmatched":1,"ttl_min":1,"ttl_max":2}"#
            ),
            "{text}"
        );
        let back: IntervalReport = serde_json::from_str(&text).unwrap();
        back.validate().unwrap();
        assert_eq!(back, r);

        let mut v1 = r.clone();
        v1.version = 1;
        assert!(matches!(v1.validate(), Err(ReportError::Dns { .. })));
        let mut wrong_kind = r.clone();
        wrong_kind.targets[0].dns = dns_target().dns;
        assert!(matches!(
            wrong_kind.validate(),
            Err(ReportError::Dns { .. })
        ));
        let mut ttl = r.clone();
        ttl.targets[1].dns.as_mut().unwrap().ttl_min = Some(5);
        assert!(matches!(ttl.validate(), Err(ReportError::Dns { .. })));
        let mut overflow = r.clone();
        overflow.targets[1].dns.as_mut().unwrap().unmatched = u64::MAX;
        assert!(matches!(overflow.validate(), Err(ReportError::Overflow(_))));
        let mut future = r;
        future.version = WIRE_VERSION + 1;
        assert!(matches!(future.validate(), Err(ReportError::Version(v)) if v == WIRE_VERSION + 1));
    }

    /// An aggregator of version 2 knows the eleven outcome codes of then: a report of TCP and
    /// healthy gRPC targets (older codes only) parses there; one counting `not_serving` does
    /// not, and is refused whole with a 400 rather than half understood.
    #[test]
    fn a_version_2_reader_takes_reports_without_grpc_codes() {
        #[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
        #[serde(rename_all = "snake_case")]
        enum OutcomeV2 {
            Ok,
            Dns,
            Connect,
            Tls,
            Timeout,
            Reset,
            Protocol,
            HttpStatus,
            BodyMismatch,
            HeaderMismatch,
            RedirectLimit,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct TargetV2 {
            outcomes: BTreeMap<OutcomeV2, u64>,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct ReportV2 {
            version: u32,
            targets: Vec<TargetV2>,
        }
        let mut r = report();
        r.targets[0].outcomes = [
            (Outcome::Ok, 1),
            (Outcome::Reset, 1),
            (Outcome::BodyMismatch, 1),
        ]
        .into();
        r.version = version_for(&r.targets);
        let old = serde_json::from_str::<ReportV2>(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(old.version, 1);
        r.targets[0].outcomes = [(Outcome::Ok, 2), (Outcome::NotServing, 1)].into();
        r.version = version_for(&r.targets);
        let e = serde_json::from_str::<ReportV2>(&serde_json::to_string(&r).unwrap())
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("unknown variant `not_serving`"),
            "{e}"
        );
    }

    /// An aggregator of the previous release reads reports with version-1 types: a version 2
    /// report with a DNS target fails to parse there (unknown kind), so it is refused whole
    /// with a 400 rather than half understood.
    #[test]
    fn a_version_1_reader_refuses_dns_reports_cleanly() {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[allow(dead_code)]
        enum KindV1 {
            Global,
            Status,
            Deep,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct TargetV1 {
            kind: KindV1,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct ReportV1 {
            version: u32,
            targets: Vec<TargetV1>,
        }
        let mut r = report();
        serde_json::from_str::<ReportV1>(&serde_json::to_string(&r).unwrap()).unwrap();
        r.targets.push(dns_target());
        r.version = version_for(&r.targets);
        let e = serde_json::from_str::<ReportV1>(&serde_json::to_string(&r).unwrap())
            .err()
            .expect("refused");
        assert!(e.to_string().contains("unknown variant `dns`"), "{e}");
    }

    #[test]
    fn round_trips_as_json_with_readable_keys() {
        let r = report();
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(r#""outcomes":{"ok":2,"timeout":1}"#),
            "{text}"
        );
        // Plain V2 (base64 of cookie 0x1c849313 starts "HISTE"); V2-deflate would be "HISTF".
        assert!(text.contains(r#""histograms":{"total":"HISTE"#), "{text}");
        assert!(text.contains(r#""kind":"status""#), "{text}");
        let back: IntervalReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        back.validate().unwrap();
        let h = back.targets[0].decode_histograms().unwrap();
        assert_eq!(h[&Phase::Total].len(), 1);
    }

    #[test]
    fn nonsense_is_rejected() {
        let mut r = report();
        r.targets[0].attempts = 4;
        assert!(matches!(r.validate(), Err(ReportError::Counts { .. })));
        let mut r = report();
        r.targets[0].outcomes = [(Outcome::Ok, u64::MAX), (Outcome::Timeout, 1)].into();
        r.targets[0].attempts = 0;
        assert!(
            matches!(r.validate(), Err(ReportError::Overflow(_))),
            "wraps to 0"
        );
        let mut r = report();
        r.targets[0].answered_by.insert("eu-west-1".into(), 2);
        assert!(matches!(r.validate(), Err(ReportError::Answers { .. })));
        let mut r = report();
        r.interval_start_ms += 1;
        assert!(matches!(r.validate(), Err(ReportError::Interval)));
        let mut r = report();
        r.targets[0].histograms.insert(Phase::Dns, "garbage".into());
        assert!(r.targets[0].decode_histograms().is_err());
        let text = serde_json::to_string(&report())
            .unwrap()
            .replace("\"seq\"", "\"sequence\"");
        assert!(serde_json::from_str::<IntervalReport>(&text).is_err());
    }
}
