//! `vantage agent`: probes every target of the fleet from one vantage Region, builds one
//! [`IntervalReport`](vantage_protocol::report::IntervalReport) per interval and hands it to
//! the delivery queues, which spool and deliver it to the aggregator, or with
//! [`AgentSettings::replicas`] to every aggregator replica, each through a queue of its own
//! (its own spool subdirectory, backoff and metrics label; see [`crate::push::Deliveries`]).
//!
//! Intervals are aligned to the wall clock ([`AlignedIntervals`]) so every vantage reports the
//! same intervals. An interval is collected shortly after it ends ([`SEAL_GRACE`]); a probe
//! still running then lands in a later report for the same interval, which the aggregator
//! merges, so nothing waits for a slow target and nothing is lost.
//!
//! Stopping: on the first shutdown signal the agent finishes the current interval, stops
//! probing, reports everything recorded and flushes; a second signal cuts the interval short.
//! With `run_for` (Lambda mode) it stops at the last interval boundary inside that time. Every
//! queue flushes at the same time within [`FLUSH_DEADLINE`] and keeps what it could not deliver
//! in its own spool.
//!
//! Reloading: [`run_with_reload`] also rereads the fleet file when asked (SIGHUP, or a changed
//! file with `--watch-config`) and applies it to the running targets by id ([`crate::reload`]).

use crate::encoder::{Encoder, SealedInterval, SealedTarget};
use crate::fleet::{build_vantage_targets, AgentTarget, TargetProber};
use crate::identity::parse_agent_id;
use crate::metrics::{self, DeliveryLabels};
use crate::push::{
    check_replicas, Deliveries, DeliveryQueue, PushConfig, PushSummary, QueueSummary, ReplicaTarget,
};
use crate::recorder::{IntervalClock, IntervalStats};
use crate::reload::{self as fleet_reload, FleetReload, ReloadError, Running, Targets};
use crate::report::{AlignedIntervals, ReportIdentity};
use crate::spool::{self, Spool, SpoolConfig, SpoolError};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
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
        source: crate::fleet::ProberSetupError,
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
    /// Where and how reports are sent. With `replicas`, everything but `aggregator` applies
    /// to every replica and `aggregator` is ignored.
    pub push: PushConfig,
    /// Empty: deliver to `push.aggregator` alone, spooling in `spool.dir`. Otherwise deliver
    /// every report to every replica listed, each through its own queue spooling in
    /// `<spool.dir>/<id>/` (`max_bytes` and `max_age` bound each replica's spool), with its
    /// own backoff and metrics label `replica`.
    pub replicas: Vec<ReplicaTarget>,
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
    /// The single aggregator's delivery; with replicas, the sum over them (a report delivered
    /// to three replicas counts three times): see `replicas` for each one.
    pub push: PushSummary,
    /// Each replica's delivery, in the order of [`AgentSettings::replicas`]; empty with one
    /// aggregator.
    pub replicas: Vec<QueueSummary>,
    /// The CloudWatch export (`[export.cloudwatch]`), in metric data.
    pub export: crate::export::ExportSummary,
}

/// A prober that also feeds the Prometheus metrics.
pub struct LabelledProber {
    pub(crate) prober: TargetProber,
    /// The target's Prometheus series.
    pub(crate) series: metrics::TargetSeries,
    /// Samples probes for X-Ray (`[export.xray]`).
    pub(crate) tracer: Option<std::sync::Arc<crate::export::xray::Tracer>>,
}

impl crate::scheduler::ProbeTarget for LabelledProber {
    async fn probe(&self) -> vantage_probe::ProbeResult {
        // HTTP probes only: a DNS query has no header to carry the trace.
        if let (Some(tracer), TargetProber::Http(p)) = (&self.tracer, &self.prober) {
            if let Some(ctx) = tracer.sample() {
                let mut headers = http::HeaderMap::new();
                headers.insert(
                    http::HeaderName::from_static(crate::export::xray::TRACE_HEADER),
                    ctx.header(),
                );
                let result = p.probe_with_headers(&headers).await;
                let spec = p.spec();
                tracer.record(
                    &ctx,
                    self.series.labels(),
                    spec.method.as_str(),
                    &spec.url.to_string(),
                    &result,
                );
                return result;
            }
        }
        self.prober.probe().await
    }

