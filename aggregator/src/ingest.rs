//! Accepting one interval report: size cap, HMAC check (the shared code in
//! `vantage_protocol::auth`), parse and validate, sender and clock checks, then deduplication by
//! agent and sequence number and the merge into its interval of the window. Every refusal says
//! why and maps to one HTTP status (413, 401 or 400); a replay is a duplicate (409) so agents can
//! retry freely, and a report older than the window is acknowledged but ignored (200, stale).

use crate::backend::Backend;
use crate::service::{lock, unix_ms, Aggregator};
use http::StatusCode;
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;
use vantage_protocol::auth;
use vantage_protocol::report::IntervalReport;

/// How a report was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Accepted { targets: u64 },
    Duplicate,
    Stale,
}

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("report body over {0} bytes")]
    TooLarge(u64),
    #[error("authentication failed: {0}")]
    Auth(#[from] auth::AuthError),
    #[error("malformed report: {0}")]
    Malformed(String),
    #[error("invalid report: {0}")]
    Invalid(#[from] vantage_protocol::report::ReportError),
    #[error("vantage {0:?} is not in the fleet file")]
    UnknownVantage(String),
    #[error("report is for fleet {0:?}, this aggregator serves {1:?}")]
    WrongFleet(String, String),
    #[error("interval starts {0} s in the future: check the agent's clock")]
    Future(u64),
}

impl IngestError {
    /// The HTTP status the API answers with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Auth(_) => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The `reason` label of the rejected-reports counter.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            IngestError::TooLarge(_) => "too_large",
            IngestError::Auth(_) => "auth",
            IngestError::Malformed(_) => "malformed",
            IngestError::Invalid(_) => "invalid",
            IngestError::UnknownVantage(_) | IngestError::WrongFleet(..) => "unknown_sender",
            IngestError::Future(_) => "clock",
        }
    }
}

/// Seen sequence numbers per agent, with the interval each belonged to (for pruning).
#[derive(Default)]
pub(crate) struct Seen(HashMap<String, BTreeMap<u64, u64>>);

impl Seen {
    /// Records `seq`; false if it was already there.
    pub(crate) fn insert(&mut self, agent: &str, seq: u64, interval_ms: u64) -> bool {
        let seqs = self.0.entry(agent.to_owned()).or_default();
        if seqs.contains_key(&seq) {
            return false;
        }
        seqs.insert(seq, interval_ms);
        true
    }

    /// Forgets `seq`, so that a report refused after it was recorded may be sent again.
    fn forget(&mut self, agent: &str, seq: u64) {
        if let Some(seqs) = self.0.get_mut(agent) {
            seqs.remove(&seq);
        }
    }

    /// Drops sequence numbers of intervals before `oldest_interval_ms`: the window no longer
    /// holds them, so a replay of one is stale before it could be a duplicate.
    pub(crate) fn prune(&mut self, oldest_interval_ms: u64) {
        self.0.retain(|_, seqs| {
            seqs.retain(|_, interval| *interval >= oldest_interval_ms);
            !seqs.is_empty()
        });
    }
}

impl<B: Backend> Aggregator<B> {
    /// Verifies, parses, deduplicates and merges one report.
    pub fn ingest(
        &self,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Ingested, IngestError> {
        let config = self.config();
        if body.len() as u64 > config.max_report_bytes {
            return Err(IngestError::TooLarge(config.max_report_bytes));
        }
        let headers: HashMap<&str, String> = [
            auth::HEADER_KEY_ID,
            auth::HEADER_TIMESTAMP,
            auth::HEADER_SIGNATURE,
        ]
        .into_iter()
        .filter_map(|n| header(n).map(|v| (n, v)))
        .collect();
        let now_secs = unix_ms(now) / 1000;
        auth::verify(
            |n| headers.get(n).map(String::as_str),
            |id| config.keys.get(id).map(Vec::as_slice),
            body,
            now_secs,
            auth::DEFAULT_MAX_SKEW_SECS,
        )?;
        let report: IntervalReport =
            serde_json::from_slice(body).map_err(|e| IngestError::Malformed(e.to_string()))?;
        report.validate()?;
        let fleet = config.fleet.fleet.name.get_ref();
        if &report.fleet != fleet {
            return Err(IngestError::WrongFleet(report.fleet, fleet.clone()));
        }
        if config.fleet.vantage(&report.vantage).is_none() {
            return Err(IngestError::UnknownVantage(report.vantage));
        }
        let now_ms = unix_ms(now);
        if report.interval_start_ms > now_ms + auth::DEFAULT_MAX_SKEW_SECS * 1000 {
            return Err(IngestError::Future(
                (report.interval_start_ms - now_ms) / 1000,
            ));
        }
        let window_ms = config.window.as_millis() as u64;
        if report.interval_start_ms + report.interval_ms + window_ms < now_ms {
            return Ok(Ingested::Stale);
        }
        // Deduplication and merge under one window lock: a concurrent ingest or pruning
        // evaluation sees both or neither.
        let mut window = lock(&self.window);
        if !lock(&self.seen).insert(&report.agent_id, report.seq, report.interval_start_ms) {
            return Ok(Ingested::Duplicate);
        }
        match window.merge(&report) {
            Ok(m) => Ok(Ingested::Accepted { targets: m.targets }),
            Err(e) => {
                // Decoding the histograms failed after the sequence number was recorded: a
                // report refused as malformed may be sent again, corrected, with the same number.
                lock(&self.seen).forget(&report.agent_id, report.seq);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_refuses_replays_per_agent_and_forgets_on_request() {
        let mut seen = Seen::default();
        assert!(seen.insert("a", 1, 1_000));
        assert!(!seen.insert("a", 1, 1_000), "a replay");
        assert!(seen.insert("b", 1, 1_000), "another agent's number 1");
        seen.forget("a", 1);
        assert!(seen.insert("a", 1, 1_000), "forgotten, so accepted again");
        seen.forget("nobody", 7);
    }

    #[test]
    fn seen_prunes_by_interval_and_drops_empty_agents() {
        let mut seen = Seen::default();
        seen.insert("a", 1, 1_000);
        seen.insert("a", 2, 2_000);
        seen.insert("b", 1, 1_000);
        seen.prune(2_000);
        assert!(seen.insert("a", 1, 1_000), "pruned");
        assert!(
            !seen.insert("a", 2, 2_000),
            "kept: its interval is in the window"
        );
        assert!(!seen.0.contains_key("b"));
    }
}
