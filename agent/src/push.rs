//! The report pusher: delivers every [`OutgoingReport`] to the aggregator at least once, oldest
//! first, surviving aggregator outages and agent restarts through the [`Spool`].
//!
//! Each new report is written to the spool before anything is sent, so it is durable the moment
//! it is accepted; when the spool cannot take it (disk full, permissions) it waits in a bounded
//! queue in memory instead and the failure is counted. One report is in flight at a time, always
//! the smallest sequence number waiting; the aggregator drops duplicates by sequence number, so
//! resending after a lost answer is safe. An answer decides what happens next: 2xx delivered,
//! 409 already there, a "bad request" 4xx is logged and dropped (resending would fail the same
//! way), anything else (401/403/408/429, 5xx, no connection, no answer in time) is retried after
//! a jittered exponential backoff. The pusher never blocks the sender beyond the channel and
//! never panics; it ends when the channel closes or on shutdown, after a bounded flush.

use crate::metrics::{
    REPORTS_DROPPED_TOTAL, REPORT_DELIVERIES_TOTAL, REPORT_DELIVERY_SECONDS, SPOOL_BYTES,
    SPOOL_REPORTS, SPOOL_WRITE_ERRORS_TOTAL,
};
use crate::spool::{Spool, SpoolError, DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, timeout, Instant};
use vantage_probe::spec::{HttpVersionPref, SpecError, TlsOptions};
use vantage_probe::tls::build_client_config;
use vantage_protocol::auth::{self, AuthError, HEADER_KEY_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use vantage_protocol::report::REPORTS_PATH;

pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(500);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How much of an aggregator's rejection text goes into the log.
const REASON_MAX_CHARS: usize = 300;
/// Largest answer body read; answers are short status texts.
const ANSWER_MAX_BYTES: usize = 64 * 1024;

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
    /// [`run_pusher`] runs with a bad configuration too (reports then wait in the spool and
    /// every attempt counts as a retry), so call this up front to fail fast.
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
}

/// One report to deliver.
#[derive(Debug, Clone)]
pub struct OutgoingReport {
    /// The report's sequence number, as in the body.
    pub seq: u64,
    /// The JSON of an `IntervalReport`, sent byte for byte as given (and signed as such).
    pub body: Bytes,
}

/// What one run of the pusher did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushSummary {
    /// Reports the aggregator accepted (2xx).
    pub delivered: u64,
    /// Reports the aggregator already had (409).
    pub duplicates: u64,
    /// Reports the aggregator refused as malformed (4xx other than 401/403/408/409/429), dropped.
    pub rejected: u64,
    /// Reports dropped to keep the spool (or the in-memory queue) within `max_bytes`, plus
    /// reports held only in memory that could not be spooled at exit.
    pub dropped_spool_full: u64,
    /// Reports dropped unsent after `max_age`.
    pub expired: u64,
    /// Attempts that failed and were retried later.
    pub retries: u64,
    /// Reports left in the spool at exit, for the next run.
    pub left_in_spool: u64,
}

