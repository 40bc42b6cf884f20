//! What one probe observed: per-phase timings, the outcome code, and a failure's reason.

use crate::assertion::AssertionFailure;
use http::Version;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use vantage_protocol::{Outcome, Phase};

/// Per-phase durations of one probe; `None` where the phase did not happen (no DNS for an IP
/// literal, no TLS for plain HTTP, nothing after the step that failed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTimings([Option<Duration>; Phase::COUNT]);

impl PhaseTimings {
    pub fn get(&self, phase: Phase) -> Option<Duration> {
        self.0[phase.index()]
    }

    pub fn set(&mut self, phase: Phase, d: Duration) {
        self.0[phase.index()] = Some(d);
    }

    /// Adds to a phase, for redirect chains where a phase happens once per hop.
    pub(crate) fn add(&mut self, phase: Phase, d: Duration) {
        let slot = &mut self.0[phase.index()];
        *slot = Some(slot.unwrap_or_default() + d);
    }

    pub fn iter(&self) -> impl Iterator<Item = (Phase, Duration)> + '_ {
        Phase::ALL
            .into_iter()
            .filter_map(|p| self.get(p).map(|d| (p, d)))
    }
}

/// Why a probe failed, for people and logs. The outcome code is in [`ProbeResult::outcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The phase that was running, when the failure belongs to one.
    pub phase: Option<Phase>,
    pub message: String,
}

/// Everything one probe observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    pub outcome: Outcome,
    pub failure: Option<Failure>,
    pub timings: PhaseTimings,
    /// Status of the final response, if one arrived.
    pub status: Option<u16>,
    pub http_version: Option<Version>,
    /// `TLSv1_2` or `TLSv1_3`.
    pub tls_version: Option<&'static str>,
    /// notAfter of the server's leaf certificate, when it was seen.
    pub cert_not_after: Option<SystemTime>,
    /// Value of the Region header of the final response.
    pub answered_by: Option<String>,
    pub remote_addr: Option<SocketAddr>,
    /// Body bytes read (at most the body cap).
    pub body_bytes: usize,
    pub redirects: u8,
    /// The request went over a kept-open connection (no DNS, connect or TLS phases).
    pub reused_connection: bool,
    /// DNS targets only: the answers of the resolution.
    pub dns: Option<crate::dns::DnsObservation>,
}

impl ProbeResult {
    pub(crate) fn new() -> Self {
        ProbeResult {
            outcome: Outcome::Ok,
            failure: None,
            timings: PhaseTimings::default(),
            status: None,
            http_version: None,
            tls_version: None,
            cert_not_after: None,
            answered_by: None,
            remote_addr: None,
            body_bytes: 0,
            redirects: 0,
            reused_connection: false,
            dns: None,
        }
    }

    /// A result built from parts, for schedulers and recorders under test.
    pub fn synthetic(outcome: Outcome, timings: PhaseTimings) -> Self {
        let mut r = Self::new();
        r.outcome = outcome;
        r.timings = timings;
        r
    }

    /// A response arrived (whatever its assertions said), so its latency is meaningful.
    pub fn got_response(&self) -> bool {
        self.status.is_some()
    }
}

/// A failed step: its outcome code, phase and reason.
pub(crate) struct StepError {
    pub(crate) outcome: Outcome,
    pub(crate) phase: Option<Phase>,
    pub(crate) message: String,
}

impl StepError {
    pub(crate) fn new(outcome: Outcome, phase: Phase, message: impl Into<String>) -> Self {
        StepError {
            outcome,
            phase: Some(phase),
            message: message.into(),
        }
    }

    pub(crate) fn timeout(phase: Phase, limit: Instant, phase_start: Instant) -> Self {
        let waited = limit.saturating_duration_since(phase_start);
        StepError::new(
            Outcome::Timeout,
            phase,
            format!("{phase} did not finish within {waited:.3?}"),
        )
    }
}

impl From<AssertionFailure> for StepError {
    fn from(a: AssertionFailure) -> Self {
        StepError {
            outcome: a.outcome,
            phase: None,
            message: a.message,
        }
    }
}
