//! One HTTP exchange on an open stream: the handshake over the timestamping wrapper, the
//! request as the spec describes it, hyper errors mapped to outcome codes, and redirect
//! targets resolved against the URL that answered.

use crate::result::StepError;
use crate::spec::{self, ProbeSpec};
use crate::timed_io::{SharedMarks, TimedIo};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Uri, Version};
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use vantage_protocol::{Outcome, Phase};

const USER_AGENT: &str = concat!("vantage/", env!("CARGO_PKG_VERSION"));

/// Aborts the hyper connection task when the connection is dropped, closing the socket.
pub(crate) struct ConnectionTask(JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The request half of an HTTP/1.1 or HTTP/2 connection.
pub(crate) enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// The HTTP handshake; for HTTP/2 it waits for nothing from the server, but it is bounded by
/// the first-byte limit all the same.
pub(crate) async fn http_handshake<S>(
    io: S,
    h2: bool,
    first_byte_limit: Duration,
    deadline: Instant,
) -> Result<(Sender, SharedMarks, ConnectionTask), StepError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (timed, marks) = TimedIo::new(io);
    let io = TokioIo::new(timed);
    let handshake_failed = |e: hyper::Error| classify_hyper(&e, Phase::Ttfb);
    let (sender, task) = if h2 {
        let start = Instant::now();
        let limit = deadline.min(start + first_byte_limit);
        let fut = http2::handshake(TokioExecutor::new(), io);
        let (sender, conn) = match timeout_at(limit, fut).await {
            Err(_) => return Err(StepError::timeout(Phase::Ttfb, limit, start)),
            Ok(r) => r.map_err(handshake_failed)?,
        };
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        (Sender::H2(sender), task)
    } else {
        let (sender, conn) = http1::handshake(io).await.map_err(handshake_failed)?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        (Sender::H1(sender), task)
    };
    Ok((sender, marks, ConnectionTask(task)))
}

pub(crate) fn build_request(
    spec: &ProbeSpec,
    url: &Uri,
    method: &Method,
    body: &Bytes,
    extra: &http::HeaderMap,
    sender: &Sender,
) -> Result<Request<Full<Bytes>>, StepError> {
    let invalid = |e: http::Error| {
        StepError::new(
            Outcome::Protocol,
            Phase::Ttfb,
            format!("cannot build request: {e}"),
        )
    };
    let mut builder = Request::builder().method(method.clone());
    builder = match sender {
        // HTTP/1.1 wants origin-form plus Host; HTTP/2 takes :authority from an absolute URI.
        Sender::H1(_) => {
            let path = url.path_and_query().map_or("/", |p| p.as_str());
            builder.uri(path)
        }
        Sender::H2(_) => builder.uri(url.clone()).version(Version::HTTP_2),
    };
    let mut request = builder.body(Full::new(body.clone())).map_err(invalid)?;
    let headers = request.headers_mut();
    for (name, value) in &spec.headers {
        headers.append(name, value.clone());
    }
    for (name, value) in extra {
        headers.insert(name, value.clone());
    }
    if matches!(sender, Sender::H1(_)) && !headers.contains_key(header::HOST) {
        if let Some(authority) = url.authority() {
            let value = HeaderValue::from_str(authority.as_str()).map_err(|e| {
                StepError::new(Outcome::Protocol, Phase::Ttfb, format!("bad Host: {e}"))
            })?;
            headers.insert(header::HOST, value);
        }
    }
    headers
        .entry(header::USER_AGENT)
        .or_insert(HeaderValue::from_static(USER_AGENT));
    headers
        .entry(header::ACCEPT)
        .or_insert(HeaderValue::from_static("*/*"));
    Ok(request)
}

/// Maps a hyper error onto an outcome code by what actually happened on the connection.
pub(crate) fn classify_hyper(e: &hyper::Error, phase: Phase) -> StepError {
    use std::io::ErrorKind as K;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            let outcome = match io.kind() {
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    Outcome::Reset
                }
                K::TimedOut => Outcome::Timeout,
                _ => Outcome::Protocol,
            };
            return StepError::new(outcome, phase, format!("{e}: {io}"));
        }
        source = s.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return StepError::new(
            Outcome::Reset,
            phase,
            format!("connection closed before the response was complete ({e})"),
        );
    }
    StepError::new(Outcome::Protocol, phase, e.to_string())
}

/// Resolves a Location header against the URL that answered (RFC 3986 reference resolution);
/// `None` for a target vantage cannot probe (another scheme, an unparsable URL).
pub(crate) fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    let base = url::Url::parse(&base.to_string()).ok()?;
    let target = base.join(location).ok()?;
    spec::parse_url(target.as_str()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_base() {
        let base: Uri = "https://a.example/x/y?q=1".parse().unwrap();
        let r = |l| resolve_location(&base, l).map(|u| u.to_string());
        assert_eq!(r("/z").as_deref(), Some("https://a.example/z"));
        assert_eq!(r("z").as_deref(), Some("https://a.example/x/z"));
        assert_eq!(r("//b.example/p").as_deref(), Some("https://b.example/p"));
        assert_eq!(r("http://c.example/").as_deref(), Some("http://c.example/"));
        assert_eq!(r("ftp://c.example/"), None);
    }
}
