//! Builds and serialises interval reports away from the probes (issue 16).
//!
//! Sealing an interval is split in two. The daemon's loop *drains* the recorders: it takes
//! each target's closed intervals out under that target's lock, which is a pointer move per
//! target (20,000 targets: a few milliseconds), and hands them over as a [`SealedInterval`]
//! that owns everything it needs. The [`Encoder`] then builds the report (histograms → base64)
//! and the JSON body on Tokio's blocking pool, one interval after another in sequence order,
//! and passes each body to its [`ReportSink`] (the delivery queues). So however long a
//! 20,000-target report takes to encode, no probe waits for it on a worker thread, no
//! recorder lock is held while it runs, and the daemon's loop (drains, reloads, stop
//! requests) moves on at once. At most [`ENCODE_QUEUE`] sealed intervals wait; a loop that
//! outruns the encoder by more waits for it, so memory stays bounded.

use crate::push::{Deliveries, OutgoingReport};
use crate::recorder::IntervalStats;
use crate::report::{self, ReportIdentity, TargetInterval};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vantage_protocol::config::TargetKind;

/// Sealed intervals that may wait for the encoder before the daemon's loop waits in turn.
pub const ENCODE_QUEUE: usize = 4;

/// One target's share of a sealed interval, owned so it can cross to the blocking pool.
#[derive(Debug)]
pub struct SealedTarget {
    pub id: String,
    pub kind: TargetKind,
    pub region: Option<String>,
    /// Boxed as the recorder keeps it: sealing moves a pointer, not the counters.
    pub stats: Box<IntervalStats>,
}

/// One interval taken out of the recorders, with the sequence number its report will carry.
#[derive(Debug)]
pub struct SealedInterval {
    pub seq: u64,
    pub start_ms: u64,
    pub length: Duration,
    /// Only targets with something to say (attempts or missed slots).
    pub targets: Vec<SealedTarget>,
}

/// Why a sealed interval produced no report body.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot serialise report: {0}")]
    Serialise(#[from] serde_json::Error),
}

/// Builds the report of `sealed` and its JSON body. CPU-bound: call it off the runtime.
pub fn encode(
    identity: &ReportIdentity,
    sealed: &SealedInterval,
) -> Result<OutgoingReport, EncodeError> {
    let targets: Vec<TargetInterval<'_>> = sealed
        .targets
        .iter()
        .map(|t| TargetInterval {
            id: &t.id,
            kind: t.kind,
            region: t.region.as_deref(),
            stats: &t.stats,
        })
        .collect();
    let report = report::build(
        identity,
        sealed.seq,
        sealed.start_ms,
        sealed.length,
        &targets,
    );
    let body = serde_json::to_vec(&report)?;
    Ok(OutgoingReport {
        seq: sealed.seq,
        body: body.into(),
    })
}

/// Where encoded reports go: the delivery queues in the agent, a channel in tests and benches.
pub trait ReportSink: Send + Sync + 'static {
    fn send(&self, report: OutgoingReport) -> impl Future<Output = ()> + Send;
}

impl ReportSink for Deliveries {
    async fn send(&self, report: OutgoingReport) {
        Deliveries::send(self, report).await;
    }
}

impl ReportSink for mpsc::UnboundedSender<OutgoingReport> {
    async fn send(&self, report: OutgoingReport) {
        // A receiver that went away wanted no more reports.
        let _ = mpsc::UnboundedSender::send(self, report);
    }
}

/// The encoding function: [`encode`] in production; tests slow it down on purpose.
pub type EncodeFn = Arc<
    dyn Fn(&ReportIdentity, &SealedInterval) -> Result<OutgoingReport, EncodeError> + Send + Sync,
>;

/// The running encoder: a task that takes sealed intervals in order, encodes each on the
/// blocking pool and hands the body to the sink.
pub struct Encoder<S> {
    jobs: mpsc::Sender<SealedInterval>,
    task: JoinHandle<(S, u64)>,
}

impl<S: ReportSink> Encoder<S> {
    /// Starts the encoder with [`encode`] (needs a Tokio runtime).
    pub fn start(identity: ReportIdentity, sink: S) -> Self {
        Self::with_encode(identity, sink, Arc::new(encode))
    }

    /// Starts the encoder with another encoding function.
    pub fn with_encode(identity: ReportIdentity, sink: S, encode: EncodeFn) -> Self {
        let (jobs, mut rx) = mpsc::channel::<SealedInterval>(ENCODE_QUEUE);
        let identity = Arc::new(identity);
        let task = tokio::spawn(async move {
            let mut reports = 0;
            while let Some(sealed) = rx.recv().await {
                let (identity, encode) = (identity.clone(), encode.clone());
                let seq = sealed.seq;
                let built = tokio::task::spawn_blocking(move || encode(&identity, &sealed)).await;
                match built {
                    Ok(Ok(outgoing)) => {
                        ::metrics::counter!(crate::metrics::REPORTS_BUILT_TOTAL).increment(1);
                        reports += 1;
                        sink.send(outgoing).await;
                    }
                    Ok(Err(e)) => tracing::error!(seq, error = %e, "report not built"),
                    Err(e) => tracing::error!(seq, error = %e, "report encoding failed"),
                }
            }
            (sink, reports)
        });
        Encoder { jobs, task }
    }

    /// Queues a sealed interval; waits only while [`ENCODE_QUEUE`] intervals already wait.
    pub async fn submit(&self, sealed: SealedInterval) {
        if self.jobs.send(sealed).await.is_err() {
            tracing::error!("report encoder has stopped; interval not reported");
        }
    }

    /// Encodes and hands over everything queued, then returns the sink and the number of
    /// reports built.
    pub async fn finish(self) -> (S, u64) {
        drop(self.jobs);
        self.task.await.expect("the encoder task does not panic")
    }
}