/// Delivers reports from `reports` until it is closed or `shutdown` turns true (or its sender
/// is dropped), then tries to deliver everything queued within `flush_deadline` and leaves the
/// rest in the spool. Reports already in `spool` (from an earlier run) go first.
pub async fn run_pusher(
    config: PushConfig,
    spool: Option<Spool>,
    mut reports: mpsc::Receiver<OutgoingReport>,
    mut shutdown: watch::Receiver<bool>,
    flush_deadline: Duration,
) -> PushSummary {
    let sender = Sender::new(&config);
    let mut p = Pusher::new(&config, spool);
    let expire_every = (p.max_age / 4).clamp(Duration::from_millis(10), Duration::from_secs(60));
    let mut next_expiry = Instant::now();
    // Shutdown asked for, or no more reports coming: stop taking new reports and flush.
    let mut stopping = false;
    let mut receiving = true;
    let mut flush_by: Option<Instant> = None;
    loop {
        if !stopping && *shutdown.borrow_and_update() {
            stopping = true;
        }
        if stopping && receiving {
            // Whatever was already sent to us is ours to deliver or spool.
            reports.close();
            while let Some(r) = reports.recv().await {
                p.ingest(r).await;
            }
            receiving = false;
        }
        if stopping && flush_by.is_none() {
            flush_by = Some(Instant::now() + flush_deadline);
        }
        let now = Instant::now();
        if now >= next_expiry {
            p.expire();
            next_expiry = now + expire_every;
        }
        let head = p.oldest();
        if let Some(deadline) = flush_by {
            if head.is_none() || now >= deadline {
                break;
            }
        }
        let backoff_until = p.next_attempt.filter(|t| *t > now);
        match head {
            Some(seq) if backoff_until.is_none() => {
                let Some(body) = p.body_of(seq) else { continue };
                p.sending(seq);
                let attempt = sender.clone().send(body);
                tokio::pin!(attempt);
                let outcome = loop {
                    tokio::select! {
                        outcome = &mut attempt => break outcome,
                        r = reports.recv(), if receiving && !stopping => match r {
                            Some(r) => p.ingest(r).await,
                            None => stopping = true,
                        },
                        changed = shutdown.changed(), if !stopping => {
                            if changed.is_err() || *shutdown.borrow_and_update() {
                                stopping = true;
                                // The attempt in flight counts against the flush deadline.
                                flush_by.get_or_insert(Instant::now() + flush_deadline);
                            }
                        }
                        () = sleep_until(flush_by.unwrap_or(now)), if flush_by.is_some() => {
                            break Attempt::Abandoned;
                        }
                    }
                };
                p.settle(seq, outcome);
            }
            _ => {
                let mut wake = next_expiry;
                if head.is_some() {
                    wake = wake.min(backoff_until.unwrap_or(now));
                }
                if let Some(deadline) = flush_by {
                    wake = wake.min(deadline);
                }
                tokio::select! {
                    r = reports.recv(), if receiving && !stopping => match r {
                        Some(r) => p.ingest(r).await,
                        None => stopping = true,
                    },
                    changed = shutdown.changed(), if !stopping => {
                        if changed.is_err() || *shutdown.borrow_and_update() {
                            stopping = true;
                        }
                    }
                    () = sleep_until(wake) => {}
                }
            }
        }
    }
    p.finish().await
}

/// How one attempt ended.
#[derive(Debug)]
enum Attempt {
    Delivered,
    Duplicate,
    Rejected {
        status: StatusCode,
        reason: String,
    },
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
    /// Cut short by the flush deadline: the report stays where it is, nothing is counted.
    Abandoned,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn build_client(config: &PushConfig) -> Result<HttpClient, PushError> {
    let options = TlsOptions {
        insecure: config.insecure,
        ca_file: config.ca_file.clone(),
    };
    let mut tls = build_client_config(&options, HttpVersionPref::Auto).map_err(PushError::Tls)?;
    // Unlike a probe, the pusher is one long-lived client: resuming sessions is what we want.
    tls.resumption = rustls::client::Resumption::default();
    // The connector builder sets ALPN itself and refuses a config that already has it.
    tls.alpn_protocols.clear();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.request_timeout));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https))
}

/// Everything one attempt needs, cheap to clone so the attempt can run while the pusher keeps
/// taking new reports.
#[derive(Clone)]
struct Sender {
    /// The client, or why none could be built (every attempt then fails with that reason).
    client: Result<HttpClient, Arc<str>>,
    url: Result<Uri, Arc<str>>,
    key_id: Arc<str>,
    key: Arc<[u8]>,
    request_timeout: Duration,
}

impl Sender {
    fn new(config: &PushConfig) -> Sender {
        let client = build_client(config).map_err(|e| {
            tracing::error!(error = %e, "cannot set up the aggregator client; reports will wait in the spool");
            Arc::from(e.to_string())
        });
        let url = config.reports_url().map_err(|e| {
            tracing::error!(error = %e, "bad aggregator URL; reports will wait in the spool");
            Arc::from(e.to_string())
        });
        Sender {
            client,
            url,
            key_id: Arc::from(config.key_id.as_str()),
            key: Arc::from(config.key.as_slice()),
            request_timeout: config.request_timeout,
        }
    }

