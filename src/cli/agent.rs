//! `vantage agent`: turns flags, environment and the fleet file into [`AgentSettings`], then
//! runs the daemon, or, under AWS Lambda, one bounded run per invocation. With
//! `aggregator.replicas` in the fleet file the agent delivers every report to every replica;
//! `--aggregator-url`, which replaces the one aggregator's URL, is then refused rather than
//! quietly delivering to one replica.

use super::{AgentArgs, EXIT_BAD_INPUT};
use anyhow::{anyhow, bail, Context as _};
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::watch;
use vantage_agent::daemon::{self, AgentError, AgentSettings};
use vantage_agent::identity::parse_agent_id;
use vantage_agent::push::{PushConfig, QueueSummary, ReplicaTarget};
use vantage_agent::reload::FleetReload;
use vantage_agent::spool::SpoolConfig;
use vantage_protocol::auth::check_key;
use vantage_protocol::config::FleetConfig;
use vantage_runtime::reload::{hangup_count, ReloadTrigger};

/// Lambda: probe this long per invocation unless configured (a one-minute schedule).
const DEFAULT_LAMBDA_RUN_FOR: Duration = Duration::from_secs(50);
/// `--watch-config`: how often the fleet file's modification time is looked at.
const WATCH_CONFIG_POLL: Duration = Duration::from_secs(2);
/// Lambda: time kept back from the invocation deadline for reporting and flushing.
const LAMBDA_FLUSH_RESERVE: Duration = Duration::from_secs(10);

/// Settings that do not change between Lambda invocations.
#[derive(Clone)]
struct Prepared {
    fleet: FleetConfig,
    vantage: String,
    agent_id: String,
    push: PushConfig,
    replicas: Vec<ReplicaTarget>,
    spool: Option<SpoolConfig>,
    run_for: Option<Duration>,
}

impl Prepared {
    fn settings(
        &self,
        metrics_listener: Option<tokio::net::TcpListener>,
        run_for: Option<Duration>,
    ) -> AgentSettings {
        AgentSettings {
            fleet: self.fleet.clone(),
            vantage: self.vantage.clone(),
            agent_id: self.agent_id.clone(),
            push: self.push.clone(),
            replicas: self.replicas.clone(),
            spool: self.spool.clone(),
            metrics_listener,
            run_for,
        }
    }
}

fn load_fleet(args: &AgentArgs) -> anyhow::Result<FleetConfig> {
    if let Some(path) = &args.config {
        return Ok(FleetConfig::load(path)?);
    }
    if let Ok(text) = std::env::var("VANTAGE_CONFIG_TOML") {
        return Ok(FleetConfig::parse(&text, "VANTAGE_CONFIG_TOML")?);
    }
    bail!("no fleet file: pass --config FILE (or set VANTAGE_CONFIG, or VANTAGE_CONFIG_TOML to its contents)")
}

fn load_key(fleet: &FleetConfig, key_id: &str) -> anyhow::Result<Vec<u8>> {
    let auth = &fleet.agents.auth;
    let var = auth.key_env.as_deref().unwrap_or("VANTAGE_AGENT_KEY");
    let key = match (std::env::var(var), &auth.key_file) {
        (Ok(k), _) => k.into_bytes(),
        (Err(_), Some(path)) => {
            let mut k = std::fs::read(path)
                .with_context(|| format!("reading agents.auth.key_file {}", path.display()))?;
            while k.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                k.pop();
            }
            k
        }
        (Err(_), None) => bail!(
            "no agent key: set {var} (or agents.auth.key_file in the fleet file) to the HMAC key for key id {key_id:?}"
        ),
    };
    check_key(&key).map_err(|e| anyhow!("agent key: {e}"))?;
    Ok(key)
}

