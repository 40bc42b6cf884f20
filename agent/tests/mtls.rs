//! The agent against an aggregator that requires client certificates (`vantage aggregator
//! --tls-client-ca`): with `client_cert` set, reports are delivered over mTLS; without it the
//! handshake is refused and the reports wait to be retried, never dropped; a key that does not
//! match its certificate is refused before anything is sent. The server is the shared server
//! loop with the aggregator's TLS (`vantage_runtime::tls_server`), certificates from the test
//! CA.

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use vantage_agent::push::{
    run_pusher, ClientCertFiles, OutgoingReport, PushConfig, PushError, PushSummary,
};
use vantage_runtime::http_server::{serve, Limits};
use vantage_runtime::tls_server::{ServerTls, TlsFiles};
use vantage_testkit::aggregator::{report_body, KEY, KEY_ID};
use vantage_testkit::ca::TestCa;

/// An HTTPS server requiring client certificates from `ca`, answering every request with an
/// accepted report; returns its URL and the count of requests that reached HTTP.
async fn mtls_aggregator(ca: &TestCa) -> (String, Arc<AtomicUsize>) {
    let server = ca.server_cert("aggregator", &["localhost"]).unwrap();
    let tls = ServerTls::load(TlsFiles {
        cert_file: server.cert,
        key_file: server.key,
        client_ca_file: Some(ca.ca_file().to_owned()),
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        let make = move |_peer| {
            let seen = seen.clone();
            service_fn(move |_request| {
                seen.fetch_add(1, Ordering::SeqCst);
                async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        br#"{"status":"accepted","targets":1}"#,
                    ))))
                }
            })
        };
        let _ = serve(
            listener,
            make,
            Limits::API,
            Some(tls.acceptor()),
            std::future::pending(),
        )
        .await;
    });
    (format!("https://localhost:{port}"), requests)
}

fn config(url: &str, ca: &TestCa, client_cert: Option<ClientCertFiles>) -> PushConfig {
    PushConfig {
        aggregator: url.parse().unwrap(),
        key_id: KEY_ID.into(),
        key: KEY.to_vec(),
        request_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ca_file: Some(ca.ca_file().to_owned()),
        client_cert,
        ..PushConfig::default()
    }
}

/// Hands the pusher two reports, waits (bounded) for `done`, stops it.
async fn push(config: PushConfig, done: impl Fn() -> bool) -> PushSummary {
    let (reports, rx) = mpsc::channel(4);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_pusher(
        config,
        None,
        rx,
        stop_rx,
        Duration::from_millis(200),
    ));
    for seq in [1, 2] {
        let report = OutgoingReport {
            seq,
            body: report_body(seq),
        };
        reports.send(report).await.unwrap();
    }
    vantage_testkit::eventually::wait_for("the pusher", Duration::from_secs(20), done).await;
    stop.send(true).unwrap();
    vantage_testkit::eventually::within("the pusher to stop", Duration::from_secs(20), task)
        .await
        .unwrap()
}

#[tokio::test]
async fn with_its_client_certificate_the_agent_delivers_over_mtls() {
    let ca = TestCa::new();
    let (url, requests) = mtls_aggregator(&ca).await;
    let cert = ca.client_cert("vantage-eu-west-1").unwrap();
    let config = config(
        &url,
        &ca,
        Some(ClientCertFiles {
            cert_file: cert.cert,
            key_file: cert.key,
        }),
    );
    config.check().unwrap();
    let summary = push(config, || requests.load(Ordering::SeqCst) >= 2).await;
    assert_eq!(summary.delivered, 2, "{summary:?}");
}

#[tokio::test]
async fn without_a_client_certificate_nothing_gets_in_and_nothing_is_dropped() {
    let ca = TestCa::new();
    let (url, requests) = mtls_aggregator(&ca).await;
    // A second of refused handshakes (each a retry) is enough to know none gets through.
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    let summary = push(config(&url, &ca, None), move || {
        tokio::time::Instant::now() >= until
    })
    .await;
    assert_eq!(
        requests.load(Ordering::SeqCst),
        0,
        "the handshake must fail"
    );
    assert_eq!(summary.delivered, 0, "{summary:?}");
    assert!(
        summary.retries >= 2,
        "refused handshakes are retried: {summary:?}"
    );
    assert_eq!(summary.rejected, 0, "and never dropped as bad: {summary:?}");
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_refused_up_front() {
    let ca = TestCa::new();
    let one = ca.client_cert("one").unwrap();
    let other = ca.client_cert("other").unwrap();
    let config = config(
        "https://localhost:1",
        &ca,
        Some(ClientCertFiles {
            cert_file: one.cert,
            key_file: other.key.clone(),
        }),
    );
    let err = config.check().unwrap_err();
    assert!(matches!(err, PushError::ClientCert(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("does not match"), "{text}");
    let key_pem = std::fs::read_to_string(&other.key).unwrap();
    let key_body = key_pem.lines().nth(1).unwrap();
    assert!(
        !text.contains(key_body),
        "the key's bytes must never be echoed"
    );
}
