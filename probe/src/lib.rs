//! The probe engine: one HTTP(S) exchange (or a TCP or gRPC health check), measured phase by
//! phase.
//!
//! reqwest and hyper's pooled client hide the boundary between TCP connect and TLS handshake,
//! so the engine drives each step itself: resolve (tokio's getaddrinfo), connect
//! ([`tokio::net::TcpStream`]), handshake ([`tokio_rustls`]), then a hyper HTTP/1.1 or HTTP/2
//! connection over a [`timed_io::TimedIo`] that timestamps the last request byte and the first
//! response byte. Every step runs under the earlier of its own limit and the overall deadline,
//! and every failure is classified into one [`Outcome`] code.
//!
//! - [`dns`]: [`dns::DnsProber`] resolves the global name, timed, and maps answers to Regions.
//! - [`prober`]: [`Prober`] probes one target, phase by phase, under its limits.
//! - [`result`]: [`ProbeResult`], what one probe saw: outcome, phase timings, answering Region.
//! - [`spec`]: what to probe and how ([`spec::ProbeSpec`]), validated before the first probe.
//! - [`assertion`]: status, body, JSON pointer and header checks on the response.
//! - [`tls`]: client configurations (web PKI roots, extra CAs, a verified-chain cache).
//! - [`timed_io`]: the byte-timestamping I/O wrapper behind the first-byte and transfer phases.
//! - `exchange`: the HTTP handshake, the request and redirect resolution.
//! - [`tcp`]: `tcp(s)://` targets: connect, TLS, optional bytes sent and banner matched.
//! - [`grpc`]: `grpc(s)://` targets: `grpc.health.v1.Health/Check` over HTTP/2.

pub mod assertion;
pub mod dns;
mod exchange;
pub mod grpc;
pub mod prober;
pub mod result;
pub mod spec;
pub mod tcp;
pub mod timed_io;
pub mod tls;

pub use prober::Prober;
pub use result::{Failure, PhaseTimings, ProbeResult};
pub use spec::Timeouts;
