//! One sink's delivery task: events from its bounded queue, one at a time, each attempt under
//! the sink's time limit, failures retried after `vantage_runtime::Backoff`'s delay, given up
//! (dead-lettered, counted and logged with the event id) after `max_attempts`. It runs apart
//! from the decision loop, which only ever `try_send`s into the queue.

use super::{names, NotifyEvent, Sink};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use vantage_runtime::Backoff;

/// Per sink: how long an attempt may take, how many, how far apart.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff: Backoff,
}

/// How one event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        attempts: u32,
    },
    /// Every attempt failed; why the last one did.
    DeadLetter {
        last_error: String,
    },
}

/// Delivers one event: attempts until one succeeds or `max_attempts` have failed.
pub async fn deliver(name: &str, sink: &Sink, event: &NotifyEvent, limits: Limits) -> Outcome {
    let attempts = limits.max_attempts.max(1);
    let mut last_error = String::new();
    for attempt in 1..=attempts {
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let result = match tokio::time::timeout(limits.timeout, sink.send(event, now_s)).await {
            Ok(r) => r,
            Err(_) => Err(super::SinkError::Timeout),
        };
        match result {
            Ok(()) => {
                metrics::counter!(names::SENT_TOTAL, "sink" => name.to_owned()).increment(1);
                return Outcome::Sent { attempts: attempt };
            }
            Err(e) if attempt < attempts => {
                metrics::counter!(names::RETRIES_TOTAL, "sink" => name.to_owned()).increment(1);
                tracing::info!(sink = name, id = %event.id, attempt, error = %e, "notification failed; retrying");
                tokio::time::sleep(limits.backoff.delay(attempt)).await;
            }
            Err(e) => {
                metrics::counter!(names::DEAD_LETTER_TOTAL, "sink" => name.to_owned()).increment(1);
                tracing::warn!(sink = name, id = %event.id, attempts, error = %e, "notification given up (dead letter)");
                last_error = e.to_string();
            }
        }
    }
    Outcome::DeadLetter { last_error }
}

/// The sink's task: until every sender is gone.
pub async fn run(name: String, sink: Sink, mut queue: mpsc::Receiver<NotifyEvent>, limits: Limits) {
    while let Some(event) = queue.recv().await {
        deliver(&name, &sink, &event, limits).await;
    }
}
