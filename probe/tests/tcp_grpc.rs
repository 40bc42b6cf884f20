//! `tcp(s)://` and `grpc(s)://` targets against real servers on 127.0.0.1: plain TCP listeners
//! that accept, refuse, hang, close early and send matching or other banners, and a tonic
//! `grpc.health.v1` service (SERVING, NOT_SERVING, an unknown service) in plaintext h2 and TLS.
//! Each test checks the outcome code and which phases were timed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use vantage_probe::spec::{ProbeSpec, TlsOptions};
use vantage_probe::tls::TlsConfigCache;
use vantage_probe::{ProbeResult, Prober};
use vantage_protocol::{Outcome, Phase};
use vantage_testkit::{
    banner_server, black_hole, close_server, closed_port, tls_banner_server, TestCa,
};

fn spec(url: &str) -> ProbeSpec {
    let mut s = ProbeSpec::get(url).expect("valid URL");
    // Short limits: the hang and silence cases wait for them.
    s.timeouts.first_byte = Duration::from_millis(400);
    s.timeouts.overall = Duration::from_secs(5);
    s
}

fn trusting(mut s: ProbeSpec, ca: &TestCa) -> ProbeSpec {
    s.tls = TlsOptions {
        insecure: false,
        ca_file: Some(ca.ca_file().to_owned()),
    };
    s
}

fn expect_banner(mut s: ProbeSpec, needle: &str) -> ProbeSpec {
    s.assertions.body_contains = Some(needle.to_owned());
    s
}

async fn probe(spec: ProbeSpec) -> ProbeResult {
    Prober::new(spec, Arc::new(TlsConfigCache::new()))
        .expect("valid spec")
        .probe()
        .await
}

#[track_caller]
fn assert_outcome(r: &ProbeResult, expected: Outcome) {
    assert_eq!(r.outcome, expected, "unexpected outcome; result: {r:#?}");
}

#[track_caller]
fn assert_phases(r: &ProbeResult, present: &[Phase], absent: &[Phase]) {
    for p in present.iter().chain([&Phase::Total]) {
        assert!(r.timings.get(*p).is_some(), "{p} missing: {r:#?}");
    }
    for p in absent {
        assert!(r.timings.get(*p).is_none(), "{p} present: {r:#?}");
    }
}

#[track_caller]
fn assert_failed_in(r: &ProbeResult, phase: Phase) {
    let failure = r.failure.as_ref().expect("a failure");
    assert_eq!(failure.phase, Some(phase), "{r:#?}");
}

#[tokio::test]
async fn tcp_connect_only_succeeds_and_times_dns_and_connect() {
    let server = black_hole().await;
    // `localhost` goes through the resolver, so the dns phase is timed too.
    let r = probe(spec(&format!("tcp://localhost:{}", server.port()))).await;
    assert_outcome(&r, Outcome::Ok);
    assert_phases(
        &r,
        &[Phase::Dns, Phase::Connect],
        &[Phase::Tls, Phase::Ttfb],
    );
    assert_eq!(r.remote_addr.map(|a| a.port()), Some(server.port()));
}

#[tokio::test]
async fn tcp_refused_is_connect() {
    let r = probe(spec(&format!("tcp://127.0.0.1:{}", closed_port()))).await;
    assert_outcome(&r, Outcome::Connect);
    assert_failed_in(&r, Phase::Connect);
    assert_phases(&r, &[], &[Phase::Dns, Phase::Connect, Phase::Ttfb]);
}

#[tokio::test]
async fn tcp_banner_that_never_comes_is_a_ttfb_timeout() {
    let server = black_hole().await;
    let s = expect_banner(spec(&format!("tcp://127.0.0.1:{}", server.port())), "SSH-");
    let r = probe(s).await;
    assert_outcome(&r, Outcome::Timeout);
    assert_failed_in(&r, Phase::Ttfb);
    assert_phases(&r, &[Phase::Connect], &[Phase::Ttfb, Phase::Transfer]);
    assert!(r.timings.get(Phase::Total).unwrap() >= Duration::from_millis(400));
}

#[tokio::test]
async fn tcp_close_before_the_banner_is_reset() {
    let server = close_server().await;
    let s = expect_banner(spec(&format!("tcp://127.0.0.1:{}", server.port())), "220");
    let r = probe(s).await;
    assert_outcome(&r, Outcome::Reset);
    assert_failed_in(&r, Phase::Ttfb);
    assert_phases(&r, &[Phase::Connect], &[Phase::Ttfb]);
}

#[tokio::test]
async fn tcp_banner_matches() {
    let server = banner_server(b"220 mail.example ESMTP ready\r\n", false).await;
    let s = expect_banner(spec(&format!("tcp://127.0.0.1:{}", server.port())), "ESMTP");
    let r = probe(s).await;
    assert_outcome(&r, Outcome::Ok);
    assert_phases(
        &r,
        &[Phase::Connect, Phase::Ttfb, Phase::Transfer],
        &[Phase::Tls],
    );
    assert_eq!(r.body_bytes, 30);
}

#[tokio::test]
async fn tcp_banner_that_does_not_match_is_body_mismatch() {
    let server = banner_server(b"554 go away\r\n", false).await;
    let mut s = spec(&format!("tcp://127.0.0.1:{}", server.port()));
    s.assertions.body_regex = Some(regex::Regex::new(r"^220 ").unwrap());
    let r = probe(s).await;
    assert_outcome(&r, Outcome::BodyMismatch);
    assert_phases(&r, &[Phase::Connect, Phase::Ttfb, Phase::Transfer], &[]);
    let message = &r.failure.as_ref().unwrap().message;
    assert!(message.contains("fell silent"), "{message}");
}

