//! The agent's targets while it runs, and how a reloaded fleet file changes them without a
//! restart (SIGHUP, or `--watch-config` seeing the file change).
//!
//! A reload is all or nothing: the new file is read and checked exactly as at start
//! (`FleetConfig::load`, this vantage still listed, every target compiled and its prober
//! built) before anything changes, so a bad file leaves every target probing as before and one
//! error line names the file, the line and the key. A good file is applied by target id:
//! - unchanged targets keep their task, slot grid and recorder (the interval in progress
//!   loses and gains no sample);
//! - changed targets (same id, other settings) stop and start again on a new grid with the new
//!   settings, after the old probe in flight has finished (still at most one per target), and
//!   keep their recorder, so the interval's samples stay;
//! - new targets start on a grid of their own from the reload on (no slot counts as missed);
//! - removed targets stop probing, are reported for the interval in progress (their last) and
//!   are forgotten once a report has taken it and their last probe has finished.
//!
//! With `[[services]]` every id carries its service (`payments/status:eu-west-1`), so a service
//! added to the file is only its targets added and a removed one its targets removed: the other
//! services' targets are matched by id and kept as they are.
//!
//! What the process built once at start cannot follow a reload: the interval clock
//! (`fleet.report_interval`), the recorders' precision (`fleet.histogram_precision`), the
//! identity in reports (`fleet.name`, the vantage's `agent_id`), the delivery queues
//! (`aggregator.url`, `aggregator.replicas`, `agents.spool`) and the signing key
//! (`agents.auth`, the vantage's `key_id`), and which phases are histograms (`[metrics]`: a
//! phase switched kind would leave its old series behind). A change to one of those is logged ("restart the
//! agent to apply it") and the value in use kept; the rest of the file still applies.

use crate::daemon::LabelledProber;
use crate::fleet::{build_vantage_targets, AgentTarget, TargetProber};
use crate::metrics;
use crate::recorder::{IntervalClock, TargetRecorder};
use crate::scheduler::{run_target, spread_offsets, ScheduledTarget, SlotGrid};
use rand::Rng as _;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vantage_probe::tls::TlsConfigCache;
use vantage_protocol::config::{ConfigError, FleetConfig};
use vantage_runtime::reload::ReloadTrigger;

/// Reloads counted by result (`ok`, `error`).
pub const CONFIG_RELOADS_TOTAL: &str = "vantage_agent_config_reloads_total";

/// Keys read once at start; a reload that changes one keeps the value in use.
pub const RESTART_KEYS: &[&str] = &[
    "fleet.name",
    "fleet.report_interval",
    "fleet.histogram_precision",
    "aggregator.url",
    "aggregator.replicas",
    "agents.auth",
    "agents.spool",
    // Changing which phases are histograms would leave the old kind's series behind.
    "metrics",
    // The exporters (clients, sample rate) are built once, at start.
    "export",
];

/// Where a running agent rereads its fleet file, and what asks it to.
pub struct FleetReload {
    pub path: PathBuf,
    pub trigger: ReloadTrigger,
}

/// A reloaded file that cannot be used; the configuration in use stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{origin}: vantages: {vantage:?} is no longer in [[vantages]]; add it back (or stop this agent)")]
    VantageRemoved { origin: String, vantage: String },
    #[error("{origin}: target {target}: {source}")]
    Probe {
        origin: String,
        target: String,
        #[source]
        source: crate::fleet::ProberSetupError,
    },
}

/// What an applied reload changed, by target id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Keys that changed but need a restart (their old value stays in use).
    pub restart_needed: Vec<String>,
}

/// One target being probed (or, once removed, waiting for its last interval to be reported).
pub(crate) struct Running {
    pub(crate) target: AgentTarget,
    pub(crate) scheduled: Arc<ScheduledTarget<LabelledProber>>,
    /// What the target's settings were compiled from, to tell a changed target from the same.
    fingerprint: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Removed by a reload during this interval: reported until that interval is taken.
    retired_in: Option<u64>,
    /// Its task had finished when the last collection began, so that collection took every
    /// sample it will ever have up to `retired_in`.
    finished_before_collect: bool,
}

/// Every target of the agent, with what it takes to start more.
pub(crate) struct Targets {
    running: Vec<Running>,
    clock: IntervalClock,
    precision: u8,
    /// `metrics.phase_histograms`, fixed for the process (a restart-only key).
    histograms: metrics::HistogramPhases,
    tls: Arc<TlsConfigCache>,
    /// X-Ray sampling for every target, when exported.
    tracer: Option<Arc<crate::export::xray::Tracer>>,
}

