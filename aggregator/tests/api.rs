//! The HTTP API's edges over real sockets on loopback: routing (404, JSON 405 with no `Allow`),
//! body limits (413 after a bounded read, streamed or not), authentication (401), replays
//! (409), the state before and after the first evaluation, overrides refused from loopback,
//! HTTP/2 with prior knowledge, and stopping.

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use vantage_agent::recorder::IntervalStats;
use vantage_agent::report::{build, ReportIdentity, TargetInterval};
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::config::AggregatorConfig;
use vantage_aggregator::service::{self, Aggregator};
use vantage_probe::{PhaseTimings, ProbeResult};
use vantage_protocol::auth;
use vantage_protocol::config::{FleetConfig, TargetKind};
use vantage_protocol::{Outcome, Phase};
use vantage_testkit::fleet::{quoted, FleetToml};

const KEY: &str = "aggregator-api-test-key-0123456789";
const REGION: &str = "eu-west-1";

fn config() -> AggregatorConfig {
    // One variable, the same value in every test of this binary: setting it races with nothing.
    std::env::set_var("VANTAGE_TEST_API_KEY", KEY);
    let text = FleetToml::new("orders-api")
        .aggregator("window", &quoted("3s"))
        .aggregator("evaluate_every", &quoted("1s"))
        .aggregator_key_from_env("k1", "VANTAGE_TEST_API_KEY", &[REGION])
        .region_with_vantage(REGION)
        .build();
    let fleet = FleetConfig::parse(&text, "test fleet").unwrap();
    AggregatorConfig::from_fleet(fleet).unwrap()
}

use vantage_testkit::unix_now_ms as now_ms;

/// A report body from the one vantage: ten good probes of the one Region.
fn report(seq: u64) -> Vec<u8> {
    let mut stats = IntervalStats::new(3);
    for _ in 0..10 {
        let mut t = PhaseTimings::default();
        t.set(Phase::Connect, Duration::from_millis(1));
        t.set(Phase::Total, Duration::from_millis(20));
        let mut r = ProbeResult::synthetic(Outcome::Ok, t);
        r.status = Some(200);
        stats.record(&r, Duration::ZERO);
    }
    let id = format!("status:{REGION}");
    let targets = [TargetInterval {
        id: &id,
        kind: TargetKind::Status,
        region: Some(REGION),
        stats: &stats,
    }];
    let identity = ReportIdentity {
        fleet: "orders-api".into(),
        agent_id: format!("vantage-{REGION}"),
        vantage: REGION.into(),
    };
    let interval_start_ms = now_ms() / 1000 * 1000 - 1000;
    serde_json::to_vec(&build(
        &identity,
        seq,
        interval_start_ms,
        Duration::from_secs(1),
        &targets,
    ))
    .unwrap()
}

/// The signing headers for `body`, as request-header lines.
fn signed(body: &[u8], key: &str) -> String {
    let ts = now_ms() / 1000;
    format!(
        "{}: k1\r\n{}: {ts}\r\n{}: {}\r\n",
        auth::HEADER_KEY_ID,
        auth::HEADER_TIMESTAMP,
        auth::HEADER_SIGNATURE,
        auth::sign(key.as_bytes(), ts, body)
    )
}

struct Answer {
    status: u16,
    /// Header lines, names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Parses a whole HTTP/1.1 response (the server closed after it).
fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status: status.parse().unwrap(),
        headers,
        body: body.to_owned(),
    }
}

