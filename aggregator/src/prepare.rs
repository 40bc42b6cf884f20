//! A report checked against the fleet and decoded whole before any lock is taken: every
//! target must be one the fleet file plans (with its kind and Region), every histogram must
//! have the fleet's shape (1 µs .. 60 s at the fleet's precision, so its inflated size is
//! bounded) and hold exactly the samples the report's counts promise. Only then does ingest
//! lock the window, for a merge that can no longer fail: a report that is expensive to decode
//! costs its own request time, never the `/v1/state` reader's or another agent's.

use crate::config::AggregatorConfig;
use crate::ingest::IngestError;
use crate::window::{Bucket, SparseLatency};
use std::cell::RefCell;
use vantage_protocol::config::TargetKind;
use vantage_protocol::histogram::HistogramError;
use vantage_protocol::report::{IntervalReportOf, ReportError};
use vantage_protocol::sparse::SparseDecoder;
use vantage_protocol::{Outcome, Phase};

thread_local! {
    /// One decoder per thread: it reuses its inflate state and buffers across histograms
    /// (about 40 KiB that a fresh one would allocate per call), and the pairs of the phases
    /// that are only counted, never kept.
    static DECODER: RefCell<(SparseDecoder, Vec<(u64, u64)>)> =
        RefCell::new((SparseDecoder::new(), Vec::new()));
}

/// A report ready to merge: checked, every histogram decoded; target ids as parsed (borrowed
/// from the body on the ingest path, copied only for a target the window has not seen).
#[derive(Debug)]
pub struct PreparedReport<S = String> {
    pub agent_id: String,
    pub seq: u64,
    pub vantage: String,
    pub interval_start_ms: u64,
    pub(crate) targets: Vec<PreparedTarget<S>>,
}

/// One target's part of a [`PreparedReport`].
#[derive(Debug)]
pub(crate) struct PreparedTarget<S = String> {
    pub(crate) id: S,
    pub(crate) kind: TargetKind,
    /// The unit key (service in Region) the target's observations count for.
    pub(crate) region: Option<String>,
    pub(crate) bucket: Bucket,
}

/// Validates `report` against `config` and decodes its histograms. Needs no lock; the caller
/// runs it off the async workers when the report is large.
pub fn prepare<S: AsRef<str>>(
    report: IntervalReportOf<S>,
    config: &AggregatorConfig,
) -> Result<PreparedReport<S>, IngestError> {
    report.validate()?;
    let mut targets = Vec::with_capacity(report.targets.len());
    for t in report.targets {
        let Some(info) = config.targets.get(t.target.as_ref()) else {
            return Err(IngestError::UnknownTarget(t.target.as_ref().to_owned()));
        };
        if info.kind != t.kind || info.region.as_deref() != t.region.as_ref().map(AsRef::as_ref) {
            return Err(IngestError::UnknownRegion {
                target: t.target.as_ref().to_owned(),
                region: t.region.map(|r| r.as_ref().to_owned()).unwrap_or_default(),
            });
        }
        let ok = t.outcomes.get(&Outcome::Ok).copied().unwrap_or(0);
        let mut total = SparseLatency::default();
        for (phase, text) in &t.histograms {
            // Only total latency is kept: the other phases are decoded into the reused
            // buffer, to be checked and counted.
            let (decoded, count) = DECODER.with_borrow_mut(|(d, scratch)| {
                let decoded = d.decode_shaped(text.as_ref(), config.histogram_shape, scratch);
                let count = scratch
                    .iter()
                    .try_fold(0u64, |sum, (_, n)| sum.checked_add(*n));
                if decoded.is_ok() && *phase == Phase::Total {
                    total = SparseLatency::from_sorted(scratch.as_slice().to_vec());
                }
                (decoded, count)
            });
            decoded.map_err(|e| ReportError::Histogram {
                target: t.target.as_ref().to_owned(),
                phase: *phase,
                source: HistogramError::Decode(e.to_string()),
            })?;
            // `total` is recorded for ok probes only; every other phase once per probe that
            // reached it, so at most once per attempt.
            let fits = match (phase, count) {
                (_, None) => false,
                (Phase::Total, Some(n)) => n == ok,
                (_, Some(n)) => n <= t.attempts,
            };
            if !fits {
                return Err(IngestError::HistogramCount {
                    target: t.target.as_ref().to_owned(),
                    phase: *phase,
                    count: count.map_or_else(|| "over 2^64".to_owned(), |n| n.to_string()),
                    expected: if *phase == Phase::Total {
                        format!("the {ok} ok probes")
                    } else {
                        format!("at most the {} attempts", t.attempts)
                    },
                });
            }
        }
        // A DNS target's answers take the place of the Region header's counts: the window
        // keeps both layers' "which Region" counts in `answered_by`, told apart by kind.
        let (answered_by, unmatched) = match t.dns {
            Some(dns) => {
                if let Some(region) = dns.regions.keys().find(|r| !config.regions.contains(r)) {
                    return Err(IngestError::UnknownRegion {
                        target: t.target.as_ref().to_owned(),
                        region: region.clone(),
                    });
                }
                (dns.regions, dns.unmatched)
            }
            None => (t.answered_by, 0),
        };
        targets.push(PreparedTarget {
            bucket: Bucket {
                attempts: t.attempts,
                failures: t.attempts - ok,
                missed_slots: t.missed_slots,
                total,
                answered_by,
                unmatched,
                failed: t
                    .outcomes
                    .into_iter()
                    .filter(|(o, n)| *o != Outcome::Ok && *n > 0)
                    .collect(),
            },
            id: t.target,
            kind: t.kind,
            // The window counts a Region's targets for their unit: one service in one Region.
            region: info.unit.clone(),
        });
    }
    Ok(PreparedReport {
        agent_id: report.agent_id.as_ref().to_owned(),
        seq: report.seq,
        vantage: report.vantage.as_ref().to_owned(),
        interval_start_ms: report.interval_start_ms,
        targets,
    })
}
