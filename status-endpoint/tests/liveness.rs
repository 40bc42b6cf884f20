//! `GET /status` is answered ahead of the axum routes (`service.rs`): the answer must be the one
//! the routes give, byte for byte apart from `date`, trace echo included, and counted alike.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vantage_runtime::http_server::{self, Limits, TowerToHyperService};
use vantage_status_endpoint::config::Config;
use vantage_status_endpoint::router;

const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";

/// The app on one listener, its routes alone on another; both stop when the sender drops.
async fn serve_both() -> (SocketAddr, SocketAddr, tokio::sync::watch::Sender<bool>) {
    let settings = Config::from_toml(
        "region = \"eu-west-1\"\nservice_id = \"orders\"\n",
        "liveness",
    )
    .unwrap()
    .validate()
    .unwrap();
    let checks = router::build_checks(&settings, None).await.unwrap();
    let app = router::router(&settings, checks);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let fast = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let routed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (fast_addr, routed_addr) = (fast.local_addr().unwrap(), routed.local_addr().unwrap());
    let routes = app.routes().clone();
    tokio::spawn(http_server::serve(
        routed,
        move |_| TowerToHyperService::new(routes.clone()),
        Limits::API,
        None,
        until(stopped.clone()),
    ));
    tokio::spawn(router::run(app, fast, until(stopped)));
    (fast_addr, routed_addr, stop)
}

/// One request on a fresh connection; the answer with its `date` line removed.
async fn exchange(addr: SocketAddr, head: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    String::from_utf8(raw)
        .unwrap()
        .split("\r\n")
        .filter(|line| !line.starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[tokio::test]
async fn the_fast_answer_is_the_routes_answer() {
    let (fast, routed, _stop) = serve_both().await;
    let heads = [
        "GET /status HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".to_owned(),
        format!(
            "GET /status?x=1 HTTP/1.1\r\nhost: t\r\nx-amzn-trace-id: {TRACE}\r\nconnection: close\r\n\r\n"
        ),
        "HEAD /status HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".to_owned(),
        "POST /status HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            .to_owned(),
        "GET /status/ HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".to_owned(),
    ];
    for head in &heads {
        let (a, b) = (exchange(fast, head).await, exchange(routed, head).await);
        assert_eq!(a, b, "{head:?}");
    }
    let traced = exchange(fast, &heads[1]).await;
    assert!(traced.starts_with("HTTP/1.1 200 OK\r\n"), "{traced}");
    for line in [
        "content-type: application/health+json",
        "cache-control: no-store",
        "x-vantage-region: eu-west-1",
        &format!("x-amzn-trace-id: {TRACE}"),
    ] {
        assert!(traced.contains(line), "missing {line} in\n{traced}");
    }
    let body = traced.split("\r\n\r\n").nth(1).unwrap();
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["status"], "pass", "{body}");
    assert_eq!(body["serviceId"], "orders", "{body}");
    assert!(exchange(fast, &heads[3]).await.starts_with("HTTP/1.1 405"));
}

#[tokio::test]
async fn fast_answers_are_counted_with_the_routed_ones() {
    let (fast, routed, _stop) = serve_both().await;
    let get = "GET /status HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n";
    for _ in 0..3 {
        exchange(fast, get).await;
    }
    exchange(routed, get).await;
    let metrics = exchange(
        fast,
        "GET /metrics HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        metrics.contains("vantage_status_answers_total{path=\"status\",status=\"pass\"} 4\n"),
        "{metrics}"
    );
}
