//! The `[[dynamodb]]` tables of the status endpoint's configuration: their keys, defaults and
//! validation (see [`crate::checks::dynamodb`] for what the check does with them).

use super::{Config, ConfigError};
use serde::Deserialize;
use std::time::Duration;

/// DynamoDB heartbeat defaults: how often this Region writes its item, and the lag (now − a
/// peer's write time − its period) at which the check warns and fails.
pub const DEFAULT_HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
pub const DEFAULT_DYNAMODB_LAG_WARN: Duration = Duration::from_secs(5);
/// Never, unless `lag_fail` is set: a peer Region that is down stops writing its heartbeat,
/// which looks exactly like a replication stall from here. Failing on it by default would let
/// one dead Region fail every healthy Region's deep check at once — the correlated take-out
/// failover must never cause.
pub const DEFAULT_DYNAMODB_LAG_FAIL: Duration = Duration::MAX;
/// The partition key attribute heartbeat items are written under, unless `partition_key` says.
pub const DEFAULT_PARTITION_KEY: &str = "pk";

/// [`Config::validate`]'s rule for a check's timeout (key, value → the value or its error).
pub(super) type TimeoutRule<'a> =
    dyn Fn(&str, Option<Duration>) -> Result<Duration, ConfigError> + 'a;

/// A DynamoDB table (a global table's replica in this Region) to check; see
/// [`crate::checks::dynamodb`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DynamoTable {
    pub table: String,
    /// Component name; default `dynamodb-<table>` (lowercased, other characters as `-`).
    pub name: Option<String>,
    /// The whole primary key of an item that always exists, attribute name → string value.
    #[serde(default)]
    pub canary_key: std::collections::BTreeMap<String, String>,
    /// Regions whose heartbeats are read; default: the replicas DescribeTable lists.
    pub peers: Option<Vec<String>>,
    /// Default true; false is read-only mode (no heartbeat writer in this Region).
    pub heartbeat: Option<bool>,
    #[serde(default, deserialize_with = "super::opt_duration")]
    pub heartbeat_every: Option<Duration>,
    /// Name of the table's partition key attribute (a string), for heartbeat items.
    pub partition_key: Option<String>,
    #[serde(default, deserialize_with = "super::opt_duration")]
    pub lag_warn: Option<Duration>,
    #[serde(default, deserialize_with = "super::opt_duration")]
    pub lag_fail: Option<Duration>,
    #[serde(default, deserialize_with = "super::opt_duration")]
    pub timeout: Option<Duration>,
    /// Default true.
    pub critical: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DynamoSettings {
    pub name: String,
    pub table: String,
    pub canary_key: Vec<(String, String)>,
    pub peers: Option<Vec<String>>,
    /// `None`: read-only mode; `Some(period)`: write this Region's heartbeat every period.
    pub heartbeat_every: Option<Duration>,
    pub partition_key: String,
    pub lag_warn: Duration,
    pub lag_fail: Duration,
    pub timeout: Duration,
    pub critical: bool,
}

