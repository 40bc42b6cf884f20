//! The evaluation loop: every `evaluate_every` (and at once when overrides change) the window's
//! observations go through [`crate::decide::evaluate`] to a decision; its transitions and
//! alerts go to the decision log and the metrics, the new state is persisted, the desired state
//! is handed to [`crate::planes`] (which publish health and move weights on their own tasks,
//! so no AWS call ever delays a decision) and the [`Snapshot`] that `GET /v1/state` serves is
//! updated. Time is an argument everywhere below the loop, so tests drive evaluations at
//! chosen instants.

use crate::alerts::{ActiveAlert, AlertState};
use crate::backend::{plan, Backend, BackendError, Change, DesiredState};
use crate::decide;
use crate::lease::LeaseStatus;
use crate::model::{
    Alert, AlertKind, Cause, Decision, ModelState, Overrides, RegionObservation, Verdict,
};
use crate::planes::HeartbeatStatus;
use crate::reconcile::{desired_of, PlaneKind, ReconcileResult};
use crate::service::{lock, names, unix_ms, Aggregator};
use crate::traffic::TrafficEvidence;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use vantage_protocol::config::TargetKind;

/// The last evaluation, as `GET /v1/state` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub at_ms: u64,
    pub backend: &'static str,
    pub decision: Decision,
    pub overrides: Overrides,
    /// Which Region answered the global endpoint's probes in the window.
    pub global_traffic: BTreeMap<String, u64>,
    /// Per Region, what each layer shows: the HTTP Region header's and the DNS answers'
    /// shares, which layers send traffic there, and when each last did.
    pub traffic: TrafficEvidence,
    /// The control planes' last passes (they run on their own; this is their latest word).
    pub reconcile: ReconcileResult,
    /// The data plane's health publication.
    pub heartbeat: HeartbeatStatus,
    /// The weights lease as this replica sees it; `null` with one aggregator.
    pub lease: Option<LeaseStatus>,
    /// The alerts that hold, with when each was raised.
    pub active_alerts: Vec<ActiveAlert>,
    /// Maintenance windows active and to come, and pins with an expiry.
    pub maintenance: crate::maintenance::MaintenanceView,
    /// The vantages whose verdicts did not vote, and the ones their control target confirmed.
    pub vantages: decide::VantageHealth,
}

/// What the window says at one instant: the decision and what it was made from. Nothing has
/// been applied or stored yet.
struct Evaluation {
    /// The decision core's state after this evaluation, to keep if the decision is acted on.
    next_state: ModelState,
    decision: Decision,
    /// Which Region answered the global endpoint's probes in the window, with counts.
    global_traffic: BTreeMap<String, u64>,
    /// Both layers' view of where traffic goes.
    traffic: TrafficEvidence,
    /// How many series the window holds (after pruning), for its gauge.
    window_series: usize,
    /// The operators' overrides (the decision honoured these plus the windows' holds).
    overrides: Overrides,
    /// The active windows' holds.
    overlay: crate::maintenance::Overlay,
    maintenance: crate::maintenance::MaintenanceView,
    /// Whose verdicts voted.
    vantages: decide::VantageHealth,
    /// What the decision was made from, for the status page's history.
    observations: Vec<RegionObservation>,
}

