//! Where the aggregator tells people what it did: `[[notify]]` sinks (an SNS topic, a signed
//! JSON webhook, a Slack-compatible incoming webhook), each with a filter (event kinds,
//! services, minimum severity), and `[notifications]`, the settings every sink shares (the
//! status page link, when repeated reconcile failures and a silent vantage become events).
//! Checked here without I/O; the aggregator reads secrets and opens clients
//! (`vantage_aggregator::notify`).

use super::{ConfigError, DurationText, FleetConfig, Located, Problem};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// Default time for one delivery attempt (connect, request and answer).
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default attempts per event before it is dead-lettered.
pub const DEFAULT_NOTIFY_ATTEMPTS: u32 = 5;
/// Default events waiting per sink; a full queue drops (and counts) new events.
pub const DEFAULT_NOTIFY_QUEUE: usize = 256;
/// Default consecutive failed control-plane passes before `reconcile_failed`.
pub const DEFAULT_RECONCILE_FAILED_AFTER: u32 = 3;
/// Default report intervals without a report before `agent_silent`.
pub const DEFAULT_AGENT_SILENT_AFTER: u32 = 3;

/// What happened: the `kind` of a notification event (snake_case on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RegionOut,
    RegionIn,
    CorrelatedFailure,
    FailOpen,
    Override,
    ReconcileFailed,
    AgentSilent,
    MaintenanceStarted,
    MaintenanceEnded,
    /// `vantage notify test`: passes every filter.
    Test,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::RegionOut,
        EventKind::RegionIn,
        EventKind::CorrelatedFailure,
        EventKind::FailOpen,
        EventKind::Override,
        EventKind::ReconcileFailed,
        EventKind::AgentSilent,
        EventKind::MaintenanceStarted,
        EventKind::MaintenanceEnded,
        EventKind::Test,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::RegionOut => "region_out",
            EventKind::RegionIn => "region_in",
            EventKind::CorrelatedFailure => "correlated_failure",
            EventKind::FailOpen => "fail_open",
            EventKind::Override => "override",
            EventKind::ReconcileFailed => "reconcile_failed",
            EventKind::AgentSilent => "agent_silent",
            EventKind::MaintenanceStarted => "maintenance_started",
            EventKind::MaintenanceEnded => "maintenance_ended",
            EventKind::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// How urgent an event is; a sink's `min_severity` drops the less urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// One `[[notify]]` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    /// Short name: the `sink` label of the `vantage_notify_*` metrics and of `notify test`.
    pub name: Located<String>,
    /// "sns", "webhook" or "slack".
    pub kind: Located<String>,
    /// Webhook or Slack URL. A Slack URL is itself a credential: prefer `url_env`.
    pub url: Option<Located<String>>,
    /// An environment variable holding the URL instead of `url`.
    pub url_env: Option<Located<String>>,
    /// Webhook only: an environment variable, or a file, holding the HMAC key that signs the
    /// body (`x-vantage-timestamp`, `x-vantage-signature`, as agents sign reports).
    pub secret_env: Option<Located<String>>,
    pub secret_file: Option<Located<String>>,
    /// SNS only: the topic's ARN.
    pub topic_arn: Option<Located<String>>,
    /// SNS only: endpoint override (moto, a VPC endpoint).
    pub endpoint_url: Option<Located<String>>,
    /// Only these event kinds (default: every kind).
    #[serde(default)]
    pub events: Vec<Located<String>>,
    /// Only these services (default: every service; fleet-wide events always pass).
    #[serde(default)]
    pub services: Vec<Located<String>>,
    /// Drop events less urgent than this: "info" (default), "warning", "critical".
    pub min_severity: Option<Located<String>>,
    /// One attempt's time limit (default 5s).
    pub timeout: Option<DurationText>,
    /// Attempts per event before it is dead-lettered (default 5).
    pub max_attempts: Option<Located<u32>>,
    /// Events waiting for this sink (default 256).
    pub queue: Option<Located<usize>>,
}

/// Which sink a `[[notify]]` entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    Sns,
    Webhook,
    Slack,
}

impl SinkKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            SinkKind::Sns => "sns",
            SinkKind::Webhook => "webhook",
            SinkKind::Slack => "slack",
        }
    }
}

