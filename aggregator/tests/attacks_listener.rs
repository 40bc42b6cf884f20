//! The API's listener under connection-level attacks, over real sockets on loopback, with a
//! short header timeout so the test sees the server close what it holds.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::config::AggregatorConfig;
use vantage_aggregator::service::{self, Aggregator, ServeOptions};
use vantage_protocol::config::FleetConfig;
use vantage_runtime::http_server::Limits;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

fn config() -> AggregatorConfig {
    std::env::set_var(
        "VANTAGE_TEST_ATTACK_KEY",
        "aggregator-attack-test-key-0123456789",
    );
    let text = r#"
[fleet]
name = "orders-api"
report_interval = "1s"
[global]
url = "https://api.example.com/status"
[aggregator]
url = "http://127.0.0.1:1"
[aggregator.keys]
k1 = { env = "VANTAGE_TEST_ATTACK_KEY", vantages = ["eu-west-1"] }
[agents.auth]
key_id = "k1"
[[regions]]
name = "eu-west-1"
status_url = "https://eu-west-1.example.com/status"
[[vantages]]
region = "eu-west-1"
"#;
    AggregatorConfig::from_fleet(FleetConfig::parse(text, "test fleet").unwrap()).unwrap()
}

async fn start(limits: Limits) -> (std::net::SocketAddr, watch::Sender<bool>) {
    let aggregator = Arc::new(Aggregator::new(config(), DryRun::new(), None).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let options = ServeOptions { limits, tls: None };
    tokio::spawn(service::serve_with(aggregator, listener, options, rx));
    (addr, stop)
}

/// `GET /v1/state` on a fresh connection: the status line.
async fn state(addr: std::net::SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /v1/state HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

// Attack: slowloris. 200 connections each send half a request head and hold it open, hoping
// to pin the server's connections so agents' reports and operators' requests go unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_neither_block_the_api_nor_stay_open() {
    let limits = Limits {
        header_read_timeout: HEADER_TIMEOUT,
        ..Limits::API
    };
    let (addr, _stop) = start(limits).await;
    let opened = Instant::now();
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"POST /v1/reports HTTP/1.1\r\nhost: test\r\nx-vantage-")
            .await
            .unwrap();
        held.push(tcp);
    }

    let answered = tokio::time::timeout(Duration::from_secs(1), state(addr))
        .await
        .expect("the API answers within 1 s while 200 heads are held");
    // 503: no evaluation has run yet, which is the API answering.
    assert!(answered.starts_with("HTTP/1.1 503"), "{answered}");

    let closes = held.into_iter().map(|mut tcp| {
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
    });
    let all_closed = tokio::time::timeout(
        HEADER_TIMEOUT + Duration::from_secs(2),
        futures_join(closes.collect()),
    )
    .await;
    assert!(all_closed.is_ok(), "held connections still open");
    // Opening 200 connections takes a moment; none may outlive the timeout by much.
    assert!(
        opened.elapsed() < HEADER_TIMEOUT + Duration::from_secs(2),
        "{:?}",
        opened.elapsed()
    );
}

// Attack: more connections than the cap. The API stays up and answers once one frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_clients_wait_then_are_served() {
    let limits = Limits {
        max_connections: 4,
        ..Limits::API
    };
    let (addr, _stop) = start(limits).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let waiting = tokio::time::timeout(Duration::from_millis(300), state(addr)).await;
    assert!(waiting.is_err(), "answered beyond the cap");
    drop(idle.pop());
    let answered = tokio::time::timeout(Duration::from_secs(2), state(addr))
        .await
        .expect("answered once a connection closed");
    assert!(answered.starts_with("HTTP/1.1 503"), "{answered}");
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
