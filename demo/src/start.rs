//! Starting the fleet on loopback: a work directory holding each vantage's agent key and each
//! replica's state file, a real status endpoint per unit (each service in each simulated
//! Region; [`crate::layout`]), the links from every vantage to every unit and to each
//! service's global endpoint, the aggregator replicas' configuration
//! (started by [`crate::replicas`]) and one real agent per vantage delivering to every
//! replica, each from a fleet file written for it (the agents see their own links; the
//! aggregator sees the Regions). Everything started here stops when `halted` turns true,
//! agents when [`Agents`] is told to.

use crate::layout::{fleet_text, Links, CONTROL_UNIT};
use crate::net::{serve_link, Destination, Network};
use crate::run::{start_err, DemoError};
use crate::scenario::DemoOptions;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vantage_agent::daemon::{self, AgentError, AgentSettings, AgentSummary};
use vantage_agent::push::{PushConfig, ReplicaTarget};
use vantage_aggregator::config::AggregatorConfig;
use vantage_protocol::config::FleetConfig;

/// The run's scratch directory with one agent key per vantage in it; removed on drop.
pub(crate) struct WorkDir {
    pub(crate) dir: PathBuf,
    /// Vantage → the HMAC key its agent signs with; the aggregator accepts each key for its
    /// own vantage only, as a real fleet should be set up.
    keys: BTreeMap<String, String>,
}