impl Config {
    /// One `[[dynamodb]]` table, checked and with its defaults.
    pub(super) fn dynamo(
        &self,
        i: usize,
        t: &DynamoTable,
        region: &str,
        timeout: &TimeoutRule<'_>,
    ) -> Result<DynamoSettings, ConfigError> {
        let key = |k: &str| format!("dynamodb[{i}].{k}");
        // DynamoDB's own rule for table names: 3 to 255 of [a-zA-Z0-9_.-].
        if !(3..=255).contains(&t.table.len())
            || !t
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(self.invalid(
                &key("table"),
                format!(
                    "{:?} is not a table name (3 to 255 of letters, digits, '_', '-', '.')",
                    t.table
                ),
            ));
        }
        if t.canary_key.is_empty() || t.canary_key.len() > 2 {
            return Err(self.invalid(
                &key("canary_key"),
                "missing or too long: name the whole primary key (1 or 2 string attributes) of an item that always exists, as canary_key = { ATTRIBUTE = VALUE } or --dynamodb-canary-key TABLE:ATTRIBUTE=VALUE",
            ));
        }
        if let Some((k, _)) = t
            .canary_key
            .iter()
            .find(|(k, v)| k.is_empty() || v.is_empty() || k.len() > 255 || v.len() > 1024)
        {
            return Err(self.invalid(
                &key("canary_key"),
                format!("attribute {k}: names and values must be non-empty (names up to 255 bytes, values up to 1024)"),
            ));
        }
        if let Some(peers) = &t.peers {
            if let Some(p) = peers.iter().find(|p| {
                p.is_empty()
                    || p.as_str() == region
                    || !p
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            }) {
                return Err(self.invalid(
                    &key("peers"),
                    format!("{p:?}: name other Regions (like us-east-1), not this one"),
                ));
            }
        }
        let every = t.heartbeat_every.unwrap_or(DEFAULT_HEARTBEAT_EVERY);
        if every < Duration::from_millis(100) || every > Duration::from_secs(300) {
            return Err(self.invalid(
                &key("heartbeat_every"),
                format!("{every:?} must be between 100ms and 300s"),
            ));
        }
        let lag_warn = t.lag_warn.unwrap_or(DEFAULT_DYNAMODB_LAG_WARN);
        let lag_fail = t.lag_fail.unwrap_or(DEFAULT_DYNAMODB_LAG_FAIL);
        if lag_warn > lag_fail {
            return Err(self.invalid(
                &key("lag_warn"),
                format!("{lag_warn:?} is above lag_fail ({lag_fail:?})"),
            ));
        }
        let partition_key = t
            .partition_key
            .clone()
            .unwrap_or_else(|| DEFAULT_PARTITION_KEY.to_owned());
        if partition_key.is_empty() || partition_key.len() > 255 {
            return Err(self.invalid(&key("partition_key"), "must be 1 to 255 bytes"));
        }
        let name = match &t.name {
            Some(n) => n.clone(),
            None => format!(
                "dynamodb-{}",
                t.table
                    .chars()
                    .map(|c| match c.to_ascii_lowercase() {
                        c @ ('a'..='z' | '0'..='9' | '_') => c,
                        _ => '-',
                    })
                    .collect::<String>()
            ),
        };
        Ok(DynamoSettings {
            name,
            table: t.table.clone(),
            canary_key: t
                .canary_key
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            peers: t.peers.clone(),
            heartbeat_every: t.heartbeat.unwrap_or(true).then_some(every),
            partition_key,
            lag_warn,
            lag_fail,
            timeout: timeout(&key("timeout"), t.timeout)?,
            critical: t.critical.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigError, DEFAULT_CHECK_TIMEOUT};
    use super::*;

    fn parse(text: &str) -> Result<super::super::Settings, ConfigError> {
        Config::from_toml(text, "test.toml")?.validate()
    }

    #[test]
    fn dynamodb_tables_parse_with_defaults() {
        let s = parse(
            r#"
region = "eu-west-1"
[[dynamodb]]
table = "Rates.v2"
canary_key = { pk = "rate#EURUSD", sk = "latest" }
[[dynamodb]]
table = "orders"
name = "orders-table"
canary_key = { id = "canary" }
peers = ["us-east-1"]
heartbeat = false
partition_key = "id"
lag_warn = "2s"
lag_fail = "4s"
critical = false
"#,
        )
        .unwrap();
        let rates = &s.dynamodb[0];
        assert_eq!(rates.name, "dynamodb-rates-v2");
        assert_eq!(
            rates.canary_key,
            [
                ("pk".to_owned(), "rate#EURUSD".to_owned()),
                ("sk".to_owned(), "latest".to_owned())
            ]
        );
        assert_eq!(rates.peers, None);
        assert_eq!(rates.heartbeat_every, Some(DEFAULT_HEARTBEAT_EVERY));
        assert_eq!(rates.partition_key, "pk");
        assert_eq!(
            (rates.lag_warn, rates.lag_fail),
            (DEFAULT_DYNAMODB_LAG_WARN, DEFAULT_DYNAMODB_LAG_FAIL)
        );
        assert_eq!(rates.timeout, DEFAULT_CHECK_TIMEOUT);
        assert!(rates.critical);
        let orders = &s.dynamodb[1];
        assert_eq!(orders.name, "orders-table");
        assert_eq!(orders.heartbeat_every, None, "read-only mode");
        assert_eq!(orders.peers.as_deref(), Some(&["us-east-1".to_owned()][..]));
        assert_eq!(orders.partition_key, "id");
        assert!(!orders.critical);
    }

    #[test]
    fn dynamodb_validation_names_the_key() {
        let table = |extra: &str| {
            format!("region = \"eu-west-1\"\n[[dynamodb]]\ntable = \"rates\"\ncanary_key = {{ pk = \"c\" }}\n{extra}")
        };
        let cases = [
            (
                "region = \"a\"\n[[dynamodb]]\ntable = \"no/slash\"\ncanary_key = { pk = \"c\" }"
                    .to_owned(),
                "dynamodb[0].table",
            ),
            (
                "region = \"a\"\n[[dynamodb]]\ntable = \"rates\"".to_owned(),
                "dynamodb[0].canary_key",
            ),
            (table("peers = [\"eu-west-1\"]"), "dynamodb[0].peers"),
            (table("peers = [\"US East\"]"), "dynamodb[0].peers"),
            (
                table("heartbeat_every = \"10ms\""),
                "dynamodb[0].heartbeat_every",
            ),
            (
                table("lag_warn = \"9s\"\nlag_fail = \"1s\""),
                "dynamodb[0].lag_warn",
            ),
            (table("timeout = \"5s\""), "dynamodb[0].timeout"),
            (table("name = \"lambda\""), "dynamodb[0].name"),
        ];
        let e = parse("region = \"a\"\n[[dynamodb]]\ntable = \"rates\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("as canary_key = { ATTRIBUTE = VALUE } or --dynamodb-canary-key TABLE:ATTRIBUTE=VALUE"),
            "{e}"
        );
        for (text, key) in cases {
            match parse(&text) {
                Err(e @ (ConfigError::Invalid { .. } | ConfigError::Setting { .. })) => {
                    assert_eq!(e.key(), Some(key), "{text}")
                }
                other => panic!("{text}: expected an error on {key}, got {other:?}"),
            }
        }
    }
}
