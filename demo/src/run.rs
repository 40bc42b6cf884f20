//! Runs the whole fleet: status endpoints, links, agents, aggregator, faults, live view,
//! events, summary.

use crate::net::{serve_link, Destination, Network};
use crate::page::{self, PageState};
use crate::scenario::{DemoOptions, Fault};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use vantage_agent::daemon::{self, AgentSettings};
use vantage_agent::push::PushConfig;
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::config::AggregatorConfig;
use vantage_aggregator::service::{self, Aggregator, Snapshot};
use vantage_protocol::config::FleetConfig;

/// Something went wrong setting the fleet up.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("bad demo options: {0}")]
    Options(String),
    #[error("starting {what}: {message}")]
    Start { what: String, message: String },
}

fn start_err(what: impl Into<String>, e: impl std::fmt::Display) -> DemoError {
    DemoError::Start {
        what: what.into(),
        message: e.to_string(),
    }
}

/// One line of the event stream.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the start of the run.
    pub t: f64,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vantage: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// What happened to one fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultOutcome {
    pub fault: String,
    pub at: f64,
    /// Fault → `region_out`, for `fail`.
    pub detected_after: Option<f64>,
    /// Fault → the global endpoint stopped routing to the Region (its weight went to 0), as
    /// confirmed by connections routed elsewhere afterwards.
    pub traffic_moved_after: Option<f64>,
    /// Recovery → `region_in`, for `recover`.
    pub back_after: Option<f64>,
}

/// The run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub seconds: f64,
    pub faults: Vec<FaultOutcome>,
    pub transitions: usize,
    /// Transitions no fault explains (a Region out while healthy, in while failed).
    pub false_transitions: usize,
    /// Take-outs beyond one per `fail`.
    pub flaps: usize,
    pub alerts: usize,
    pub events: Vec<Event>,
}

impl DemoSummary {
    pub fn render(&self) -> String {
        let mut out = String::new();
        out += &format!("\nvantage demo summary ({:.0} s)\n", self.seconds);
        out += &format!(
            "{:<34} {:>12} {:>15} {:>14}\n",
            "fault", "detected", "traffic moved", "back in"
        );
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("+{s:.1} s"));
        for o in &self.faults {
            out += &format!(
                "{:<34} {:>12} {:>15} {:>14}\n",
                format!("{} @{:.0}s", o.fault, o.at),
                f(o.detected_after),
                f(o.traffic_moved_after),
                f(o.back_after)
            );
        }
        out += &format!(
            "transitions {}, false transitions {}, flaps {}, alerts {}\n",
            self.transitions, self.false_transitions, self.flaps, self.alerts
        );
        out += "Route 53's own health checks: about 30 s at best (fast 10 s checks x 3), then DNS TTL.\n";
        out
    }
}

/// Where a run's events go.
struct Events {
    start: Instant,
    file: Option<std::fs::File>,
    all: Vec<Event>,
    print: bool,
}

