//! The `grpc://host:port/service` and `grpcs://...` probe: one unary call of the standard
//! `grpc.health.v1.Health/Check` over hyper's HTTP/2 client, on a connection opened by the same
//! resolver, connector and TLS handshake as HTTP probes (ALPN `h2` over TLS, prior knowledge in
//! plaintext). The request and answer are two one-field protobuf messages, so they are encoded
//! and decoded here by hand rather than pulling prost and tonic into the agent.
//!
//! Phases: `dns`, `connect`, `tls` (`grpcs`), `ttfb` (request sent to response headers) and
//! `transfer` (headers to trailers). Outcomes: a non-200 HTTP status is `http_status`, a non-zero
//! `grpc-status` is `grpc_status` (an unknown service is 5 NOT_FOUND, per the health protocol),
//! an answer other than SERVING is `not_serving`, and a missing `grpc-status`, a compressed or
//! malformed message or one beyond `max_body_bytes` is `protocol`. `grpc-status` and
//! `grpc-message` are bounded before they are decoded.

use crate::exchange::Sender;
use crate::prober::Prober;
use crate::result::{ProbeResult, StepError};
use crate::spec::{grpc_service_of, host_of, port_of};
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use tokio::time::{timeout_at, Instant};
use vantage_protocol::{Outcome, Phase};

/// The health check method's path.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// Bytes of `grpc-message` kept (before percent-decoding) for the failure's message.
const MAX_GRPC_MESSAGE: usize = 256;
/// A `grpc-status` is a decimal code 0..=16; anything longer is not one.
const MAX_GRPC_STATUS_DIGITS: usize = 3;

/// `HealthCheckResponse.ServingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingStatus {
    Unknown,
    Serving,
    NotServing,
    ServiceUnknown,
    /// A value this probe does not know (a newer protocol); not SERVING, so a failure.
    Other(u64),
}

impl ServingStatus {
    fn from_wire(v: u64) -> Self {
        match v {
            0 => ServingStatus::Unknown,
            1 => ServingStatus::Serving,
            2 => ServingStatus::NotServing,
            3 => ServingStatus::ServiceUnknown,
            other => ServingStatus::Other(other),
        }
    }
}

pub(crate) async fn run(
    prober: &Prober,
    deadline: Instant,
    result: &mut ProbeResult,
) -> Result<(), StepError> {
    let spec = prober.spec();
    let url = &spec.url;
    let tls = spec.uses_tls();
    let origin = (tls, host_of(url).to_ascii_lowercase(), port_of(url));
    let mut connection = match prober.take_idle(&origin, deadline).await {
        Some(c) => {
            result.reused_connection = true;
            c
        }
        None => prober.connect(url, origin, deadline, result).await?,
    };
    result.remote_addr = Some(connection.remote_addr);
    result.tls_version = connection.tls_version;
    result.cert_not_after = connection.cert_not_after;
    let Sender::H2(sender) = &mut connection.sender else {
        return Err(StepError::new(
            Outcome::Protocol,
            Phase::Ttfb,
            "gRPC needs HTTP/2 but the connection is HTTP/1.1",
        ));
    };

    let request = health_request(url, tls, grpc_service_of(url), &spec.headers)?;
    let sent_at = Instant::now();
    let first_byte_limit = deadline.min(sent_at + spec.timeouts.first_byte);
    let response = match timeout_at(first_byte_limit, sender.send_request(request)).await {
        Err(_) => return Err(StepError::timeout(Phase::Ttfb, first_byte_limit, sent_at)),
        Ok(Err(e)) => return Err(crate::exchange::classify_hyper(&e, Phase::Ttfb)),
        Ok(Ok(r)) => r,
    };
    let head_at = Instant::now();
    result.timings.add(Phase::Ttfb, head_at - sent_at);
    result.http_version = Some(response.version());
    result.status = Some(response.status().as_u16());
    result.answered_by = response
        .headers()
        .get(&spec.region_header)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (parts, mut incoming) = response.into_parts();
    if parts.status != StatusCode::OK {
        return Err(StepError::new(
            Outcome::HttpStatus,
            Phase::Ttfb,
            format!("HTTP status {} (gRPC answers 200)", parts.status.as_u16()),
        ));
    }

    // Bounded: the frames are counted against the cap as they arrive.
    let cap = spec.max_body_bytes;
    let mut body = BytesMut::new();
    let mut trailers: Option<HeaderMap> = None;
    loop {
        match timeout_at(deadline, incoming.frame()).await {
            Err(_) => return Err(StepError::timeout(Phase::Transfer, deadline, head_at)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(crate::exchange::classify_hyper(&e, Phase::Transfer)),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    if body.len() + data.len() > cap {
                        return Err(StepError::new(
                            Outcome::Protocol,
                            Phase::Transfer,
                            format!("response larger than max_body_bytes ({cap} bytes)"),
                        ));
                    }
                    body.extend_from_slice(&data);
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            },
        }
    }
    result.body_bytes = body.len();
    result.timings.add(Phase::Transfer, head_at.elapsed());
    drop(incoming);
    if spec.reuse_connection {
        prober.keep_idle(connection);
    }

    // A trailers-only answer carries grpc-status in the headers.
    let status_from = trailers
        .as_ref()
        .filter(|t| t.contains_key("grpc-status"))
        .unwrap_or(&parts.headers);
    check_grpc_status(status_from)?;
    match decode_response(&body)? {
        ServingStatus::Serving => Ok(()),
        other => Err(StepError::new(
            Outcome::NotServing,
            Phase::Transfer,
            format!(
                "health status {other:?} for service {:?}",
                grpc_service_of(url)
            ),
        )),
    }
}

