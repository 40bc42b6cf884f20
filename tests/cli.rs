//! `vantage probe` as a user runs it: the real binary against real sockets on loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use vantage_protocol::histogram::decode_base64;

fn vantage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(args)
        .output()
        .expect("run vantage")
}

/// An HTTP/1.1 server on 127.0.0.1:0 that answers every connection with `response` and
/// counts the connections.
fn serve(response: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || answer(&mut stream, response));
        }
    });
    (format!("http://{addr}/status"), served)
}

fn answer(stream: &mut TcpStream, response: &str) {
    let mut buf = [0u8; 4096];
    let mut request = Vec::new();
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let _ = stream.write_all(response.as_bytes());
}

const HEALTHY: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/health+json\r\n\
x-vantage-region: eu-west-1\r\ncontent-length: 18\r\nconnection: close\r\n\r\n{\"status\":\"pass\"}\n";

fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/")
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let url = closed_port_url();
    let cases: &[&[&str]] = &[
        &["probe", "not a url"],
        &["probe", "ftp://example.com/"],
        &["probe", "https://"],
        &["probe", &url, "--count", "abc"],
        &["probe", &url, "--count", "0"],
        &["probe", &url, "--interval", "5 parsecs"],
        &["probe", &url, "--expect-status", "700"],
        &["probe", &url, "--resolve", "example.com:443"],
        &["probe", &url, "--header", "no colon"],
        &["probe", &url, "--timeout", "2m"],
        &["probe", &url, "--cacert", "/nonexistent/ca.pem"],
        &["probe", &url, "--expect-json", "status=pass"],
        &["probe", &url, "--no-such-flag"],
    ];
    for args in cases {
        let out = vantage(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("vantage: "), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn unreachable_target_is_a_result_not_a_crash() {
    let url = closed_port_url();
    let out = vantage(&["probe", &url, "-n", "3", "-i", "0", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["attempts"], 3);
    assert_eq!(v["outcomes"]["connect"], 3);
    assert_eq!(v["outcomes"]["ok"], 0);
    assert!(v["phases"]["total"].is_null());
    assert!(v["errors"]["connect"].as_str().unwrap().contains("refused"));
}

#[test]
fn json_output_has_quantiles_and_decodable_histograms() {
    let (url, served) = serve(HEALTHY);
    let out = vantage(&[
        "probe",
        &url,
        "-n",
        "5",
        "-i",
        "20ms",
        "--expect-json",
        "/status=pass",
        "--expect-header",
        "content-type: application/health+json",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        5,
        "a fresh connection per probe"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["attempts"], 5);
    assert_eq!(v["outcomes"]["ok"], 5);
    assert_eq!(v["answered_by"]["eu-west-1"], 5);
    assert!(v["phases"]["dns"].is_null(), "IP literal: no DNS phase");
    assert!(v["phases"]["tls"].is_null(), "plain HTTP: no TLS phase");
    for phase in ["connect", "ttfb", "transfer", "total"] {
        let p = &v["phases"][phase];
        let (p50, p99, max) = (
            p["p50"].as_f64().unwrap(),
            p["p99"].as_f64().unwrap(),
            p["max"].as_f64().unwrap(),
        );
        assert!(
            0.0 < p50 && p50 <= p99 && p99 <= max && max < 10.0,
            "{phase}: {p}"
        );
        let h = decode_base64(v["histograms"][phase].as_str().unwrap()).unwrap();
        assert_eq!(h.len(), 5, "{phase}");
        assert_eq!(h.max() as f64 / 1e6, max, "{phase}");
    }
    assert_eq!(
        v["histograms"]["tls"]
            .as_str()
            .map(|h| decode_base64(h).unwrap().len()),
        Some(0)
    );
}

#[test]
fn table_output_and_failing_assertion() {
    let (url, _) = serve(HEALTHY);
    let out = vantage(&["probe", &url, "-n", "2", "-i", "0"]);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "phase",
        "p50",
        "p99",
        "ttfb",
        "total",
        "outcomes: ok 2",
        "answered by: eu-west-1 2",
    ] {
        assert!(table.contains(needle), "missing {needle:?} in\n{table}");
    }
    let out = vantage(&["probe", &url, "--expect-body", "degraded"]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("body_mismatch 1"), "{table}");
}

#[test]
fn help_teaches() {
    let out = vantage(&["probe", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--resolve",
        "--expect-status",
        "Outcome codes",
        "Exit status",
        "Examples",
    ] {
        assert!(help.contains(needle), "missing {needle:?}");
    }
}
