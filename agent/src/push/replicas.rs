//! Delivery to every aggregator replica: with `aggregator.replicas` each replica gets every
//! report through a queue of its own ([`DeliveryQueue`]: its own spool directory, backoff and
//! `replica` metrics label), each queue an independent [`run_pusher`](super::run_pusher) task,
//! so a replica that is down or slow only grows its own backlog and delivers it, oldest first,
//! when it answers again, while the others carry on as if it did not exist. With one aggregator
//! there is exactly one queue, without a label, as before replicas existed.
//!
//! [`Deliveries`] fans each report out to every queue. The report's bytes are shared
//! ([`Bytes`](bytes::Bytes)), and a queue takes a report from its channel even while an attempt
//! is in flight or it is backing off, so handing a report to a dead replica's queue costs a
//! spool write, never a wait on that replica.

use super::{run_queue, OutgoingReport, PushConfig, PushError, PushSummary};
use crate::identity::parse_agent_id;
use crate::metrics::DeliveryLabels;
use crate::spool::Spool;
use http::Uri;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

/// Reports a queue's channel holds before the sender waits: far more than a queue that keeps
/// taking reports (it does, between and during attempts) ever leaves in it.
const QUEUE_CHANNEL: usize = 256;

/// One aggregator replica an agent delivers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaTarget {
    /// The replica's id from the fleet file: its metrics label and spool subdirectory name.
    pub id: String,
    /// The replica's base URL; reports go to `{aggregator}/v1/reports`.
    pub aggregator: Uri,
}

impl ReplicaTarget {
    /// The push configuration of this replica: `base` with the replica's URL.
    pub fn push_config(&self, base: &PushConfig) -> PushConfig {
        PushConfig {
            aggregator: self.aggregator.clone(),
            ..base.clone()
        }
    }
}

/// Checks a replica list before anything starts: ids that can name a spool subdirectory
/// (a plain file-name component), no id or URL twice, and every replica's URL.
pub fn check_replicas(base: &PushConfig, replicas: &[ReplicaTarget]) -> Result<(), PushError> {
    let mut ids = BTreeSet::new();
    let mut urls = BTreeSet::new();
    for r in replicas {
        parse_agent_id(&r.id).map_err(|e| PushError::ReplicaId {
            id: r.id.chars().take(80).collect(),
            reason: e.to_string().replace("agent id", "the id"),
        })?;
        if !ids.insert(r.id.as_str()) {
            return Err(PushError::ReplicaId {
                id: r.id.clone(),
                reason: "listed twice".into(),
            });
        }
        if !urls.insert(r.aggregator.to_string()) {
            return Err(PushError::ReplicaId {
                id: r.id.clone(),
                reason: format!(
                    "its URL {} is another replica's too: each would get every report twice",
                    r.aggregator
                ),
            });
        }
        r.push_config(base).check()?;
    }
    Ok(())
}

/// One delivery queue, ready to start.
pub struct DeliveryQueue {
    /// Where and how this queue delivers.
    pub config: PushConfig,
    /// Its own spool, or `None` to keep undelivered reports in memory only.
    pub spool: Option<Spool>,
    /// Its metrics labels: [`DeliveryLabels::replica`], or the default for one aggregator.
    pub labels: DeliveryLabels,
}

/// What one queue did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueSummary {
    /// The replica's id; `None` for the single aggregator.
    pub replica: Option<String>,
    pub push: PushSummary,
}

struct Running {
    replica: Option<String>,
    reports: mpsc::Sender<OutgoingReport>,
    task: JoinHandle<PushSummary>,
}

/// The running delivery queues of one agent.
pub struct Deliveries {
    queues: Vec<Running>,
    stop: watch::Sender<bool>,
}

impl Deliveries {
    /// Starts one pusher task per queue (needs a Tokio runtime). When stopped, each one tries
    /// to deliver what it holds within `flush_deadline`, all at the same time, and leaves the
    /// rest in its own spool.
    pub fn start(queues: Vec<DeliveryQueue>, flush_deadline: Duration) -> Deliveries {
        let (stop, stop_rx) = watch::channel(false);
        let queues = queues
            .into_iter()
            .map(|q| {
                let (tx, rx) = mpsc::channel(QUEUE_CHANNEL);
                let replica = q.labels.replica_id().map(str::to_owned);
                // One aggregator's logs read as they did before replicas existed.
                let span = match &replica {
                    Some(id) => tracing::info_span!("delivery", replica = %id),
                    None => tracing::Span::none(),
                };
                let pusher = run_queue(
                    q.config,
                    q.spool,
                    rx,
                    stop_rx.clone(),
                    flush_deadline,
                    q.labels,
                );
                Running {
                    replica,
                    reports: tx,
                    task: tokio::spawn(pusher.instrument(span)),
                }
            })
            .collect();
        Deliveries { queues, stop }
    }

    /// Hands `report` to every queue. Returns how many queues had stopped and did not take it
    /// (none while the agent runs: a queue only ends when told to).
    pub async fn send(&self, report: OutgoingReport) -> usize {
        let mut refused = 0;
        for q in &self.queues {
            if q.reports.send(report.clone()).await.is_err() {
                refused += 1;
                tracing::error!(
                    seq = report.seq,
                    replica = q.replica.as_deref(),
                    "report delivery queue has stopped; report not queued"
                );
            }
        }
        refused
    }

    /// Stops taking reports, lets every queue flush within the deadline given to
    /// [`start`](Deliveries::start), and returns what each did, in the order they were given.
    pub async fn finish(self) -> Vec<QueueSummary> {
        let _ = self.stop.send(true);
        let mut summaries = Vec::with_capacity(self.queues.len());
        for q in self.queues {
            drop(q.reports);
            let push = q.task.await.unwrap_or_else(|e| {
                tracing::error!(replica = q.replica.as_deref(), error = %e, "delivery task failed");
                PushSummary::default()
            });
            summaries.push(QueueSummary {
                replica: q.replica,
                push,
            });
        }
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: &str, url: &str) -> ReplicaTarget {
        ReplicaTarget {
            id: id.into(),
            aggregator: url.parse().unwrap(),
        }
    }

    #[test]
    fn replica_lists_are_checked() {
        let base = PushConfig::new(Uri::default(), "k1", b"0123456789abcdef0123".to_vec());
        let ok = [
            target("use1", "http://127.0.0.1:1"),
            target("euw1", "http://127.0.0.1:2"),
        ];
        check_replicas(&base, &ok).unwrap();
        let cases = [
            (
                vec![target("..", "http://127.0.0.1:1")],
                "names a directory",
            ),
            (vec![target("a/b", "http://127.0.0.1:1")], "may only hold"),
            (
                vec![
                    target("a", "http://127.0.0.1:1"),
                    target("a", "http://127.0.0.1:2"),
                ],
                "listed twice",
            ),
            (
                vec![
                    target("a", "http://127.0.0.1:1"),
                    target("b", "http://127.0.0.1:1"),
                ],
                "another replica's",
            ),
            (vec![target("a", "ftp://127.0.0.1:1")], "scheme"),
        ];
        for (replicas, needle) in cases {
            let err = check_replicas(&base, &replicas).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