    fn observe(&self, result: &vantage_probe::ProbeResult, start_lag: Duration) {
        self.series.record_probe(result, start_lag);
    }

    fn observe_missed(&self, slots: u64) {
        self.series.record_missed(slots);
    }
}

/// Validates the settings against the fleet file before anything starts.
pub fn check(settings: &AgentSettings) -> Result<Vec<AgentTarget>, AgentError> {
    if settings.fleet.vantage(&settings.vantage).is_none() {
        return Err(AgentError::UnknownVantage(settings.vantage.clone()));
    }
    parse_agent_id(&settings.agent_id)?;
    if settings.replicas.is_empty() {
        settings.push.check()?;
    } else {
        check_replicas(&settings.push, &settings.replicas)?;
    }
    Ok(build_vantage_targets(&settings.fleet, &settings.vantage)?)
}

/// Runs the agent until a stop is requested or `run_for` elapses, then reports and flushes.
/// `signals` counts stop requests (SIGTERM, Ctrl-C): at 1 the agent finishes the current
/// interval, at 2 it stops at once.
pub async fn run(
    settings: AgentSettings,
    signals: watch::Receiver<u32>,
) -> Result<AgentSummary, AgentError> {
    run_with_reload(settings, signals, None).await
}

/// [`run`], rereading the fleet file whenever `reload`'s trigger asks (see [`crate::reload`]).
pub async fn run_with_reload(
    settings: AgentSettings,
    mut signals: watch::Receiver<u32>,
    mut reload: Option<FleetReload>,
) -> Result<AgentSummary, AgentError> {
    let targets = check(&settings)?;
    let precision = settings.fleet.histogram_precision();
    let histograms =
        metrics::HistogramPhases::of(&settings.fleet.metrics_settings().phase_histograms);
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

    let (queues, spools_unavailable) =
        delivery_queues(&settings.push, &settings.replicas, settings.spool)?;
    if let Some(listener) = settings.metrics_listener {
        let handle = metrics::install(&settings.vantage)?;
        fleet_reload::register_metrics();
        tokio::spawn(async move {
            let never = std::future::pending::<()>();
            if let Err(e) = vantage_runtime::metrics_http::serve(listener, handle, never).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }

    // Counted only now that the recorder is installed.
    for labels in spools_unavailable {
        labels.spool_write_errors().increment(1);
    }
    // Sequence numbers must grow across restarts, even on a fresh disk (Lambda's /tmp): start
    // from the wall clock in milliseconds, which outruns one report per interval. All
    // replicas get the same numbers, so continue after the largest any spool has seen.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let mut seq = queues
        .iter()
        .filter_map(|q| q.spool.as_ref().and_then(Spool::max_seq))
        .max()
        .map_or(now_ms, |m| (m + 1).max(now_ms));

    let mut exporters = crate::export::Exporters::start(&settings.fleet, &settings.vantage).await;
    let start = Instant::now();
    let mut targets = Targets::start(
        targets,
        start,
        clock,
        precision,
        histograms,
        exporters.tracer(),
    )
    .map_err(|e| match e {
        ReloadError::Probe { target, source, .. } => AgentError::Probe { target, source },
        other => unreachable!("starting compiles probers only: {other}"),
    })?;

    let aggregators = describe_destinations(&settings.push, &settings.replicas);
    let encoder = Encoder::start(identity.clone(), Deliveries::start(queues, FLUSH_DEADLINE));
    tracing::info!(
        vantage = %identity.vantage,
        agent = %identity.agent_id,
        services = settings.fleet.services().len(),
        targets = targets.probing(),
        interval = ?aligned.length,
        %aggregators,
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
                targets.before_collect();
                collect(targets.running(), next, &aligned, &mut seq, (&encoder, &mut exporters), &mut summary).await;
                targets.forget_reported(next);
                next += 1;
            }
            changed = signals.changed(), if signals_open => {
                // A dropped sender means nobody can ask us to stop: run on.
                signals_open = changed.is_ok();
            }
            why = next_reload(&mut reload) => {
                let path = &reload.as_ref().expect("a reload was asked for").path;
                let result = targets.reload(path, &settings.fleet, &settings.vantage);
                fleet_reload::log_result(&result, why.as_str());
            }
        }
    }

    targets.stop().await;
    targets.before_collect();
    collect(
        targets.running(),
        u64::MAX,
        &aligned,
        &mut seq,
        (&encoder, &mut exporters),
        &mut summary,
    )
    .await;
    // Every sealed interval is encoded and queued before the queues flush.
    let (deliveries, reports) = encoder.finish().await;
    summary.reports = reports;
    let (queues, export) = tokio::join!(deliveries.finish(), exporters.finish(FLUSH_DEADLINE));
    summary.export = export;
    summary.push = queues
        .iter()
        .fold(PushSummary::default(), |sum, q| add(sum, &q.push));
    if !settings.replicas.is_empty() {
        summary.replicas = queues;
    }
    tracing::info!(?summary, "agent stopped");
    Ok(summary)
}

