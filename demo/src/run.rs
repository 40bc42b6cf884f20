//! Runs the whole fleet: start it ([`crate::start`]), apply the faults on schedule
//! ([`crate::schedule`]), evaluate and turn each decision into events ([`crate::decisions`]),
//! show it ([`crate::view`], [`crate::events`]), stop it and summarise ([`crate::summary`]).

use crate::decisions::{evaluation_ticks, Decisions};
use crate::events::Events;
use crate::net::Network;
use crate::page::{self, PageState};
use crate::scenario::DemoOptions;
use crate::schedule::FaultSchedule;
use crate::start::{start_agents, start_aggregator, start_links, start_regions, WorkDir};
use crate::view::{live_view, state_json};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use vantage_runtime::sync::lock;

pub use crate::events::Event;
pub use crate::summary::{summarize, DemoSummary, FaultOutcome};

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
    let agg = start_aggregator(&options, &links, &work, &halted).await?;
    let agents = start_agents(&options, &links, &agg.url, &work)?;

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
    events.emit(
        "start",
        None,
        None,
        format!(
            "{} Regions, {} vantages, probes every {:?}, decisions every {:?} (dry-run)",
            options.regions.len(),
            options.vantages.len(),
            options.probe_interval,
            agg.evaluate_every
        ),
        serde_json::Value::Null,
    );

    let mut faults = FaultSchedule::new(&options.faults);
    let mut tick = evaluation_ticks(start, agg.evaluate_every);
    let mut decisions = Decisions::new(start);
    let end_at = options.duration.map(|d| start + d);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = sleep_until_some(faults.next_at(start)) => {
                faults.apply_next(&net, &mut events);
                continue;
            }
            _ = sleep_until_some(end_at) => break,
            _ = stop.changed() => break,
        }
        let snapshot = agg.aggregator.evaluate(SystemTime::now()).await;
        let routed = decisions.record(&snapshot, &options.regions, &net, &mut events);
        let view = state_json(&agg.aggregator, &snapshot, &routed, start, &events.all);
        if outputs.live {
            print!("{}", live_view(&view));
            let _ = std::io::stdout().flush();
        }
        lock(&page_state).state = view;
    }

    // Stop everything, agents first so their last reports are in.
    agents.stop().await;
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

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