impl<B: Backend> Aggregator<B> {
    /// The decision at `now` from the window, without changing anything but pruning the
    /// window and the seen sequence numbers of intervals it no longer needs.
    fn decide_now(&self, now_ms: u64) -> Evaluation {
        let config = self.config();
        let from_ms = self.window_start(now_ms);
        let (observations, controls, global_traffic, traffic, window_series) = {
            let mut w = lock(&self.window);
            // A margin of one interval before the window: any report ingest still takes as
            // not stale finds its sequence number here, so a replay is refused, not merged twice.
            let keep_from =
                from_ms.saturating_sub(config.fleet.report_interval().as_millis() as u64);
            w.prune(keep_from);
            lock(&self.seen).prune(keep_from);
            (
                observations_of(&mut w, &config, from_ms, now_ms),
                w.control_samples(from_ms, now_ms),
                w.global_traffic(from_ms, now_ms),
                self.traffic_of(&w, &config, from_ms, now_ms),
                w.series(),
            )
        };
        let overrides = self.overrides();
        let windows = crate::maintenance::windows(&config);
        let overlay = crate::maintenance::overlay(&overrides, &windows, &config.services, now_ms);
        let maintenance =
            crate::maintenance::MaintenanceView::of(&windows, &overlay, &overrides, now_ms);
        let previous = lock(&self.model).clone();
        let vantages =
            decide::assess_vantages(&config.services, &observations, &controls, &config.policy);
        let (next_state, mut decision) = decide::evaluate_services(
            &config.services,
            &previous,
            &observations,
            &overlay.overrides,
            &vantages,
            Duration::from_millis(now_ms),
        );
        for (vantage, suspicion) in &vantages.suspect {
            decision.alerts.push(Alert {
                kind: AlertKind::VantageSuspect,
                service: String::new(),
                region: Some(vantage.clone()),
                message: suspicion.describe(vantage),
            });
        }
        self.add_correlated_cause(&mut decision, &vantages, from_ms, now_ms);
        Evaluation {
            next_state,
            decision,
            global_traffic,
            traffic,
            window_series,
            overrides,
            overlay,
            maintenance,
            vantages,
            observations,
        }
    }

    /// Appends to each correlated-failure alert what the shallow and deep checks of its
    /// Regions say about the cause (`decide::correlated_cause`), counting trusted vantages only.
    fn add_correlated_cause(
        &self,
        decision: &mut Decision,
        vantages: &decide::VantageHealth,
        from_ms: u64,
        now_ms: u64,
    ) {
        if !decision
            .alerts
            .iter()
            .any(|a| a.kind == AlertKind::CorrelatedFailure)
        {
            return;
        }
        let config = self.config();
        let (shallow, deep) = {
            let w = lock(&self.window);
            let trusted = |v: &str| !vantages.is_suspect(v);
            (
                w.kind_totals(TargetKind::Status, from_ms, now_ms, trusted),
                w.kind_totals(TargetKind::Deep, from_ms, now_ms, trusted),
            )
        };
        for alert in &mut decision.alerts {
            if alert.kind != AlertKind::CorrelatedFailure {
                continue;
            }
            let Some(service) = config.services.iter().find(|s| s.name == alert.service) else {
                continue;
            };
            let regions: Vec<decide::RegionChecks> = decision
                .regions
                .iter()
                .filter(|r| r.service == alert.service && r.verdict == Verdict::Down)
                .map(|r| {
                    let unit = service.unit(&r.region);
                    decide::RegionChecks {
                        region: r.region.clone(),
                        shallow: shallow.get(&unit).cloned().unwrap_or_default(),
                        deep: deep.get(&unit).cloned().unwrap_or_default(),
                    }
                })
                .collect();
            if let Some(cause) =
                decide::correlated_cause(&regions, service.policy.max_failure_ratio)
            {
                alert.message = format!("{}. {cause}", alert.message);
            }
        }
    }

    /// Start of the window at `now_ms`. The interval in progress has not been reported yet,
    /// so the window reaches one interval further back: it always holds `window` worth of
    /// reported intervals.
    fn window_start(&self, now_ms: u64) -> u64 {
        let interval_ms = self.config().fleet.report_interval().as_millis() as u64;
        // +1: an interval starting exactly `window + interval` ago ended a whole window ago.
        (now_ms + 1).saturating_sub(self.config().window.as_millis() as u64 + interval_ms)
    }

    /// Each vantage's view of each Region over the window ending at `now`, with latency at the
    /// given quantiles (the demo's live view; the decisions use the configured ones).
    pub fn window_view(
        &self,
        now: SystemTime,
        limit_q: f64,
        weight_q: f64,
    ) -> Vec<RegionObservation> {
        let now_ms = unix_ms(now);
        let from_ms = self.window_start(now_ms);
        let units = self.config().units();
        lock(&self.window).observations(&units, from_ms, now_ms, limit_q, weight_q)
    }

