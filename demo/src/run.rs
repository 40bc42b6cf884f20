//! Runs the whole fleet: start it ([`crate::start`], [`crate::replicas`]), apply the faults
//! on schedule ([`crate::schedule`]; killing and reviving replicas here), evaluate and turn
//! each round of decisions into events ([`crate::decisions`]; a replica's `region_wide`
//! decision-log line becomes one event), show it ([`crate::view`],
//! [`crate::events`]), stop it and summarise ([`crate::summary`]).

use crate::decisions::{evaluation_ticks, Decisions};
use crate::events::Events;
use crate::net::Network;
use crate::page::{self, PageState};
use crate::replicas::{bind_replicas, LeaseLine, Replicas};
use crate::scenario::{DemoOptions, Fault};
use crate::schedule::FaultSchedule;
use crate::start::{replica_configs, start_agents, start_links, start_regions, WorkDir};
use crate::view::{live_view, state_json};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use vantage_runtime::sync::lock;

pub use crate::events::Event;
pub use crate::summary::{summarize, DemoSummary, FaultOutcome, ServiceOutcome, UnitOutcome};

/// Something went wrong setting the fleet up.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("bad demo options: {0}")]
    Options(String),
    #[error("starting {what}: {message}")]
    Start { what: String, message: String },
}

pub(crate) fn start_err(what: impl Into<String>, e: impl std::fmt::Display) -> DemoError {
    DemoError::Start {
        what: what.into(),
        message: e.to_string(),
    }
}

/// How the run shows itself.
pub struct Outputs {
    /// Serve the status page here.
    pub page: Option<TcpListener>,
    pub events_file: Option<PathBuf>,
    /// Redraw a table on the terminal every second (else print events as lines).
    pub live: bool,
    /// Print events as they happen (when not live).
    pub print_events: bool,
    /// Render the process's metrics on the page's `/metrics`.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
}

/// Runs the demo until its duration ends or `stop` turns true.
pub async fn run(
    options: DemoOptions,
    outputs: Outputs,
    mut stop: watch::Receiver<bool>,
) -> Result<DemoSummary, DemoError> {
    options.validate().map_err(DemoError::Options)?;
    let start = Instant::now();
    let (halt, halted) = watch::channel(false);
    let work = WorkDir::create(&options.vantages)?;
    let status_addrs = start_regions(&options, &halted).await?;
    let net = Network::new(status_addrs.clone(), start);
    let links = start_links(&options, &net, &halted).await?;
    let listeners = bind_replicas(options.aggregators).await?;
    let urls: Vec<(String, String)> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let addr = l.local_addr().map_err(|e| start_err("aggregator", e))?;
            Ok(((i + 1).to_string(), format!("http://{addr}")))
        })
        .collect::<Result<_, DemoError>>()?;
    let configs = replica_configs(&options, &links, &urls, &work)?;
    let evaluate_every = configs[0].evaluate_every;
    let mut replicas = Replicas::start(configs, listeners, &halted)?;
    let agents = start_agents(&options, &links, &urls, &work)?;

    let page_state = Arc::new(Mutex::new(PageState {
        status_endpoints: status_addrs,
        render: outputs.metrics.clone(),
        ..Default::default()
    }));
    if let Some(listener) = outputs.page {
        tokio::spawn(page::serve(listener, page_state.clone(), halted.clone()));
    }
    let mut events = Events {
        start,
        file: match &outputs.events_file {
            Some(p) => Some(
                std::fs::File::create(p)
                    .map_err(|e| start_err(format!("events file {}", p.display()), e))?,
            ),
            None => None,
        },
        all: Vec::new(),
        print: outputs.print_events && !outputs.live,
    };
    let replicas_note = if replicas.replicated() {
        format!(
            ", {} aggregator replicas (majority {}, lease {} s)",
            options.aggregators,
            crate::combine::threshold(options.aggregators),
            crate::replicas::DEMO_LEASE.as_secs()
        )
    } else {
        String::new()
    };
    events.emit(
        "start",
        None,
        None,
        format!(
            "{}{} Regions, {} vantages, probes every {:?}, decisions every {:?} (dry-run){replicas_note}",
            if options.named() {
                format!("services {} in each of ", options.services.join(", "))
            } else {
                String::new()
            },
            options.regions.len(),
            options.vantages.len(),
            options.probe_interval,
            evaluate_every
        ),
        serde_json::Value::Null,
    );

    let mut faults = FaultSchedule::new(&options);
    let mut tick = evaluation_ticks(start, evaluate_every);
    let mut decisions = Decisions::new(start);
    // Region → its last `region_wide` state ("down" / "cleared"): replicas each log the same
    // outage; the run reports it once.
    let mut wide: BTreeMap<String, String> = BTreeMap::new();
    let end_at = options.duration.map(|d| start + d);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = sleep_until_some(faults.next_at(start)) => {
                if let Some(fault) = faults.apply_next(&net, &mut events) {
                    replica_fault(&mut replicas, &fault, &mut events).await?;
                }
                continue;
            }
            Some(line) = replicas.lines.recv() => {
                log_line(&line, &mut wide, &mut events);
                continue;
            }
            _ = sleep_until_some(end_at) => break,
            _ = stop.changed() => break,
        }
        let fresh = replicas.poll(SystemTime::now()).await;
        // Lease changes of this round come before what they caused (the weights' writer);
        // a Region-wide outage after the transitions it sums up.
        let mut wide_lines = Vec::new();
        while let Ok(line) = replicas.lines.try_recv() {
            if line.line["event"] == "region_wide" {
                wide_lines.push(line);
            } else {
                lease_event(&line, &mut events);
            }
        }
        let routed = decisions.record(&replicas, &fresh, &options, &net, &mut events);
        for line in &wide_lines {
            log_line(line, &mut wide, &mut events);
        }
        let view = state_json(
            &options,
            &replicas,
            &decisions.combined,
            &routed,
            start,
            &events.all,
        );
        if outputs.live {
            print!("{}", live_view(&view));
            let _ = std::io::stdout().flush();
        }
        // The aggregator's own status page (`/aggregator`): the first running replica's.
        let primary = replicas
            .members
            .iter()
            .find(|r| r.is_up())
            .and_then(|r| r.aggregator().cloned());
        let mut page = lock(&page_state);
        page.state = view;
        page.aggregator = primary;
    }

    // Stop everything, agents first so their last reports are in. Reports queued for a
    // stopped replica cannot be delivered: the agents' flush would wait for its deadline.
    let patience = if replicas.members.iter().all(|r| r.is_up()) {
        std::time::Duration::from_secs(10)
    } else {
        std::time::Duration::from_secs(1)
    };
    agents.stop(patience).await;
    replicas.stop().await;
    while let Ok(line) = replicas.lines.try_recv() {
        log_line(&line, &mut wide, &mut events);
    }
    let _ = halt.send(true);
    let summary = summarize(&options, &events.all, start.elapsed());
    events.emit(
        "summary",
        None,
        None,
        format!(
            "false transitions {}, flaps {}",
            summary.false_transitions, summary.flaps
        ),
        serde_json::to_value(&summary.faults).unwrap_or_default(),
    );
    drop(work);
    Ok(DemoSummary {
        events: events.all,
        ..summary
    })
}

