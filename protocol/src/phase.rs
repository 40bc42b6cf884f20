//! The timed phases of one probe. Each phase has its own latency histogram.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One timed step of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Name resolution (absent for IP literals and `--resolve` overrides).
    Dns,
    /// TCP three-way handshake.
    Connect,
    /// TLS handshake, certificate verification included.
    Tls,
    /// From the last request byte written to the first response byte read.
    Ttfb,
    /// From the first response byte to the end of the body (or the body cap).
    Transfer,
    /// The whole probe; for scheduled probes measured from the intended start, so a late start
    /// shows as latency instead of vanishing (coordinated omission).
    Total,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Dns,
        Phase::Connect,
        Phase::Tls,
        Phase::Ttfb,
        Phase::Transfer,
        Phase::Total,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Dns => "dns",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Ttfb => "ttfb",
            Phase::Transfer => "transfer",
            Phase::Total => "total",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}
