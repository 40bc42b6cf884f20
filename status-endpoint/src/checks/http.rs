//! An extra HTTP(S) dependency, checked with the agent's probe engine: the same phase limits,
//! TLS verification and outcome codes as `vantage probe`. Passes on 2xx and 3xx.

use super::{CheckError, Probe};
use std::sync::Arc;
use std::time::Duration;
use vantage_probe::spec::{ProbeSpec, SpecError};
use vantage_probe::tls::TlsConfigCache;
use vantage_probe::Prober;
use vantage_protocol::Outcome;

pub struct HttpCheck {
    url: String,
    prober: Prober,
}

impl HttpCheck {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, SpecError> {
        let mut spec = ProbeSpec::get(url)?;
        spec.timeouts.overall = timeout;
        spec.timeouts.connect = spec.timeouts.connect.min(timeout);
        spec.timeouts.first_byte = spec.timeouts.first_byte.min(timeout);
        spec.timeouts.dns = spec.timeouts.dns.min(timeout);
        spec.timeouts.tls = spec.timeouts.tls.min(timeout);
        Ok(HttpCheck {
            url: url.to_owned(),
            prober: Prober::new(spec, Arc::new(TlsConfigCache::new()))?,
        })
    }

    pub fn target(&self) -> &str {
        &self.url
    }

    /// One probe; it carries the caller's `X-Amzn-Trace-Id` when a traced request started the
    /// round ([`super::TRACE`]).
    pub async fn run(&self) -> Result<Probe, CheckError> {
        let mut headers = ::http::HeaderMap::new();
        if let Some(trace) = super::current_trace() {
            headers.insert(::http::HeaderName::from_static("x-amzn-trace-id"), trace);
        }
        let result = self.prober.probe_with_headers(&headers).await;
        if result.outcome == Outcome::Ok {
            return Ok(Probe::pass());
        }
        let message = result.failure.map(|f| f.message).unwrap_or_default();
        Err(CheckError::Http(format!(
            "{}: {message}",
            result.outcome.as_str()
        )))
    }
}
