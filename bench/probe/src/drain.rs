//! The scale test's two ways to drain the recorders ([`DrainMode`]), the agent's drain as the
//! encoder mode runs it ([`seal`]), and the figures both report (start lags, drain CPU time).

use crate::scale::Totals;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use vantage_agent::encoder::{ReportSink, SealedInterval, SealedTarget};
use vantage_agent::push::OutgoingReport;
use vantage_agent::recorder::IntervalStats;
use vantage_agent::scheduler::{ProbeTarget, ScheduledTarget};
use vantage_protocol::config::TargetKind;
use vantage_protocol::Outcome;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How the scale test drains the recorders every interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrainMode {
    /// Before issue 16: take and encode every histogram in the drain, on the runtime.
    Inline,
    /// Now: take in the drain, encode on the blocking pool (the agent's `Encoder`).
    Encoder,
}

impl DrainMode {
    pub fn label(self) -> &'static str {
        match self {
            DrainMode::Inline => "inline encoding (before)",
            DrainMode::Encoder => "encoder on the blocking pool (now)",
        }
    }
}

/// Start lags of one group of probes, in milliseconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lag {
    pub probes: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Lag {
    pub(crate) fn of(h: &Histogram<u64>) -> Lag {
        if h.is_empty() {
            return Lag::default();
        }
        let ms = |v: u64| v as f64 / 1e3;
        Lag {
            probes: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// What the encoder's timed encode saw.
#[derive(Debug, Default)]
pub(crate) struct EncodeTotals {
    pub(crate) time: Duration,
    pub(crate) max: Duration,
    pub(crate) histograms: u64,
    pub(crate) bytes: u64,
}

/// A sink that drops the reports (delivery is not what is measured).
pub(crate) struct Discard;

impl ReportSink for Discard {
    async fn send(&self, _report: OutgoingReport) {}
}

/// The agent's drain (`daemon::collect`): take every interval up to `through` out of every
/// recorder and seal it for the encoder, one [`SealedInterval`] per interval. Timed as the
/// drain; the encoding is timed by the encoder.
pub(crate) fn seal<P: ProbeTarget>(
    targets: &[Arc<ScheduledTarget<P>>],
    ids: &[String],
    through: u64,
    interval: Duration,
    totals: &mut Totals,
) -> Vec<SealedInterval> {
    // The memory figure, outside the timed drain (the agent does not walk its recorders twice).
    let bytes: usize = targets.iter().map(|t| lock(&t.recorder).heap_bytes()).sum();
    totals.peak_recorder_bytes = totals.peak_recorder_bytes.max(bytes);
    let started = Instant::now();
    let cpu_started = thread_cpu();
    let mut by_interval: BTreeMap<u64, Vec<(usize, Box<IntervalStats>)>> = BTreeMap::new();
    for (i, t) in targets.iter().enumerate() {
        lock(&t.recorder).drain_through(through, |index, stats| {
            by_interval.entry(index).or_default().push((i, stats));
        });
    }
    let mut sealed = Vec::with_capacity(by_interval.len());
    for (index, stats) in by_interval {
        let mut sealed_targets = Vec::with_capacity(stats.len());
        for (i, stats) in stats {
            if stats.attempts == 0 && stats.missed_slots == 0 {
                continue;
            }
            totals.attempts += stats.attempts;
            totals.ok += stats.outcome_count(Outcome::Ok);
            totals.missed_slots += stats.missed_slots;
            totals.max_start_lag = totals.max_start_lag.max(stats.max_start_lag);
            sealed_targets.push(SealedTarget {
                id: ids[i].clone(),
                kind: TargetKind::Status,
                region: None,
                stats,
            });
        }
        sealed.push(SealedInterval {
            seq: index,
            start_ms: index * interval.as_millis() as u64,
            length: interval,
            targets: sealed_targets,
        });
    }
    let took = started.elapsed();
    totals.take_time += took;
    if took > totals.max_drain {
        totals.max_drain = took;
        totals.max_drain_cpu = thread_cpu().saturating_sub(cpu_started);
    }
    sealed
}

/// CPU time of the calling thread (`clock_gettime`, nanoseconds).
pub(crate) fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