    async fn send(self, body: Bytes) -> Attempt {
        let (client, url) = match (&self.client, &self.url) {
            (Ok(c), Ok(u)) => (c, u),
            (Err(why), _) | (_, Err(why)) => {
                return Attempt::Retry {
                    why: why.to_string(),
                    retry_after: None,
                }
            }
        };
        let request = match self.request(url, body) {
            Ok(r) => r,
            Err(why) => {
                return Attempt::Retry {
                    why,
                    retry_after: None,
                }
            }
        };
        let started = Instant::now();
        let answer = timeout(self.request_timeout, async {
            let response = client.request(request).await.map_err(|e| error_chain(&e))?;
            let (parts, body) = response.into_parts();
            // Reading the whole answer lets the connection go back to the pool.
            let text = match Limited::new(body, ANSWER_MAX_BYTES).collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(_) => String::new(),
            };
            Ok::<_, String>((parts.status, parts.headers, text))
        })
        .await;
        metrics::histogram!(REPORT_DELIVERY_SECONDS).record(started.elapsed().as_secs_f64());
        match answer {
            Err(_) => Attempt::Retry {
                why: format!("no answer within {:?}", self.request_timeout),
                retry_after: None,
            },
            Ok(Err(why)) => Attempt::Retry {
                why,
                retry_after: None,
            },
            Ok(Ok((status, headers, text))) => {
                let retry_after = headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                classify(status, retry_after, &text)
            }
        }
    }

    fn request(&self, url: &Uri, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = auth::sign(&self.key, timestamp, &body);
        Request::post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("vantage-agent/", env!("CARGO_PKG_VERSION")),
            )
            .header(HEADER_KEY_ID, &*self.key_id)
            .header(HEADER_TIMESTAMP, timestamp)
            .header(HEADER_SIGNATURE, signature)
            .body(Full::new(body))
            .map_err(|e| format!("building the request: {e}"))
    }
}

fn classify(status: StatusCode, retry_after: Option<Duration>, text: &str) -> Attempt {
    let reason = truncate(text.trim(), REASON_MAX_CHARS);
    match status.as_u16() {
        200..=299 => Attempt::Delivered,
        409 => Attempt::Duplicate,
        // Our credentials, the aggregator's patience or its load: none of it is the report's
        // fault, so the report waits.
        401 | 403 | 408 | 429 => Attempt::Retry {
            why: format!("HTTP {status}: {reason}"),
            retry_after,
        },
        400..=499 => Attempt::Rejected { status, reason },
        // 5xx, and 1xx/3xx which only a misconfigured URL produces: keep the report.
        _ => Attempt::Retry {
            why: format!("HTTP {status}: {reason}"),
            retry_after,
        },
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// An error and its causes, since hyper's top-level messages ("client error (Connect)") hide
/// the useful part.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Full-jitter exponential backoff with a floor: uniform between `min` and
/// `min * 2^(failures-1)`, the upper end capped at `max`.
fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let max = max.max(min);
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(31));
    let cap = min.saturating_mul(factor).min(max);
    if cap <= min {
        return min;
    }
    rand::rng().random_range(min..=cap)
}

/// A report waiting in memory because the spool could not take it.
struct Held {
    body: Bytes,
    at: SystemTime,
}

/// The pusher's state between attempts.
struct Pusher {
    spool: Option<Spool>,
    /// Reports the spool could not take (or all reports, without a spool), by seq.
    memory: BTreeMap<u64, Held>,
    memory_bytes: u64,
    /// Bound on `memory_bytes`: the spool's `max_bytes`, or the default without a spool.
    memory_max_bytes: u64,
    max_age: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    /// Consecutive attempts that ended in a retry.
    failures: u32,
    /// No attempt before this (backoff after a failure).
    next_attempt: Option<Instant>,
    /// The seq being sent, and whether a bound dropped it meanwhile: such a drop is counted
    /// only if the attempt fails, so a report is never both delivered and dropped.
    in_flight: Option<u64>,
    in_flight_dropped: bool,
    summary: PushSummary,
}

impl Pusher {
    fn new(config: &PushConfig, spool: Option<Spool>) -> Pusher {
        let (memory_max_bytes, max_age) = spool
            .as_ref()
            .map_or((DEFAULT_MAX_BYTES, DEFAULT_MAX_AGE), |s| {
                (s.config().max_bytes, s.config().max_age)
            });
        if let Some(s) = spool.as_ref().filter(|s| !s.is_empty()) {
            tracing::info!(
                reports = s.len(),
                bytes = s.bytes(),
                oldest = s.oldest(),
                "resuming delivery of spooled reports"
            );
        }
        let p = Pusher {
            spool,
            memory: BTreeMap::new(),
            memory_bytes: 0,
            memory_max_bytes,
            max_age,
            backoff_min: config.backoff_min,
            backoff_max: config.backoff_max,
            failures: 0,
            next_attempt: None,
            in_flight: None,
            in_flight_dropped: false,
            summary: PushSummary::default(),
        };
        p.update_gauges();
        p
    }

