//! The aggregator replicas of a run (`--aggregators N`, ids `1`..`N`): each its own
//! [`Aggregator`] with the dry-run backend, its own API listener (the address agents deliver
//! to, kept across a restart), its own state file in the run's work directory and its own
//! decision log, all fed by the same agents. The run evaluates every running replica inline at
//! the same instants (one replica is exactly today's single aggregator); with more than one,
//! all share one in-memory lease store and each takes a step of its lease keeper
//! (`Aggregator::lease_step`) before deciding, so that one at a time writes weights.
//!
//! `--kill-aggregator` stops a replica's API and its evaluations (agents then back off and
//! queue for it; its Route 53 votes freeze; a lease it held is not released, as in a crash, so
//! another replica takes it only once it has expired); `--revive-aggregator` starts it again from its state file on
//! the same address, so it resumes as a restarted process would. What each replica last
//! published (its votes) is kept here for [`crate::combine`].

use crate::combine::ReplicaVotes;
use crate::layout::unit_key;
use crate::run::{start_err, DemoError};
use crate::start::bind;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::config::AggregatorConfig;
use vantage_aggregator::lease::{Lease, LeaseSettings, LeaseStatus, LeaseStore, MemoryLeaseStore};
use vantage_aggregator::service::{self, Aggregator, Snapshot};

/// The demo's lease: short, so a failover shows within a run (the fleet file's minimum is 5 s).
pub(crate) const DEMO_LEASE: Duration = Duration::from_secs(6);
/// The clock skew the demo's lease allows for.
pub(crate) const DEMO_LEASE_SKEW: Duration = Duration::from_secs(1);

/// One decision-log line about the lease (or a `region_wide` line), from replica `replica`.
#[derive(Debug, Clone)]
pub(crate) struct LeaseLine {
    pub(crate) replica: String,
    pub(crate) line: serde_json::Value,
}

/// A replica's decision log: every line goes to the tracing log as usual (the aggregator
/// does that itself); the lease lines and the `region_wide` lines (a Region down for every
/// service) also come to the run, which turns them into events.
struct LogTap {
    replica: String,
    pending: Vec<u8>,
    lines: mpsc::UnboundedSender<LeaseLine>,
}

