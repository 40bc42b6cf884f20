//! `vantage agent`: probes every target of the fleet from one vantage Region, builds one
//! [`IntervalReport`](vantage_protocol::report::IntervalReport) per interval and hands it to
//! the pusher, which spools and delivers it to the aggregator.
//!
//! Intervals are aligned to the wall clock ([`AlignedIntervals`]) so every vantage reports the
//! same intervals. An interval is collected shortly after it ends ([`SEAL_GRACE`]); a probe
//! still running then lands in a later report for the same interval, which the aggregator
//! merges, so nothing waits for a slow target and nothing is lost.
//!
//! Stopping: on the first shutdown signal the agent finishes the current interval, stops
//! probing, reports everything recorded and flushes; a second signal cuts the interval short.
//! With `run_for` (Lambda mode) it stops at the last interval boundary inside that time.

use crate::fleet::{build_targets, AgentTarget};
use crate::identity::parse_agent_id;
use crate::metrics::{self, TargetLabels};
use crate::push::{run_pusher, OutgoingReport, PushConfig, PushSummary};
use crate::recorder::{IntervalClock, IntervalStats, TargetRecorder};
use crate::report::{self, AlignedIntervals, ReportIdentity, TargetInterval};
use crate::scheduler::{run_target, spread_offsets, ScheduledTarget, SlotGrid};
use crate::spool::{Spool, SpoolConfig, SpoolError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use vantage_probe::tls::TlsConfigCache;
use vantage_probe::Prober;
use vantage_protocol::config::{ConfigError, FleetConfig};

/// How long after an interval ends it is collected: long enough for probes that started at
/// the very end of it to answer in the common case.
pub const SEAL_GRACE: Duration = Duration::from_millis(500);
/// Time allowed to deliver what is queued when the agent stops.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Errors that keep the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("vantage {0:?} is not in the fleet file's [[vantages]]")]
    UnknownVantage(String),
    #[error(transparent)]
    AgentId(#[from] crate::identity::AgentIdError),
    #[error("target {target}: {source}")]
    Probe {
        target: String,
        #[source]
        source: vantage_probe::spec::SpecError,
    },
    #[error("report spool: {0}")]
    Spool(#[source] SpoolError),
    #[error("report delivery: {0}")]
    Push(#[from] crate::push::PushError),
    #[error("metrics: {0}")]
    Metrics(#[from] metrics::MetricsError),
}

/// Everything the agent needs to run.
pub struct AgentSettings {
    pub fleet: FleetConfig,
    /// The Region this agent probes from.
    pub vantage: String,
    pub agent_id: String,
    pub push: PushConfig,
    /// None: keep undelivered reports in memory only.
    pub spool: Option<SpoolConfig>,
    /// Serve Prometheus metrics here.
    pub metrics_listener: Option<TcpListener>,
    /// Stop after this long (Lambda mode); None runs until shutdown.
    pub run_for: Option<Duration>,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AgentSummary {
    pub probes: u64,
    pub missed_slots: u64,
    pub reports: u64,
    pub push: PushSummary,
}

struct Running {
    target: AgentTarget,
    scheduled: Arc<ScheduledTarget<LabelledProber>>,
}

/// A prober that also feeds the Prometheus metrics.
pub struct LabelledProber {
    prober: Prober,
    labels: TargetLabels,
}

impl crate::scheduler::ProbeTarget for LabelledProber {
    async fn probe(&self) -> vantage_probe::ProbeResult {
        self.prober.probe().await
    }

    fn observe(&self, result: &vantage_probe::ProbeResult, start_lag: Duration) {
        metrics::record_probe(&self.labels, result, start_lag);
    }

    fn observe_missed(&self, slots: u64) {
        metrics::record_missed(&self.labels, slots);
    }
}

/// Validates the settings against the fleet file before anything starts.
pub fn check(settings: &AgentSettings) -> Result<Vec<AgentTarget>, AgentError> {
    if settings.fleet.vantage(&settings.vantage).is_none() {
        return Err(AgentError::UnknownVantage(settings.vantage.clone()));
    }
    parse_agent_id(&settings.agent_id)?;
    settings.push.check()?;
    Ok(build_targets(&settings.fleet)?)
}

/// Runs the agent until a stop is requested or `run_for` elapses, then reports and flushes.
/// `signals` counts stop requests (SIGTERM, Ctrl-C): at 1 the agent finishes the current
/// interval, at 2 it stops at once.
pub async fn run(
    settings: AgentSettings,
    mut signals: watch::Receiver<u32>,
) -> Result<AgentSummary, AgentError> {
    let targets = check(&settings)?;
    let precision = settings.fleet.histogram_precision();
    let identity = ReportIdentity {
        fleet: settings.fleet.fleet.name.get_ref().clone(),
        agent_id: settings.agent_id.clone(),
        vantage: settings.vantage.clone(),
    };
    let aligned = AlignedIntervals::align(
        Instant::now(),
        SystemTime::now(),
        settings.fleet.report_interval(),
    );
    let clock = IntervalClock::new(aligned.origin, aligned.length);

    // A spool that cannot be opened must not stop probing: reports then wait in memory. One
    // that someone else could write into is refused: whatever is in it gets signed and sent.
    let (spool, spool_unavailable) = match settings.spool.map(Spool::open) {
        None => (None, false),
        Some(Ok(s)) => (Some(s), false),
        Some(Err(e @ SpoolError::Unsafe { .. })) => return Err(AgentError::Spool(e)),
        Some(Err(e)) => {
            tracing::error!(error = %e, "report spool unavailable; undelivered reports stay in memory");
            (None, true)
        }
    };
    if let Some(listener) = settings.metrics_listener {
        let handle = metrics::install(&settings.vantage)?;
        tokio::spawn(async move {
            let never = std::future::pending::<()>();
            if let Err(e) = vantage_runtime::metrics_http::serve(listener, handle, never).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }

    if spool_unavailable {
        ::metrics::counter!(metrics::SPOOL_WRITE_ERRORS_TOTAL).increment(1);
    }
    // Sequence numbers must grow across restarts, even on a fresh disk (Lambda's /tmp): start
    // from the wall clock in milliseconds, which outruns one report per interval.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let mut seq = spool
        .as_ref()
        .and_then(Spool::max_seq)
        .map_or(now_ms, |m| (m + 1).max(now_ms));

    let tls = Arc::new(TlsConfigCache::new());
    let start = Instant::now();
    let intervals: Vec<Duration> = targets.iter().map(|t| t.interval).collect();
    let offsets = spread_offsets(&intervals, &mut rand::rng());
    let mut running = Vec::with_capacity(targets.len());
    for (target, offset) in targets.into_iter().zip(offsets) {
        let prober =
            Prober::new(target.spec.clone(), tls.clone()).map_err(|source| AgentError::Probe {
                target: target.plan.id.clone(),
                source,
            })?;
        let labels = TargetLabels {
            target: target.plan.id.clone(),
            region: target.region_label().to_owned(),
        };
        metrics::register_target(&labels);
        let scheduled = Arc::new(ScheduledTarget {
            probe: LabelledProber { prober, labels },
            grid: SlotGrid::new(start, offset, target.interval),
            recorder: Arc::new(Mutex::new(TargetRecorder::new(precision))),
        });
        running.push(Running { target, scheduled });
    }

    let (stop_probes, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = running
        .iter()
        .map(|r| {
            tokio::spawn(run_target(
                r.scheduled.clone(),
                clock,
                None,
                stop_rx.clone(),
            ))
        })
        .collect();

    let (report_tx, report_rx) = mpsc::channel::<OutgoingReport>(256);
    let (stop_pusher, pusher_stop_rx) = watch::channel(false);
    let pusher = tokio::spawn(run_pusher(
        settings.push,
        spool,
        report_rx,
        pusher_stop_rx,
        FLUSH_DEADLINE,
    ));
    tracing::info!(
        vantage = %identity.vantage,
        agent = %identity.agent_id,
        targets = running.len(),
        interval = ?aligned.length,
        "agent started"
    );

    // The last interval to report before stopping, once known.
    // The last interval to probe in, once known: with run_for, the last one that ends inside
    // it, or the current one cut short when none does.
    let mut last_interval: Option<u64> = settings.run_for.map(|d| {
        let end = clock.index_of(start + d);
        if end > clock.index_of(start) && clock.start_of(end) <= start + d {
            end - 1
        } else {
            end
        }
    });
    let run_until = settings.run_for.map(|d| start + d);
    let mut summary = AgentSummary::default();
    let mut next = clock.index_of(Instant::now());
    let mut signals_open = true;
    loop {
        let requested = *signals.borrow_and_update();
        if requested >= 2 {
            tracing::warn!("second stop request: stopping now");
            break;
        }
        let current = clock.index_of(Instant::now());
        if requested == 1 && last_interval.is_none_or(|l| l > current) {
            tracing::info!("stop requested: finishing interval {current}");
            last_interval = Some(current);
        }
        let boundary = clock.start_of(next + 1);
        let is_last = last_interval == Some(next);
        // The last interval ends probing at its boundary (or at the run_for deadline, if
        // sooner); others are collected a little after it, when late answers are in.
        let wake = if is_last {
            run_until.map_or(boundary, |u| u.min(boundary))
        } else {
            boundary + SEAL_GRACE.min(aligned.length / 4)
        };
        tokio::select! {
            _ = sleep_until(wake) => {
                if is_last {
                    break;
                }
                collect(&running, next, &identity, &aligned, &mut seq, &report_tx, &mut summary).await;
                next += 1;
            }
            changed = signals.changed(), if signals_open => {
                // A dropped sender means nobody can ask us to stop: run on.
                signals_open = changed.is_ok();
            }
        }
    }

    let _ = stop_probes.send(true);
    for t in tasks {
        let _ = t.await;
    }
    collect(
        &running,
        u64::MAX,
        &identity,
        &aligned,
        &mut seq,
        &report_tx,
        &mut summary,
    )
    .await;
    drop(report_tx);
    let _ = stop_pusher.send(true);
    summary.push = pusher.await.unwrap_or_default();
    tracing::info!(?summary, "agent stopped");
    Ok(summary)
}

/// Takes every interval up to `through` from every target and sends one report per interval.
async fn collect(
    running: &[Running],
    through: u64,
    identity: &ReportIdentity,
    aligned: &AlignedIntervals,
    seq: &mut u64,
    reports: &mpsc::Sender<OutgoingReport>,
    summary: &mut AgentSummary,
) {
    let mut by_interval: BTreeMap<u64, Vec<(usize, IntervalStats)>> = BTreeMap::new();
    for (i, r) in running.iter().enumerate() {
        let taken = r
            .scheduled
            .recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_through(through);
        for (index, stats) in taken {
            by_interval.entry(index).or_default().push((i, stats));
        }
    }
    for (index, stats) in by_interval {
        let targets: Vec<TargetInterval<'_>> = stats
            .iter()
            .map(|(i, s)| {
                let t = &running[*i].target;
                TargetInterval {
                    id: &t.plan.id,
                    kind: t.plan.kind,
                    region: t.plan.region.as_deref(),
                    stats: s,
                }
            })
            .collect();
        let report = report::build(
            identity,
            *seq,
            aligned.start_ms(index),
            aligned.length,
            &targets,
        );
        if report.targets.is_empty() {
            continue;
        }
        for (_, s) in &stats {
            summary.probes += s.attempts;
            summary.missed_slots += s.missed_slots;
        }
        let body = match serde_json::to_vec(&report) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise report");
                continue;
            }
        };
        ::metrics::counter!(metrics::REPORTS_BUILT_TOTAL).increment(1);
        summary.reports += 1;
        let outgoing = OutgoingReport {
            seq: *seq,
            body: body.into(),
        };
        *seq += 1;
        if reports.send(outgoing).await.is_err() {
            tracing::error!("report pusher has stopped; report {} not queued", *seq - 1);
        }
    }
}