    /// Where traffic goes by layer. A single-API fleet's evidence is keyed by Region; with
    /// `[[services]]`, by unit (`payments/eu-west-1`), each from its own service's targets.
    fn traffic_of(
        &self,
        w: &crate::window::Window,
        config: &crate::config::AggregatorConfig,
        from_ms: u64,
        now_ms: u64,
    ) -> TrafficEvidence {
        let mut all = TrafficEvidence::default();
        // One pass over the window per layer, for every service at once.
        let http = w.layer_traffic_by_service(TargetKind::Global, from_ms, now_ms);
        let dns = w.layer_traffic_by_service(TargetKind::Dns, from_ms, now_ms);
        let none = crate::window::LayerTraffic::default();
        for service in &config.services {
            let key = if service.named {
                service.name.as_str()
            } else {
                ""
            };
            let evidence = TrafficEvidence::of(
                &service.regions,
                http.get(key).unwrap_or(&none),
                dns.get(key).unwrap_or(&none),
            );
            all.dns_unmatched = all.dns_unmatched.saturating_add(evidence.dns_unmatched);
            for (region, t) in evidence.regions {
                all.regions.insert(service.unit(&region), t);
            }
        }
        all
    }

    /// What the reconciler would change right now: the desired state and the writes, without
    /// applying them or advancing any state.
    pub async fn plan_now(
        &self,
        now: SystemTime,
    ) -> Result<(DesiredState, Vec<Change>), BackendError> {
        let decision = self.decide_now(unix_ms(now)).decision;
        let desired = desired_of(&decision, &self.config());
        let observed = self.backend().observe().await?;
        let changes = plan(&desired, &observed);
        Ok((desired, changes))
    }

    /// One evaluation at `now` with both planes run inline: decide, publish the health
    /// heartbeat, then one pass of each control plane. The demo and tests use this to see the
    /// effect of each decision at once; the running aggregator decides with [`Self::decide`]
    /// and leaves the planes to their own tasks.
    pub async fn evaluate(&self, now: SystemTime) -> Snapshot {
        let mut snapshot = self.decide(now);
        // A failed heartbeat is in the snapshot's `heartbeat` and logged by the backend call.
        let _ = self.heartbeat_now().await;
        snapshot.reconcile = self.reconcile_now().await;
        snapshot.heartbeat = self.planes.heartbeat_status();
        snapshot.lease = self.lease_status();
        *lock(&self.last) = Some(snapshot.clone());
        snapshot
    }

    /// One decision at `now`: the state moves on, transitions and alerts are logged, the state
    /// is persisted and the desired state handed to the planes. No AWS call is made here.
    pub fn decide(&self, now: SystemTime) -> Snapshot {
        let _turn = lock(&self.config_turn);
        let now_ms = unix_ms(now);
        let released = self.maintenance_before(now_ms);
        let started = tokio::time::Instant::now();
        let Evaluation {
            next_state,
            decision,
            global_traffic,
            traffic,
            window_series,
            overrides,
            overlay,
            maintenance,
            vantages,
            observations,
        } = self.decide_now(now_ms);
        metrics::histogram!(names::EVALUATION_SECONDS).record(started.elapsed().as_secs_f64());
        *lock(&self.model) = next_state;
        self.planes.publish(desired_of(&decision, &self.config()));

        self.log_decision(now_ms, &decision);
        self.record_history(now_ms, &decision, &observations);
        self.check_silence(now_ms);
        self.maintenance_after(now_ms, released, &overlay);
        self.log_traffic_moved(now_ms, &decision, &traffic);
        self.record_metrics(&decision, &traffic, window_series);
        self.persist_state();
        let snapshot = Snapshot {
            at_ms: now_ms,
            backend: self.backend().name(),
            decision,
            overrides,
            global_traffic,
            traffic,
            reconcile: self.planes.last_result(),
            heartbeat: self.planes.heartbeat_status(),
            lease: self.lease_status(),
            active_alerts: lock(&self.alert_book).active(),
            maintenance,
            vantages,
        };
        *lock(&self.last) = Some(snapshot.clone());
        snapshot
    }

