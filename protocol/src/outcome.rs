//! Probe outcome codes: a small fixed set so that metrics labels and report keys stay bounded
//! and comparable across agents and versions. A failure is always one of these, never the text
//! of an error message.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How one probe ended. `Ok` is the only success; every other code names the step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Response received and every assertion held.
    Ok,
    /// The host name did not resolve, or resolved to no address of the wanted IP family.
    Dns,
    /// TCP connection refused, unreachable or reset before it was established.
    Connect,
    /// TLS handshake failed, including certificate verification.
    Tls,
    /// A phase limit or the overall deadline expired.
    Timeout,
    /// The server closed or reset the connection before the response was complete.
    Reset,
    /// The server broke HTTP: malformed response, bad framing, HTTP/2 protocol error.
    Protocol,
    /// The status code was not one of the expected ones.
    HttpStatus,
    /// The body did not contain the substring, match the regex or the JSON pointer value.
    BodyMismatch,
    /// A required response header was missing or had another value.
    HeaderMismatch,
    /// Redirects were followed up to the configured cap and the chain went on.
    RedirectLimit,
    /// gRPC: the call ended with a non-OK `grpc-status` (e.g. 5 NOT_FOUND for a health service
    /// that does not know the service name). Report version 3.
    GrpcStatus,
    /// gRPC health: the server answered, but not SERVING (NOT_SERVING, UNKNOWN or
    /// SERVICE_UNKNOWN). Report version 3.
    NotServing,
}

impl Outcome {
    /// Every code, in a stable order (the order of metrics and JSON output).
    pub const ALL: [Outcome; 13] = [
        Outcome::Ok,
        Outcome::Dns,
        Outcome::Connect,
        Outcome::Tls,
        Outcome::Timeout,
        Outcome::Reset,
        Outcome::Protocol,
        Outcome::HttpStatus,
        Outcome::BodyMismatch,
        Outcome::HeaderMismatch,
        Outcome::RedirectLimit,
        Outcome::GrpcStatus,
        Outcome::NotServing,
    ];

    /// Number of codes; sizes per-outcome counter arrays.
    pub const COUNT: usize = Self::ALL.len();

    /// The code as it appears in metrics labels, reports and JSON output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Dns => "dns",
            Outcome::Connect => "connect",
            Outcome::Tls => "tls",
            Outcome::Timeout => "timeout",
            Outcome::Reset => "reset",
            Outcome::Protocol => "protocol",
            Outcome::HttpStatus => "http_status",
            Outcome::BodyMismatch => "body_mismatch",
            Outcome::HeaderMismatch => "header_mismatch",
            Outcome::RedirectLimit => "redirect_limit",
            Outcome::GrpcStatus => "grpc_status",
            Outcome::NotServing => "not_serving",
        }
    }

    /// Position in [`Outcome::ALL`], for indexing counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn is_ok(self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// The oldest report version that may carry this code: aggregators before version 3 do
    /// not know the gRPC codes, so an agent writes them only in a version 3 report, which such
    /// an aggregator refuses as a whole with a 400 naming the version (see `report`).
    pub const fn min_wire_version(self) -> u32 {
        match self {
            Outcome::GrpcStatus | Outcome::NotServing => 3,
            _ => 1,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The text was not one of the outcome codes.
#[derive(Debug, thiserror::Error)]
#[error("unknown outcome code {0:?}")]
pub struct UnknownOutcome(pub String);

impl FromStr for Outcome {
    type Err = UnknownOutcome;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_position_and_names_round_trip() {
        for (i, o) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(o.index(), i);
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), o);
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
        }
        assert!("refused".parse::<Outcome>().is_err());
    }
}
