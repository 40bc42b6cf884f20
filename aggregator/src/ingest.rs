//! Accepting one interval report: size cap, HMAC check (the shared code in
//! `vantage_protocol::auth`), parse, the key's right to speak for the report's vantage, sender
//! and clock checks, then [`crate::prepare`] (validation against the fleet and every histogram
//! decoded, with no lock held), deduplication by agent and sequence number and the merge into
//! its interval of the window. Every refusal says why and maps to one HTTP status (413, 401,
//! 403 or 400); a replay is a duplicate (409) so agents can retry freely — also after a
//! restart, from the highest sequence numbers the state file keeps — and a report older than
//! the window is acknowledged but ignored (200, stale).

use crate::backend::Backend;
use crate::prepare::prepare;
use crate::service::{lock, unix_ms, Aggregator};
use http::StatusCode;
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;
use vantage_protocol::auth;
use vantage_protocol::report::{IntervalReport, IntervalReportOf, IntervalReportRef};
use vantage_protocol::Phase;

/// How a report was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Accepted { targets: u64 },
    Duplicate,
    Stale,
}

/// Why a report was refused. Messages name key ids, vantages and targets, never key material.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("report body over {0} bytes")]
    TooLarge(u64),
    #[error("authentication failed: {0}")]
    Auth(#[from] auth::AuthError),
    #[error("key {key_id:?} may not report for vantage {vantage:?}")]
    Forbidden { key_id: String, vantage: String },
    #[error("malformed report: {0}")]
    Malformed(String),
    #[error("invalid report: {0}")]
    Invalid(#[from] vantage_protocol::report::ReportError),
    #[error("vantage {0:?} is not in the fleet file")]
    UnknownVantage(String),
    #[error("target {0:?} is not in the fleet file")]
    UnknownTarget(String),
    #[error("target {target:?}: Region {region:?} (or its kind) is not the fleet file's")]
    UnknownRegion { target: String, region: String },
    #[error("target {target}: histogram {phase} holds {count} samples, expected {expected}")]
    HistogramCount {
        target: String,
        phase: Phase,
        count: String,
        expected: String,
    },
    #[error("report is for fleet {0:?}, this aggregator serves {1:?}")]
    WrongFleet(String, String),
    #[error("interval starts {0} s in the future: check the agent's clock")]
    Future(u64),
    #[error("too many reports being uploaded at once; retry shortly")]
    Busy,
    #[error("the report body did not arrive within {0} s")]
    SlowBody(u64),
}

impl IngestError {
    /// The HTTP status the API answers with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Auth(_) => StatusCode::UNAUTHORIZED,
            IngestError::Forbidden { .. } => StatusCode::FORBIDDEN,
            IngestError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The `reason` label of the rejected-reports counter.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            IngestError::TooLarge(_) => "too_large",
            IngestError::Auth(_) => "auth",
            IngestError::Forbidden { .. } => "forbidden",
            IngestError::Malformed(_) => "malformed",
            IngestError::Invalid(_) | IngestError::HistogramCount { .. } => "invalid",
            IngestError::UnknownVantage(_) | IngestError::WrongFleet(..) => "unknown_sender",
            IngestError::UnknownTarget(_) | IngestError::UnknownRegion { .. } => "unknown_target",
            IngestError::Future(_) => "clock",
            IngestError::Busy => "busy",
            IngestError::SlowBody(_) => "slow_body",
        }
    }
}

/// Seen sequence numbers per agent, with the interval each belonged to (for pruning), and
/// each agent's highest accepted number, which the state file keeps across restarts.
#[derive(Default)]
pub(crate) struct Seen {
    seqs: HashMap<String, BTreeMap<u64, u64>>,
    highest: BTreeMap<String, u64>,
    /// The highest numbers of the previous run: anything at or below is a replay.
    floor: BTreeMap<String, u64>,
}

impl Seen {
    /// Resumes from the highest numbers the previous run accepted.
    pub(crate) fn restore(highest: BTreeMap<String, u64>) -> Self {
        Seen {
            seqs: HashMap::new(),
            floor: highest.clone(),
            highest,
        }
    }

    /// Records `seq`; false if it was already there (or at or below the restored floor).
    pub(crate) fn insert(&mut self, agent: &str, seq: u64, interval_ms: u64) -> bool {
        if self.floor.get(agent).is_some_and(|floor| seq <= *floor) {
            return false;
        }
        let seqs = self.seqs.entry(agent.to_owned()).or_default();
        if seqs.contains_key(&seq) {
            return false;
        }
        seqs.insert(seq, interval_ms);
        match self.highest.get_mut(agent) {
            Some(h) => *h = (*h).max(seq),
            None => {
                self.highest.insert(agent.to_owned(), seq);
            }
        }
        true
    }

    /// Each agent's highest accepted sequence number, for the state file.
    pub(crate) fn highest(&self) -> &BTreeMap<String, u64> {
        &self.highest
    }

