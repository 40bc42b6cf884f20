//! One notification event: the JSON every sink sends (a webhook's body, an SNS message; Slack
//! gets [`NotifyEvent::text`]), documented by `docs/notify-event.schema.json`. Its id is made
//! of what it is about (fleet, kind, service, Region, time), so the same event raised twice
//! (a retried evaluation, a replica taking over) carries the same id and is sent once.

use serde::{Deserialize, Serialize};
use vantage_protocol::config::{format_rfc3339_ms, EventKind, Severity};

/// `schema` of every event; bumped when a field changes meaning or goes away.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyEvent {
    pub schema: u32,
    /// Stable for the same happening; receivers may deduplicate on it too.
    pub id: String,
    pub kind: EventKind,
    pub severity: Severity,
    /// When it happened: RFC 3339 UTC, and Unix milliseconds.
    pub time: String,
    pub at_ms: u64,
    pub fleet: String,
    /// The service (absent for fleet-wide events: an agent gone silent, a test).
    pub service: Option<String>,
    pub region: Option<String>,
    /// Why, in the words of the decision log.
    pub reason: String,
    /// Who did it (an override's admin key id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The status page for this service and Region (`[notifications] status_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// How urgent each kind is.
pub const fn severity_of(kind: EventKind) -> Severity {
    match kind {
        EventKind::RegionOut
        | EventKind::CorrelatedFailure
        | EventKind::FailOpen
        | EventKind::ReconcileFailed => Severity::Critical,
        EventKind::Override | EventKind::AgentSilent => Severity::Warning,
        EventKind::RegionIn
        | EventKind::MaintenanceStarted
        | EventKind::MaintenanceEnded
        | EventKind::Test => Severity::Info,
    }
}

impl NotifyEvent {
    pub fn new(
        fleet: &str,
        kind: EventKind,
        at_ms: u64,
        service: Option<&str>,
        region: Option<&str>,
        reason: String,
    ) -> NotifyEvent {
        let id = format!(
            "{fleet}/{}/{}/{}/{at_ms}",
            kind.as_str(),
            service.unwrap_or("-"),
            region.unwrap_or("-")
        );
        NotifyEvent {
            schema: EVENT_SCHEMA_VERSION,
            id,
            kind,
            severity: severity_of(kind),
            time: format_rfc3339_ms(at_ms),
            at_ms,
            fleet: fleet.to_owned(),
            service: service.map(str::to_owned),
            region: region.map(str::to_owned),
            reason,
            by: None,
            link: None,
        }
    }

    pub fn with_by(mut self, by: &str) -> Self {
        self.by = Some(by.to_owned());
        self
    }

    /// The status page link: `<base>/?service=S&region=R` (only what the event names).
    pub fn with_link(mut self, base: Option<&str>) -> Self {
        self.link = base.map(|b| {
            let mut q = Vec::new();
            if let Some(s) = &self.service {
                q.push(format!("service={}", encode(s)));
            }
            if let Some(r) = &self.region {
                q.push(format!("region={}", encode(r)));
            }
            if q.is_empty() {
                format!("{b}/")
            } else {
                format!("{b}/?{}", q.join("&"))
            }
        });
        self
    }

    /// One line for people (Slack, an SNS subject): severity, kind, where, why, who, link.
    pub fn text(&self) -> String {
        let icon = match self.severity {
            Severity::Critical => ":red_circle:",
            Severity::Warning => ":warning:",
            Severity::Info => ":information_source:",
        };
        let place = match (&self.service, &self.region) {
            (Some(s), Some(r)) => format!(" {s}/{r}"),
            (Some(s), None) => format!(" {s}"),
            (None, Some(r)) => format!(" {r}"),
            (None, None) => String::new(),
        };
        let mut t = format!(
            "{icon} [{}] {}{place} ({}): {}",
            self.severity.as_str(),
            self.kind.as_str(),
            self.fleet,
            self.reason
        );
        if let Some(by) = &self.by {
            t.push_str(&format!(" — by {by}"));
        }
        if let Some(link) = &self.link {
            t.push_str(&format!(" <{link}|status>"));
        }
        t
    }
}

/// Query-string encoding of the few characters names may hold beyond unreserved ones.
fn encode(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || "-_.~".contains(c) {
                vec![c]
            } else {
                let mut b = [0; 4];
                c.encode_utf8(&mut b)
                    .bytes()
                    .flat_map(|x| format!("%{x:02X}").chars().collect::<Vec<_>>())
                    .collect()
            }
        })
        .collect()
}