    /// The evaluation into the status page's last hour.
    fn record_history(&self, now_ms: u64, decision: &Decision, observations: &[RegionObservation]) {
        let config = self.config();
        let services: BTreeMap<&str, &crate::config::ServiceConfig> = config
            .services
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        lock(&self.history).record(now_ms, decision, observations, |service, region| {
            services
                .get(service)
                .map_or_else(|| region.to_owned(), |s| s.unit(region))
        });
    }

    /// Transitions and alerts: counted, and one decision-log line each. (Applied and failed
    /// plans are logged by the planes that ran them.)
    fn log_decision(&self, now_ms: u64, decision: &Decision) {
        let wide = decide::region_wide(decision);
        let was_wide = lock(&self.last)
            .as_ref()
            .map(|s| decide::region_wide(&s.decision))
            .unwrap_or_default();
        for (region, services) in &wide {
            if was_wide.get(region) != Some(services) {
                metrics::counter!(names::ALERTS_TOTAL, "kind" => "RegionWide").increment(1);
                self.log_event(serde_json::json!({
                    "event": "region_wide", "at_ms": now_ms, "region": region, "state": "down",
                    "services": services,
                    "reason": format!(
                        "{region} is down for every service that runs there ({}): a Region-wide failure, not {} separate ones",
                        services.join(", "), services.len()
                    ),
                }));
            }
        }
        for (region, services) in &was_wide {
            if !wide.contains_key(region) {
                self.log_event(serde_json::json!({
                    "event": "region_wide", "at_ms": now_ms, "region": region, "state": "cleared",
                    "services": services,
                    "reason": format!("{region} is no longer down for every service"),
                }));
            }
        }
        for t in &decision.transitions {
            let direction = if t.in_service { "in" } else { "out" };
            metrics::counter!(names::REGION_TRANSITIONS_TOTAL, "service" => t.service.clone(), "region" => t.region.clone(), "direction" => direction).increment(1);
            self.log_event(serde_json::json!({
                "event": if t.in_service { "region_in" } else { "region_out" },
                "at_ms": now_ms, "service": t.service, "region": t.region, "cause": t.cause,
                "region_wide": wide.contains_key(&t.region), "reason": t.reason,
            }));
        }
        self.notify_transitions(now_ms, decision);
        let repeat = self.config().alert_repeat;
        let told = lock(&self.alert_book).update(&decision.alerts, now_ms, repeat);
        for (state, a) in told {
            let region = a.region.clone().unwrap_or_default();
            let active = metrics::gauge!(names::ALERT_ACTIVE, "alert" => a.kind.as_str(), "service" => a.service.clone(), "region" => region);
            if state == AlertState::Resolved {
                active.set(0.0);
            } else {
                active.set(1.0);
            }
            if state == AlertState::Raised {
                metrics::counter!(names::ALERTS_TOTAL, "kind" => format!("{:?}", a.kind))
                    .increment(1);
            }
            self.log_event(serde_json::json!({
                "event": "alert", "at_ms": now_ms, "state": state, "kind": a.kind,
                "service": a.service, "region": a.region, "since_ms": a.since_ms,
                "reason": a.message,
            }));
            self.notify_alert(now_ms, state, &a);
        }
    }

    /// `traffic_moved` lines: a layer (HTTP Region header, DNS answers) that sent traffic to a
    /// Region now out of service at the previous evaluation and sends none now, with the start
    /// of the last interval in which it still did.
    fn log_traffic_moved(&self, now_ms: u64, decision: &Decision, traffic: &TrafficEvidence) {
        let Some(previous) = lock(&self.last).as_ref().map(|s| s.traffic.clone()) else {
            return;
        };
        let config = self.config();
        let out: Vec<String> = decision
            .regions
            .iter()
            .filter(|r| !r.in_service)
            .map(|r| config.unit(&r.service, &r.region))
            .collect();
        let out: Vec<&str> = out.iter().map(String::as_str).collect();
        for m in crate::traffic::moved(&previous, traffic, &out) {
            let (service, region) = vantage_protocol::config::split_unit(&m.region);
            let service = service.unwrap_or(config.fleet.fleet.name.get_ref());
            self.log_event(serde_json::json!({
                "event": "traffic_moved", "at_ms": now_ms, "service": service,
                "region": region, "layer": m.layer, "last_seen_ms": m.last_ms,
            }));
        }
    }

