//! Replication heartbeats through a DynamoDB global table. Each Region's status endpoint writes
//! one item, `<partition_key> = vantage#heartbeat#<region>` with `at_ms` (its wall clock, Unix
//! milliseconds) and `period_ms` (how often it writes), and reads the other Regions' items from
//! its local replica: what it sees is as old as replication makes it, so
//! `lag = now − at_ms − period_ms` (floored at 0) is the replication lag from that Region, give
//! or take the clocks' skew (both sides keep time with NTP / Amazon Time Sync).
//!
//! The [`Writer`] is a background task of its own: it never runs inside a request, so `/status`
//! and `/status/deep` never wait for it; its loop sends one PutItem at a time (bounded by the
//! period), and its last outcome is shared with the check, which warns while writes fail.
//! Dropping the writer stops the task.

use super::AwsFailure;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_runtime::sync::lock;

/// Attribute names of a heartbeat item besides its partition key.
pub const AT_MS: &str = "at_ms";
pub const PERIOD_MS: &str = "period_ms";
/// The largest `period_ms` believed from a peer's item: a bogus huge period would hide any lag.
const MAX_PERIOD_MS: u64 = 300_000;

/// The partition key value of `region`'s heartbeat item.
pub fn item_key(region: &str) -> String {
    format!("vantage#heartbeat#{region}")
}

/// Milliseconds since the Unix epoch of `t` (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// A peer's heartbeat as read from the local replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    pub at_ms: u64,
    pub period_ms: u64,
}

impl Beat {
    /// Reads `at_ms` and `period_ms` (DynamoDB numbers) from an item; `None` when either is
    /// missing or not a whole number of milliseconds.
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Beat> {
        let number = |name: &str| -> Option<u64> {
            let text = item.get(name)?.as_n().ok()?;
            // Numbers arrive as text; a u64 has at most 20 digits.
            if text.len() > 20 {
                return None;
            }
            text.parse().ok()
        };
        Some(Beat {
            at_ms: number(AT_MS)?,
            period_ms: number(PERIOD_MS)?.min(MAX_PERIOD_MS),
        })
    }

    /// Replication lag seen at `now_ms`: the item's age beyond one write period, floored at 0
    /// (a peer whose clock runs ahead shows 0, not a negative lag).
    pub fn lag(&self, now_ms: u64) -> Duration {
        Duration::from_millis(
            now_ms
                .saturating_sub(self.at_ms)
                .saturating_sub(self.period_ms),
        )
    }
}

/// What the writer last saw, for the check to report.
#[derive(Debug, Default)]
struct Outcome {
    /// Why the last PutItem failed; `None` after a success (or before the first write).
    last_error: Option<String>,
}

/// The heartbeat writer: a task writing this Region's item every period, stopped when dropped.
pub struct Writer {
    task: tokio::task::JoinHandle<()>,
    outcome: Arc<Mutex<Outcome>>,
}

/// What the writer writes and where.
pub struct WriterConfig {
    pub table: String,
    pub partition_key: String,
    pub region: String,
    pub every: Duration,
}

impl Writer {
    /// Starts writing at once, then every `config.every`. Each PutItem is cut off after one
    /// period, so at most one write is ever in flight and a hung write cannot pile up others.
    pub fn spawn(client: aws_sdk_dynamodb::Client, config: WriterConfig) -> Writer {
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let shared = Arc::clone(&outcome);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(config.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let period_ms = config.every.as_millis().to_string();
            loop {
                tick.tick().await;
                let put = client
                    .put_item()
                    .table_name(&config.table)
                    .item(
                        &config.partition_key,
                        AttributeValue::S(item_key(&config.region)),
                    )
                    .item(
                        AT_MS,
                        AttributeValue::N(unix_ms(SystemTime::now()).to_string()),
                    )
                    .item(PERIOD_MS, AttributeValue::N(period_ms.clone()))
                    .send();
                let error = match tokio::time::timeout(config.every, put).await {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(AwsFailure::of(&e).to_string()),
                    Err(_) => Some(format!("timed out after {:?}", config.every)),
                };
                let mut state = lock(&shared);
                // Log changes only: a table that refuses every write would otherwise log
                // once per period.
                match (&state.last_error, &error) {
                    (None, Some(e)) => tracing::warn!(
                        table = %config.table,
                        error = %e,
                        "DynamoDB heartbeat PutItem failing"
                    ),
                    (Some(_), None) => {
                        tracing::info!(table = %config.table, "DynamoDB heartbeat PutItem recovered")
                    }
                    _ => {}
                }
                state.last_error = error;
            }
        });
        Writer { task, outcome }
    }

    /// Why the last write failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.outcome).last_error.clone()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(at: &str, period: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (AT_MS.to_owned(), AttributeValue::N(at.to_owned())),
            (PERIOD_MS.to_owned(), AttributeValue::N(period.to_owned())),
        ])
    }

    #[test]
    fn lag_is_age_beyond_one_period_floored_at_zero() {
        let beat = Beat::from_item(&item("10000", "5000")).unwrap();
        assert_eq!(beat.lag(10_000), Duration::ZERO);
        assert_eq!(beat.lag(14_999), Duration::ZERO);
        assert_eq!(beat.lag(15_000), Duration::ZERO);
        assert_eq!(beat.lag(16_500), Duration::from_millis(1500));
        // A peer clock ahead of ours: no negative lag.
        assert_eq!(beat.lag(1_000), Duration::ZERO);
    }

    #[test]
    fn malformed_items_are_refused_and_periods_capped() {
        assert_eq!(Beat::from_item(&item("x", "5000")), None);
        assert_eq!(Beat::from_item(&item("1.5", "5000")), None);
        assert_eq!(Beat::from_item(&item(&"9".repeat(40), "5000")), None);
        assert_eq!(Beat::from_item(&HashMap::new()), None);
        let mut wrong_type = item("1", "1");
        wrong_type.insert(AT_MS.into(), AttributeValue::S("1".into()));
        assert_eq!(Beat::from_item(&wrong_type), None);
        let huge = Beat::from_item(&item("0", "99999999999")).unwrap();
        assert_eq!(huge.period_ms, MAX_PERIOD_MS);
    }

    #[test]
    fn item_key_names_the_region() {
        assert_eq!(item_key("eu-west-1"), "vantage#heartbeat#eu-west-1");
    }
}
