//! One delivery attempt: sign the report, post it, read the (bounded) answer within the
//! request timeout, and classify what came back as an [`Attempt`] the pusher acts on.
//!
//! The classification is the delivery contract: 2xx delivered, 409 already there, and only
//! 400, 413 and 422 (the report itself is bad: resending the same bytes would fail the same
//! way) dropped. Everything else keeps the report and is retried: 404 and 405 (a misrouted
//! request: a load balancer without the route, another service on the address), 401 and 403
//! (our credentials), 408 and 429 (the aggregator's patience or load), 5xx, no connection, no
//! answer in time. A wrong drop loses data for good; a wrong retry only costs attempts.

use super::client::{build_client, HttpClient};
use super::config::PushConfig;
use crate::metrics::DeliveryLabels;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::{timeout, Instant};
use vantage_protocol::auth::{self, HEADER_KEY_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use vantage_runtime::errors;

/// How much of an aggregator's rejection text goes into the log.
const REASON_MAX_CHARS: usize = 300;
/// Largest answer body read; answers are short status texts.
const ANSWER_MAX_BYTES: usize = 64 * 1024;

/// How one attempt ended.
#[derive(Debug)]
pub(super) enum Attempt {
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

/// Everything one attempt needs, cheap to clone so the attempt can run while the pusher keeps
/// taking new reports.
#[derive(Clone)]
pub(super) struct Sender {
    /// The client, or why none could be built (every attempt then fails with that reason).
    client: Result<HttpClient, Arc<str>>,
    url: Result<Uri, Arc<str>>,
    key_id: Arc<str>,
    key: Arc<[u8]>,
    request_timeout: Duration,
    labels: DeliveryLabels,
}

impl Sender {
    pub(super) fn new(config: &PushConfig, labels: DeliveryLabels) -> Sender {
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
            labels,
        }
    }

    /// Sends `body` once and says what to do next.
    pub(super) async fn send(self, body: Bytes) -> Attempt {
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
            let response = client
                .request(request)
                .await
                .map_err(|e| errors::chain(&e))?;
            let (parts, body) = response.into_parts();
            // Reading the whole answer lets the connection go back to the pool.
            let text = match Limited::new(body, ANSWER_MAX_BYTES).collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(_) => String::new(),
            };
            Ok::<_, String>((parts.status, parts.headers, text))
        })
        .await;
        self.labels
            .delivery_seconds()
            .record(started.elapsed().as_secs_f64());
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

/// What an answer means for the report.
fn classify(status: StatusCode, retry_after: Option<Duration>, text: &str) -> Attempt {
    let reason = truncate(text.trim(), REASON_MAX_CHARS);
    match status.as_u16() {
        200..=299 => Attempt::Delivered,
        409 => Attempt::Duplicate,
        // The aggregator read the report and found it malformed, too large or invalid.
        400 | 413 | 422 => Attempt::Rejected { status, reason },
        // Any other 4xx is about the route, our credentials or the aggregator's load, and
        // 5xx, 1xx and 3xx about the aggregator or the URL: none is the report's fault.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_actions() {
        let c = |code: u16| classify(StatusCode::from_u16(code).unwrap(), None, "why");
        assert!(matches!(c(200), Attempt::Delivered));
        assert!(matches!(c(202), Attempt::Delivered));
        assert!(matches!(c(409), Attempt::Duplicate));
        for code in [400, 413, 422] {
            assert!(matches!(c(code), Attempt::Rejected { .. }), "{code}");
        }
        for code in [
            401, 402, 403, 404, 405, 406, 407, 408, 410, 411, 412, 414, 415, 421, 425, 426, 428,
            429, 431, 451, 499, 500, 502, 503, 504, 301, 101,
        ] {
            assert!(matches!(c(code), Attempt::Retry { .. }), "{code}");
        }
        match classify(StatusCode::BAD_REQUEST, None, &"x".repeat(1000)) {
            Attempt::Rejected { reason, .. } => assert!(reason.chars().count() <= 301),
            other => panic!("{other:?}"),
        }
    }
}