    /// The per-Region gauges: in service, weight, share of the global endpoint's traffic and of
    /// the DNS answers.
    fn record_metrics(&self, decision: &Decision, traffic: &TrafficEvidence, window_series: usize) {
        for r in &decision.regions {
            metrics::gauge!(names::REGION_IN_SERVICE, "service" => r.service.clone(), "region" => r.region.clone())
                .set(if r.in_service { 1.0 } else { 0.0 });
            metrics::gauge!(names::REGION_WEIGHT, "service" => r.service.clone(), "region" => r.region.clone())
                .set(f64::from(r.weight));
            let verdict = match r.verdict {
                Verdict::Up => 1.0,
                Verdict::Down => 0.0,
                Verdict::Unknown => -1.0,
            };
            metrics::gauge!(names::REGION_VERDICT, "service" => r.service.clone(), "region" => r.region.clone())
                .set(verdict);
            let held = r.cause == Cause::FlapSuppressed;
            metrics::gauge!(names::REGION_HELD_OUT, "service" => r.service.clone(), "region" => r.region.clone())
                .set(if held { 1.0 } else { 0.0 });
        }
        let fleet_name = self.config().fleet.fleet.name.get_ref().clone();
        for (unit, t) in &traffic.regions {
            let (service, region) = vantage_protocol::config::split_unit(unit);
            let service = service.unwrap_or(&fleet_name).to_owned();
            metrics::gauge!(names::GLOBAL_TRAFFIC_SHARE, "service" => service.clone(), "region" => region.to_owned())
                .set(t.http_share.unwrap_or(0.0));
            // Only fleets whose DNS target answered get the series: no DNS data is not 0 %.
            if let Some(share) = t.dns_share {
                metrics::gauge!(names::GLOBAL_DNS_SHARE, "service" => service, "region" => region.to_owned())
                    .set(share);
            }
        }
        metrics::gauge!(names::WINDOW_SERIES).set(window_series as f64);
    }

    /// Decides every `evaluate_every` (and at once when overrides change) until `stop`, with
    /// the heartbeat, both control planes and (with several replicas) the lease keeper running
    /// beside it.
    pub async fn run_loop(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let planes = [
            tokio::spawn(self.clone().run_heartbeat(stop.clone())),
            tokio::spawn(self.clone().run_plane(PlaneKind::Health, stop.clone())),
            tokio::spawn(self.clone().run_plane(PlaneKind::Weights, stop.clone())),
            tokio::spawn(self.clone().run_lease(stop.clone())),
        ];
        self.decide_loop(stop).await;
        for task in planes {
            let _ = task.await;
        }
    }

    async fn decide_loop(&self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config().evaluate_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            self.decide(SystemTime::now());
        }
    }
}

/// Every unit's observations over `[from_ms, to_ms)`, each service at its own quantiles: one
/// pass over the window per distinct pair of quantiles (usually one for the whole fleet).
fn observations_of(
    w: &mut crate::window::Window,
    config: &crate::config::AggregatorConfig,
    from_ms: u64,
    to_ms: u64,
) -> Vec<RegionObservation> {
    let mut groups: Vec<((f64, f64), Vec<String>)> = Vec::new();
    for service in &config.services {
        let q = (service.latency_quantile, service.weight_quantile);
        match groups.iter_mut().find(|(g, _)| *g == q) {
            Some((_, units)) => units.extend(service.units()),
            None => groups.push((q, service.units())),
        }
    }
    groups
        .into_iter()
        .flat_map(|((limit_q, weight_q), units)| {
            w.observations(&units, from_ms, to_ms, limit_q, weight_q)
        })
        .collect()
}