/// The next reload request; never without a fleet file to reread.
async fn next_reload(reload: &mut Option<FleetReload>) -> vantage_runtime::reload::ReloadCause {
    match reload {
        Some(r) => r.trigger.next().await,
        None => std::future::pending().await,
    }
}

/// Takes every interval up to `through` from every target (the drain: one short lock per
/// target) and hands one sealed interval per reporting interval to the encoder, which builds
/// and serialises the reports on the blocking pool ([`crate::encoder`]).
async fn collect(
    running: &[Running],
    through: u64,
    aligned: &AlignedIntervals,
    seq: &mut u64,
    (encoder, exporters): (&Encoder<Deliveries>, &mut crate::export::Exporters),
    summary: &mut AgentSummary,
) {
    let drain_started = Instant::now();
    let mut by_interval: BTreeMap<u64, Vec<(usize, Box<IntervalStats>)>> = BTreeMap::new();
    for (i, r) in running.iter().enumerate() {
        r.scheduled
            .recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain_through(through, |index, stats| {
                by_interval.entry(index).or_default().push((i, stats));
            });
    }
    let drained = drain_started.elapsed();
    for (index, stats) in by_interval {
        if !exporters.is_empty() {
            let exported: Vec<_> = stats
                .iter()
                .filter(|(_, s)| s.attempts > 0)
                .map(|(i, s)| {
                    let plan = &running[*i].target.plan;
                    let meta = crate::export::datum::TargetMeta {
                        service: &plan.service,
                        id: &plan.id,
                        region: plan.region.as_deref(),
                    };
                    (meta, &**s)
                })
                .collect();
            exporters.interval(aligned.start_ms(index), &exported);
        }
        let targets: Vec<SealedTarget> = stats
            .into_iter()
            .filter(|(_, s)| s.attempts > 0 || s.missed_slots > 0)
            .map(|(i, stats)| {
                let plan = &running[i].target.plan;
                SealedTarget {
                    id: plan.id.clone(),
                    kind: plan.kind,
                    region: plan.region.clone(),
                    stats,
                }
            })
            .collect();
        if targets.is_empty() {
            continue;
        }
        for t in &targets {
            summary.probes += t.stats.attempts;
            summary.missed_slots += t.stats.missed_slots;
        }
        let sealed = SealedInterval {
            seq: *seq,
            start_ms: aligned.start_ms(index),
            length: aligned.length,
            targets,
        };
        *seq += 1;
        encoder.submit(sealed).await;
    }
    tracing::debug!(through, ?drained, took = ?drain_started.elapsed(), "intervals sealed");
}

