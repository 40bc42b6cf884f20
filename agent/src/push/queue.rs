//! What waits to be delivered: the [`Spool`] on disk and, for reports it cannot take (disk
//! full, permissions, or no spool at all), a bounded queue in memory. The oldest report comes
//! first whichever side holds it; both sides obey the same `max_bytes` and `max_age`, and
//! every report dropped to keep within them is counted. This module also owns the spool gauges
//! and the last-chance move of the memory queue to the spool at exit.

use super::{OutgoingReport, PushConfig, PushSummary};
use crate::metrics::DeliveryLabels;
use crate::spool::{Spool, SpoolError, DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use vantage_runtime::Backoff;

/// A report waiting in memory because the spool could not take it.
struct Held {
    body: Bytes,
    at: SystemTime,
}

/// The pusher's state between attempts.
pub(super) struct Pusher {
    /// The labels of this queue's metrics (`replica`, or none for the single aggregator).
    pub(super) labels: DeliveryLabels,
    spool: Option<Spool>,
    /// Reports the spool could not take (or all reports, without a spool), by seq.
    memory: BTreeMap<u64, Held>,
    memory_bytes: u64,
    /// Bound on `memory_bytes`: the spool's `max_bytes`, or the default without a spool.
    memory_max_bytes: u64,
    pub(super) max_age: Duration,
    /// The wait before each retry.
    pub(super) backoff: Backoff,
    /// Consecutive attempts that ended in a retry.
    pub(super) failures: u32,
    /// No attempt before this (backoff after a failure).
    pub(super) next_attempt: Option<Instant>,
    /// The seq being sent, and whether a bound dropped it meanwhile: such a drop is counted
    /// only if the attempt fails, so a report is never both delivered and dropped.
    pub(super) in_flight: Option<u64>,
    pub(super) in_flight_dropped: bool,
    pub(super) summary: PushSummary,
}

impl Pusher {
    pub(super) fn new(config: &PushConfig, spool: Option<Spool>, labels: DeliveryLabels) -> Pusher {
        let (memory_max_bytes, max_age) = spool
            .as_ref()
            .map_or((DEFAULT_MAX_BYTES, DEFAULT_MAX_AGE), |s| {
                (s.config().max_bytes, s.config().max_age)
            });
        if let Some(s) = spool.as_ref().filter(|s| !s.is_empty()) {
            tracing::info!(
                reports = s.len(),
                bytes = s.bytes(),
                oldest = s.oldest(),
                "resuming delivery of spooled reports"
            );
        }
        labels.register();
        let p = Pusher {
            labels,
            spool,
            memory: BTreeMap::new(),
            memory_bytes: 0,
            memory_max_bytes,
            max_age,
            backoff: Backoff::new(config.backoff_min, config.backoff_max),
            failures: 0,
            next_attempt: None,
            in_flight: None,
            in_flight_dropped: false,
            summary: PushSummary::default(),
        };
        p.update_gauges();
        p
    }

    /// The smallest seq waiting, in the spool or in memory.
    pub(super) fn oldest(&self) -> Option<u64> {
        let spooled = self.spool.as_ref().and_then(Spool::oldest);
        let held = self.memory.keys().next().copied();
        match (spooled, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Spools (or else holds) a new report.
    pub(super) async fn ingest(&mut self, report: OutgoingReport) {
        let now = SystemTime::now();
        match self.spool_put(report.seq, report.body.clone(), now).await {
            Some(Ok(dropped)) => {
                for seq in dropped {
                    self.count_spool_full(seq);
                }
            }
            Some(Err(e)) => {
                self.labels.spool_write_errors().increment(1);
                tracing::warn!(seq = report.seq, error = %e, "cannot spool report; holding it in memory");
                self.hold(report, now);
            }
            None => self.hold(report, now),
        }
        self.update_gauges();
    }

    /// `Spool::put` off the async threads: it waits for fsync, which must not stall probes
    /// sharing the runtime. `None` without a spool.
    async fn spool_put(
        &mut self,
        seq: u64,
        body: Bytes,
        at: SystemTime,
    ) -> Option<Result<Vec<u64>, SpoolError>> {
        let mut spool = self.spool.take()?;
        let dir = spool.config().dir.clone();
        let work = tokio::task::spawn_blocking(move || {
            let result = spool.put(seq, &body, at);
            (spool, result)
        });
        match work.await {
            Ok((spool, result)) => {
                self.spool = Some(spool);
                Some(result)
            }
            Err(e) => {
                // Only a runtime shutting down gets here. The files stay on disk for the next
                // run; this run carries on without the spool.
                tracing::error!(error = %e, "spool write did not run; continuing without the spool");
                Some(Err(SpoolError::Write {
                    path: dir,
                    source: std::io::Error::other(e.to_string()),
                }))
            }
        }
    }

    fn hold(&mut self, report: OutgoingReport, at: SystemTime) {
        let len = report.body.len() as u64;
        if len > self.memory_max_bytes {
            self.count_spool_full(report.seq);
            return;
        }
        if let Some(old) = self.memory.insert(
            report.seq,
            Held {
                body: report.body,
                at,
            },
        ) {
            self.memory_bytes -= old.body.len() as u64;
        }
        self.memory_bytes += len;
        while self.memory_bytes > self.memory_max_bytes {
            let Some((seq, held)) = self.memory.pop_first() else {
                break;
            };
            self.memory_bytes -= held.body.len() as u64;
            self.count_spool_full(seq);
        }
    }

    pub(super) fn count_spool_full(&mut self, seq: u64) {
        if self.in_flight == Some(seq) {
            self.in_flight_dropped = true;
            return;
        }
        self.summary.dropped_spool_full += 1;
        self.labels.dropped("spool_full").increment(1);
        tracing::warn!(
            seq,
            max_bytes = self.memory_max_bytes,
            "spool full: dropped the oldest undelivered report"
        );
    }

    /// The body of a waiting report; `None` (and the report forgotten) when its spool file
    /// cannot be read, since nothing could ever be sent for it.
    pub(super) fn body_of(&mut self, seq: u64) -> Option<Bytes> {
        if let Some(held) = self.memory.get(&seq) {
            return Some(held.body.clone());
        }
        let spool = self.spool.as_mut()?;
        match spool.read(seq) {
            Ok(body) => Some(Bytes::from(body)),
            Err(e) => {
                tracing::error!(seq, error = %e, "cannot read spooled report; dropping it");
                if let Err(e) = spool.remove(seq) {
                    tracing::warn!(seq, error = %e, "cannot delete unreadable spool file");
                }
                self.update_gauges();
                None
            }
        }
    }

    pub(super) fn expire(&mut self) {
        let now = SystemTime::now();
        let mut expired = self
            .spool
            .as_mut()
            .map(|s| s.expire(now))
            .unwrap_or_default();
        let max_age = self.max_age;
        let old: Vec<u64> = self
            .memory
            .iter()
            .filter(|(_, h)| now.duration_since(h.at).is_ok_and(|age| age > max_age))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in old {
            if let Some(h) = self.memory.remove(&seq) {
                self.memory_bytes -= h.body.len() as u64;
            }
            expired.push(seq);
        }
        if expired.is_empty() {
            return;
        }
        expired.sort_unstable();
        let n = expired.len() as u64;
        self.summary.expired += n;
        self.labels.dropped("expired").increment(n);
        tracing::warn!(
            reports = n,
            first_seq = expired[0],
            last_seq = expired[expired.len() - 1],
            max_age = ?max_age,
            "dropped undelivered reports older than the spool's max_age"
        );
        self.update_gauges();
    }

    pub(super) fn forget(&mut self, seq: u64) {
        if let Some(h) = self.memory.remove(&seq) {
            self.memory_bytes -= h.body.len() as u64;
        }
        if let Some(spool) = self.spool.as_mut().filter(|s| s.contains(seq)) {
            if let Err(e) = spool.remove(seq) {
                // It will be sent again after a restart; the aggregator drops it by seq.
                tracing::warn!(seq, error = %e, "cannot delete a finished report from the spool");
            }
        }
        self.update_gauges();
    }

    pub(super) fn update_gauges(&self) {
        let (n, bytes) = self.spool.as_ref().map_or((0, 0), |s| (s.len(), s.bytes()));
        self.labels
            .spool_reports()
            .set((n + self.memory.len()) as f64);
        self.labels
            .spool_bytes()
            .set((bytes + self.memory_bytes) as f64);
    }

    /// Moves what waits in memory to the spool if it can take it now, and summarises.
    pub(super) async fn finish(mut self) -> PushSummary {
        let held = std::mem::take(&mut self.memory);
        self.memory_bytes = 0;
        let mut lost = 0u64;
        for (seq, h) in held {
            match self.spool_put(seq, h.body, h.at).await {
                Some(Ok(dropped)) => {
                    for seq in dropped {
                        self.count_spool_full(seq);
                    }
                }
                Some(Err(_)) | None => {
                    lost += 1;
                    self.summary.dropped_spool_full += 1;
                    self.labels.dropped("spool_full").increment(1);
                }
            }
        }
        if lost > 0 {
            tracing::error!(
                reports = lost,
                "undelivered reports held in memory are lost at exit: the spool cannot take them"
            );
        }
        self.summary.left_in_spool = self.spool.as_ref().map_or(0, |s| s.len() as u64);
        self.update_gauges();
        if self.summary.left_in_spool > 0 {
            tracing::info!(
                reports = self.summary.left_in_spool,
                "undelivered reports stay in the spool for the next run"
            );
        }
        self.summary
    }
}
