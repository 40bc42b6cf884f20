//! Ingest taken apart: verify, parse, validate, decode and merge timed one stage at a time over
//! every report, and the sparse decoder checked against `hdrhistogram` on the same histograms.

use crate::clock::measure;
use crate::fleet;
use crate::fmt::{thousands, verdict};
use crate::run::INGEST_GOAL;
use anyhow::bail;
use base64::Engine as _;
use hdrhistogram::serialization::{Serializer as _, V2Serializer};
use std::hint::black_box;
use std::time::Duration;
use vantage_aggregator::config::AggregatorConfig;
use vantage_aggregator::ingest::IngestError;
use vantage_aggregator::prepare::prepare;
use vantage_aggregator::window::{SparseLatency, Window};
use vantage_protocol::auth;
use vantage_protocol::histogram::decode_base64;
use vantage_protocol::report::{IntervalReportOf, IntervalReportRef, ReportError};
use vantage_protocol::sparse;
use vantage_protocol::Phase;

/// Ingest stages alone, each over every report, by this thread's CPU time.
pub(crate) struct Stages {
    pub(crate) verify: Duration,
    pub(crate) parse: Duration,
    pub(crate) validate: Duration,
    /// Every histogram through `hdrhistogram`, total latency on to sparse pairs: what decoding
    /// cost before protocol::sparse.
    pub(crate) decode: Duration,
    /// `prepare` alone (check against the fleet, the sparse decode, buckets built).
    pub(crate) prepare: Duration,
    /// `Window::merge` alone (series, buckets and tallies updated).
    pub(crate) merge: Duration,
    /// `decode` done by the sparse prototype instead.
    pub(crate) sparse: Duration,
    /// Histograms the prototype decoded to exactly what `hdrhistogram` gives.
    pub(crate) agreed: u64,
    /// The prototype on the same histograms re-encoded as uncompressed V2 (no inflate).
    pub(crate) sparse_v2: Duration,
    /// Mean base64 length of a histogram as sent (by size: plain V2 or V2-deflate) and as
    /// uncompressed V2.
    pub(crate) deflate_chars: f64,
    pub(crate) v2_chars: f64,
}

impl Stages {
    /// The stage split's rows (what, figures, goal) for ingest that took `ingest_cpu` over
    /// `target_intervals`.
    pub(crate) fn rows(
        &self,
        target_intervals: u64,
        ingest_cpu: Duration,
    ) -> Vec<(&'static str, String, String)> {
        let per_ti = |d: Duration| d.as_secs_f64() * 1e6 / target_intervals as f64;
        let stage_sum = self.verify + self.parse + self.validate + self.prepare + self.merge;
        let other = ingest_cpu.saturating_sub(stage_sum);
        // Stages measured alone can add up to a little more than ingest: shares are of their
        // sum.
        let whole = stage_sum + other;
        let pct = |d: Duration| 100.0 * d.as_secs_f64() / whole.as_secs_f64();
        // Ingest without its decoding: the other stages plus whatever ingest spent beyond them.
        let rest = stage_sum.saturating_sub(self.sparse) + other;
        let projected = target_intervals as f64 / (rest + self.sparse).as_secs_f64();
        let projected_v2 = target_intervals as f64 / (rest + self.sparse_v2).as_secs_f64();
        vec![
            (
                "  stage split (the ingest path)",
                format!(
                    "prepare {:.0}% (of which sparse decode {:.0}%), parse {:.0}%, merge {:.0}%, verify {:.0}%, validate {:.0}%, other {:.0}%",
                    pct(self.prepare),
                    pct(self.sparse),
                    pct(self.parse),
                    pct(self.merge),
                    pct(self.verify),
                    pct(self.validate),
                    pct(other)
                ),
                String::new(),
            ),
            (
                "  per target-interval (CPU)",
                format!(
                    "prepare {:.2} µs, parse {:.2} µs, merge {:.2} µs, verify {:.2} µs, validate {:.2} µs; all {:.2} µs",
                    per_ti(self.prepare),
                    per_ti(self.parse),
                    per_ti(self.merge),
                    per_ti(self.verify),
                    per_ti(self.validate),
                    per_ti(ingest_cpu)
                ),
                String::new(),
            ),
            (
                "  decode: protocol::sparse (ingest path)",
                format!(
                    "{:.2} µs vs {:.2} µs per target-interval; same pairs on all {} histograms",
                    per_ti(self.sparse),
                    per_ti(self.decode),
                    thousands(self.agreed as f64)
                ),
                String::new(),
            ),
            (
                "  projected from the stages",
                format!("{} target-intervals/s per core", thousands(projected)),
                verdict(projected >= INGEST_GOAL, "goal ≥ 50,000"),
            ),
            (
                "  … if every histogram were plain V2",
                format!(
                    "decode {:.2} µs, ingest {} /s per core; {:.0} vs {:.0} (as sent) base64 chars per histogram",
                    per_ti(self.sparse_v2),
                    thousands(projected_v2),
                    self.v2_chars,
                    self.deflate_chars
                ),
                String::new(),
            ),
        ]
    }
}