impl WorkDir {
    pub(crate) fn create(vantages: &[String]) -> Result<WorkDir, DemoError> {
        let dir = std::env::temp_dir().join(format!(
            "vantage-demo-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| start_err("the work directory", e))?;
        let mut keys = BTreeMap::new();
        for v in vantages {
            let key: String = (0..32)
                .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
                .collect();
            std::fs::write(dir.join(format!("{v}.key")), &key)
                .map_err(|e| start_err("the agent keys", e))?;
            keys.insert(v.clone(), key);
        }
        Ok(WorkDir { dir, keys })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The running agents.
pub(crate) struct Agents {
    stop: watch::Sender<u32>,
    tasks: Vec<JoinHandle<Result<AgentSummary, AgentError>>>,
}

impl Agents {
    /// Asks every agent to finish its interval and report, and waits for them all, `patience`
    /// at most.
    pub(crate) async fn stop(self, patience: Duration) {
        let _ = self.stop.send(1);
        let deadline = tokio::time::Instant::now() + patience;
        for a in self.tasks {
            let _ = tokio::time::timeout_at(deadline, a).await;
        }
    }
}

pub(crate) async fn bind() -> Result<TcpListener, DemoError> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| start_err("a loopback listener", e))
}

/// One real status endpoint per unit, and the vantages' control target; returns where each
/// listens, by unit key ([`CONTROL_UNIT`] for the control target).
pub(crate) async fn start_regions(
    options: &DemoOptions,
    halted: &watch::Receiver<bool>,
) -> Result<BTreeMap<String, SocketAddr>, DemoError> {
    let mut status_addrs = BTreeMap::new();
    for unit in options.units() {
        let service = unit
            .service
            .clone()
            .unwrap_or_else(|| crate::layout::SINGLE_API.into());
        let addr = start_status_endpoint(&unit.key, &unit.region, service, halted).await?;
        status_addrs.insert(unit.key.clone(), addr);
    }
    let control =
        start_status_endpoint(CONTROL_UNIT, CONTROL_UNIT, CONTROL_UNIT.into(), halted).await?;
    status_addrs.insert(CONTROL_UNIT.to_owned(), control);
    Ok(status_addrs)
}

async fn start_status_endpoint(
    key: &str,
    region: &str,
    service: String,
    halted: &watch::Receiver<bool>,
) -> Result<SocketAddr, DemoError> {
    let what = || format!("status endpoint {key}");
    let config = vantage_status_endpoint::config::Config {
        region: Some(region.to_owned()),
        service_id: Some(service),
        ..Default::default()
    };
    let settings = config.validate().map_err(|e| start_err(what(), e))?;
    let checks = vantage_status_endpoint::router::build_checks(&settings, None)
        .await
        .map_err(|e| start_err(what(), e))?;
    let router = vantage_status_endpoint::router::router(&settings, checks);
    let listener = bind().await?;
    let addr = listener
        .local_addr()
        .map_err(|e| start_err("status endpoint", e))?;
    let mut stopped = halted.clone();
    tokio::spawn(vantage_status_endpoint::router::run(
        router,
        listener,
        async move {
            let _ = stopped.changed().await;
        },
    ));
    Ok(addr)
}

/// Links: every vantage to every unit, and to each service's global endpoint. Vantage → its
/// links.
pub(crate) async fn start_links(
    options: &DemoOptions,
    net: &Arc<Network>,
    halted: &watch::Receiver<bool>,
) -> Result<BTreeMap<String, Links>, DemoError> {
    let mut links = BTreeMap::new();
    let url = |l: &TcpListener| -> Result<String, DemoError> {
        Ok(format!(
            "http://{}/status",
            l.local_addr().map_err(|e| start_err("link", e))?
        ))
    };
    for v in &options.vantages {
        let mut per_unit = BTreeMap::new();
        for unit in options.units() {
            let l = bind().await?;
            per_unit.insert(unit.key.clone(), url(&l)?);
            tokio::spawn(serve_link(
                net.clone(),
                l,
                v.clone(),
                Destination::Region(unit.key),
                halted.clone(),
            ));
        }
        let mut global = BTreeMap::new();
        for (service, units) in options.units_by_service() {
            let g = bind().await?;
            global.insert(service, url(&g)?);
            tokio::spawn(serve_link(
                net.clone(),
                g,
                v.clone(),
                Destination::Global(units),
                halted.clone(),
            ));
        }
        links.insert(
            v.clone(),
            Links {
                per_unit,
                global,
                controls: BTreeMap::new(),
            },
        );
    }
    // Each vantage's control target, through its own link (its faults apply).
    let mut controls = BTreeMap::new();
    for v in &options.vantages {
        let l = bind().await?;
        controls.insert(v.clone(), url(&l)?);
        tokio::spawn(serve_link(
            net.clone(),
            l,
            v.clone(),
            Destination::Region(CONTROL_UNIT.to_owned()),
            halted.clone(),
        ));
    }
    for l in links.values_mut() {
        l.controls = controls.clone();
    }
    Ok(links)
}

/// Each replica's configuration (ids `1`..`N`, in order), from the fleet file the aggregator
/// sees: the Regions' links as seen from the first vantage, the replicas' URLs, and a state
/// file per replica in the work directory. Also how often they decide.
pub(crate) fn replica_configs(
    options: &DemoOptions,
    links: &BTreeMap<String, Links>,
    urls: &[(String, String)],
    work: &WorkDir,
) -> Result<Vec<AggregatorConfig>, DemoError> {
    let first = &links[&options.vantages[0]];
    let text = fleet_text(
        options,
        first,
        &aggregator_section(options, urls),
        &work.dir,
    );
    let mut configs = Vec::new();
    for (id, _) in urls {
        let what = || format!("aggregator {id}");
        let fleet = FleetConfig::parse(&text, "demo fleet").map_err(|e| start_err(what(), e))?;
        let mut config = AggregatorConfig::from_fleet(fleet).map_err(|e| start_err(what(), e))?;
        if urls.len() > 1 {
            config = config
                .for_replica(Some(id))
                .map_err(|e| start_err(what(), e))?;
        }
        config.state_file = Some(crate::replicas::state_file(&work.dir, id));
        configs.push(config);
    }
    Ok(configs)
}

/// The fleet file's `[aggregator]` entries: one URL, or the replicas, each placed in one of
/// the demo's Regions in turn.
fn aggregator_section(options: &DemoOptions, urls: &[(String, String)]) -> String {
    match urls {
        [(_, url)] => format!("url = \"{url}\"\n"),
        _ => {
            let entries: Vec<String> = urls
                .iter()
                .enumerate()
                .map(|(i, (id, url))| {
                    let region = &options.regions[i % options.regions.len()];
                    format!("  {{ id = \"{id}\", region = \"{region}\", url = \"{url}\" }},\n")
                })
                .collect();
            format!("replicas = [\n{}]\n", entries.concat())
        }
    }
}

/// One agent per vantage, reporting to every replica (`urls`: id and base URL) with short
/// backoffs and no spool (undelivered reports wait in memory, one queue per replica).
pub(crate) fn start_agents(
    options: &DemoOptions,
    links: &BTreeMap<String, Links>,
    urls: &[(String, String)],
    work: &WorkDir,
) -> Result<Agents, DemoError> {
    let (stop, signals) = watch::channel(0u32);
    let mut tasks = Vec::new();
    let aggregator_url = &urls[0].1;
    let replicas = if urls.len() > 1 {
        urls.iter()
            .map(|(id, url)| {
                Ok(ReplicaTarget {
                    id: id.clone(),
                    aggregator: url.parse().map_err(|e| start_err("agent", e))?,
                })
            })
            .collect::<Result<Vec<_>, DemoError>>()?
    } else {
        Vec::new()
    };
    for v in &options.vantages {
        let text = fleet_text(
            options,
            &links[v],
            &aggregator_section(options, urls),
            &work.dir,
        );
        let fleet = FleetConfig::parse(&text, &format!("demo fleet ({v})"))
            .map_err(|e| start_err(format!("agent {v}"), e))?;
        let push = PushConfig {
            aggregator: aggregator_url.parse().map_err(|e| start_err("agent", e))?,
            key_id: format!("demo-{v}"),
            key: work.keys[v].clone().into_bytes(),
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
            replicas: replicas.clone(),
        };
        tasks.push(tokio::spawn(daemon::run(settings, signals.clone())));
    }
    Ok(Agents { stop, tasks })
}