/// One delivery queue per replica (or one for the single aggregator), each with its spool
/// opened, and the labels of the queues whose spool could not be opened. A spool that cannot be
/// opened must not stop probing: that queue's reports then wait in memory. One that someone
/// else could write into is refused: whatever is in it gets signed and sent.
fn delivery_queues(
    push: &PushConfig,
    replicas: &[ReplicaTarget],
    spool: Option<SpoolConfig>,
) -> Result<(Vec<DeliveryQueue>, Vec<DeliveryLabels>), AgentError> {
    let open = |config: Option<SpoolConfig>,
                unavailable: &mut Vec<DeliveryLabels>,
                labels: &DeliveryLabels| {
        match config.map(Spool::open) {
            None => Ok(None),
            Some(Ok(s)) => Ok(Some(s)),
            Some(Err(e @ SpoolError::Unsafe { .. })) => Err(AgentError::Spool(e)),
            Some(Err(e)) => {
                tracing::error!(replica = labels.replica_id(), error = %e, "report spool unavailable; undelivered reports stay in memory");
                unavailable.push(labels.clone());
                Ok(None)
            }
        }
    };
    let mut unavailable = Vec::new();
    if replicas.is_empty() {
        let labels = DeliveryLabels::default();
        let spool = open(spool, &mut unavailable, &labels)?;
        let queue = DeliveryQueue {
            config: push.clone(),
            spool,
            labels,
        };
        return Ok((vec![queue], unavailable));
    }
    if let Some(parent) = &spool {
        match spool::open_parent(&parent.dir) {
            Err(e @ SpoolError::Unsafe { .. }) => return Err(AgentError::Spool(e)),
            Err(e) => tracing::error!(error = %e, "report spool directory unavailable"),
            Ok(()) => {}
        }
    }
    let mut queues = Vec::with_capacity(replicas.len());
    for r in replicas {
        let labels = DeliveryLabels::replica(&r.id);
        let config = spool.as_ref().map(|s| s.for_replica(&r.id));
        queues.push(DeliveryQueue {
            config: r.push_config(push),
            spool: open(config, &mut unavailable, &labels)?,
            labels,
        });
    }
    // Only when every replica has its spool: adopted reports leave the top directory.
    if let Some(parent) = spool
        .as_ref()
        .filter(|_| queues.iter().all(|q| q.spool.is_some()))
    {
        let mut spools: Vec<&mut Spool> =
            queues.iter_mut().filter_map(|q| q.spool.as_mut()).collect();
        match spool::adopt_legacy(&parent.dir, &mut spools) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(reports = n, dir = %parent.dir.display(), "undelivered reports of a single-aggregator run now wait for every replica")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand reports of a single-aggregator run to the replicas' spools")
            }
        }
    }
    Ok((queues, unavailable))
}

/// Where reports go, for the start-up log: the aggregator's URL, or `id=url` of every replica.
fn describe_destinations(push: &PushConfig, replicas: &[ReplicaTarget]) -> String {
    if replicas.is_empty() {
        return push.aggregator.to_string();
    }
    replicas
        .iter()
        .map(|r| format!("{}={}", r.id, r.aggregator))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The field-by-field sum of two delivery summaries.
fn add(a: PushSummary, b: &PushSummary) -> PushSummary {
    PushSummary {
        delivered: a.delivered + b.delivered,
        duplicates: a.duplicates + b.duplicates,
        rejected: a.rejected + b.rejected,
        dropped_spool_full: a.dropped_spool_full + b.dropped_spool_full,
        expired: a.expired + b.expired,
        retries: a.retries + b.retries,
        left_in_spool: a.left_in_spool + b.left_in_spool,
    }
}