fn prepare(args: &AgentArgs) -> anyhow::Result<Prepared> {
    let fleet = load_fleet(args)?;
    let vantage = args
        .vantage
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .ok_or_else(|| {
            anyhow!("no vantage: pass --vantage REGION (or set VANTAGE_VANTAGE or AWS_REGION)")
        })?;
    let entry = fleet.vantage(&vantage).ok_or_else(|| {
        let known: Vec<&str> = fleet
            .vantages
            .iter()
            .map(|v| v.region.get_ref().as_str())
            .collect();
        anyhow!(
            "vantage {vantage:?} is not in the fleet file; known: {}",
            known.join(", ")
        )
    })?;
    // The flag is checked as it is parsed; the fleet file's id (or the default) here.
    let agent_id = parse_agent_id(&args.agent_id.clone().unwrap_or_else(|| entry.agent_id()))?;
    let replicas = replica_targets(&fleet, args.aggregator_url.as_deref())?;
    let aggregator_text = args
        .aggregator_url
        .clone()
        .or_else(|| {
            fleet
                .aggregator
                .replica_endpoints()
                .into_iter()
                .next()
                .map(|e| e.url)
        })
        .ok_or_else(|| anyhow!("the fleet file names no aggregator"))?;
    // With replicas this is only a placeholder: each replica's URL is in `replicas`.
    let aggregator = vantage_probe::spec::parse_url(&aggregator_text)
        .map_err(|e| anyhow!("aggregator URL: {e}"))?;
    // This vantage's own key id, which the aggregator lets report for this vantage only.
    let key_id = fleet.agent_key_id(entry).to_owned();
    let key = load_key(&fleet, &key_id)?;
    let spool = if args.no_spool {
        None
    } else {
        let section = &fleet.agents.spool;
        let mut spool = SpoolConfig::from_section(section);
        // One agent per spool directory: the default is named after the agent.
        spool.dir = args
            .spool_dir
            .clone()
            .or_else(|| section.dir.clone())
            .unwrap_or_else(|| std::env::temp_dir().join(format!("vantage-spool-{agent_id}")));
        Some(spool)
    };
    let push = PushConfig {
        aggregator,
        key_id,
        key,
        ca_file: args.aggregator_ca_file.clone(),
        client_cert: match (&args.aggregator_client_cert, &args.aggregator_client_key) {
            (Some(cert_file), Some(key_file)) => Some(vantage_agent::push::ClientCertFiles {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            }),
            _ => None,
        },
        ..PushConfig::default()
    };
    if replicas.is_empty() {
        push.check()
    } else {
        vantage_agent::push::check_replicas(&push, &replicas)
    }
    .map_err(|e| anyhow!("report delivery: {e}"))?;
    // Compile every target now, so a bad fleet file fails before anything starts.
    vantage_agent::fleet::build_vantage_targets(&fleet, &vantage)?;
    Ok(Prepared {
        run_for: args.run_for,
        fleet,
        vantage,
        agent_id,
        push,
        replicas,
        spool,
    })
}

/// The replicas of `aggregator.replicas`, with the fleet file's ids; empty for the single
/// `aggregator.url`. `--aggregator-url` replaces one URL, so with replicas it is refused:
/// delivering to one replica only would leave the others voting on nothing.
fn replica_targets(
    fleet: &FleetConfig,
    url_flag: Option<&str>,
) -> anyhow::Result<Vec<ReplicaTarget>> {
    let endpoints = fleet.aggregator.replica_endpoints();
    let mut replicas = Vec::new();
    for e in &endpoints {
        let Some(id) = &e.id else { continue };
        let aggregator = vantage_probe::spec::parse_url(&e.url)
            .map_err(|err| anyhow!("aggregator replica {id:?}: URL: {err}"))?;
        replicas.push(ReplicaTarget {
            id: id.clone(),
            aggregator,
        });
    }
    if url_flag.is_some() && !replicas.is_empty() {
        let ids: Vec<&str> = replicas.iter().map(|r| r.id.as_str()).collect();
        bail!(
            "--aggregator-url (or VANTAGE_AGGREGATOR_URL) replaces the one aggregator's URL, but \
             the fleet file lists {} aggregator replicas ({}) and the agent delivers every report \
             to each: remove it and change aggregator.replicas[].url in the fleet file instead",
            ids.len(),
            ids.join(", ")
        );
    }
    Ok(replicas)
}

