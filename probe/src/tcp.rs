//! The `tcp://host:port` and `tcps://host:port` probe: resolve, connect and (for `tcps`) a TLS
//! handshake without ALPN, through the same steps as an HTTP probe; then, when the spec asks,
//! send its body and read the answer (a banner: SMTP, SSH, Redis `+PONG`...) until the
//! `expect_body`/`expect_body_regex` assertions hold.
//!
//! Phases: `dns` (unless an IP literal or override), `connect`, `tls` (`tcps`), and only when
//! bytes are read, `ttfb` (from the last byte sent, or from the end of the handshake when
//! nothing is sent, to the first byte read) and `transfer` (first byte to the match). Without
//! an expectation the probe is a connect (and TLS) check: bytes are sent if configured, nothing
//! is read. Reading stops at the match, at end of stream, at `max_body_bytes`, or when the
//! server falls silent for the first-byte limit after it started answering: a server that
//! answered and went quiet without matching is `body_mismatch`, one that never answered is
//! `timeout` in `ttfb`, one that closed or reset the connection before answering is `reset`.

use crate::prober::Prober;
use crate::result::{ProbeResult, StepError};
use crate::spec::{host_of, port_of, ProbeSpec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};
use vantage_protocol::{Outcome, Phase};

/// Bytes read per system call; the total is capped by `max_body_bytes`.
const READ_CHUNK: usize = 4096;

pub(crate) async fn run(
    prober: &Prober,
    deadline: Instant,
    result: &mut ProbeResult,
) -> Result<(), StepError> {
    let spec = prober.spec();
    let (host, port) = (host_of(&spec.url), port_of(&spec.url));
    let addrs = prober.resolve(host, port, deadline, result).await?;
    let (tcp, remote_addr) = prober.connect_tcp(&addrs, deadline, result).await?;
    result.remote_addr = Some(remote_addr);
    if !spec.uses_tls() {
        return converse(spec, tcp, deadline, result).await;
    }
    let config = prober
        .tls_configs
        .get_without_alpn(&spec.tls)
        .map_err(|e| StepError::new(Outcome::Tls, Phase::Tls, e.to_string()))?;
    let stream = prober
        .tls_handshake(config, host, tcp, deadline, result)
        .await?;
    converse(spec, stream, deadline, result).await
}

/// Sends the body, then reads until the assertions hold (when there are any).
async fn converse<S>(
    spec: &ProbeSpec,
    mut io: S,
    deadline: Instant,
    result: &mut ProbeResult,
) -> Result<(), StepError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let expects = spec.assertions.needs_body();
    if !spec.body.is_empty() {
        let start = Instant::now();
        let limit = deadline.min(start + spec.timeouts.first_byte);
        let write = async {
            io.write_all(&spec.body).await?;
            io.flush().await
        };
        match timeout_at(limit, write).await {
            Err(_) => return Err(StepError::timeout(Phase::Ttfb, limit, start)),
            Ok(Err(e)) => {
                return Err(StepError::new(
                    Outcome::Reset,
                    Phase::Ttfb,
                    format!("sending {} bytes: {e}", spec.body.len()),
                ))
            }
            Ok(Ok(())) => {}
        }
    }
    if !expects {
        return Ok(());
    }
    let sent_at = Instant::now();
    let cap = spec.max_body_bytes.max(1);
    let mut seen: Vec<u8> = Vec::with_capacity(cap.min(READ_CHUNK));
    let mut chunk = [0u8; READ_CHUNK];
    let mut first_at: Option<Instant> = None;
    let mut last_at = sent_at;
    let stopped = loop {
        let limit = deadline.min(last_at + spec.timeouts.first_byte);
        let want = (cap - seen.len()).min(READ_CHUNK);
        match timeout_at(limit, io.read(&mut chunk[..want])).await {
            Err(_) if first_at.is_none() => {
                return Err(StepError::timeout(Phase::Ttfb, limit, sent_at))
            }
            Err(_) => break "the server fell silent",
            Ok(Err(e)) => {
                let phase = if first_at.is_some() {
                    Phase::Transfer
                } else {
                    Phase::Ttfb
                };
                return Err(StepError::new(
                    Outcome::Reset,
                    phase,
                    format!("reading the answer: {e}"),
                ));
            }
            Ok(Ok(0)) if first_at.is_none() => {
                return Err(StepError::new(
                    Outcome::Reset,
                    Phase::Ttfb,
                    "the server closed the connection before sending anything",
                ))
            }
            Ok(Ok(0)) => break "the server closed the connection",
            Ok(Ok(n)) => {
                let now = Instant::now();
                if first_at.is_none() {
                    first_at = Some(now);
                    result.timings.add(Phase::Ttfb, now - sent_at);
                }
                last_at = now;
                seen.extend_from_slice(&chunk[..n]);
                result.body_bytes = seen.len();
                if spec.assertions.check_body(&seen).is_ok() {
                    result
                        .timings
                        .add(Phase::Transfer, now - first_at.unwrap_or(now));
                    return Ok(());
                }
                if seen.len() >= cap {
                    break "the read cap (max_body_bytes) was reached";
                }
            }
        }
    };
    if let Some(first) = first_at {
        result.timings.add(Phase::Transfer, last_at - first);
    }
    spec.assertions.check_body(&seen).map_err(|mut failure| {
        failure.message = format!(
            "{} ({} bytes read, then {stopped})",
            failure.message,
            seen.len()
        );
        StepError::from(failure)
    })
}
