//! The running aggregator: the [`Aggregator`] that the HTTP API and the evaluation loop share,
//! and [`run`], which starts both. Reports come in through [`crate::ingest`] into the window;
//! every `evaluate_every` [`crate::evaluate`] decides from it and [`crate::reconcile`]s the
//! backend; the state file (`persist`) keeps the decision state and overrides across restarts,
//! so a Region that was out stays out until it has earned its way back (`recover_after` up
//! evaluations) and the spent override nonces; [`crate::api`] serves `POST /v1/reports`,
//! `GET /v1/state` and `POST /v1/overrides` (applied by [`crate::overrides`]).

use crate::backend::Backend;
use crate::config::AggregatorConfig;
use crate::ingest::Seen;
use crate::lease::{Lease, LeaseStatus};
use crate::model::{ModelState, Overrides};
use crate::overrides::Nonces;
use crate::persist;
use crate::window::Window;
use std::io::Write as _;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

// Re-exported so that the paths callers used before the split (`service::serve`,
// `service::Snapshot`, `service::Ingested`, ...) keep working.
pub use crate::api::{serve, serve_with, ServeOptions};
pub use crate::evaluate::Snapshot;
pub use crate::ingest::{IngestError, Ingested};
pub use crate::overrides::OverrideRequest;
pub use crate::reconcile::ReconcileResult;

/// Aggregator metric names.
pub mod names {
    pub const REPORTS_TOTAL: &str = "vantage_aggregator_reports_total";
    pub const REPORT_TARGETS_TOTAL: &str = "vantage_aggregator_report_targets_total";
    pub const REGION_IN_SERVICE: &str = "vantage_region_in_service";
    pub const REGION_WEIGHT: &str = "vantage_region_weight";
    /// The quorum verdict of the last evaluation: 1 up, 0 down, -1 unknown (too little data):
    /// `service`, `region`.
    pub const REGION_VERDICT: &str = "vantage_region_verdict";
    /// 1 while a Region that would be put back is held out by flap damping (its penalty above
    /// `policy.flap_suppress`), else 0: `service`, `region`.
    pub const REGION_HELD_OUT: &str = "vantage_region_held_out";
    pub const REGION_TRANSITIONS_TOTAL: &str = "vantage_region_transitions_total";
    /// Alerts raised (an alert that holds for an hour is raised once), `kind` label.
    pub const ALERTS_TOTAL: &str = "vantage_aggregator_alerts_total";
    /// 1 while an alert holds, 0 once resolved: `alert`, `service`, `region`.
    pub const ALERT_ACTIVE: &str = "vantage_alert_active";
    pub const OVERRIDES_TOTAL: &str = "vantage_aggregator_overrides_total";
    pub const RECONCILE_TOTAL: &str = "vantage_reconcile_total";
    pub const RECONCILE_SECONDS: &str = "vantage_reconcile_duration_seconds";
    pub const RECONCILE_CHANGES_TOTAL: &str = "vantage_reconcile_changes_total";
    pub const WINDOW_SERIES: &str = "vantage_aggregator_window_series";
    /// Time one evaluation of every service takes (deciding only, no AWS call).
    pub const EVALUATION_SECONDS: &str = "vantage_aggregator_evaluation_duration_seconds";
    pub const GLOBAL_TRAFFIC_SHARE: &str = "vantage_global_traffic_share";
    /// Share of the DNS target's answers per Region over the window (`[dns]` fleets).
    pub const GLOBAL_DNS_SHARE: &str = "vantage_global_dns_share";
    pub const HEARTBEATS_TOTAL: &str = "vantage_health_heartbeats_total";
    pub const OBSERVE_TOTAL: &str = "vantage_reconcile_observe_total";
    /// 1 while this replica holds the weights lease (and it is locally valid), else 0.
    pub const LEASE_HELD: &str = "vantage_lease_held";
    /// Changes of hand seen by this replica, `event` = `acquired` | `lost`.
    pub const LEASE_TRANSITIONS_TOTAL: &str = "vantage_lease_transitions_total";
}

