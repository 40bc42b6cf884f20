//! Where and how reports are sent: the aggregator's URL, the signing key, timeouts, backoff
//! bounds and TLS trust ([`PushConfig`]), and the checks that let `vantage agent` refuse a bad
//! configuration before its first report ([`PushConfig::check`], [`PushError`]).

use super::client::build_client;
use http::{HeaderValue, Uri};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use vantage_probe::spec::SpecError;
use vantage_protocol::auth::{self, AuthError};
use vantage_protocol::report::REPORTS_PATH;

pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(500);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where and how reports are sent.
#[derive(Clone)]
pub struct PushConfig {
    /// Aggregator base URL; reports go to `{base}{REPORTS_PATH}`.
    pub aggregator: Uri,
    /// Sent in every request so the aggregator can find the key (and keys can rotate).
    pub key_id: String,
    /// The HMAC key; never logged.
    pub key: Vec<u8>,
    /// Limit on one attempt, from connecting to the end of the answer.
    pub request_timeout: Duration,
    /// Shortest wait before a retry.
    pub backoff_min: Duration,
    /// Longest wait before a retry, however long the aggregator has been failing.
    pub backoff_max: Duration,
    /// Extra trust anchors (PEM) for the aggregator's certificate, besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Skip verification of the aggregator's certificate (the handshake is still checked).
    pub insecure: bool,
    /// The certificate the agent presents when the aggregator requires one (mTLS).
    pub client_cert: Option<ClientCertFiles>,
}

/// A client certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl PushConfig {
    /// A configuration with the default timeout and backoff, verifying TLS against the webpki
    /// roots.
    pub fn new(aggregator: Uri, key_id: impl Into<String>, key: Vec<u8>) -> PushConfig {
        PushConfig {
            aggregator,
            key_id: key_id.into(),
            key,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            ca_file: None,
            insecure: false,
            client_cert: None,
        }
    }

    /// The URL reports are posted to.
    pub fn reports_url(&self) -> Result<Uri, PushError> {
        let base = &self.aggregator;
        let bad = |reason: &str| PushError::Url {
            url: base.to_string(),
            reason: reason.to_owned(),
        };
        let scheme = base
            .scheme_str()
            .ok_or_else(|| bad("no scheme; use https://host[:port]"))?;
        if scheme != "https" && scheme != "http" {
            return Err(bad("scheme must be https or http"));
        }
        let authority = base.authority().ok_or_else(|| bad("no host"))?;
        if base.query().is_some() {
            return Err(bad("a query string is not allowed in the base URL"));
        }
        let path = format!("{}{REPORTS_PATH}", base.path().trim_end_matches('/'));
        Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| bad(&e.to_string()))
    }

    /// Everything that can be checked before the first report: URL, key, key id, TLS trust.
    /// [`run_pusher`](super::run_pusher) runs with a bad configuration too (reports then wait
    /// in the spool and every attempt counts as a retry), so call this up front to fail fast.
    pub fn check(&self) -> Result<(), PushError> {
        self.reports_url()?;
        auth::check_key(&self.key).map_err(PushError::Key)?;
        HeaderValue::from_str(&self.key_id).map_err(|_| PushError::KeyId(self.key_id.clone()))?;
        build_client(self).map(drop)
    }
}

impl Default for PushConfig {
    /// The defaults, with no aggregator (`/`, which [`PushConfig::check`] rejects) and no key:
    /// for `PushConfig { aggregator, key_id, key, ..PushConfig::default() }`.
    fn default() -> PushConfig {
        PushConfig::new(Uri::default(), String::new(), Vec::new())
    }
}

impl fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushConfig")
            .field("aggregator", &self.aggregator)
            .field("key_id", &self.key_id)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("request_timeout", &self.request_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

/// A configuration the pusher cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("aggregator URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("agent key: {0}")]
    Key(#[source] AuthError),
    #[error("agent key id {0:?} cannot be sent as a header value")]
    KeyId(String),
    #[error("aggregator TLS: {0}")]
    Tls(#[source] SpecError),
    /// The client certificate or key cannot be used; names the file, never the key's bytes.
    #[error("aggregator client certificate: {0}")]
    ClientCert(String),
    /// An aggregator replica that cannot get a delivery queue of its own.
    #[error("aggregator replica {id:?}: {reason}")]
    ReplicaId { id: String, reason: String },
}