    /// The smallest seq waiting, in the spool or in memory.
    fn oldest(&self) -> Option<u64> {
        let spooled = self.spool.as_ref().and_then(Spool::oldest);
        let held = self.memory.keys().next().copied();
        match (spooled, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Spools (or else holds) a new report.
    async fn ingest(&mut self, report: OutgoingReport) {
        let now = SystemTime::now();
        match self.spool_put(report.seq, report.body.clone(), now).await {
            Some(Ok(dropped)) => {
                for seq in dropped {
                    self.count_spool_full(seq);
                }
            }
            Some(Err(e)) => {
                metrics::counter!(SPOOL_WRITE_ERRORS_TOTAL).increment(1);
                tracing::warn!(seq = report.seq, error = %e, "cannot spool report; holding it in memory");
                self.hold(report, now);
            }
            None => self.hold(report, now),
        }
        self.update_gauges();
    }

    /// `Spool::put` off the async threads: it waits for fsync, which must not stall probes
    /// sharing the runtime. `None` without a spool.
    async fn spool_put(
        &mut self,
        seq: u64,
        body: Bytes,
        at: SystemTime,
    ) -> Option<Result<Vec<u64>, SpoolError>> {
        let mut spool = self.spool.take()?;
        let dir = spool.config().dir.clone();
        let work = tokio::task::spawn_blocking(move || {
            let result = spool.put(seq, &body, at);
            (spool, result)
        });
        match work.await {
            Ok((spool, result)) => {
                self.spool = Some(spool);
                Some(result)
            }
            Err(e) => {
                // Only a runtime shutting down gets here. The files stay on disk for the next
                // run; this run carries on without the spool.
                tracing::error!(error = %e, "spool write did not run; continuing without the spool");
                Some(Err(SpoolError::Write {
                    path: dir,
                    source: std::io::Error::other(e.to_string()),
                }))
            }
        }
    }

    fn hold(&mut self, report: OutgoingReport, at: SystemTime) {
        let len = report.body.len() as u64;
        if len > self.memory_max_bytes {
            self.count_spool_full(report.seq);
            return;
        }
        if let Some(old) = self.memory.insert(
            report.seq,
            Held {
                body: report.body,
                at,
            },
        ) {
            self.memory_bytes -= old.body.len() as u64;
        }
        self.memory_bytes += len;
        while self.memory_bytes > self.memory_max_bytes {
            let Some((seq, held)) = self.memory.pop_first() else {
                break;
            };
            self.memory_bytes -= held.body.len() as u64;
            self.count_spool_full(seq);
        }
    }

    fn count_spool_full(&mut self, seq: u64) {
        if self.in_flight == Some(seq) {
            self.in_flight_dropped = true;
            return;
        }
        self.summary.dropped_spool_full += 1;
        metrics::counter!(REPORTS_DROPPED_TOTAL, "reason" => "spool_full").increment(1);
        tracing::warn!(
            seq,
            max_bytes = self.memory_max_bytes,
            "spool full: dropped the oldest undelivered report"
        );
    }

    /// The body of a waiting report; `None` (and the report forgotten) when its spool file
    /// cannot be read, since nothing could ever be sent for it.
    fn body_of(&mut self, seq: u64) -> Option<Bytes> {
        if let Some(held) = self.memory.get(&seq) {
            return Some(held.body.clone());
        }
        let spool = self.spool.as_mut()?;
        match spool.read(seq) {
            Ok(body) => Some(Bytes::from(body)),
            Err(e) => {
                tracing::error!(seq, error = %e, "cannot read spooled report; dropping it");
                if let Err(e) = spool.remove(seq) {
                    tracing::warn!(seq, error = %e, "cannot delete unreadable spool file");
                }
                self.update_gauges();
                None
            }
        }
    }

    fn expire(&mut self) {
        let now = SystemTime::now();
        let mut expired = self
            .spool
            .as_mut()
            .map(|s| s.expire(now))
            .unwrap_or_default();
        let max_age = self.max_age;
        let old: Vec<u64> = self
            .memory
            .iter()
            .filter(|(_, h)| now.duration_since(h.at).is_ok_and(|age| age > max_age))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in old {
            if let Some(h) = self.memory.remove(&seq) {
                self.memory_bytes -= h.body.len() as u64;
            }
            expired.push(seq);
        }
        if expired.is_empty() {
            return;
        }
        expired.sort_unstable();
        let n = expired.len() as u64;
        self.summary.expired += n;
        metrics::counter!(REPORTS_DROPPED_TOTAL, "reason" => "expired").increment(n);
        tracing::warn!(
            reports = n,
            first_seq = expired[0],
            last_seq = expired[expired.len() - 1],
            max_age = ?max_age,
            "dropped undelivered reports older than the spool's max_age"
        );
        self.update_gauges();
    }

    /// Notes the report about to be sent.
    fn sending(&mut self, seq: u64) {
        self.in_flight = Some(seq);
        self.in_flight_dropped = false;
    }

    /// Acts on an attempt's result.
    fn settle(&mut self, seq: u64, outcome: Attempt) {
        let dropped_meanwhile = self.in_flight.take() == Some(seq) && self.in_flight_dropped;
        self.in_flight_dropped = false;
        if dropped_meanwhile && matches!(outcome, Attempt::Retry { .. } | Attempt::Abandoned) {
            self.count_spool_full(seq);
        }
        match outcome {
            Attempt::Delivered => {
                self.summary.delivered += 1;
                metrics::counter!(REPORT_DELIVERIES_TOTAL, "result" => "delivered").increment(1);
                tracing::debug!(seq, "report delivered");
                self.answered();
                self.forget(seq);
            }
            Attempt::Duplicate => {
                self.summary.duplicates += 1;
                metrics::counter!(REPORT_DELIVERIES_TOTAL, "result" => "duplicate").increment(1);
                tracing::debug!(seq, "aggregator already had the report");
                self.answered();
                self.forget(seq);
            }
            Attempt::Rejected { status, reason } => {
                self.summary.rejected += 1;
                metrics::counter!(REPORT_DELIVERIES_TOTAL, "result" => "rejected").increment(1);
                metrics::counter!(REPORTS_DROPPED_TOTAL, "reason" => "rejected").increment(1);
                tracing::warn!(seq, %status, %reason, "aggregator rejected the report; dropping it");
                self.answered();
                self.forget(seq);
            }
            Attempt::Retry { why, retry_after } => {
                self.summary.retries += 1;
                metrics::counter!(REPORT_DELIVERIES_TOTAL, "result" => "retry").increment(1);
                self.failures = self.failures.saturating_add(1);
                let mut delay = backoff(self.backoff_min, self.backoff_max, self.failures);
                if let Some(asked) = retry_after {
                    delay = delay.max(asked.min(self.backoff_max));
                }
                self.next_attempt = Some(Instant::now() + delay);
                // Loud on the first failure and now and then during an outage, not every time.
                if self.failures == 1 || self.failures % 20 == 0 {
                    tracing::warn!(seq, error = %why, failures = self.failures, retry_in = ?delay, "report delivery failed; will retry");
                } else {
                    tracing::debug!(seq, error = %why, failures = self.failures, retry_in = ?delay, "report delivery failed again");
                }
            }
            Attempt::Abandoned => {}
        }
    }

    /// The aggregator answered about a report: the outage, if any, is over.
    fn answered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failed_attempts = self.failures,
                "aggregator reachable again"
            );
        }
        self.failures = 0;
        self.next_attempt = None;
    }

    fn forget(&mut self, seq: u64) {
        if let Some(h) = self.memory.remove(&seq) {
            self.memory_bytes -= h.body.len() as u64;
        }
        if let Some(spool) = self.spool.as_mut().filter(|s| s.contains(seq)) {
            if let Err(e) = spool.remove(seq) {
                // It will be sent again after a restart; the aggregator drops it by seq.
                tracing::warn!(seq, error = %e, "cannot delete a finished report from the spool");
            }
        }
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let (n, bytes) = self.spool.as_ref().map_or((0, 0), |s| (s.len(), s.bytes()));
        metrics::gauge!(SPOOL_REPORTS).set((n + self.memory.len()) as f64);
        metrics::gauge!(SPOOL_BYTES).set((bytes + self.memory_bytes) as f64);
    }

    /// Moves what waits in memory to the spool if it can take it now, and summarises.
    async fn finish(mut self) -> PushSummary {
        let held = std::mem::take(&mut self.memory);
        self.memory_bytes = 0;
        let mut lost = 0u64;
        for (seq, h) in held {
            match self.spool_put(seq, h.body, h.at).await {
                Some(Ok(dropped)) => {
                    for seq in dropped {
                        self.count_spool_full(seq);
                    }
                }
                Some(Err(_)) | None => {
                    lost += 1;
                    self.summary.dropped_spool_full += 1;
                    metrics::counter!(REPORTS_DROPPED_TOTAL, "reason" => "spool_full").increment(1);
                }
            }
        }
        if lost > 0 {
            tracing::error!(
                reports = lost,
                "undelivered reports held in memory are lost at exit: the spool cannot take them"
            );
        }
        self.summary.left_in_spool = self.spool.as_ref().map_or(0, |s| s.len() as u64);
        self.update_gauges();
        if self.summary.left_in_spool > 0 {
            tracing::info!(
                reports = self.summary.left_in_spool,
                "undelivered reports stay in the spool for the next run"
            );
        }
        self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_url_joins_the_base_path() {
        let url = |base: &str| {
            PushConfig::new(base.parse().unwrap(), "k", vec![0; 16])
                .reports_url()
                .map(|u| u.to_string())
        };
        assert_eq!(
            url("https://agg.example.com").unwrap(),
            "https://agg.example.com/v1/reports"
        );
        assert_eq!(
            url("http://127.0.0.1:8080/vantage/").unwrap(),
            "http://127.0.0.1:8080/vantage/v1/reports"
        );
        assert!(url("ftp://agg.example.com").is_err());
        assert!(url("/relative").is_err());
        assert!(url("https://agg.example.com/?x=1").is_err());
    }

    #[test]
    fn check_catches_weak_keys_and_bad_key_ids() {
        let ok = PushConfig::new("https://a.example".parse().unwrap(), "k1", vec![7; 32]);
        ok.check().unwrap();
        let mut weak = ok.clone();
        weak.key = vec![1; 8];
        assert!(matches!(weak.check(), Err(PushError::Key(_))));
        let mut bad_id = ok.clone();
        bad_id.key_id = "k\n1".into();
        assert!(matches!(bad_id.check(), Err(PushError::KeyId(_))));
        let mut bad_ca = ok;
        bad_ca.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(bad_ca.check(), Err(PushError::Tls(_))));
        assert!(
            !format!("{bad_ca:?}").contains("7, 7"),
            "key must not be printed"
        );
    }

    #[test]
    fn statuses_map_to_actions() {
        let c = |code: u16| classify(StatusCode::from_u16(code).unwrap(), None, "why");
        assert!(matches!(c(200), Attempt::Delivered));
        assert!(matches!(c(202), Attempt::Delivered));
        assert!(matches!(c(409), Attempt::Duplicate));
        for code in [400, 404, 413, 422] {
            assert!(matches!(c(code), Attempt::Rejected { .. }), "{code}");
        }
        for code in [401, 403, 408, 429, 500, 502, 503, 504, 301] {
            assert!(matches!(c(code), Attempt::Retry { .. }), "{code}");
        }
        match classify(StatusCode::BAD_REQUEST, None, &"x".repeat(1000)) {
            Attempt::Rejected { reason, .. } => assert!(reason.chars().count() <= 301),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for failures in 0..100 {
            let d = backoff(min, max, failures);
            assert!(d >= min && d <= max, "{failures}: {d:?}");
        }
        assert_eq!(backoff(min, max, 1), min);
        for _ in 0..50 {
            assert!(backoff(min, max, 3) <= Duration::from_millis(400));
        }
        // A max below min is read as min.
        assert_eq!(backoff(min, Duration::ZERO, 5), min);
    }

    #[test]
    fn error_chains_show_causes_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(
            error_chain(&e),
            "client error (Connect): connection refused"
        );
    }
}