/// Times each stage of ingest alone over every report; returns the window they built.
pub(crate) fn stages(
    config: &AggregatorConfig,
    reports: &[fleet::Signed],
    threads: usize,
    now_ms: u64,
) -> anyhow::Result<(Stages, Window)> {
    let now_secs = now_ms / 1000;
    let (verified, verify) = measure(|| reports.iter().all(|r| verify_one(config, r, now_secs)));
    if !verified {
        bail!("a report failed verification");
    }
    let (parsed, parse) = measure(|| {
        reports
            .iter()
            .map(|r| serde_json::from_slice::<IntervalReportRef>(&r.body))
            .collect::<Result<Vec<_>, _>>()
    });
    let parsed = parsed?;
    let (valid, validate) = measure(|| parsed.iter().try_for_each(IntervalReportOf::validate));
    valid?;
    let (decoded, decode) = measure(|| {
        parsed.iter().flat_map(|r| &r.targets).try_for_each(|t| {
            let h = t.decode_histograms()?;
            black_box(h.get(&Phase::Total).map(SparseLatency::from_histogram));
            Ok::<_, ReportError>(())
        })
    });
    decoded?;
    let mut decoder = sparse::SparseDecoder::new();
    let mut pairs = Vec::new();
    let (decoded, sparse) = measure(|| {
        parsed.iter().flat_map(|r| &r.targets).try_for_each(|t| {
            for (phase, text) in &t.histograms {
                decoder.decode(text, &mut pairs)?;
                if *phase == Phase::Total {
                    // The window keeps total latency: one allocation, as from_histogram makes.
                    black_box(pairs.clone());
                }
            }
            Ok::<_, sparse::SparseError>(())
        })
    });
    decoded.map_err(|e| anyhow::anyhow!("sparse prototype refused a histogram: {e}"))?;
    let agreed = agree(&parsed, threads)?;
    // What if agents sent every histogram as plain V2, however large?
    let mut v2 = Vec::new();
    let mut deflate_chars = 0;
    for t in parsed.iter().flat_map(|r| &r.targets) {
        for text in t.histograms.values() {
            deflate_chars += text.len();
            let mut bytes = Vec::new();
            V2Serializer::new()
                .serialize(&decode_base64(text)?, &mut bytes)
                .map_err(|e| anyhow::anyhow!("V2 encoding: {e:?}"))?;
            v2.push(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
    }
    let (decoded, sparse_v2) = measure(|| {
        v2.iter().enumerate().try_for_each(|(i, text)| {
            decoder.decode(text, &mut pairs)?;
            if i % 5 == 4 {
                black_box(pairs.clone());
            }
            Ok::<_, sparse::SparseError>(())
        })
    });
    decoded.map_err(|e| anyhow::anyhow!("sparse prototype refused a V2 histogram: {e}"))?;
    let v2_chars = v2.iter().map(String::len).sum::<usize>() as f64 / v2.len().max(1) as f64;
    let deflate_chars = deflate_chars as f64 / v2.len().max(1) as f64;
    drop(v2);
    let mut window = Window::new();
    // `prepare` (check against the fleet, decode), then the merges, as ingest does them.
    let (prepared, prepare_time) = measure(|| {
        parsed
            .into_iter()
            .map(|r| prepare(r, config))
            .collect::<Result<Vec<_>, IngestError>>()
    });
    let prepared = prepared?;
    let ((), merge_time) = measure(|| {
        for p in prepared {
            window.merge(p);
        }
    });
    Ok((
        Stages {
            verify: verify.cpu,
            parse: parse.cpu,
            validate: validate.cpu,
            decode: decode.cpu,
            prepare: prepare_time.cpu,
            merge: merge_time.cpu,
            sparse: sparse.cpu,
            agreed,
            sparse_v2: sparse_v2.cpu,
            deflate_chars,
            v2_chars,
        },
        window,
    ))
}

/// Checks (untimed, on every core) that the prototype gives exactly `hdrhistogram`'s pairs for
/// every histogram; returns how many were compared.
pub(crate) fn agree(parsed: &[IntervalReportRef], threads: usize) -> anyhow::Result<u64> {
    let chunk = parsed.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = parsed
            .chunks(chunk)
            .map(|reports| {
                s.spawn(move || {
                    let mut decoder = sparse::SparseDecoder::new();
                    let mut pairs = Vec::new();
                    let mut n = 0;
                    for t in reports.iter().flat_map(|r| &r.targets) {
                        for (phase, text) in &t.histograms {
                            let h = decode_base64(text)?;
                            let want: Vec<(u64, u64)> = h
                                .iter_recorded()
                                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                                .collect();
                            decoder
                                .decode(text, &mut pairs)
                                .map_err(|e| anyhow::anyhow!("{}: {phase}: {e}", t.target))?;
                            if pairs != want {
                                bail!(
                                    "{} {phase}: prototype {pairs:?} != hdrhistogram {want:?}",
                                    t.target
                                );
                            }
                            n += 1;
                        }
                    }
                    Ok(n)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("no panics"))
            .sum()
    })
}

pub(crate) fn verify_one(config: &AggregatorConfig, r: &fleet::Signed, now_secs: u64) -> bool {
    let ts = r.timestamp.to_string();
    auth::verify(
        |n| match n {
            auth::HEADER_KEY_ID => Some(fleet::KEY_ID),
            auth::HEADER_TIMESTAMP => Some(ts.as_str()),
            auth::HEADER_SIGNATURE => Some(r.signature.as_str()),
            _ => None,
        },
        |id| config.keys.get(id).map(Vec::as_slice),
        &r.body,
        now_secs,
        auth::DEFAULT_MAX_SKEW_SECS,
    )
    .is_ok()
}
