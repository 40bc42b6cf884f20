//! The accuracy test: time-to-first-byte against a server that answers exactly `delay` after
//! the request, measured by vantage, by blackbox_exporter, and by a minimal blocking client in
//! this process (the floor any client on this machine sees: loopback delivery and wake-ups).
//!
//! The three run in interleaved rounds so that a burst of unrelated load on the machine hits
//! them alike instead of spoiling one side's figures.

use crate::certs::Certs;
use crate::delay::DelayServer;
use crate::servers::Blackbox;
use crate::{json_u64, progress, quantile, run_vantage};
use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Error quantiles of one client against one server, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Errors {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub ok: u64,
    pub n: u64,
}

pub struct AccuracyRow {
    pub scheme: &'static str,
    pub ours: Errors,
    pub blackbox: Errors,
    pub floor: Errors,
    /// The delay server: lateness of its write past the deadline, p50/p99/max µs.
    pub server_late_us: [f64; 3],
    /// The delay server: duration of its response write, p50 µs.
    pub server_write_us: f64,
}

pub struct AccuracyOptions<'a> {
    pub vantage: &'a Path,
    pub certs: &'a Certs,
    pub blackbox: &'a Blackbox,
    pub delay: Duration,
    pub probes: u64,
    pub rounds: u64,
}

fn errors_from_sorted(errs: &[f64], ok: u64, n: u64) -> Errors {
    Errors {
        p50_ms: quantile(errs, 0.5),
        p99_ms: quantile(errs, 0.99),
        ok,
        n,
    }
}

fn us_quantiles(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    [
        quantile(&v, 0.5),
        quantile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
    ]
}

pub fn run(opts: &AccuracyOptions<'_>) -> anyhow::Result<Vec<AccuracyRow>> {
    let delay_ms = opts.delay.as_secs_f64() * 1e3;
    let ca = opts
        .certs
        .ca_pem
        .to_str()
        .context("temp path is not UTF-8")?;
    let rounds = opts.rounds.clamp(1, opts.probes);
    let mut roots = RootCertStore::empty();
    roots.add(opts.certs.ca_der.clone().into())?;
    let client_tls = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut rows = Vec::new();
    for https in [false, true] {
        let tls = https.then_some((
            opts.certs.leaf_der.as_slice(),
            opts.certs.leaf_key_der.as_slice(),
        ));
        let server = DelayServer::start(opts.delay, tls)?;
        let scheme = if https { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{}/", server.addr.port());
        progress(format!(
            "accuracy: {url} answers {:?} after the request; {} probes per client in {rounds} \
             interleaved rounds ...",
            opts.delay, opts.probes
        ));
        let mut ours_hist: Option<Histogram<u64>> = None;
        let (mut ours_ok, mut ours_n) = (0, 0);
        let (mut bb_errs, mut bb_ok, mut bb_n) = (Vec::new(), 0, 0);
        let (mut floor_errs, mut floor_n) = (Vec::new(), 0);
        let mut late = Vec::new();
        for round in 0..rounds {
            // Spread the remainder over the first rounds.
            let n = opts.probes / rounds + u64::from(round < opts.probes % rounds);
            for step in 0..3 {
                // Rotate who goes first, so none always follows the same neighbour.
                match (step + round) % 3 {
                    0 => {
                        let count = n.to_string();
                        let mut extra = vec!["--count", &count, "--interval", "0"];
                        extra.extend(["--concurrency", "1", "--precision", "5", "--cacert", ca]);
                        let (json, _, _) = run_vantage(opts.vantage, &url, &extra, 1.0)?;
                        ours_ok += json_u64(&json, "/outcomes/ok");
                        ours_n += json_u64(&json, "/attempts");
                        let h = ttfb_histogram(&json)?;
                        match &mut ours_hist {
                            Some(total) => total.add(&h)?,
                            None => ours_hist = Some(h),
                        }
                    }
                    1 => {
                        let answers = crate::drive_blackbox(opts.blackbox.addr, &url, n, 1);
                        bb_n += answers.len() as u64;
                        for a in &answers {
                            if a.success {
                                bb_ok += 1;
                                if let Some(p) = a.processing {
                                    bb_errs.push(p * 1e3 - delay_ms);
                                }
                            }
                        }
                    }
                    _ => {
                        for _ in 0..n {
                            floor_n += 1;
                            let ttfb = if https {
                                floor_https(server.addr, &client_tls)
                            } else {
                                floor_http(server.addr)
                            };
                            if let Ok(d) = ttfb {
                                floor_errs.push(d.as_secs_f64() * 1e3 - delay_ms);
                            }
                        }
                    }
                }
            }
            late.extend(server.take_lateness());
        }
        bb_errs.sort_by(f64::total_cmp);
        floor_errs.sort_by(f64::total_cmp);
        let ours = match &ours_hist {
            Some(h) if !h.is_empty() => Errors {
                p50_ms: h.value_at_quantile(0.5) as f64 / 1e3 - delay_ms,
                p99_ms: h.value_at_quantile(0.99) as f64 / 1e3 - delay_ms,
                ok: ours_ok,
                n: ours_n,
            },
            _ => errors_from_sorted(&[], ours_ok, ours_n),
        };
        let floor_ok = floor_errs.len() as u64;
        rows.push(AccuracyRow {
            scheme: if https { "HTTPS" } else { "HTTP" },
            ours,
            blackbox: errors_from_sorted(&bb_errs, bb_ok, bb_n),
            floor: errors_from_sorted(&floor_errs, floor_ok, floor_n),
            server_late_us: us_quantiles(late.iter().map(|(l, _)| *l as f64 / 1e3).collect()),
            server_write_us: us_quantiles(late.iter().map(|(_, w)| *w as f64 / 1e3).collect())[0],
        });
    }
    Ok(rows)
}

/// The ttfb histogram of a `vantage probe --json` answer (V2-deflate, base64).
fn ttfb_histogram(json: &Value) -> anyhow::Result<Histogram<u64>> {
    let text = json
        .pointer("/histograms/ttfb")
        .and_then(Value::as_str)
        .context("no ttfb histogram in vantage's JSON")?;
    Ok(vantage_protocol::histogram::decode_base64(text)?)
}

const FLOOR_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

/// Request written to first response byte with a plain blocking socket.
fn floor_http(addr: SocketAddr) -> anyhow::Result<Duration> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.write_all(FLOOR_REQUEST)?;
    let sent = Instant::now();
    let mut buf = [0u8; 1024];
    if tcp.read(&mut buf)? == 0 {
        bail!("closed before answering");
    }
    let ttfb = sent.elapsed();
    let _ = tcp.read_to_end(&mut Vec::new());
    Ok(ttfb)
}

/// The same over TLS with a blocking rustls client: handshake, request, first plaintext byte.
fn floor_https(addr: SocketAddr, config: &Arc<ClientConfig>) -> anyhow::Result<Duration> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("127.0.0.1")?;
    let mut conn = ClientConnection::new(config.clone(), name)?;
    // Bounded by the read timeout on every step.
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    conn.writer().write_all(FLOOR_REQUEST)?;
    while conn.wants_write() {
        conn.write_tls(&mut tcp)?;
    }
    let sent = Instant::now();
    loop {
        if conn.read_tls(&mut tcp)? == 0 {
            bail!("closed before answering");
        }
        if conn.process_new_packets()?.plaintext_bytes_to_read() > 0 {
            break;
        }
    }
    let ttfb = sent.elapsed();
    let _ = tcp.read_to_end(&mut Vec::new());
    Ok(ttfb)
}