/// The closing line: totals, then each replica's delivery when there are replicas.
fn summary_line(summary: &daemon::AgentSummary) -> String {
    let mut line = format!(
        "vantage agent: {} probes, {} reports, {} delivered, {} left in the spool",
        summary.probes, summary.reports, summary.push.delivered, summary.push.left_in_spool
    );
    for QueueSummary { replica, push } in &summary.replicas {
        line.push_str(&format!(
            "; replica {}: {} delivered, {} left in the spool",
            replica.as_deref().unwrap_or("-"),
            push.delivered,
            push.left_in_spool
        ));
    }
    line
}

pub async fn run(args: AgentArgs) -> ExitCode {
    if args.watch_config && args.config.is_none() {
        eprintln!("vantage: --watch-config needs the fleet file as --config FILE (text in VANTAGE_CONFIG_TOML cannot change)");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let prepared = match prepare(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vantage: {e:#}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return run_lambda(prepared).await;
    }
    let listener = match args.metrics_listen {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("vantage: cannot listen for metrics on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let settings = prepared.settings(listener, prepared.run_for);
    // SIGHUP rereads the fleet file (from --config: text from the environment cannot change),
    // and is always handled, so that it never kills an agent.
    let hangups = hangup_count();
    let reload = args.config.clone().map(|path| {
        let trigger = ReloadTrigger::new(hangups);
        let trigger = if args.watch_config {
            trigger.watching(vec![path.clone()], WATCH_CONFIG_POLL)
        } else {
            trigger
        };
        FleetReload { path, trigger }
    });
    let signals = vantage_runtime::shutdown::signal_count();
    match daemon::run_with_reload(settings, signals, reload).await {
        Ok(summary) => {
            eprintln!("{}", summary_line(&summary));
            ExitCode::SUCCESS
        }
        Err(
            e @ (AgentError::Config(_) | AgentError::UnknownVantage(_) | AgentError::Probe { .. }),
        ) => {
            eprintln!("vantage: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(e) => {
            eprintln!("vantage: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One bounded agent run per invocation, ending before the invocation's deadline.
async fn run_lambda(prepared: Prepared) -> ExitCode {
    let run_for = prepared
        .run_for
        .or(prepared.fleet.agents.lambda_run_for.map(|d| d.0))
        .unwrap_or(DEFAULT_LAMBDA_RUN_FOR);
    let handler = lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let prepared = prepared.clone();
            async move {
                let left = event
                    .context
                    .deadline()
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                let budget = run_for.min(left.saturating_sub(LAMBDA_FLUSH_RESERVE));
                if budget.is_zero() {
                    return Err(lambda_runtime::Error::from(format!(
                    "invocation leaves {left:?}: raise the function timeout above run_for + {LAMBDA_FLUSH_RESERVE:?}"
                )));
                }
                let (_signals, rx) = watch::channel(0u32);
                let summary = daemon::run(prepared.settings(None, Some(budget)), rx)
                    .await
                    .map_err(|e| lambda_runtime::Error::from(e.to_string()))?;
                let mut answer = serde_json::json!({
                    "probes": summary.probes,
                    "missed_slots": summary.missed_slots,
                    "reports": summary.reports,
                    "delivered": summary.push.delivered,
                    "left_in_spool": summary.push.left_in_spool,
                });
                // With replicas, each one's delivery; `delivered` and `left_in_spool` above
                // are then sums over them.
                if !summary.replicas.is_empty() {
                    answer["replicas"] = summary
                        .replicas
                        .iter()
                        .map(|q| {
                            serde_json::json!({
                                "id": q.replica,
                                "delivered": q.push.delivered,
                                "left_in_spool": q.push.left_in_spool,
                            })
                        })
                        .collect();
                }
                Ok::<_, lambda_runtime::Error>(answer)
            }
        },
    );
    match lambda_runtime::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage: Lambda runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