impl NotifySection {
    pub fn sink_kind(&self) -> Option<SinkKind> {
        match self.kind.get_ref().as_str() {
            "sns" => Some(SinkKind::Sns),
            "webhook" => Some(SinkKind::Webhook),
            "slack" => Some(SinkKind::Slack),
            _ => None,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_NOTIFY_TIMEOUT, |d| d.0)
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
            .as_ref()
            .map_or(DEFAULT_NOTIFY_ATTEMPTS, |n| *n.get_ref())
    }

    pub fn queue(&self) -> usize {
        self.queue
            .as_ref()
            .map_or(DEFAULT_NOTIFY_QUEUE, |n| *n.get_ref())
    }

    /// The filter's event kinds; empty: every kind.
    pub fn event_kinds(&self) -> BTreeSet<EventKind> {
        self.events
            .iter()
            .filter_map(|e| EventKind::parse(e.get_ref()))
            .collect()
    }

    pub fn min_severity(&self) -> Severity {
        self.min_severity
            .as_ref()
            .and_then(|s| Severity::parse(s.get_ref()))
            .unwrap_or(Severity::Info)
    }

    /// The AWS Region of the topic: the ARN's fourth field.
    pub fn topic_region(&self) -> Option<&str> {
        self.topic_arn.as_ref()?.get_ref().split(':').nth(3)
    }
}

/// `[notifications]`: what every sink shares.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsSection {
    /// Base URL of the status page; each event links to `<status_url>/?service=..&region=..`.
    pub status_url: Option<Located<String>>,
    /// Consecutive failed control-plane passes before `reconcile_failed` (default 3).
    pub reconcile_failed_after: Option<Located<u32>>,
    /// Report intervals without a report from a vantage before `agent_silent` (default 3).
    pub agent_silent_after: Option<Located<u32>>,
}

impl NotificationsSection {
    pub fn reconcile_failed_after(&self) -> u32 {
        self.reconcile_failed_after
            .as_ref()
            .map_or(DEFAULT_RECONCILE_FAILED_AFTER, |n| *n.get_ref())
    }

    pub fn agent_silent_after(&self) -> u32 {
        self.agent_silent_after
            .as_ref()
            .map_or(DEFAULT_AGENT_SILENT_AFTER, |n| *n.get_ref())
    }
}

fn http_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://")) && s.len() > "http://x".len()
}