/// The aggregator: shared by the HTTP handlers and the evaluation loop.
pub struct Aggregator<B> {
    /// Swapped whole by a reload ([`crate::reload`]); readers take the one in force.
    config: RwLock<Arc<AggregatorConfig>>,
    /// Held by a decision and by a reload, so a decision is made under one configuration and
    /// a reload never lands between reading the state and storing the next.
    pub(crate) config_turn: Mutex<()>,
    backend: B,
    pub(crate) window: Mutex<Window>,
    pub(crate) seen: Mutex<Seen>,
    /// Report uploads between a plausible header check and the end of ingest: bounds the
    /// bodies buffered (and decoded) at once before their signatures are known.
    pub(crate) uploads: tokio::sync::Semaphore,
    pub(crate) model: Mutex<ModelState>,
    pub(crate) overrides: Mutex<Overrides>,
    /// Override nonces spent recently (persisted: a restart must not reopen a replay).
    pub(crate) nonces: Mutex<Nonces>,
    /// Held while the state file is written, so writes never interleave.
    persisting: Mutex<()>,
    pub(crate) last: Mutex<Option<Snapshot>>,
    /// The alerts that hold: raised once, repeated every `alert_repeat`, resolved once.
    pub(crate) alert_book: Mutex<crate::alerts::AlertBook>,
    /// The last hour for the status page: timelines, latency, recent decision-log lines.
    pub(crate) history: Mutex<crate::history::History>,
    decision_log: Option<Mutex<Box<dyn std::io::Write + Send>>>,
    /// Wakes the loop early (overrides changed).
    pub(crate) wake: Notify,
    /// The heartbeat and the control planes: what they act on and how they did.
    pub(crate) planes: crate::planes::Planes,
    /// The weights lease, with several replicas: only its holder writes weights.
    lease: Option<Lease>,
    /// Where notifications go (`[[notify]]`); only the lease holder's are sent.
    pub(crate) notifier: Option<Arc<crate::notify::Notifier>>,
    /// Consecutive failed passes per control plane, for `reconcile_failed`.
    pub(crate) plane_failures: Mutex<[u32; 2]>,
    /// When each vantage last reported, for `agent_silent`.
    pub(crate) silence: Mutex<crate::notify::silence::Silence>,
    /// The maintenance windows active at the last decision (by index).
    pub(crate) maintenance_active: Mutex<std::collections::BTreeSet<usize>>,
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Locks `m`, recovering from poisoning: one panicked handler must not take the API and the
/// evaluation loop down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<B: Backend> Aggregator<B> {
    /// Loads persisted state, if any. `decision_log` receives one JSON line per transition,
    /// applied change and alert.
    pub fn new(
        config: AggregatorConfig,
        backend: B,
        decision_log: Option<Box<dyn std::io::Write + Send>>,
    ) -> Result<Self, std::io::Error> {
        let persisted = match &config.state_file {
            Some(path) => persist::load(path)?,
            None => persist::Persisted::default(),
        };
        if !persisted.model.regions.is_empty() {
            let out: Vec<&String> = persisted
                .model
                .regions
                .iter()
                .filter(|(_, r)| !r.in_service)
                .map(|(name, _)| name)
                .collect();
            tracing::info!(
                ?out,
                "resumed decision state: Regions out of service stay out until they recover"
            );
        }
        Ok(Aggregator {
            backend,
            window: Mutex::new(Window::new()),
            seen: Mutex::new(Seen::restore(persisted.highest_seq)),
            uploads: tokio::sync::Semaphore::new(crate::api::MAX_PENDING_UPLOADS),
            model: Mutex::new(persisted.model),
            overrides: Mutex::new(persisted.overrides),
            nonces: Mutex::new(persisted.nonces),
            persisting: Mutex::new(()),
            last: Mutex::new(None),
            alert_book: Mutex::new(crate::alerts::AlertBook::default()),
            history: Mutex::new(crate::history::History::default()),
            decision_log: decision_log.map(Mutex::new),
            wake: Notify::new(),
            planes: crate::planes::Planes::new(),
            lease: None,
            notifier: None,
            plane_failures: Mutex::new([0; 2]),
            silence: Mutex::default(),
            maintenance_active: Mutex::default(),
            config: RwLock::new(Arc::new(config)),
            config_turn: Mutex::new(()),
        })
    }