/// `POST /grpc.health.v1.Health/Check` with `HealthCheckRequest { service }`, plus the
/// target's headers (as gRPC metadata, e.g. an authorization token).
fn health_request(
    url: &Uri,
    tls: bool,
    service: &str,
    extra: &HeaderMap,
) -> Result<Request<Full<Bytes>>, StepError> {
    let authority = url.authority().map_or("", |a| a.as_str());
    let uri = Uri::builder()
        .scheme(if tls { "https" } else { "http" })
        .authority(authority)
        .path_and_query(HEALTH_CHECK_PATH)
        .build()
        .map_err(|e| {
            StepError::new(
                Outcome::Protocol,
                Phase::Ttfb,
                format!("cannot build request: {e}"),
            )
        })?;
    let mut request = Request::post(uri)
        .version(Version::HTTP_2)
        .body(Full::new(encode_request(service)))
        .map_err(|e| {
            StepError::new(
                Outcome::Protocol,
                Phase::Ttfb,
                format!("cannot build request: {e}"),
            )
        })?;
    let headers = request.headers_mut();
    for (name, value) in extra {
        headers.append(name, value.clone());
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("vantage/", env!("CARGO_PKG_VERSION"))),
    );
    Ok(request)
}

/// One length-prefixed gRPC message holding `HealthCheckRequest { service = 1 }`.
pub fn encode_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0); // not compressed
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    frame.freeze()
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Reads `grpc-status` (and, on failure, a bounded `grpc-message`).
fn check_grpc_status(headers: &HeaderMap) -> Result<(), StepError> {
    let Some(raw) = headers.get("grpc-status") else {
        return Err(StepError::new(
            Outcome::Protocol,
            Phase::Transfer,
            "the answer has no grpc-status trailer",
        ));
    };
    let raw = raw.as_bytes();
    let code = (raw.len() <= MAX_GRPC_STATUS_DIGITS)
        .then(|| std::str::from_utf8(raw).ok()?.parse::<u32>().ok())
        .flatten()
        .ok_or_else(|| {
            StepError::new(
                Outcome::Protocol,
                Phase::Transfer,
                "grpc-status is not a status code",
            )
        })?;
    if code == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .map(|m| {
            let m = &m.as_bytes()[..m.len().min(MAX_GRPC_MESSAGE)];
            percent_encoding::percent_decode(m)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    Err(StepError::new(
        Outcome::GrpcStatus,
        Phase::Transfer,
        format!("grpc-status {code} ({}): {message}", code_name(code)),
    ))
}

fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("unassigned")
}

/// Decodes the one length-prefixed `HealthCheckResponse` of a unary answer.
pub(crate) fn decode_response(body: &[u8]) -> Result<ServingStatus, StepError> {
    let bad = |why: &str| {
        StepError::new(
            Outcome::Protocol,
            Phase::Transfer,
            format!("malformed HealthCheckResponse: {why}"),
        )
    };
    let [flag, l0, l1, l2, l3, rest @ ..] = body else {
        return Err(bad("no message"));
    };
    if *flag != 0 {
        return Err(bad("compressed, though the probe accepts no grpc-encoding"));
    }
    let len = u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize;
    if len != rest.len() {
        return Err(bad("length prefix does not match the body"));
    }
    decode_serving_status(rest).ok_or_else(|| bad("bad protobuf"))
}

/// `status = 1` (varint) of `HealthCheckResponse`; other fields are skipped as protobuf says.
/// A missing field is its default, UNKNOWN.
pub fn decode_serving_status(mut m: &[u8]) -> Option<ServingStatus> {
    let mut status = 0;
    while !m.is_empty() {
        let key = take_varint(&mut m)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = take_varint(&mut m)?,
            (_, 0) => {
                take_varint(&mut m)?;
            }
            (_, 1) => m = m.get(8..)?,
            (_, 2) => {
                let n = usize::try_from(take_varint(&mut m)?).ok()?;
                m = m.get(n..)?;
            }
            (_, 5) => m = m.get(4..)?,
            _ => return None,
        }
    }
    Some(ServingStatus::from_wire(status))
}

