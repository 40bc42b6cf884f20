//! The agent → aggregator wire format: one [`IntervalReport`] per agent per interval, JSON,
//! `POST /v1/reports`. Histograms are HdrHistogram V2-deflate, base64, values in microseconds.
//!
//! Intervals are aligned to the Unix epoch (`interval_start_ms` is a multiple of
//! `interval_ms`), so reports from every vantage about the same interval line up. An interval
//! may arrive in more than one report when samples come late; the aggregator merges them.
//! `seq` increases by one per report of an agent and lets the aggregator drop duplicates.

use crate::config::TargetKind;
use crate::histogram::{decode_base64, HistogramError};
use crate::{Outcome, Phase};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the report format; bumped on incompatible change.
pub const WIRE_VERSION: u32 = 1;
/// Path the aggregator serves reports on.
pub const REPORTS_PATH: &str = "/v1/reports";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalReport {
    pub version: u32,
    pub fleet: String,
    pub agent_id: String,
    /// Region the agent runs in.
    pub vantage: String,
    /// Per-agent sequence number, from 1, one more for every report.
    pub seq: u64,
    pub interval_start_ms: u64,
    pub interval_ms: u64,
    pub targets: Vec<TargetReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetReport {
    /// `global`, `status:<region>` or `deep:<region>`.
    pub target: String,
    pub kind: TargetKind,
    /// The Region the target belongs to (none for the global endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
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
    pub histograms: BTreeMap<Phase, String>,
}

/// A report that parsed but does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report version {0} is not supported (expected {WIRE_VERSION})")]
    Version(u32),
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

impl IntervalReport {
    /// Structural checks, without decoding histograms.
    pub fn validate(&self) -> Result<(), ReportError> {
        if self.version != WIRE_VERSION {
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
            if !seen.insert(&t.target) {
                return Err(ReportError::DuplicateTarget(t.target.clone()));
            }
            // Checked: counts near 2^64 must not wrap around to a sum that matches.
            let sum = checked_sum(t.outcomes.values())
                .ok_or_else(|| ReportError::Overflow(t.target.clone()))?;
            if sum != t.attempts {
                return Err(ReportError::Counts {
                    target: t.target.clone(),
                    sum,
                    attempts: t.attempts,
                });
            }
            let answers = checked_sum(t.answered_by.values())
                .ok_or_else(|| ReportError::Overflow(t.target.clone()))?;
            if answers > t.attempts {
                return Err(ReportError::Answers {
                    target: t.target.clone(),
                    answers,
                    attempts: t.attempts,
                });
            }
        }
        Ok(())
    }
}

impl TargetReport {
    /// Decodes every histogram.
    pub fn decode_histograms(&self) -> Result<BTreeMap<Phase, Histogram<u64>>, ReportError> {
        self.histograms
            .iter()
            .map(|(phase, text)| {
                decode_base64(text)
                    .map(|h| (*phase, h))
                    .map_err(|source| ReportError::Histogram {
                        target: self.target.clone(),
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
            }],
        }
    }

    #[test]
    fn round_trips_as_json_with_readable_keys() {
        let r = report();
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(r#""outcomes":{"ok":2,"timeout":1}"#),
            "{text}"
        );
        assert!(text.contains(r#""histograms":{"total":"HISTF"#), "{text}");
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