struct Server {
    addr: std::net::SocketAddr,
    aggregator: Arc<Aggregator<DryRun>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(config: AggregatorConfig) -> Server {
    let aggregator = Arc::new(Aggregator::new(config, DryRun::new(), None).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(service::serve(aggregator.clone(), listener, rx));
    Server {
        addr,
        aggregator,
        stop,
        task,
    }
}

impl Server {
    /// One request on its own connection: `extra` header lines, then `body`.
    async fn request(&self, method: &str, path: &str, extra: &str, body: &[u8]) -> Answer {
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n{extra}\r\n",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        parse(&raw)
    }

    async fn post_report(&self, body: &[u8], key: &str) -> Answer {
        self.request("POST", "/v1/reports", &signed(body, key), body)
            .await
    }
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405_all_in_json() {
    let server = start(config()).await;
    for (method, path) in [
        ("GET", "/index.html"),
        ("GET", "/v1/nothing"),
        ("POST", "/v1/nothing"),
        ("GET", "/v1/state/"),
        ("GET", "/v1/State"),
    ] {
        let a = server.request(method, path, "", b"").await;
        assert_eq!(a.status, 404, "{method} {path}");
        assert_eq!(a.body, r#"{"reason":"not found"}"#, "{method} {path}");
        assert_eq!(a.header("content-type"), Some("application/json"));
    }
    for (method, path) in [
        ("GET", "/v1/reports"),
        ("PUT", "/v1/reports"),
        ("POST", "/v1/state"),
        ("DELETE", "/v1/state"),
        ("GET", "/v1/overrides"),
        ("PATCH", "/v1/overrides"),
        ("POST", "/"),
    ] {
        let a = server.request(method, path, "", b"").await;
        assert_eq!(a.status, 405, "{method} {path}");
        assert_eq!(a.body, r#"{"reason":"method not allowed"}"#);
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_eq!(a.header("allow"), None, "{method} {path}");
    }
    // HEAD is not GET here: the state is GET only.
    let a = server.request("HEAD", "/v1/state", "", b"").await;
    assert_eq!(a.status, 405);
}

#[tokio::test]
async fn oversized_bodies_are_413_after_a_bounded_read() {
    let mut config = config();
    config.max_report_bytes = 1024;
    let server = start(config).await;

    let a = server.post_report(&[b' '; 1025], KEY).await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(
        a.json(),
        serde_json::json!({"status": "rejected", "reason": "report body over 1024 bytes"})
    );
    // At the cap the body is read and judged on its content.
    let a = server.post_report(&[b' '; 1024], KEY).await;
    assert_eq!(a.status, 400, "{}", a.body);

    // Streamed with no length announced (under a known key id and a fresh timestamp, else it
    // is refused from its headers): still refused, and the answer still arrives after the
    // whole body was sent (it is drained, not cut off).
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/reports HTTP/1.1\r\nhost: test\r\nconnection: close\r\ntransfer-encoding: chunked\r\n{}\r\n",
        signed(b"", KEY)
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..64 {
        let chunk = [b'x'; 4096];
        tcp.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        tcp.write_all(&chunk).await.unwrap();
        tcp.write_all(b"\r\n").await.unwrap();
    }
    tcp.write_all(b"0\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let a = parse(&raw);
    assert_eq!(a.status, 413, "{}", a.body);

    // Overrides: 64 KiB at most.
    let a = server
        .request("POST", "/v1/overrides", "", &[b' '; 64 * 1024 + 1])
        .await;
    assert_eq!(a.status, 413);
    assert_eq!(a.body, r#"{"reason":"body over 64 KiB"}"#);
    let a = server
        .request("POST", "/v1/overrides", "", &[b' '; 64 * 1024])
        .await;
    assert_eq!(
        a.status, 403,
        "at the limit it is read and judged (no admin keys here): {}",
        a.body
    );
}

#[tokio::test]
async fn a_bad_signature_is_401_and_a_replay_409() {
    let server = start(config()).await;
    let body = report(1);

    let a = server
        .post_report(&body, "a-different-key-0123456789")
        .await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.json()["status"], "rejected");
    assert!(
        a.json()["reason"].as_str().unwrap().contains("signature"),
        "{}",
        a.body
    );
    let a = server.request("POST", "/v1/reports", "", &body).await;
    assert_eq!(a.status, 401, "unsigned: {}", a.body);

    // The refusals burnt nothing: the same report, signed, is accepted once.
    let a = server.post_report(&body, KEY).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, r#"{"status":"accepted","targets":1}"#);
    assert_eq!(a.header("content-type"), Some("application/json"));
    let a = server.post_report(&body, KEY).await;
    assert_eq!(a.status, 409);
    assert_eq!(a.body, r#"{"status":"duplicate"}"#);
}

#[tokio::test]
async fn state_is_503_until_the_first_evaluation() {
    let server = start(config()).await;
    let a = server.request("GET", "/v1/state", "", b"").await;
    assert_eq!(a.status, 503);
    assert_eq!(
        a.body,
        r#"{"status":"starting","reason":"no evaluation yet"}"#
    );

    let snapshot = server.aggregator.evaluate(SystemTime::now()).await;
    let a = server.request("GET", "/v1/state?verbose=1", "", b"").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.json(), serde_json::to_value(&snapshot).unwrap());
    assert_eq!(a.json()["backend"], "dry-run");
}

#[tokio::test]
async fn overrides_from_loopback_are_refused_without_admin_keys() {
    let server = start(config()).await;
    let body = br#"{"nonce": "api-test-nonce-0001", "pin": {"eu-west-1": "down"}}"#;
    for extra in [String::new(), signed(body, KEY)] {
        let a = server.request("POST", "/v1/overrides", &extra, body).await;
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(a.json()["reason"]
            .as_str()
            .unwrap()
            .starts_with("overrides are disabled: no admin keys"));
    }
    server.aggregator.evaluate(SystemTime::now()).await;
    let a = server.request("GET", "/v1/state", "", b"").await;
    assert_eq!(a.json()["overrides"]["pinned"], serde_json::json!({}));
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    use http_body_util::BodyExt;
    let server = start(config()).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::get(format!("http://{}/v1/state", server.addr))
        .body(http_body_util::Full::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 503);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        &body[..],
        br#"{"status":"starting","reason":"no evaluation yet"}"#
    );
}

#[tokio::test]
async fn stop_closes_the_listener() {
    let server = start(config()).await;
    assert_eq!(
        server.request("GET", "/v1/state", "", b"").await.status,
        503
    );
    server.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("serve returns on stop")
        .unwrap();
    assert!(TcpStream::connect(server.addr).await.is_err());
}