fn take_varint(m: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = m.split_first()?;
        *m = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_encode_and_responses_decode() {
        assert_eq!(&encode_request("")[..], &[0, 0, 0, 0, 0]);
        let r = encode_request("a.B");
        assert_eq!(&r[..], &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']);
        let long = "x".repeat(200);
        let r = encode_request(&long);
        assert_eq!(&r[5..8], &[0x0a, 0xc8, 0x01]);
        assert_eq!(r.len(), 5 + 3 + 200);

        assert_eq!(decode_serving_status(&[]), Some(ServingStatus::Unknown));
        assert_eq!(
            decode_serving_status(&[0x08, 1]),
            Some(ServingStatus::Serving)
        );
        // Unknown fields of every wire type are skipped.
        let skipped = [0x10, 0x96, 0x01, 0x1a, 2, 0, 0, 0x25, 1, 2, 3, 4, 0x08, 2];
        assert_eq!(
            decode_serving_status(&skipped),
            Some(ServingStatus::NotServing)
        );
        for bad in [&[0x08][..], &[0x1a, 5, 0], &[0x0b], &[0x08, 0xff]] {
            assert_eq!(decode_serving_status(bad), None, "{bad:?}");
        }
        assert!(decode_response(&[0, 0, 0, 0, 2, 0x08, 1]).is_ok());
        for bad in [
            &[0u8, 0, 0, 0][..],
            &[1, 0, 0, 0, 2, 0x08, 1],
            &[0, 0, 0, 0, 3, 0x08, 1],
        ] {
            assert_eq!(
                decode_response(bad).err().map(|e| e.outcome),
                Some(Outcome::Protocol)
            );
        }
    }

    #[test]
    fn grpc_status_is_bounded_and_named() {
        let mut h = HeaderMap::new();
        assert_eq!(
            check_grpc_status(&h).err().map(|e| e.outcome),
            Some(Outcome::Protocol)
        );
        h.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(check_grpc_status(&h).is_ok());
        h.insert("grpc-status", HeaderValue::from_static("0005"));
        assert_eq!(
            check_grpc_status(&h).err().map(|e| e.outcome),
            Some(Outcome::Protocol)
        );
        h.insert("grpc-status", HeaderValue::from_static("5"));
        let long = format!("unknown%20service{}", "x".repeat(1000));
        h.insert("grpc-message", HeaderValue::from_str(&long).unwrap());
        let e = check_grpc_status(&h).err().unwrap();
        assert_eq!(e.outcome, Outcome::GrpcStatus);
        assert!(e
            .message
            .starts_with("grpc-status 5 (NOT_FOUND): unknown service"));
        assert!(e.message.len() < 300, "{}", e.message.len());
    }
}