fn fingerprint(t: &AgentTarget) -> String {
    format!("{:?}|{:?}", t.probe, t.interval)
}

impl Targets {
    /// Starts every target on a grid from `start`, offsets spread across each interval.
    pub(crate) fn start(
        targets: Vec<AgentTarget>,
        start: Instant,
        clock: IntervalClock,
        precision: u8,
        histograms: metrics::HistogramPhases,
        tracer: Option<Arc<crate::export::xray::Tracer>>,
    ) -> Result<Self, ReloadError> {
        let mut set = Targets {
            running: Vec::with_capacity(targets.len()),
            clock,
            precision,
            histograms,
            tls: Arc::new(TlsConfigCache::new()),
            tracer,
        };
        let intervals: Vec<_> = targets.iter().map(|t| t.interval).collect();
        let offsets = spread_offsets(&intervals, &mut rand::rng());
        let probers = set.probers(&targets, "")?;
        for ((target, offset), prober) in targets.into_iter().zip(offsets).zip(probers) {
            let grid = SlotGrid::new(start, offset, target.interval);
            let recorder = Arc::new(Mutex::new(TargetRecorder::new(precision)));
            let r = set.spawn(target, prober, grid, recorder, None);
            set.running.push(r);
        }
        Ok(set)
    }

    /// Every target, removed ones still waiting for their last report included.
    pub(crate) fn running(&self) -> &[Running] {
        &self.running
    }

    /// How many targets are being probed.
    pub(crate) fn probing(&self) -> usize {
        self.running
            .iter()
            .filter(|r| r.retired_in.is_none())
            .count()
    }

    /// A prober for each target, or the first that cannot be built.
    fn probers(
        &self,
        targets: &[AgentTarget],
        origin: &str,
    ) -> Result<Vec<TargetProber>, ReloadError> {
        targets
            .iter()
            .map(|t| {
                TargetProber::new(&t.probe, self.tls.clone()).map_err(|source| ReloadError::Probe {
                    origin: origin.to_owned(),
                    target: t.plan.id.clone(),
                    source,
                })
            })
            .collect()
    }

    /// Starts probing `target` on `grid` into `recorder`, once `after` (the task it replaces)
    /// has finished, so a target never has two probes in flight.
    fn spawn(
        &self,
        target: AgentTarget,
        prober: TargetProber,
        grid: SlotGrid,
        recorder: Arc<Mutex<TargetRecorder>>,
        after: Option<JoinHandle<()>>,
    ) -> Running {
        let series = metrics::TargetSeries::register(target.labels(), self.histograms);
        let scheduled = Arc::new(ScheduledTarget {
            probe: LabelledProber {
                prober,
                series,
                tracer: self.tracer.clone(),
            },
            grid,
            recorder,
        });
        let (stop, stop_rx) = watch::channel(false);
        let clock = self.clock;
        let job = scheduled.clone();
        let task = tokio::spawn(async move {
            if let Some(previous) = after {
                let _ = previous.await;
            }
            run_target(job, clock, None, stop_rx).await;
        });
        Running {
            fingerprint: fingerprint(&target),
            target,
            scheduled,
            stop,
            task,
            retired_in: None,
            finished_before_collect: false,
        }
    }

