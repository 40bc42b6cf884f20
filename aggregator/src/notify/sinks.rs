//! The three sinks, each one attempt at a time (the delivery task retries): a webhook (the
//! event's JSON, HMAC-signed like agents' reports when a secret is configured), a
//! Slack-compatible incoming webhook (`{"text": ...}`), and an SNS topic (the JSON as the
//! message, the text line as the subject). Errors say what failed by category and status,
//! never the URL: a Slack URL or a webhook query string is a credential.

use super::NotifyEvent;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use vantage_protocol::auth::{sign, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use vantage_protocol::config::{NotifySection, SinkKind};

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A sink could not be opened (at start or `vantage notify test`).
#[derive(Debug, thiserror::Error)]
pub enum SinkSetupError {
    #[error("notify sink {sink}: {what}")]
    Secret { sink: String, what: String },
    #[error("notify sink {sink}: the URL is not a valid http(s) URI")]
    BadUrl { sink: String },
}

/// One attempt failed; retried until `max_attempts`.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the request failed before an answer ({0})")]
    Request(&'static str),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("no answer within the time limit")]
    Timeout,
    #[error("SNS Publish failed: {0}")]
    Sns(String),
}

/// An opened sink.
#[derive(Clone)]
pub enum Sink {
    Webhook {
        client: HttpClient,
        uri: http::Uri,
        secret: Option<Vec<u8>>,
    },
    Slack {
        client: HttpClient,
        uri: http::Uri,
    },
    Sns {
        client: aws_sdk_sns::Client,
        topic_arn: String,
    },
}

fn http_client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

/// Reads `env` or `file` (trailing newline trimmed); errors name the source, not the value.
fn read_secret(
    sink: &str,
    env: Option<&str>,
    file: Option<&str>,
) -> Result<Vec<u8>, SinkSetupError> {
    let fail = |what: String| SinkSetupError::Secret {
        sink: sink.to_owned(),
        what,
    };
    if let Some(var) = env {
        return std::env::var(var)
            .map(String::into_bytes)
            .map_err(|_| fail(format!("environment variable {var} is not set")));
    }
    let path = file.unwrap_or_default();
    let mut v = std::fs::read(path).map_err(|e| fail(format!("reading {path}: {}", e.kind())))?;
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    Ok(v)
}

impl Sink {
    /// Reads the sink's secrets and builds its client.
    pub async fn open(section: &NotifySection) -> Result<Sink, SinkSetupError> {
        let name = section.name.get_ref();
        let kind = section.sink_kind().unwrap_or(SinkKind::Webhook);
        if kind == SinkKind::Sns {
            let arn = section
                .topic_arn
                .as_ref()
                .map(|a| a.get_ref().clone())
                .unwrap_or_default();
            let endpoint = section.endpoint_url.as_ref().map(|u| u.get_ref().as_str());
            let sdk = crate::backend::route53::sdk_loader(endpoint, section.topic_region())
                .load()
                .await;
            return Ok(Sink::Sns {
                client: aws_sdk_sns::Client::new(&sdk),
                topic_arn: arn,
            });
        }
        let url = match (&section.url, &section.url_env) {
            (Some(u), _) => u.get_ref().as_bytes().to_vec(),
            (None, Some(var)) => read_secret(name, Some(var.get_ref()), None)?,
            (None, None) => Vec::new(),
        };
        let uri: http::Uri = String::from_utf8(url)
            .ok()
            .and_then(|u| u.parse().ok())
            .filter(|u: &http::Uri| matches!(u.scheme_str(), Some("http" | "https")))
            .ok_or_else(|| SinkSetupError::BadUrl { sink: name.clone() })?;
        if kind == SinkKind::Slack {
            return Ok(Sink::Slack {
                client: http_client(),
                uri,
            });
        }
        let secret = match (&section.secret_env, &section.secret_file) {
            (None, None) => None,
            (env, file) => Some(read_secret(
                name,
                env.as_ref().map(|v| v.get_ref().as_str()),
                file.as_ref().map(|v| v.get_ref().as_str()),
            )?),
        };
        if let Some(s) = &secret {
            vantage_protocol::auth::check_key(s).map_err(|e| SinkSetupError::Secret {
                sink: name.clone(),
                what: format!("secret: {e}"),
            })?;
        }
        Ok(Sink::Webhook {
            client: http_client(),
            uri,
            secret,
        })
    }

    /// One attempt (the caller bounds its time).
    pub async fn send(&self, event: &NotifyEvent, now_unix_s: u64) -> Result<(), SinkError> {
        match self {
            Sink::Webhook {
                client,
                uri,
                secret,
            } => {
                let body = serde_json::to_vec(event).unwrap_or_default();
                let mut req = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::USER_AGENT, "vantage-notify/1")
                    .header("x-vantage-event-id", event.id.as_str());
                if let Some(key) = secret {
                    req = req
                        .header(HEADER_TIMESTAMP, now_unix_s.to_string())
                        .header(HEADER_SIGNATURE, sign(key, now_unix_s, &body));
                }
                post(client, req, body).await
            }
            Sink::Slack { client, uri } => {
                let body = serde_json::to_vec(&serde_json::json!({ "text": event.text() }))
                    .unwrap_or_default();
                let req = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::USER_AGENT, "vantage-notify/1");
                post(client, req, body).await
            }
            Sink::Sns { client, topic_arn } => {
                // SNS subjects: ASCII, no line breaks, under 100 characters.
                let subject: String = format!("vantage {} {}", event.kind.as_str(), event.fleet)
                    .chars()
                    .filter(|c| c.is_ascii() && !c.is_ascii_control())
                    .take(99)
                    .collect();
                client
                    .publish()
                    .topic_arn(topic_arn)
                    .subject(subject)
                    .message(serde_json::to_string(event).unwrap_or_default())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        use aws_sdk_sns::error::ProvideErrorMetadata;
                        SinkError::Sns(e.code().unwrap_or("no answer").to_owned())
                    })
            }
        }
    }
}

/// Sends and reads only the status; the answer's body is dropped unread (never buffered).
async fn post(
    client: &HttpClient,
    req: http::request::Builder,
    body: Vec<u8>,
) -> Result<(), SinkError> {
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| SinkError::Request("request"))?;
    let answer = client.request(req).await.map_err(|e| {
        SinkError::Request(if e.is_connect() {
            "connect"
        } else {
            "exchange"
        })
    })?;
    let status = answer.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(SinkError::Status(status.as_u16()))
    }
}
