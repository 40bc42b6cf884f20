//! The report pusher: delivers every [`OutgoingReport`] to the aggregator at least once, oldest
//! first, surviving aggregator outages and agent restarts through the [`Spool`].
//!
//! Each new report is written to the spool before anything is sent, so it is durable the moment
//! it is accepted; when the spool cannot take it (disk full, permissions) it waits in a bounded
//! queue in memory instead and the failure is counted. One report is in flight at a time, always
//! the smallest sequence number waiting; the aggregator drops duplicates by sequence number, so
//! resending after a lost answer is safe. An answer decides what happens next: 2xx delivered,
//! 409 already there, 400/413/422 (the report itself is bad) logged and dropped, anything else
//! (404 and other 4xx, 5xx, no connection, no answer in time) retried after a jittered
//! exponential backoff. The pusher never blocks the sender beyond the channel and
//! never panics; it ends when the channel closes or on shutdown, after a bounded flush.
//!
//! - `config`: where and how reports are sent ([`PushConfig`]) and the up-front check.
//! - `client`: the long-lived HTTP(S) client and its TLS setup.
//! - `attempt`: one signed attempt and the classification of the answer.
//! - `queue`: the spool and the bounded in-memory queue, oldest first, with their bounds.
//! - `outcome`: acting on an attempt's result; retries on the shared backoff.
//! - `replicas`: one queue per aggregator replica ([`ReplicaTarget`]), each its own pusher
//!   with its own spool, backoff and `replica` metrics label; [`Deliveries`] fans reports out.

mod attempt;
mod client;
mod config;
mod outcome;
mod queue;
mod replicas;

pub use config::{
    ClientCertFiles, PushConfig, PushError, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN,
    DEFAULT_REQUEST_TIMEOUT,
};
pub use replicas::{check_replicas, Deliveries, DeliveryQueue, QueueSummary, ReplicaTarget};

use crate::metrics::DeliveryLabels;
use crate::spool::Spool;
use attempt::{Attempt, Sender};
use bytes::Bytes;
use queue::Pusher;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

/// One report to deliver.
#[derive(Debug, Clone)]
pub struct OutgoingReport {
    /// The report's sequence number, as in the body.
    pub seq: u64,
    /// The JSON of an `IntervalReport`, sent byte for byte as given (and signed as such).
    pub body: Bytes,
}

/// What one run of the pusher did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushSummary {
    /// Reports the aggregator accepted (2xx).
    pub delivered: u64,
    /// Reports the aggregator already had (409).
    pub duplicates: u64,
    /// Reports the aggregator refused as bad (400, 413, 422), dropped.
    pub rejected: u64,
    /// Reports dropped to keep the spool (or the in-memory queue) within `max_bytes`, plus
    /// reports held only in memory that could not be spooled at exit.
    pub dropped_spool_full: u64,
    /// Reports dropped unsent after `max_age`.
    pub expired: u64,
    /// Attempts that failed and were retried later.
    pub retries: u64,
    /// Reports left in the spool at exit, for the next run.
    pub left_in_spool: u64,
}

/// Delivers reports from `reports` until it is closed or `shutdown` turns true (or its sender
/// is dropped), then tries to deliver everything queued within `flush_deadline` and leaves the
/// rest in the spool. Reports already in `spool` (from an earlier run) go first. Its metrics
/// carry no `replica` label: this is the single aggregator's queue ([`Deliveries`] runs one
/// per replica).
pub async fn run_pusher(
    config: PushConfig,
    spool: Option<Spool>,
    reports: mpsc::Receiver<OutgoingReport>,
    shutdown: watch::Receiver<bool>,
    flush_deadline: Duration,
) -> PushSummary {
    let labels = DeliveryLabels::default();
    run_queue(config, spool, reports, shutdown, flush_deadline, labels).await
}

/// [`run_pusher`] with its metrics labelled by `labels`.
async fn run_queue(
    config: PushConfig,
    spool: Option<Spool>,
    mut reports: mpsc::Receiver<OutgoingReport>,
    mut shutdown: watch::Receiver<bool>,
    flush_deadline: Duration,
    labels: DeliveryLabels,
) -> PushSummary {
    let sender = Sender::new(&config, labels.clone());
    let mut p = Pusher::new(&config, spool, labels);
    let expire_every = (p.max_age / 4).clamp(Duration::from_millis(10), Duration::from_secs(60));
    let mut next_expiry = Instant::now();
    // Shutdown asked for, or no more reports coming: stop taking new reports and flush.
    let mut stopping = false;
    let mut receiving = true;
    let mut flush_by: Option<Instant> = None;
    loop {
        if !stopping && *shutdown.borrow_and_update() {
            stopping = true;
        }
        if stopping && receiving {
            // Whatever was already sent to us is ours to deliver or spool.
            reports.close();
            while let Some(r) = reports.recv().await {
                p.ingest(r).await;
            }
            receiving = false;
        }
        if stopping && flush_by.is_none() {
            flush_by = Some(Instant::now() + flush_deadline);
        }
        let now = Instant::now();
        if now >= next_expiry {
            p.expire();
            next_expiry = now + expire_every;
        }
        let head = p.oldest();
        if let Some(deadline) = flush_by {
            if head.is_none() || now >= deadline {
                break;
            }
        }
        let backoff_until = p.next_attempt.filter(|t| *t > now);
        match head {
            Some(seq) if backoff_until.is_none() => {
                let Some(body) = p.body_of(seq) else { continue };
                p.sending(seq);
                let attempt = sender.clone().send(body);
                tokio::pin!(attempt);
                let outcome = loop {
                    tokio::select! {
                        outcome = &mut attempt => break outcome,
                        r = reports.recv(), if receiving && !stopping => match r {
                            Some(r) => p.ingest(r).await,
                            None => stopping = true,
                        },
                        changed = shutdown.changed(), if !stopping => {
                            if changed.is_err() || *shutdown.borrow_and_update() {
                                stopping = true;
                                // The attempt in flight counts against the flush deadline.
                                flush_by.get_or_insert(Instant::now() + flush_deadline);
                            }
                        }
                        () = sleep_until(flush_by.unwrap_or(now)), if flush_by.is_some() => {
                            break Attempt::Abandoned;
                        }
                    }
                };
                p.settle(seq, outcome);
            }
            _ => {
                let mut wake = next_expiry;
                if head.is_some() {
                    wake = wake.min(backoff_until.unwrap_or(now));
                }
                if let Some(deadline) = flush_by {
                    wake = wake.min(deadline);
                }
                tokio::select! {
                    r = reports.recv(), if receiving && !stopping => match r {
                        Some(r) => p.ingest(r).await,
                        None => stopping = true,
                    },
                    changed = shutdown.changed(), if !stopping => {
                        if changed.is_err() || *shutdown.borrow_and_update() {
                            stopping = true;
                        }
                    }
                    () = sleep_until(wake) => {}
                }
            }
        }
    }
    p.finish().await
}
