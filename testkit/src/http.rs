//! Raw HTTP/1.1 for tests, on loopback: one request on a connection of its own (blocking or
//! async), the response parsed into status, headers and body, and a reader for the requests a
//! hand-written fake server receives. Deliberately not hyper: tests use it to send what a real
//! client would not, and to see exactly what came back. Every read is bounded.

use crate::error::{KitError, Result};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

/// The most a response (or a request body) may hold before the reader gives up.
pub const MAX_MESSAGE: u64 = 8 << 20;
/// The most a request head may hold.
const MAX_HEAD: usize = 64 << 10;
/// How long an exchange may take in all.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(20);

/// A response as it came back.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header lines in order, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// From connecting to the end of the response.
    pub elapsed: Duration,
}

impl RawResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn exchange_error(target: impl std::fmt::Display, reason: impl std::fmt::Display) -> KitError {
    KitError::HttpExchange {
        target: target.to_string(),
        reason: reason.to_string(),
    }
}

/// Parses a whole HTTP/1.1 response (the server closed after it).
pub fn parse_response(raw: &[u8], elapsed: Duration) -> Result<RawResponse> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| exchange_error("response", format!("no end of head in {text:.200}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| exchange_error("response", format!("bad status line in {text:.200}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(RawResponse {
        status,
        headers,
        body: body.to_owned(),
        elapsed,
    })
}

/// The request head: `Host` and `Connection: close` first, then `headers`, then the length
/// of `body` unless a header already gives one.
pub fn request_head(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head
}

/// Sends `request` (head and body, as written) on a new connection to `addr` and reads the
/// response to the end.
pub async fn exchange_raw(addr: SocketAddr, request: &[u8]) -> Result<RawResponse> {
    let started = Instant::now();
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(request).await?;
        let mut raw = Vec::new();
        (&mut s).take(MAX_MESSAGE).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(EXCHANGE_LIMIT, work)
        .await
        .map_err(|_| exchange_error(addr, format!("no complete answer in {EXCHANGE_LIMIT:?}")))?
        .map_err(|e| exchange_error(addr, e))?;
    parse_response(&raw, started.elapsed())
}

/// One request on a new connection to `addr`, read to the end.
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<RawResponse> {
    let mut request = request_head(method, path, &addr.to_string(), headers, body).into_bytes();
    request.extend_from_slice(body);
    exchange_raw(addr, &request).await
}

/// The blocking twin of [`exchange`], for set-up code outside a runtime: connect within 2 s,
/// each read within 10 s.
pub fn exchange_blocking(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<RawResponse> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let fail = |e: std::io::Error| exchange_error(addr, e);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(fail)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    let head = request_head(method, path, &addr.to_string(), headers, body);
    s.write_all(head.as_bytes()).map_err(fail)?;
    s.write_all(body).map_err(fail)?;
    let mut raw = Vec::new();
    s.take(MAX_MESSAGE).read_to_end(&mut raw).map_err(fail)?;
    parse_response(&raw, started.elapsed())
}

/// Reads one HTTP/1.1 request (the head as written, the body by `content-length`) from a
/// keep-alive connection; `None` once the client has gone or the request is too large.
pub fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: the body that follows the head must stay in the socket for read_exact.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return None;
        }
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len: u64 = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    if len > MAX_MESSAGE {
        return None;
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// The value of header `name` in a request head as [`read_request`] returns it.
pub fn head_value(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_split_into_status_headers_and_body() {
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n{\"a\":1}",
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json()["a"], 1);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n", Duration::ZERO).is_err());
    }

    #[test]
    fn requests_are_read_one_by_one_from_a_keep_alive_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /a HTTP/1.1\r\ncontent-length: 3\r\nX-K: v\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n")
                .unwrap();
        });
        let (mut s, _) = listener.accept().unwrap();
        let (head, body) = read_request(&mut s).unwrap();
        assert!(head.starts_with("POST /a"));
        assert_eq!(head_value(&head, "x-k").as_deref(), Some("v"));
        assert_eq!(body, b"abc");
        let (head, body) = read_request(&mut s).unwrap();
        assert!(head.starts_with("GET /b"));
        assert!(body.is_empty());
        client.join().unwrap();
        assert!(read_request(&mut s).is_none());
    }
}
