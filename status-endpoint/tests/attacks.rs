//! The status endpoint against hostile clients and careless configuration: connections that
//! stall in their request head, and configuration errors that would print a secret.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use vantage_runtime::http_server::Limits;
use vantage_status_endpoint::config::Config;
use vantage_status_endpoint::router;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const SECRET: &str = "Sup3rS3cretValue-0123456789";

async fn serve(limits: Limits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let settings = Config::from_toml("region = \"eu-west-1\"\n", "attacks")
        .unwrap()
        .validate()
        .unwrap();
    let checks = router::build_checks(&settings, None).await.unwrap();
    let app = router::router(&settings, checks);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(router::run_with(app, listener, limits, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

async fn status(addr: std::net::SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /status HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw).into()
}

// Attack: slowloris. 200 connections each send half a request head and hold it open (70 idle
// connections used to stop /status answering). /status must still answer within 1 s, and the
// server must close every held connection within the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_neither_block_status_nor_stay_open() {
    let limits = Limits {
        header_read_timeout: HEADER_TIMEOUT,
        ..Limits::API
    };
    let (addr, _stop) = serve(limits).await;
    let opened = Instant::now();
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /status HTTP/1.1\r\nhost: t\r\nx-slow")
            .await
            .unwrap();
        held.push(tcp);
    }
    let answer = tokio::time::timeout(Duration::from_secs(1), status(addr))
        .await
        .expect("/status answers within 1 s while 200 heads are held");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let mut waits = Vec::new();
    for mut tcp in held {
        waits.push(tokio::spawn(async move {
            let mut buf = [0u8; 256];
            while let Ok(n) = tcp.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }));
    }
    for w in waits {
        tokio::time::timeout_at(opened + HEADER_TIMEOUT + Duration::from_secs(2), w)
            .await
            .expect("the server closes a held connection at the header timeout")
            .unwrap();
    }
}

// Attack: a connection that never sends a byte (the HTTP version is never known, so hyper's
// own header timer never starts) is closed at the header timeout too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed() {
    let limits = Limits {
        header_read_timeout: HEADER_TIMEOUT,
        ..Limits::API
    };
    let (addr, _stop) = serve(limits).await;
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf))
        .await
        .expect("closed within the header timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(50));
}

/// The error for `text` as `vantage status-endpoint --config` prints it: from parsing,
/// validating, or building the checks.
async fn config_error(text: &str) -> String {
    let settings = match Config::from_toml(text, "status.toml").and_then(|c| c.validate()) {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    match router::build_checks(&settings, None).await {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

// Attack (on the operator): a mistake next to a secret must not print the secret into logs.
// Each error names the file or the key, never the token, password or URL userinfo.
#[tokio::test]
async fn configuration_errors_never_print_secrets() {
    let region = "region = \"eu-west-1\"\n";
    let cases = [
        // token too short, and of the wrong type (toml would quote the value)
        (format!("{region}token = \"{}\"\n", &SECRET[..10]), "token"),
        (format!("{region}token = 1234567890123456789\n"), "token"),
        // a misspelt key holding the token
        (format!("{region}tokne = \"{SECRET}\"\n"), "tokne"),
        // userinfo password in a database URL with another mistake
        (
            format!("{region}[aurora.writer]\nurl = \"postgres://health:{SECRET}@db/orders?sslmode=bogus\"\n"),
            "aurora.writer",
        ),
        (
            format!("{region}[aurora.writer]\nurl = \"mysql://health:{SECRET}@db/orders?ssl-mode=bogus\"\n"),
            "aurora.writer",
        ),
        // a password as a query parameter
        (
            format!("{region}[aurora.reader]\nurl = \"postgres://health@db/orders?password={SECRET}&sslmode=allow\"\n"),
            "aurora.reader",
        ),
        // a bad check URL with credentials
        (
            format!("{region}[[http]]\nname = \"dep\"\nurl = \"ftp://u:{SECRET}@h/\"\n"),
            "http[0].url",
        ),
    ];
    for (text, key) in cases {
        let error = config_error(&text).await;
        assert!(!error.contains(&SECRET[..10]), "secret printed: {error}");
        assert!(
            !error.contains("1234567890123456789"),
            "secret printed: {error}"
        );
        assert!(error.contains(key), "the key is named: {error}");
    }
}