#[tokio::test]
async fn tcp_sends_its_body_then_matches_the_answer() {
    let server = banner_server(b"+PONG\r\n", true).await;
    let mut s = expect_banner(spec(&format!("tcp://127.0.0.1:{}", server.port())), "+PONG");
    s.body = "PING\r\n".into();
    let r = probe(s).await;
    assert_outcome(&r, Outcome::Ok);
    assert_phases(&r, &[Phase::Connect, Phase::Ttfb, Phase::Transfer], &[]);
    assert_eq!(server.received(), b"PING\r\n");
}

#[tokio::test]
async fn tcps_handshakes_then_reads_the_banner() {
    let ca = TestCa::new();
    let server = tls_banner_server(&ca.valid_leaf(), b"* OK IMAP4rev1 ready\r\n").await;
    let url = format!("tcps://127.0.0.1:{}", server.port());
    let r = probe(trusting(expect_banner(spec(&url), "* OK"), &ca)).await;
    assert_outcome(&r, Outcome::Ok);
    assert_phases(
        &r,
        &[Phase::Connect, Phase::Tls, Phase::Ttfb],
        &[Phase::Dns],
    );
    assert!(r.tls_version.is_some() && r.cert_not_after.is_some());

    // Not trusting the test CA: the handshake fails, and that is the outcome.
    let r = probe(expect_banner(spec(&url), "* OK")).await;
    assert_outcome(&r, Outcome::Tls);
    assert_failed_in(&r, Phase::Tls);
}

/// A tonic health service: the server as a whole and `vantage.Up` SERVING, `vantage.Down`
/// NOT_SERVING, anything else unknown. Over TLS when `ca` is given.
async fn health_server(ca: Option<&TestCa>) -> (SocketAddr, HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("vantage.Up", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("vantage.Down", ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = Server::builder();
    if let Some(ca) = ca {
        let cert = ca.server_cert("grpc", &["localhost", "127.0.0.1"]).unwrap();
        let identity = Identity::from_pem(
            std::fs::read(&cert.cert).unwrap(),
            std::fs::read(&cert.key).unwrap(),
        );
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .unwrap();
    }
    let serve = builder
        .add_service(service)
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(async move {
        let _ = serve.await;
    });
    (addr, reporter)
}

#[tokio::test]
async fn grpc_plaintext_serving_not_serving_and_unknown() {
    let (addr, _reporter) = health_server(None).await;
    let url = |service: &str| format!("grpc://{addr}/{service}");

    for service in ["", "vantage.Up"] {
        let r = probe(spec(&url(service))).await;
        assert_outcome(&r, Outcome::Ok);
        assert_phases(
            &r,
            &[Phase::Connect, Phase::Ttfb, Phase::Transfer],
            &[Phase::Dns, Phase::Tls],
        );
        assert_eq!(r.status, Some(200));
        assert_eq!(r.http_version, Some(http::Version::HTTP_2));
    }

    let r = probe(spec(&url("vantage.Down"))).await;
    assert_outcome(&r, Outcome::NotServing);
    assert_phases(&r, &[Phase::Connect, Phase::Ttfb, Phase::Transfer], &[]);
    assert!(r.failure.as_ref().unwrap().message.contains("NotServing"));

    // The health protocol answers an unknown service with grpc-status 5 NOT_FOUND.
    let r = probe(spec(&url("vantage.Nobody"))).await;
    assert_outcome(&r, Outcome::GrpcStatus);
    let message = &r.failure.as_ref().unwrap().message;
    assert!(
        message.starts_with("grpc-status 5 (NOT_FOUND)"),
        "{message}"
    );
    assert_phases(&r, &[Phase::Connect, Phase::Ttfb], &[]);
}

#[tokio::test]
async fn grpc_over_tls_negotiates_h2_and_checks_the_certificate() {
    let ca = TestCa::new();
    let (addr, reporter) = health_server(Some(&ca)).await;
    let url = format!("grpcs://127.0.0.1:{}/vantage.Up", addr.port());
    let prober = Prober::new(trusting(spec(&url), &ca), Arc::new(TlsConfigCache::new())).unwrap();
    let r = prober.probe().await;
    assert_outcome(&r, Outcome::Ok);
    assert_phases(
        &r,
        &[Phase::Connect, Phase::Tls, Phase::Ttfb, Phase::Transfer],
        &[Phase::Dns],
    );
    assert!(r.tls_version.is_some());

    // The service goes down: the same prober now sees NOT_SERVING.
    reporter
        .set_service_status("vantage.Up", ServingStatus::NotServing)
        .await;
    assert_outcome(&prober.probe().await, Outcome::NotServing);

    let r = probe(spec(&url)).await;
    assert_outcome(&r, Outcome::Tls);
    assert_failed_in(&r, Phase::Tls);
}

#[tokio::test]
async fn grpc_against_servers_that_are_not_grpc() {
    // Plaintext h2 prior knowledge to a server that closes at once.
    let closing = close_server().await;
    let r = probe(spec(&format!("grpc://127.0.0.1:{}/x", closing.port()))).await;
    assert_outcome(&r, Outcome::Reset);
    assert_phases(&r, &[Phase::Connect], &[Phase::Transfer]);

    // A TLS server that does not offer h2 by ALPN.
    let ca = TestCa::new();
    let tls = tls_banner_server(&ca.valid_leaf(), b"hello\r\n").await;
    let url = format!("grpcs://127.0.0.1:{}/x", tls.port());
    let r = probe(trusting(spec(&url), &ca)).await;
    assert_outcome(&r, Outcome::Protocol);
    assert_phases(&r, &[Phase::Connect, Phase::Tls], &[Phase::Ttfb]);
}
