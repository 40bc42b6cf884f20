//! What the pusher does with an attempt's [`Attempt`]: count it, forget a finished report,
//! and after a failure schedule the next try on the shared [`Backoff`](vantage_runtime::Backoff)
//! (jittered, exponential, bounded; `Retry-After` honoured within its maximum). A report a
//! bound dropped while it was in flight is counted as dropped only if the attempt failed, so
//! no report is ever both delivered and dropped.

use super::attempt::Attempt;
use super::queue::Pusher;
use tokio::time::Instant;

impl Pusher {
    /// Notes the report about to be sent.
    pub(super) fn sending(&mut self, seq: u64) {
        self.in_flight = Some(seq);
        self.in_flight_dropped = false;
    }

    /// Acts on an attempt's result.
    pub(super) fn settle(&mut self, seq: u64, outcome: Attempt) {
        let dropped_meanwhile = self.in_flight.take() == Some(seq) && self.in_flight_dropped;
        self.in_flight_dropped = false;
        if dropped_meanwhile && matches!(outcome, Attempt::Retry { .. } | Attempt::Abandoned) {
            self.count_spool_full(seq);
        }
        match outcome {
            Attempt::Delivered => {
                self.summary.delivered += 1;
                self.labels.deliveries("delivered").increment(1);
                tracing::debug!(seq, "report delivered");
                self.answered();
                self.forget(seq);
            }
            Attempt::Duplicate => {
                self.summary.duplicates += 1;
                self.labels.deliveries("duplicate").increment(1);
                tracing::debug!(seq, "aggregator already had the report");
                self.answered();
                self.forget(seq);
            }
            Attempt::Rejected { status, reason } => {
                self.summary.rejected += 1;
                self.labels.deliveries("rejected").increment(1);
                self.labels.dropped("rejected").increment(1);
                tracing::warn!(seq, %status, %reason, "aggregator rejected the report; dropping it");
                self.answered();
                self.forget(seq);
            }
            Attempt::Retry { why, retry_after } => {
                self.summary.retries += 1;
                self.labels.deliveries("retry").increment(1);
                self.failures = self.failures.saturating_add(1);
                let mut delay = self.backoff.delay(self.failures);
                if let Some(asked) = retry_after {
                    delay = delay.max(asked.min(self.backoff.max));
                }
                self.next_attempt = Some(Instant::now() + delay);
                // Loud on the first failure and now and then during an outage, not every time.
                if self.failures == 1 || self.failures % 20 == 0 {
                    tracing::warn!(seq, error = %why, failures = self.failures, retry_in = ?delay, "report delivery failed; will retry");
                } else {
                    tracing::debug!(seq, error = %why, failures = self.failures, retry_in = ?delay, "report delivery failed again");
                }
            }
            Attempt::Abandoned => {}
        }
    }

    /// The aggregator answered about a report: the outage, if any, is over.
    fn answered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failed_attempts = self.failures,
                "aggregator reachable again"
            );
        }
        self.failures = 0;
        self.next_attempt = None;
    }
}