/// Stops or starts a replica, with its `replica_down` / `replica_up` event.
async fn replica_fault(
    replicas: &mut Replicas,
    fault: &Fault,
    events: &mut Events,
) -> Result<(), DemoError> {
    match fault {
        Fault::KillAggregator { id } => {
            let Some(lease) = replicas.kill(id).await else {
                return Ok(());
            };
            let votes = replicas
                .members
                .iter()
                .find(|r| &r.id == id)
                .map(|r| r.votes.health.clone())
                .unwrap_or_default();
            let holder = lease.as_ref().and_then(|l| l.holder.clone());
            let token = lease.as_ref().and_then(|l| l.token);
            let held = lease.as_ref().is_some_and(|l| l.held);
            events.emit(
                "replica_down",
                None,
                None,
                format!(
                    "aggregator {id} stopped{}; its Route 53 votes stay at their last value",
                    if held { " while holding the lease" } else { "" }
                ),
                serde_json::json!({"replica": id, "holder": holder, "token": token, "held_lease": held, "frozen_votes": votes}),
            );
        }
        Fault::ReviveAggregator { id } => {
            replicas.revive(id).await?;
            events.emit(
                "replica_up",
                None,
                None,
                format!("aggregator {id} started again from its state file"),
                serde_json::json!({"replica": id}),
            );
        }
        _ => {}
    }
    Ok(())
}

/// A line from a replica's decision log: a lease change, or a Region down for every service
/// (`region_wide`, reported once per change of state however many replicas log it).
fn log_line(line: &LeaseLine, wide: &mut BTreeMap<String, String>, events: &mut Events) {
    if line.line["event"] != "region_wide" {
        return lease_event(line, events);
    }
    let region = line.line["region"].as_str().unwrap_or("?").to_owned();
    let state = line.line["state"].as_str().unwrap_or("down").to_owned();
    let was = wide.get(&region).map_or("cleared", String::as_str);
    if was == state {
        return;
    }
    events.emit(
        "region_wide",
        Some(&region),
        None,
        line.line["reason"].as_str().unwrap_or_default().to_owned(),
        serde_json::json!({
            "services": line.line["services"], "state": state, "replica": line.replica,
        }),
    );
    wide.insert(region, state);
}

/// `lease_acquired` / `lease_lost` from a replica's decision log.
fn lease_event(line: &LeaseLine, events: &mut Events) {
    let name = line.line["event"].as_str().unwrap_or("lease");
    let holder = line.line["holder"].as_str().unwrap_or("?");
    let token = &line.line["token"];
    let reason = match (name, line.line["reason"].as_str()) {
        ("lease_acquired", _) => {
            format!("replica {} holds the lease (token {token})", line.replica)
        }
        (_, Some(why)) => format!(
            "replica {} lost the lease (token {token}): {why}",
            line.replica
        ),
        _ => format!("replica {} lost the lease (token {token})", line.replica),
    };
    events.emit(
        name,
        None,
        None,
        reason,
        serde_json::json!({"replica": line.replica, "holder": holder, "token": token, "reason": line.line["reason"]}),
    );
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