    /// Drops sequence numbers of intervals before `oldest_interval_ms`: the window no longer
    /// holds them, so a replay of one is stale before it could be a duplicate.
    pub(crate) fn prune(&mut self, oldest_interval_ms: u64) {
        self.seqs.retain(|_, seqs| {
            seqs.retain(|_, interval| *interval >= oldest_interval_ms);
            !seqs.is_empty()
        });
    }
}

impl<B: Backend> Aggregator<B> {
    /// Verifies, parses, checks, decodes, deduplicates and merges one report. Decoding runs
    /// before any lock; call it from `spawn_blocking` for large bodies.
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
        let key_id = auth::verify(
            |n| headers.get(n).map(String::as_str),
            |id| config.keys.get(id).map(Vec::as_slice),
            body,
            now_secs,
            auth::DEFAULT_MAX_SKEW_SECS,
        )?;
        // Strings borrowed from the body: no copy of each target id and histogram. A string
        // with a JSON escape cannot be borrowed; such a report (or a malformed one, for the
        // error message) is parsed again into owned strings.
        match serde_json::from_slice::<IntervalReportRef>(body) {
            Ok(report) => self.ingest_parsed(report, key_id, &config, now),
            Err(_) => {
                let report: IntervalReport = serde_json::from_slice(body)
                    .map_err(|e| IngestError::Malformed(e.to_string()))?;
                self.ingest_parsed(report, key_id, &config, now)
            }
        }
    }

    /// The rest of [`Self::ingest`] once the body is verified and parsed.
    fn ingest_parsed<S: AsRef<str>>(
        &self,
        report: IntervalReportOf<S>,
        key_id: &str,
        config: &crate::config::AggregatorConfig,
        now: SystemTime,
    ) -> Result<Ingested, IngestError> {
        let fleet = config.fleet.fleet.name.get_ref();
        if report.fleet.as_ref() != fleet {
            return Err(IngestError::WrongFleet(
                report.fleet.as_ref().to_owned(),
                fleet.clone(),
            ));
        }
        let vantage = report.vantage.as_ref();
        if config.fleet.vantage(vantage).is_none() {
            return Err(IngestError::UnknownVantage(vantage.to_owned()));
        }
        // A valid signature says which key signed, not that the key may speak for this
        // vantage: without this check one stolen key could fake a quorum.
        let covered = config
            .key_vantages
            .get(key_id)
            .is_some_and(|v| v.contains(vantage));
        if !covered {
            return Err(IngestError::Forbidden {
                key_id: key_id.to_owned(),
                vantage: vantage.to_owned(),
            });
        }
        let now_ms = unix_ms(now);
        // Signed by a key that may speak for it: the vantage's agent is alive, whatever the
        // report's fate below.
        lock(&self.silence).heard(vantage, now_ms);
        let skew_ms = auth::DEFAULT_MAX_SKEW_SECS * 1000;
        if report.interval_start_ms > now_ms.saturating_add(skew_ms) {
            return Err(IngestError::Future(
                (report.interval_start_ms - now_ms) / 1000,
            ));
        }
        let window_ms = config.window.as_millis() as u64;
        let end_ms = report
            .interval_start_ms
            .saturating_add(report.interval_ms)
            .saturating_add(window_ms);
        if end_ms < now_ms {
            report.validate()?;
            return Ok(Ingested::Stale);
        }
        let prepared = prepare(report, config)?;
        // Deduplication and merge under one window lock: a concurrent ingest or pruning
        // evaluation sees both or neither. Nothing is decoded while it is held.
        let mut window = lock(&self.window);
        if !lock(&self.seen).insert(&prepared.agent_id, prepared.seq, prepared.interval_start_ms) {
            return Ok(Ingested::Duplicate);
        }
        let merged = window.merge(prepared);
        Ok(Ingested::Accepted {
            targets: merged.targets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_refuses_replays_per_agent() {
        let mut seen = Seen::default();
        assert!(seen.insert("a", 1, 1_000));
        assert!(!seen.insert("a", 1, 1_000), "a replay");
        assert!(seen.insert("b", 1, 1_000), "another agent's number 1");
        assert!(seen.insert("a", 5, 1_000));
        assert!(seen.insert("a", 3, 1_000), "late but new");
        assert_eq!(seen.highest()["a"], 5);
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
        assert!(!seen.seqs.contains_key("b"));
    }

    #[test]
    fn restored_floor_refuses_old_numbers_after_a_restart() {
        let mut seen = Seen::restore(BTreeMap::from([("a".to_owned(), 10)]));
        assert!(!seen.insert("a", 10, 1_000));
        assert!(!seen.insert("a", 3, 1_000));
        assert!(seen.insert("a", 11, 1_000));
        assert!(seen.insert("b", 1, 1_000), "other agents are unaffected");
        assert_eq!(seen.highest()["a"], 11);
    }
}