    /// The configuration in force (a reload may replace it; this one stays whole).
    pub fn config(&self) -> Arc<AggregatorConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `config` in force for every request and evaluation from now on.
    pub(crate) fn set_config(&self, config: AggregatorConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Writes weights only while holding `lease` (several replicas); the keeper runs inside
    /// [`Aggregator::run_loop`]. Health is never gated: every replica publishes its vote.
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Sends notifications through `notifier` (see [`crate::notify`]).
    pub fn with_notifier(mut self, notifier: Arc<crate::notify::Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The weights lease as this replica sees it; `None` without one.
    pub fn lease_status(&self) -> Option<LeaseStatus> {
        self.lease.as_ref().map(Lease::status)
    }

    pub(crate) fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// The last decision, with the planes' latest results.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let mut snapshot = lock(&self.last).clone()?;
        snapshot.reconcile = self.planes.last_result();
        snapshot.heartbeat = self.planes.heartbeat_status();
        snapshot.lease = self.lease_status();
        Some(snapshot)
    }

    /// The overrides in force.
    pub(crate) fn overrides(&self) -> Overrides {
        lock(&self.overrides).clone()
    }

    /// Writes the state file (when configured) from the current decision state, overrides
    /// and spent nonces. Writers take turns, and each writes what is current when its turn
    /// comes, so an evaluation can never put back overrides or nonces older than the file's.
    pub(crate) fn persist_state(&self) {
        let config = self.config();
        let Some(path) = &config.state_file else {
            return;
        };
        let _turn = lock(&self.persisting);
        let persisted = persist::Persisted {
            model: lock(&self.model).clone(),
            overrides: lock(&self.overrides).clone(),
            nonces: lock(&self.nonces).clone(),
            highest_seq: lock(&self.seen).highest().clone(),
        };
        if let Err(e) = persist::save(path, &persisted) {
            tracing::error!(error = %e, path = %path.display(), "cannot persist decision state");
        }
    }

    /// One line in the decision log (and a `vantage::decisions` trace event).
    /// The status page at `now`, served at `base`: every service, or the one named (see
    /// [`crate::status_page`]).
    pub fn status_page(&self, base: &str, service: Option<&str>, now: SystemTime) -> String {
        let scope = crate::status_page::PageScope { base, service };
        let snapshot = lock(&self.last).clone();
        let history = lock(&self.history);
        crate::status_page::render(
            &self.config(),
            snapshot.as_ref(),
            &history,
            scope,
            unix_ms(now),
        )
    }

    pub(crate) fn log_event(&self, event: serde_json::Value) {
        tracing::info!(target: "vantage::decisions", "{event}");
        lock(&self.history).log(&event);
        if let Some(log) = &self.decision_log {
            let mut w = lock(log);
            let _ = writeln!(w, "{event}");
            let _ = w.flush();
        }
    }
}

/// Serves the API and evaluates on schedule until `stop` turns true.
pub async fn run<B: Backend>(
    aggregator: Arc<Aggregator<B>>,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) {
    run_with(aggregator, listener, ServeOptions::default(), stop).await
}

/// [`run`] with the API's connection limits and TLS given.
pub async fn run_with<B: Backend>(
    aggregator: Arc<Aggregator<B>>,
    listener: TcpListener,
    options: ServeOptions,
    stop: watch::Receiver<bool>,
) {
    let server = tokio::spawn(serve_with(
        aggregator.clone(),
        listener,
        options,
        stop.clone(),
    ));
    aggregator.run_loop(stop).await;
    let _ = server.await;
}
