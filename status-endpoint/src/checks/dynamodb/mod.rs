//! A DynamoDB table in this Region, usually one replica of a global table (version
//! 2019.11.21). One round sends, at once, `DescribeTable` (the table must be `ACTIVE`; every
//! replica it lists should be) and an eventually consistent `GetItem` of the canary key (the
//! item must exist), then one `GetItem` per peer Region for its replication heartbeat
//! ([`heartbeat`]), each turned into a `replicationLag` observation with the Aurora readers'
//! warn / fail limits ([`LagLimits`]).
//!
//! What fails and what warns: the local table missing, not `ACTIVE`, or the canary unreadable
//! (missing, throttled after retries, refused) fails: this Region cannot serve reads. A replica
//! elsewhere that is not `ACTIVE` only warns: the local replica still serves reads and takes
//! writes (they replicate once the other side is back), and the other Region's own check says
//! whether that Region is down. `DescribeTable` throttled (a control-plane limit, shared by the
//! account) warns too: it says nothing about the table serving. A peer with no heartbeat item
//! warns (its endpoint may not write heartbeats yet, or runs read-only).
//!
//! The client retries (standard mode, 3 attempts, 20–200 ms backoff) inside an operation
//! timeout of 90 % of the check's timeout, so a throttled call gives up with its error code
//! before the check's own timeout cuts it off. Responses are bounded: `GetItem`s project only
//! the attributes they need, at most [`MAX_PEERS`] peers and [`MAX_REPLICAS`] replicas are read,
//! and AWS error text is cut to [`MAX_MESSAGE`] bytes (it names tables and codes, never
//! credentials).

pub mod heartbeat;

use super::{CheckError, LagLimits, Observation, Probe, Status};
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReplicaStatus, TableStatus};
use std::fmt;
use std::time::{Duration, SystemTime};

/// Peers and replicas read per round, at most; a global table has a handful of Regions.
pub const MAX_PEERS: usize = 32;
pub const MAX_REPLICAS: usize = 64;
/// AWS error messages are cut to this many bytes.
pub const MAX_MESSAGE: usize = 200;

/// The DynamoDB client for a check whose timeout is `timeout`: the shared SDK configuration
/// ([`super::lambda::sdk_config`]) with retries and timeouts of its own, see the module docs.
pub fn client(sdk: &aws_config::SdkConfig, timeout: Duration) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        configure(aws_sdk_dynamodb::config::Builder::from(sdk), timeout).build(),
    )
}

/// Sets the check's retry and timeout policy on a client configuration (tests put it on
/// their mocked clients too).
pub fn configure(
    builder: aws_sdk_dynamodb::config::Builder,
    timeout: Duration,
) -> aws_sdk_dynamodb::config::Builder {
    builder
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(200)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeout)
                .operation_attempt_timeout(timeout / 2)
                .operation_timeout(timeout * 9 / 10)
                .build(),
        )
}

/// A failed AWS call, described without echoing anything secret: the error code and AWS's
/// (cut) message for a service error, the kind of failure otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsFailure {
    pub code: Option<String>,
    pub text: String,
}

impl AwsFailure {
    pub fn of<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> AwsFailure {
        let text = match e {
            SdkError::ServiceError(s) => {
                let err = s.err();
                let code = err.code().unwrap_or("unknown error");
                return AwsFailure {
                    code: err.code().map(|c| cut(c, 64)),
                    text: match err.message() {
                        Some(m) => format!("{}: {}", cut(code, 64), cut(m, MAX_MESSAGE)),
                        None => cut(code, 64),
                    },
                };
            }
            SdkError::TimeoutError(_) => "timed out",
            SdkError::DispatchFailure(d) if d.is_timeout() => "timed out",
            SdkError::DispatchFailure(d) if d.is_io() => "connection failed",
            SdkError::DispatchFailure(_) => "request not sent",
            SdkError::ResponseError(_) => "unreadable response",
            SdkError::ConstructionFailure(_) => "request not built",
            _ => "failed",
        };
        AwsFailure {
            code: None,
            text: text.to_owned(),
        }
    }

    /// DynamoDB's throttling codes (after the client's retries).
    pub fn throttled(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "ThrottlingException"
                    | "ProvisionedThroughputExceededException"
                    | "RequestLimitExceeded"
            )
        )
    }

    fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl fmt::Display for AwsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A Region name as AWS spells them; anything else read from the network is ignored.