impl FleetConfig {
    /// Every `[[notify]]` entry and `[notifications]`: known kinds, the keys each kind needs
    /// (and only those), filters naming real event kinds, services and severities, unique
    /// names, sane bounds.
    pub(super) fn validate_notify(&self) -> Result<(), ConfigError> {
        let services: BTreeSet<&str> = self.services().iter().map(|s| s.name.as_str()).collect();
        let mut names = BTreeSet::new();
        for (i, n) in self.notify.iter().enumerate() {
            let key = |k: &str| format!("notify[{i}].{k}");
            let err = |at_key: &str, span: Option<std::ops::Range<usize>>, msg: String| {
                self.place(Problem {
                    key: key(at_key),
                    span,
                    message: msg,
                })
            };
            if !super::validate::valid_name(n.name.get_ref()) {
                return Err(self.place(Problem::at(
                    &n.name,
                    key("name"),
                    "use letters, digits, '-', '_' and '.', 1 to 64 characters",
                )));
            }
            if !names.insert(n.name.get_ref().as_str()) {
                return Err(self.place(Problem::at(
                    &n.name,
                    key("name"),
                    "another [[notify]] has this name; names label the metrics, make them unique",
                )));
            }
            let Some(kind) = n.sink_kind() else {
                return Err(self.place(Problem::at(
                    &n.kind,
                    key("kind"),
                    "use \"sns\", \"webhook\" or \"slack\"",
                )));
            };
            let is_sns = kind == SinkKind::Sns;
            for (k, v) in [
                ("topic_arn", &n.topic_arn),
                ("endpoint_url", &n.endpoint_url),
            ] {
                if let (false, Some(v)) = (is_sns, v) {
                    return Err(err(k, Some(v.span()), "only for kind = \"sns\"".into()));
                }
            }
            for (k, v) in [("url", &n.url), ("url_env", &n.url_env)] {
                if let (true, Some(v)) = (is_sns, v) {
                    return Err(err(
                        k,
                        Some(v.span()),
                        "not for kind = \"sns\" (give topic_arn)".into(),
                    ));
                }
            }
            if kind != SinkKind::Webhook {
                for (k, v) in [
                    ("secret_env", &n.secret_env),
                    ("secret_file", &n.secret_file),
                ] {
                    if let Some(v) = v {
                        return Err(err(
                            k,
                            Some(v.span()),
                            "only a kind = \"webhook\" body is signed".into(),
                        ));
                    }
                }
            }
            if let (Some(e), Some(_)) = (&n.secret_env, &n.secret_file) {
                return Err(err(
                    "secret_env",
                    Some(e.span()),
                    "give secret_env or secret_file, not both".into(),
                ));
            }
            if is_sns {
                match &n.topic_arn {
                    None => return Err(self.place(Problem::at(&n.kind, key("topic_arn"), "missing: kind = \"sns\" needs topic_arn = \"arn:aws:sns:REGION:ACCOUNT:TOPIC\""))),
                    Some(arn) => {
                        let parts: Vec<&str> = arn.get_ref().split(':').collect();
                        if parts.len() != 6 || parts[0] != "arn" || parts[2] != "sns" || parts[3].is_empty() || parts[5].is_empty() {
                            return Err(err("topic_arn", Some(arn.span()), "not an SNS topic ARN: use arn:aws:sns:REGION:ACCOUNT:TOPIC".into()));
                        }
                    }
                }
                if let Some(u) = &n.endpoint_url {
                    if !http_url(u.get_ref()) {
                        return Err(err(
                            "endpoint_url",
                            Some(u.span()),
                            "use an http:// or https:// URL".into(),
                        ));
                    }
                }
            } else {
                match (&n.url, &n.url_env) {
                    (None, None) => {
                        return Err(self.place(Problem::at(
                            &n.kind,
                            key("url"),
                            "missing: give url = \"https://...\" or url_env = \"VARIABLE\"",
                        )))
                    }
                    (Some(u), Some(_)) => {
                        return Err(err(
                            "url",
                            Some(u.span()),
                            "give url or url_env, not both".into(),
                        ))
                    }
                    // The URL is never echoed: a Slack URL or a query string may be a secret.
                    (Some(u), None) if !http_url(u.get_ref()) => {
                        return Err(err(
                            "url",
                            Some(u.span()),
                            "use an http:// or https:// URL".into(),
                        ))
                    }
                    _ => {}
                }
            }
            for e in &n.events {
                if EventKind::parse(e.get_ref()).is_none() {
                    let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    return Err(err(
                        "events",
                        Some(e.span()),
                        format!("unknown event kind {:?}; use some of {all:?}", e.get_ref()),
                    ));
                }
            }
            for s in &n.services {
                if !services.contains(s.get_ref().as_str()) {
                    return Err(err(
                        "services",
                        Some(s.span()),
                        format!(
                            "unknown service {:?}; the fleet has {services:?}",
                            s.get_ref()
                        ),
                    ));
                }
            }
            if let Some(s) = &n.min_severity {
                if Severity::parse(s.get_ref()).is_none() {
                    return Err(err(
                        "min_severity",
                        Some(s.span()),
                        "use \"info\", \"warning\" or \"critical\"".into(),
                    ));
                }
            }
            if n.timeout().is_zero() || n.timeout() > Duration::from_secs(60) {
                return Err(self.place(Problem::key(key("timeout"), "must be between 1ms and 60s")));
            }
            if let Some(a) = &n.max_attempts {
                if !(1..=100).contains(a.get_ref()) {
                    return Err(err(
                        "max_attempts",
                        Some(a.span()),
                        "must be 1..=100".into(),
                    ));
                }
            }
            if let Some(q) = &n.queue {
                if !(1..=100_000).contains(q.get_ref()) {
                    return Err(err("queue", Some(q.span()), "must be 1..=100000".into()));
                }
            }
        }
        let s = &self.notifications;
        if let Some(u) = &s.status_url {
            if !http_url(u.get_ref()) {
                return Err(self.place(Problem::at(
                    u,
                    "notifications.status_url",
                    "use an http:// or https:// URL",
                )));
            }
        }
        for (k, v) in [
            ("reconcile_failed_after", &s.reconcile_failed_after),
            ("agent_silent_after", &s.agent_silent_after),
        ] {
            if let Some(v) = v {
                if !(1..=1000).contains(v.get_ref()) {
                    return Err(self.place(Problem::at(
                        v,
                        format!("notifications.{k}"),
                        "must be 1..=1000",
                    )));
                }
            }
        }
        Ok(())
    }
}