impl Write for LogTap {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            if matches!(
                value["event"].as_str(),
                Some("lease_acquired" | "lease_lost" | "region_wide")
            ) {
                let _ = self.lines.send(LeaseLine {
                    replica: self.replica.clone(),
                    line: value,
                });
            }
        }
        // A line never grows without bound: the aggregator writes whole lines.
        if self.pending.len() > 64 * 1024 {
            self.pending.clear();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A replica that is running: its aggregator and what stops it.
struct Running {
    aggregator: Arc<Aggregator<DryRun>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// One replica, running or not.
pub(crate) struct Replica {
    pub(crate) id: String,
    /// Where its API listens, the same across restarts (agents keep delivering here).
    addr: SocketAddr,
    config: AggregatorConfig,
    running: Option<Running>,
    /// What it last published: the votes Route 53 holds for it.
    pub(crate) votes: ReplicaVotes,
    /// Its last decision (kept while it is down: what it last published).
    pub(crate) last: Option<Snapshot>,
    /// Its lease as it last saw it (none for a single aggregator).
    pub(crate) lease: Option<LeaseStatus>,
}

impl Replica {
    pub(crate) fn is_up(&self) -> bool {
        self.running.is_some()
    }

    pub(crate) fn aggregator(&self) -> Option<&Arc<Aggregator<DryRun>>> {
        self.running.as_ref().map(|r| &r.aggregator)
    }

    /// Holds the lease, by its own account (a down replica holds nothing it can use).
    pub(crate) fn holds_lease(&self) -> Option<u64> {
        let lease = self.lease.as_ref().filter(|_| self.is_up())?;
        lease.held.then_some(lease.token.unwrap_or(0))
    }
}

/// Every replica of the run.
pub(crate) struct Replicas {
    pub(crate) members: Vec<Replica>,
    /// The lease every replica competes for (more than one replica only).
    store: Option<MemoryLeaseStore>,
    /// Lease and `region_wide` lines from every replica's decision log.
    lines_tx: mpsc::UnboundedSender<LeaseLine>,
    pub(crate) lines: mpsc::UnboundedReceiver<LeaseLine>,
    halted: watch::Receiver<bool>,
}

/// The listeners of `n` replicas, bound before the fleet file is written (it names their URLs).
pub(crate) async fn bind_replicas(n: usize) -> Result<Vec<TcpListener>, DemoError> {
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n {
        listeners.push(bind().await?);
    }
    Ok(listeners)
}

impl Replicas {
    /// Starts replicas `1`..`N` from `configs` (one per replica, in id order, each with its
    /// state file) on `listeners`.
    pub(crate) fn start(
        configs: Vec<AggregatorConfig>,
        listeners: Vec<TcpListener>,
        halted: &watch::Receiver<bool>,
    ) -> Result<Replicas, DemoError> {
        let (lines_tx, lines) = mpsc::unbounded_channel();
        let store = (configs.len() > 1).then(MemoryLeaseStore::new);
        let mut replicas = Replicas {
            members: Vec::new(),
            store,
            lines_tx,
            lines,
            halted: halted.clone(),
        };
        for (i, (config, listener)) in configs.into_iter().zip(listeners).enumerate() {
            let id = (i + 1).to_string();
            let addr = listener
                .local_addr()
                .map_err(|e| start_err(format!("aggregator {id}"), e))?;
            let mut replica = Replica {
                votes: ReplicaVotes {
                    id: id.clone(),
                    live: false,
                    ..ReplicaVotes::default()
                },
                id,
                addr,
                config,
                running: None,
                last: None,
                lease: None,
            };
            replicas.launch(&mut replica, listener)?;
            replicas.members.push(replica);
        }
        Ok(replicas)
    }

    /// More than one replica: the lease decides who writes weights.
    pub(crate) fn replicated(&self) -> bool {
        self.store.is_some()
    }

    /// Each replica's API base URL, by id.
    pub(crate) fn urls(&self) -> Vec<(String, String)> {
        self.members
            .iter()
            .map(|r| (r.id.clone(), format!("http://{}", r.addr)))
            .collect()
    }

    /// Starts `replica` on `listener`: a fresh aggregator that loads the state file.
    fn launch(&self, replica: &mut Replica, listener: TcpListener) -> Result<(), DemoError> {
        let what = || format!("aggregator {}", replica.id);
        let log = LogTap {
            replica: replica.id.clone(),
            pending: Vec::new(),
            lines: self.lines_tx.clone(),
        };
        let mut aggregator =
            Aggregator::new(replica.config.clone(), DryRun::new(), Some(Box::new(log)))
                .map_err(|e| start_err(what(), e))?;
        if let Some(store) = &self.store {
            let store: Arc<dyn LeaseStore> = Arc::new(store.clone());
            aggregator = aggregator.with_lease(Lease::new(
                store,
                LeaseSettings {
                    holder: replica.id.clone(),
                    duration: DEMO_LEASE,
                    max_clock_skew: DEMO_LEASE_SKEW,
                },
            ));
        }
        let aggregator = Arc::new(aggregator);
        let (stop, stopped) = watch::channel(false);
        // The run's end stops every replica too.
        let mut halted = self.halted.clone();
        let relay = stop.clone();
        let mut tasks = vec![tokio::spawn(async move {
            let _ = halted.changed().await;
            let _ = relay.send(true);
        })];
        tasks.push(tokio::spawn(service::serve(
            aggregator.clone(),
            listener,
            stopped,
        )));
        replica.running = Some(Running {
            aggregator,
            stop,
            tasks,
        });
        replica.votes.live = true;
        Ok(())
    }

    /// Stops replica `id`: its API, and the run evaluates it no more. Its votes stay as they
    /// were (frozen). Returns its lease as it last saw it, `None` if it was not running.
    pub(crate) async fn kill(&mut self, id: &str) -> Option<Option<LeaseStatus>> {
        let replica = self.members.iter_mut().find(|r| r.id == id)?;
        let running = replica.running.take()?;
        let lease = running.aggregator.lease_status();
        let _ = running.stop.send(true);
        let mut tasks = running.tasks.into_iter();
        // The first task only relays the run's end; it has nothing to finish.
        if let Some(relay) = tasks.next() {
            relay.abort();
        }
        for task in tasks {
            // The server ends after draining requests in flight (5 s at most).
            let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
        }
        replica.votes.live = false;
        Some(lease)
    }

    /// Starts replica `id` again, from its state file, on its old address.
    pub(crate) async fn revive(&mut self, id: &str) -> Result<(), DemoError> {
        let Some(i) = self.members.iter().position(|r| r.id == id) else {
            return Err(DemoError::Options(format!("no aggregator replica {id}")));
        };
        if self.members[i].is_up() {
            return Ok(());
        }
        let addr = self.members[i].addr;
        let listener = rebind(addr).await?;
        let mut replica = self.members.remove(i);
        let launched = self.launch(&mut replica, listener);
        // Its last decision is from before the restart; its next comes at the next round.
        replica.last = None;
        self.members.insert(i, replica);
        launched
    }

    /// One round: every running replica takes a step of its lease keeper (renew, or take
    /// over an expired lease) and evaluates, with its planes inline, at the same instant, so
    /// every replica decides on the same complete intervals. Returns the ids that decided.
    pub(crate) async fn poll(&mut self, now: SystemTime) -> Vec<String> {
        let mut fresh = Vec::new();
        for replica in &mut self.members {
            let Some(running) = &replica.running else {
                continue;
            };
            replica.lease = running.aggregator.lease_step().await;
            let snapshot = running.aggregator.evaluate(now).await;
            // Votes are per unit: with services, one health check per service per Region.
            let named = replica.config.fleet.has_named_services();
            replica.votes.health = snapshot
                .decision
                .regions
                .iter()
                .map(|r| (unit_key(named, &r.service, &r.region), r.in_service))
                .collect();
            replica.last = Some(snapshot);
            fresh.push(replica.id.clone());
        }
        fresh
    }

    /// What every replica last published.
    pub(crate) fn votes(&self) -> Vec<ReplicaVotes> {
        self.members.iter().map(|r| r.votes.clone()).collect()
    }

    /// Stops every replica (the run is over).
    pub(crate) async fn stop(&mut self) {
        for id in self.urls().into_iter().map(|(id, _)| id) {
            let _ = self.kill(&id).await;
        }
    }
}

/// Listens on `addr` again after a replica stopped; a port the system has not yet released
/// is retried for a few seconds.
async fn rebind(addr: SocketAddr) -> Result<TcpListener, DemoError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= deadline => {
                return Err(start_err(format!("the aggregator again on {addr}"), e))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A replica's state file in the run's work directory.
pub(crate) fn state_file(dir: &std::path::Path, id: &str) -> PathBuf {
    dir.join(format!("aggregator-{id}.state.json"))
}