impl Events {
    fn emit(
        &mut self,
        event: &str,
        region: Option<&str>,
        vantage: Option<&str>,
        reason: String,
        detail: serde_json::Value,
    ) {
        let e = Event {
            t: self.start.elapsed().as_secs_f64(),
            event: event.to_owned(),
            region: region.map(str::to_owned),
            vantage: vantage.map(str::to_owned),
            reason,
            detail,
        };
        let line = serde_json::to_string(&e).unwrap_or_default();
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{line}");
        }
        if self.print {
            println!(
                "{:>6.1}s  {:<13} {:<16} {}",
                e.t,
                e.event,
                e.region.as_deref().or(e.vantage.as_deref()).unwrap_or(""),
                e.reason
            );
        }
        self.all.push(e);
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

fn fleet_text(
    options: &DemoOptions,
    urls: &BTreeMap<String, String>,
    global: &str,
    aggregator: &str,
    key_dir: &std::path::Path,
) -> String {
    let interval = format!("{}ms", options.probe_interval.as_millis());
    let mut t = format!(
        r#"
[fleet]
name = "demo-api"
report_interval = "{interval}"
[probe]
interval = "{interval}"
timeout = "3s"
first_byte_timeout = "2s"
[global]
url = "{global}"
[aggregator]
url = "{aggregator}"
[agents.auth]
key_id = "demo-{first}"
"#,
        first = options.vantages[0],
    );
    for r in &options.regions {
        t += &format!(
            "[[regions]]\nname = \"{r}\"\nstatus_url = \"{}\"\n",
            urls[r]
        );
    }
    // Each vantage signs with its own key, which may report for that vantage only.
    for v in &options.vantages {
        t += &format!("[[vantages]]\nregion = \"{v}\"\nkey_id = \"demo-{v}\"\n");
        t += &format!(
            "[aggregator.keys.\"demo-{v}\"]\nfile = {:?}\nvantages = [\"{v}\"]\n",
            key_dir.join(format!("{v}.key")).display().to_string()
        );
    }
    t
}

async fn bind() -> Result<TcpListener, DemoError> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| start_err("a loopback listener", e))
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
    let work = std::env::temp_dir().join(format!(
        "vantage-demo-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&work).map_err(|e| start_err("the work directory", e))?;
    let mut keys = BTreeMap::new();
    for v in &options.vantages {
        let key: String = (0..32)
            .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
            .collect();
        std::fs::write(work.join(format!("{v}.key")), &key)
            .map_err(|e| start_err("the agent keys", e))?;
        keys.insert(v.clone(), key);
    }

    // One real status endpoint per Region.
    let mut status_addrs = BTreeMap::new();
    for region in &options.regions {
        let config = vantage_status_endpoint::config::Config {
            region: Some(region.clone()),
            service_id: Some("demo-api".into()),
            ..Default::default()
        };
        let settings = config
            .validate()
            .map_err(|e| start_err(format!("status endpoint {region}"), e))?;
        let checks = vantage_status_endpoint::router::build_checks(&settings, None)
            .await
            .map_err(|e| start_err(format!("status endpoint {region}"), e))?;
        let router = vantage_status_endpoint::router::router(&settings, checks);
        let listener = bind().await?;
        status_addrs.insert(
            region.clone(),
            listener
                .local_addr()
                .map_err(|e| start_err("status endpoint", e))?,
        );
        let mut stopped = halted.clone();
        tokio::spawn(vantage_status_endpoint::router::run(
            router,
            listener,
            async move {
                let _ = stopped.changed().await;
            },
        ));
    }
    let net = Network::new(status_addrs.clone(), start);

    // Links: every vantage to every Region, and to the global endpoint.
    let mut urls: BTreeMap<String, (BTreeMap<String, String>, String)> = BTreeMap::new();
    for v in &options.vantages {
        let mut per_region = BTreeMap::new();
        for r in &options.regions {
            let l = bind().await?;
            per_region.insert(
                r.clone(),
                format!(
                    "http://{}/status",
                    l.local_addr().map_err(|e| start_err("link", e))?
                ),
            );
            tokio::spawn(serve_link(
                net.clone(),
                l,
                v.clone(),
                Destination::Region(r.clone()),
                halted.clone(),
            ));
        }
        let g = bind().await?;
        let global = format!(
            "http://{}/status",
            g.local_addr().map_err(|e| start_err("link", e))?
        );
        tokio::spawn(serve_link(
            net.clone(),
            g,
            v.clone(),
            Destination::Global,
            halted.clone(),
        ));
        urls.insert(v.clone(), (per_region, global));
    }

    // The aggregator, dry-run.
    let agg_listener = bind().await?;
    let agg_url = format!(
        "http://{}",
        agg_listener
            .local_addr()
            .map_err(|e| start_err("aggregator", e))?
    );
    let first = &urls[&options.vantages[0]];
    let fleet_for = |v: &str| {
        let (per_region, global) = &urls[v];
        fleet_text(&options, per_region, global, &agg_url, &work)
    };
    let agg_fleet = FleetConfig::parse(
        &fleet_text(&options, &first.0, &first.1, &agg_url, &work),
        "demo fleet",
    )
    .map_err(|e| start_err("the aggregator", e))?;
    let agg_config =
        AggregatorConfig::from_fleet(agg_fleet).map_err(|e| start_err("the aggregator", e))?;
    let evaluate_every = agg_config.evaluate_every;
    let aggregator = Arc::new(
        Aggregator::new(agg_config, DryRun::new(), None)
            .map_err(|e| start_err("the aggregator", e))?,
    );
    tokio::spawn(service::serve(
        aggregator.clone(),
        agg_listener,
        halted.clone(),
    ));

    // One agent per vantage.
    let (agent_stop, agent_signals) = watch::channel(0u32);
    let mut agents = Vec::new();
    for v in &options.vantages {
        let fleet = FleetConfig::parse(&fleet_for(v), &format!("demo fleet ({v})"))
            .map_err(|e| start_err(format!("agent {v}"), e))?;
        let push = PushConfig {
            aggregator: agg_url.parse().map_err(|e| start_err("agent", e))?,
            key_id: format!("demo-{v}"),
            key: keys[v].clone().into_bytes(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..PushConfig::default()
        };
        let settings = AgentSettings {
            fleet,
            vantage: v.clone(),
            agent_id: format!("vantage-{v}"),
            push,
            spool: None,
            metrics_listener: None,
            run_for: None,
        };
        agents.push(tokio::spawn(daemon::run(settings, agent_signals.clone())));
    }

    let page_state = Arc::new(Mutex::new(PageState {
        status_endpoints: status_addrs.clone(),
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
            evaluate_every
        ),
        serde_json::Value::Null,
    );

    let mut faults = options.faults.clone();
    faults.sort_by_key(|f| f.at);
    let mut next_fault = 0;
    // Evaluate just after each interval's reports have landed (agents collect an interval a
    // quarter interval after it ends), so every evaluation sees the same complete intervals.
    let phase = {
        let now_ms = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let every_ms = evaluate_every.as_millis().max(1) as u64;
        let target = every_ms * 6 / 10;
        Duration::from_millis((target + every_ms - now_ms % every_ms) % every_ms)
    };
    let mut tick = tokio::time::interval_at(start + phase, evaluate_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut weights: BTreeMap<String, u8> = BTreeMap::new();
    // Failed Region → (time its weight went to 0, connections routed in all then, to it then,
    // traffic_moved reported).
    let mut zeroed: BTreeMap<String, (f64, u64, u64, bool)> = BTreeMap::new();
    loop {
        let next_fault_at = faults.get(next_fault).map(|f| start + f.at);
        let end_at = options.duration.map(|d| start + d);
        tokio::select! {
            _ = tick.tick() => {}
            _ = async { match next_fault_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                let s = &faults[next_fault];
                match &s.fault {
                    Fault::Fail { region } => net.faults.fail(region),
                    Fault::Recover { region } => net.faults.recover(region),
                    Fault::Slow { region, extra } => net.faults.slow(region, *extra),
                    Fault::Flaky { vantage, ratio } => net.faults.flaky(vantage, *ratio),
                }
                let (region, vantage) = match &s.fault {
                    Fault::Flaky { vantage, .. } => (None, Some(vantage.as_str())),
                    other => (Some(other.subject()), None),
                };
                events.emit("fault", region, vantage, s.fault.describe(), serde_json::Value::Null);
                next_fault += 1;
                continue;
            }
            _ = async { match end_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => break,
            _ = stop.changed() => break,
        }
        let snapshot = aggregator.evaluate(SystemTime::now()).await;
        let new_weights: BTreeMap<String, u8> = snapshot
            .decision
            .regions
            .iter()
            .map(|r| (r.region.clone(), if r.in_service { r.weight } else { 0 }))
            .collect();
        net.routing.set_weights(new_weights.clone());
        for t in &snapshot.decision.transitions {
            let name = if t.in_service {
                "region_in"
            } else {
                "region_out"
            };
            events.emit(
                name,
                Some(&t.region),
                None,
                t.reason.clone(),
                serde_json::Value::Null,
            );
        }
        for a in &snapshot.decision.alerts {
            events.emit(
                "alert",
                a.region.as_deref(),
                None,
                a.message.clone(),
                serde_json::json!({"kind": a.kind}),
            );
        }
        if new_weights != weights {
            events.emit(
                "weights",
                None,
                None,
                format!("{new_weights:?}"),
                serde_json::to_value(&new_weights).unwrap_or_default(),
            );
            weights = new_weights;
        }
        if !snapshot.reconcile.changes.is_empty() {
            let changes: Vec<String> = snapshot
                .reconcile
                .changes
                .iter()
                .map(|c| c.to_string())
                .collect();
            events.emit(
                "plan_applied",
                None,
                None,
                changes.join("; "),
                serde_json::to_value(&snapshot.reconcile.changes).unwrap_or_default(),
            );
        }
        // Traffic has moved once the failed Region's weight is 0 and the global endpoint has
        // since routed a few connections, none of them to it.
        let routed = net.routing.routed();
        let total = net.routing.total();
        for r in &options.regions {
            let out = weights.get(r) == Some(&0);
            let to_r = routed.get(r).map_or(0, |(n, _)| *n);
            if !(net.faults.is_failed(r) && out) {
                zeroed.remove(r);
                continue;
            }
            let (at, total_then, to_r_then, reported) = zeroed.entry(r.clone()).or_insert((
                start.elapsed().as_secs_f64(),
                total,
                to_r,
                false,
            ));
            if !*reported && total >= *total_then + 3 && to_r == *to_r_then {
                *reported = true;
                let since = total - *total_then;
                let at = *at;
                events.emit(
                    "traffic_moved",
                    Some(r),
                    None,
                    format!("weight 0 since t = {at:.1} s; {since} global-endpoint connections since, none to {r}"),
                    serde_json::json!({"moved_at": at, "connections_since": since}),
                );
            }
        }
        let view = state_json(&aggregator, &snapshot, &routed, start, &events.all);
        if outputs.live {
            print!("{}", live_view(&view));
            let _ = std::io::stdout().flush();
        }
        lock(&page_state).state = view;
    }

    // Stop everything, agents first so their last reports are in.
    let _ = agent_stop.send(1);
    for a in agents {
        let _ = tokio::time::timeout(Duration::from_secs(10), a).await;
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
    let _ = std::fs::remove_dir_all(&work);
    Ok(DemoSummary {
        events: events.all,
        ..summary
    })
}

fn state_json(
    aggregator: &Aggregator<DryRun>,
    snapshot: &Snapshot,
    routed: &BTreeMap<String, (u64, u64)>,
    start: Instant,
    events: &[Event],
) -> serde_json::Value {
    let view = aggregator.window_view(SystemTime::now(), 0.99, 0.5);
    let total_routed: u64 = routed.values().map(|(n, _)| n).sum();
    let traffic = &snapshot.global_traffic;
    let answered: u64 = traffic.values().sum();
    let regions: Vec<serde_json::Value> = snapshot
        .decision
        .regions
        .iter()
        .map(|r| {
            let vantages: serde_json::Map<String, serde_json::Value> = view
                .iter()
                .find(|o| o.region == r.region)
                .map(|o| {
                    o.vantages
                        .iter()
                        .map(|v| {
                            (v.vantage.clone(), serde_json::json!({
                                "verdict": r.vantages.get(&v.vantage),
                                "p50_ms": v.weight_latency.map(|d| d.as_secs_f64() * 1e3),
                                "p99_ms": v.limit_latency.map(|d| d.as_secs_f64() * 1e3),
                                "attempts": v.attempts,
                                "failures": v.failures,
                            }))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let share = if answered > 0 {
                traffic.get(&r.region).copied().unwrap_or(0) as f64 / answered as f64
            } else {
                0.0
            };
            serde_json::json!({
                "region": r.region, "verdict": r.verdict, "in_service": r.in_service, "weight": r.weight,
                "reason": r.reason, "vantages": vantages, "traffic_share": share,
            })
        })
        .collect();
    let recent: Vec<&Event> = events
        .iter()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    serde_json::json!({
        "t": start.elapsed().as_secs_f64(),
        "regions": regions,
        "routed": total_routed,
        "events": recent,
        "alerts": snapshot.decision.alerts,
    })
}

fn live_view(state: &serde_json::Value) -> String {
    let mut out = String::from("\x1b[2J\x1b[H");
    out += &format!(
        "vantage demo  t = {:.1} s   (dry-run; Ctrl-C to stop)\n\n",
        state["t"].as_f64().unwrap_or(0.0)
    );
    out += &format!(
        "{:<16} {:<8} {:<8} {:>6} {:>8}  p50/p99 ms by vantage\n",
        "Region", "verdict", "service", "weight", "traffic"
    );
    for r in state["regions"].as_array().into_iter().flatten() {
        let lat: Vec<String> = r["vantages"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(v, x)| {
                let ms = |k: &str| x[k].as_f64().map_or("-".into(), |m| format!("{m:.0}"));
                format!("{v} {}/{}", ms("p50_ms"), ms("p99_ms"))
            })
            .collect();
        out += &format!(
            "{:<16} {:<8} {:<8} {:>6} {:>7.0}%  {}\n",
            r["region"].as_str().unwrap_or(""),
            r["verdict"].as_str().unwrap_or(""),
            if r["in_service"].as_bool().unwrap_or(false) {
                "in"
            } else {
                "OUT"
            },
            r["weight"],
            r["traffic_share"].as_f64().unwrap_or(0.0) * 100.0,
            lat.join("  ")
        );
    }
    out += "\nlast decisions:\n";
    for e in state["events"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let mut reason = e["reason"].as_str().unwrap_or("").to_owned();
        reason.truncate(110);
        out += &format!(
            "  {:>6.1}s {:<13} {:<15} {}\n",
            e["t"].as_f64().unwrap_or(0.0),
            e["event"].as_str().unwrap_or(""),
            e["region"].as_str().or(e["vantage"].as_str()).unwrap_or(""),
            reason
        );
    }
    out
}

/// The figures of a run, from its events.
pub fn summarize(options: &DemoOptions, events: &[Event], elapsed: Duration) -> DemoSummary {
    let after = |from: f64, name: &str, region: &str| {
        events
            .iter()
            .find(|e| e.t >= from && e.event == name && e.region.as_deref() == Some(region))
            .map(|e| e.t - from)
    };
    let mut outcomes = Vec::new();
    for s in &options.faults {
        let at = s.at.as_secs_f64();
        let mut o = FaultOutcome {
            fault: s.fault.describe(),
            at,
            detected_after: None,
            traffic_moved_after: None,
            back_after: None,
        };
        match &s.fault {
            Fault::Fail { region } => {
                o.detected_after = after(at, "region_out", region);
                o.traffic_moved_after = events
                    .iter()
                    .find(|e| {
                        e.t >= at
                            && e.event == "traffic_moved"
                            && e.region.as_deref() == Some(region)
                    })
                    .and_then(|e| e.detail["moved_at"].as_f64())
                    .map(|moved| (moved - at).max(0.0));
            }
            Fault::Recover { region } => o.back_after = after(at, "region_in", region),
            _ => {}
        }
        outcomes.push(o);
    }
    // Replay faults against transitions to find the ones no fault explains.
    let mut failed: BTreeMap<&str, bool> = BTreeMap::new();
    let mut false_transitions = 0;
    let mut outs: BTreeMap<&str, usize> = BTreeMap::new();
    let mut transitions = 0;
    let mut timeline: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.event.as_str(), "fault" | "region_out" | "region_in"))
        .collect();
    timeline.sort_by(|a, b| a.t.total_cmp(&b.t));
    for e in timeline {
        let region = e.region.as_deref().unwrap_or("");
        match e.event.as_str() {
            "fault" if e.reason.starts_with("fail ") => {
                failed.insert(region, true);
            }
            "fault" if e.reason.starts_with("recover ") => {
                failed.insert(region, false);
            }
            "region_out" => {
                transitions += 1;
                *outs.entry(region).or_default() += 1;
                if !failed.get(region).copied().unwrap_or(false) {
                    false_transitions += 1;
                }
            }
            "region_in" => {
                transitions += 1;
                if failed.get(region).copied().unwrap_or(false) {
                    false_transitions += 1;
                }
            }
            _ => {}
        }
    }
    let fails: BTreeMap<&str, usize> = options
        .faults
        .iter()
        .filter_map(|s| match &s.fault {
            Fault::Fail { region } => Some(region.as_str()),
            _ => None,
        })
        .fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r).or_default() += 1;
            m
        });
    let flaps = outs
        .iter()
        .map(|(r, n)| n.saturating_sub(fails.get(r).copied().unwrap_or(0)))
        .sum();
    DemoSummary {
        seconds: elapsed.as_secs_f64(),
        faults: outcomes,
        transitions,
        false_transitions,
        flaps,
        alerts: events.iter().filter(|e| e.event == "alert").count(),
        events: Vec::new(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