    /// Rereads `path` and applies it, or changes nothing and says why. `in_use` is the file
    /// the agent started with: the keys only a restart applies are compared with it.
    pub(crate) fn reload(
        &mut self,
        path: &Path,
        in_use: &FleetConfig,
        vantage: &str,
    ) -> Result<ReloadSummary, ReloadError> {
        let fleet = FleetConfig::load(path)?;
        let origin = fleet.origin.clone();
        let Some(entry) = fleet.vantage(vantage) else {
            return Err(ReloadError::VantageRemoved {
                origin,
                vantage: vantage.to_owned(),
            });
        };
        let targets = build_vantage_targets(&fleet, vantage)?;
        let mut restart_needed: Vec<String> = in_use
            .changed_keys(&fleet, RESTART_KEYS)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if let Some(old) = in_use.vantage(vantage) {
            if in_use.agent_key_id(old) != fleet.agent_key_id(entry) {
                restart_needed.push(format!("vantages[{vantage}].key_id"));
            }
            if old.agent_id() != entry.agent_id() {
                restart_needed.push(format!("vantages[{vantage}].agent_id"));
            }
        }

        let current: BTreeMap<&str, &Running> = self
            .running
            .iter()
            .filter(|r| r.retired_in.is_none())
            .map(|r| (r.target.plan.id.as_str(), r))
            .collect();
        let mut summary = ReloadSummary {
            restart_needed,
            ..ReloadSummary::default()
        };
        // Every prober is built before anything changes: a target that cannot be compiled
        // leaves the whole reload unapplied.
        let mut starting = Vec::new();
        for t in targets {
            match current.get(t.plan.id.as_str()) {
                Some(r) if r.fingerprint == fingerprint(&t) => {}
                Some(_) => {
                    summary.changed.push(t.plan.id.clone());
                    starting.push(t);
                }
                None => {
                    summary.added.push(t.plan.id.clone());
                    starting.push(t);
                }
            }
        }
        let probers = self.probers(&starting, &origin)?;
        let keep: BTreeSet<String> = fleet
            .targets()
            .into_iter()
            .chain(fleet.control_target(vantage))
            .map(|p| p.id)
            .collect();

        let now = Instant::now();
        let interval_now = self.clock.index_of(now);
        for r in &mut self.running {
            if r.retired_in.is_none() && !keep.contains(&r.target.plan.id) {
                summary.removed.push(r.target.plan.id.clone());
                let _ = r.stop.send(true);
                r.retired_in = Some(interval_now);
            }
        }
        let mut rng = rand::rng();
        for (target, prober) in starting.into_iter().zip(probers) {
            // A grid from now: its first slot is within one interval, none counts as missed.
            let offset = target.interval.mul_f64(rng.random::<f64>());
            let grid = SlotGrid::new(now, offset, target.interval);
            // A changed target, or one removed by an earlier reload whose last interval is not
            // reported yet: either way it carries on in the same recorder, so one report never
            // holds the same target twice.
            let at = self
                .running
                .iter()
                .position(|r| r.target.plan.id == target.plan.id);
            match at {
                Some(i) => {
                    let old = &self.running[i];
                    let _ = old.stop.send(true);
                    let recorder = old.scheduled.recorder.clone();
                    let previous =
                        std::mem::replace(&mut self.running[i].task, tokio::spawn(async {}));
                    self.running[i] = self.spawn(target, prober, grid, recorder, Some(previous));
                }
                None => {
                    let recorder = Arc::new(Mutex::new(TargetRecorder::new(self.precision)));
                    let r = self.spawn(target, prober, grid, recorder, None);
                    self.running.push(r);
                }
            }
        }
        Ok(summary)
    }

    /// Notes, before a collection, which removed targets have no probe left in flight.
    pub(crate) fn before_collect(&mut self) {
        for r in &mut self.running {
            r.finished_before_collect = r.retired_in.is_some() && r.task.is_finished();
        }
    }

    /// After a collection took every interval up to `through`: forgets removed targets whose
    /// last interval it took and whose task had finished before it began (a probe still in
    /// flight then lands in a later report for its interval, and the target goes after that).
    pub(crate) fn forget_reported(&mut self, through: u64) {
        self.running.retain(|r| match r.retired_in {
            Some(last) => !(last <= through && r.finished_before_collect),
            None => true,
        });
    }

    /// Stops every target and waits for the probes in flight.
    pub(crate) async fn stop(&mut self) {
        for r in &self.running {
            let _ = r.stop.send(true);
        }
        for r in &mut self.running {
            let _ = (&mut r.task).await;
        }
    }
}

/// Logs a reload's result, one line, and counts it.
pub(crate) fn log_result(result: &Result<ReloadSummary, ReloadError>, why: &str) {
    match result {
        Ok(s) => {
            ::metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => "ok").increment(1);
            for key in &s.restart_needed {
                tracing::warn!(
                    "{key} changed: restart the agent to apply it (the value in use stays)"
                );
            }
            tracing::info!(
                why,
                added = ?s.added,
                changed = ?s.changed,
                removed = ?s.removed,
                "fleet file reloaded"
            );
        }
        Err(e) => {
            ::metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => "error").increment(1);
            tracing::error!(
                why,
                "fleet file reload refused, the configuration in use stays: {e}"
            );
        }
    }
}

/// Describes the reload counter and makes both results exist at 0 (the recorder is installed).
pub(crate) fn register_metrics() {
    ::metrics::describe_counter!(
        CONFIG_RELOADS_TOTAL,
        ::metrics::Unit::Count,
        "Fleet file reloads (SIGHUP or --watch-config), by result: ok (applied) or error (refused; the configuration in use stays)."
    );
    for result in ["ok", "error"] {
        ::metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(0);
    }
}