fn region_like(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// What the check reads and how it judges it.
pub struct DynamoSpec {
    pub table: String,
    /// This Region (its own heartbeat is never a peer's).
    pub region: String,
    /// The canary item's whole primary key, attribute name → string value.
    pub canary_key: Vec<(String, String)>,
    /// Peers whose heartbeats are read; `None`: the replicas DescribeTable lists.
    pub peers: Option<Vec<String>>,
    pub partition_key: String,
    pub lag: LagLimits,
    /// The check's timeout: heartbeat reads still unanswered at 90 % of it are reported as
    /// timed out, so the rest of the round's findings are not lost to the check's timeout.
    pub timeout: Duration,
}

pub struct DynamoCheck {
    client: aws_sdk_dynamodb::Client,
    spec: DynamoSpec,
    writer: Option<heartbeat::Writer>,
}

impl DynamoCheck {
    /// The check; with `heartbeat_every`, also this Region's heartbeat writer (started now,
    /// stopped with the check).
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        spec: DynamoSpec,
        heartbeat_every: Option<Duration>,
    ) -> Self {
        let writer = heartbeat_every.map(|every| {
            heartbeat::Writer::spawn(
                client.clone(),
                heartbeat::WriterConfig {
                    table: spec.table.clone(),
                    partition_key: spec.partition_key.clone(),
                    region: spec.region.clone(),
                    every,
                },
            )
        });
        DynamoCheck {
            client,
            spec,
            writer,
        }
    }

    /// The table name: the `componentId`, and the `table` label of the lag metric.
    pub fn target(&self) -> &str {
        &self.spec.table
    }

    pub async fn run(&self) -> Result<Probe, CheckError> {
        let until = tokio::time::Instant::now() + self.spec.timeout * 9 / 10;
        let describe = self
            .client
            .describe_table()
            .table_name(&self.spec.table)
            .send();
        // Configured peers are read at once with the rest; the listed replicas only once
        // DescribeTable has named them.
        let configured = async {
            match &self.spec.peers {
                Some(peers) => Some(self.heartbeats(peers, until).await),
                None => None,
            }
        };
        let (describe, canary, configured) = tokio::join!(describe, self.canary(), configured);
        let mut probe = Probe::pass();
        let mut listed = Vec::new();
        match describe {
            Ok(out) => {
                if let Some(table) = out.table() {
                    self.table_status(table, &mut probe, &mut listed);
                } else {
                    probe.raise(Status::Fail, "DescribeTable answered without a table");
                }
            }
            Err(e) => {
                let f = AwsFailure::of(&e);
                if f.is("ResourceNotFoundException") {
                    return Err(CheckError::Dynamodb(format!(
                        "table {} not found in {}",
                        self.spec.table, self.spec.region
                    )));
                }
                let status = if f.throttled() {
                    Status::Warn
                } else {
                    Status::Fail
                };
                probe.raise(status, format!("DescribeTable failed: {f}"));
            }
        }
        match canary {
            Ok(true) => {}
            Ok(false) => probe.raise(
                Status::Fail,
                format!(
                    "canary item {} not found in table {}",
                    self.canary_text(),
                    self.spec.table
                ),
            ),
            Err(f) => probe.raise(Status::Fail, format!("canary GetItem failed: {f}")),
        }
        if let Some(error) = self.writer.as_ref().and_then(|w| w.last_error()) {
            probe.raise(
                Status::Warn,
                format!("this Region's heartbeat PutItem failed: {error}"),
            );
        }
        let lags = match configured {
            Some(lags) => lags,
            None => self.heartbeats(&listed, until).await,
        };
        for o in lags {
            if o.status != Status::Pass {
                probe.raise(o.status, o.output.clone().unwrap_or_default());
            }
            probe.extra.push(o);
        }
        Ok(probe)
    }

    /// The local table's status (fail unless ACTIVE) and its replicas' (warn unless ACTIVE);
    /// collects the replicas' Regions into `listed`.
    fn table_status(
        &self,
        table: &aws_sdk_dynamodb::types::TableDescription,
        probe: &mut Probe,
        listed: &mut Vec<String>,
    ) {
        let status = table.table_status();
        let name = status.map_or("unknown", TableStatus::as_str);
        let ok = matches!(status, Some(TableStatus::Active));
        let mut o = Observation::new("tableStatus", if ok { Status::Pass } else { Status::Fail })
            .value(cut(name, 64), None);
        if !ok {
            let why = format!(
                "table {} is {} in {}, not ACTIVE",
                self.spec.table,
                cut(name, 64),
                self.spec.region
            );
            o.output = Some(why.clone());
            probe.raise(Status::Fail, why);
        }
        probe.extra.push(o);
        for replica in table.replicas().iter().take(MAX_REPLICAS) {
            let Some(region) = replica.region_name().filter(|r| region_like(r)) else {
                continue;
            };
            let state = replica.replica_status();
            let name = state.map_or("unknown", ReplicaStatus::as_str);
            let ok = matches!(state, Some(ReplicaStatus::Active));
            let mut o = Observation::new(
                "replicaStatus",
                if ok { Status::Pass } else { Status::Warn },
            )
            .value(cut(name, 64), None)
            .peer(region);
            o.output = Some(format!("replica in {region}: {}", cut(name, 64)));
            if !ok {
                probe.raise(
                    Status::Warn,
                    format!("replica in {region} is {}, not ACTIVE", cut(name, 64)),
                );
            }
            probe.extra.push(o);
            if region != self.spec.region && !listed.iter().any(|r| r == region) {
                listed.push(region.to_owned());
            }
        }
    }

    /// Whether the canary item exists (eventually consistent read, key attributes only).
    async fn canary(&self) -> Result<bool, AwsFailure> {
        let mut get = self
            .client
            .get_item()
            .table_name(&self.spec.table)
            .set_key(Some(
                self.spec
                    .canary_key
                    .iter()
                    .map(|(k, v)| (k.clone(), AttributeValue::S(v.clone())))
                    .collect(),
            ));
        let mut projection = Vec::new();
        for (i, (k, _)) in self.spec.canary_key.iter().enumerate() {
            get = get.expression_attribute_names(format!("#k{i}"), k);
            projection.push(format!("#k{i}"));
        }
        let out = get
            .projection_expression(projection.join(", "))
            .send()
            .await
            .map_err(|e| AwsFailure::of(&e))?;
        Ok(out.item().is_some_and(|item| !item.is_empty()))
    }

    fn canary_text(&self) -> String {
        let parts: Vec<_> = self
            .spec
            .canary_key
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        parts.join(",")
    }

    /// One `replicationLag` observation per peer, read at once; a read not answered by
    /// `until` warns as timed out.
    async fn heartbeats(&self, peers: &[String], until: tokio::time::Instant) -> Vec<Observation> {
        let peers = &peers[..peers.len().min(MAX_PEERS)];
        let mut reads = tokio::task::JoinSet::new();
        for (i, peer) in peers.iter().enumerate() {
            let get = self
                .client
                .get_item()
                .table_name(&self.spec.table)
                .key(
                    &self.spec.partition_key,
                    AttributeValue::S(heartbeat::item_key(peer)),
                )
                .projection_expression("#a, #p")
                .expression_attribute_names("#a", heartbeat::AT_MS)
                .expression_attribute_names("#p", heartbeat::PERIOD_MS);
            reads.spawn(async move { (i, get.send().await.map_err(|e| AwsFailure::of(&e))) });
        }
        let mut seen: Vec<_> = peers.iter().map(|_| None).collect();
        while let Ok(Some(joined)) = tokio::time::timeout_at(until, reads.join_next()).await {
            if let Ok((i, read)) = joined {
                seen[i] = Some(read);
            }
        }
        let now_ms = heartbeat::unix_ms(SystemTime::now());
        let mut out = Vec::with_capacity(peers.len());
        // Peers in their configured (or listed) order, whatever order the reads finished in.
        for (peer, read) in peers.iter().zip(seen) {
            let read = read.unwrap_or_else(|| {
                Err(AwsFailure {
                    code: None,
                    text: "timed out".into(),
                })
            });
            let source = format!("{peer}'s heartbeat");
            let o = match read {
                Ok(out) => match out.item().map(heartbeat::Beat::from_item) {
                    Some(Some(beat)) => self.spec.lag.observe(beat.lag(now_ms), &source),
                    Some(None) => Observation::new("replicationLag", Status::Warn)
                        .output(format!("{source} item is malformed (at_ms, period_ms)")),
                    None => Observation::new("replicationLag", Status::Warn).output(format!(
                        "no heartbeat item from {peer} yet: is its status endpoint writing heartbeats?"
                    )),
                },
                Err(f) => Observation::new("replicationLag", Status::Warn)
                    .output(format!("reading {source} failed: {f}")),
            };
            out.push(o.peer(peer));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_char_boundaries() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(cut("ééé", 3), "é…");
    }

    #[test]
    fn region_names_from_the_network_are_checked() {
        assert!(region_like("ap-southeast-2"));
        assert!(!region_like(""));
        assert!(!region_like("us-east-1\"} 1\nfake_metric{"));
        assert!(!region_like(&"a".repeat(33)));
    }
}
