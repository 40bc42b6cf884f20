//! The report path under attack (issue 10: findings 2, 4, 5 and the low items): each test
//! replays one attack against a real aggregator on loopback and checks it is refused, with the
//! status and reason an agent (or an operator reading logs) would see.

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use vantage_aggregator::api::MAX_PENDING_UPLOADS;
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::config::AggregatorConfig;
use vantage_aggregator::service::{self, Aggregator, Snapshot};
use vantage_protocol::auth;
use vantage_protocol::histogram::{encode_base64, new_latency_histogram};

const REGIONS: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];

/// Each vantage's own key, as its agent holds it.
fn key(vantage: &str) -> String {
    format!("attack-test-key-{vantage}-0123456789")
}

fn key_env(vantage: &str) -> String {
    format!("VANTAGE_TEST_ATTACK_KEY_{}", vantage.replace('-', "_"))
}

/// Three Regions seen from the same three vantages, one key per vantage, quorum 2, out after
/// one down evaluation (so a single evaluation shows whether an attack worked).
fn config(state_file: Option<&std::path::Path>) -> AggregatorConfig {
    let state = state_file
        .map(|p| format!("state_file = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    let mut t = format!(
        r#"
[fleet]
name = "orders-api"
report_interval = "1s"
[global]
url = "https://api.example.com/status"
[aggregator]
url = "http://127.0.0.1:1"
window = "3s"
evaluate_every = "1s"
{state}[agents.auth]
key_id = "k-{}"
[policy]
quorum = "2"
fail_after = 1
"#,
        REGIONS[0]
    );
    for r in REGIONS {
        // The same value in every test of this binary: setting it races with nothing.
        std::env::set_var(key_env(r), key(r));
        t += &format!(
            "[[regions]]\nname = \"{r}\"\nstatus_url = \"https://{r}.example.com/status\"\n\
             [[vantages]]\nregion = \"{r}\"\nkey_id = \"k-{r}\"\n\
             [aggregator.keys.k-{r}]\nenv = \"{}\"\nvantages = [\"{r}\"]\n",
            key_env(r)
        );
    }
    let fleet = vantage_protocol::config::FleetConfig::parse(&t, "attack fleet").unwrap();
    AggregatorConfig::from_fleet(fleet).unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn histogram(samples: u64, digits: u8) -> String {
    let mut h = new_latency_histogram(digits).unwrap();
    h.record_n(20_000, samples).unwrap();
    encode_base64(&h).unwrap()
}

/// A report from `vantage` about every Region, ten probes each; `failing` Regions time out.
fn report(vantage: &str, seq: u64, failing: &[&str]) -> Value {
    let targets: Vec<Value> = REGIONS
        .iter()
        .map(|r| {
            let mut t = json!({
                "target": format!("status:{r}"), "kind": "status", "region": r,
                "attempts": 10, "histograms": {},
            });
            if failing.contains(r) {
                t["outcomes"] = json!({"timeout": 10});
            } else {
                t["outcomes"] = json!({"ok": 10});
                t["histograms"] = json!({"total": histogram(10, 3), "connect": histogram(10, 3)});
            }
            t
        })
        .collect();
    json!({
        "version": 1, "fleet": "orders-api", "agent_id": format!("vantage-{vantage}"),
        "vantage": vantage, "seq": seq, "interval_start_ms": now_ms() / 1000 * 1000 - 1000,
        "interval_ms": 1000, "targets": targets,
    })
}

struct Answer {
    status: u16,
    head: String,
    body: Value,
}

/// Reads one whole HTTP/1.1 response (the server closes after it), within five seconds.
async fn answer(tcp: &mut TcpStream) -> Option<Answer> {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some(Answer {
        status: head.split(' ').nth(1)?.parse().ok()?,
        head: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    })
}

/// The request head of a report upload of `len` bytes signed (for `body`) with `key_id`.
fn head(key_id: &str, key: &str, ts: u64, body: &[u8], len: usize) -> String {
    format!(
        "POST /v1/reports HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {len}\r\n\
         {}: {key_id}\r\n{}: {ts}\r\n{}: {}\r\n\r\n",
        auth::HEADER_KEY_ID,
        auth::HEADER_TIMESTAMP,
        auth::HEADER_SIGNATURE,
        auth::sign(key.as_bytes(), ts, body)
    )
}

struct Server {
    addr: std::net::SocketAddr,
    aggregator: Arc<Aggregator<DryRun>>,
    _stop: watch::Sender<bool>,
}

async fn start(config: AggregatorConfig) -> Server {
    let aggregator = Arc::new(Aggregator::new(config, DryRun::new(), None).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(service::serve(aggregator.clone(), listener, rx));
    Server {
        addr,
        aggregator,
        _stop: stop,
    }
}

impl Server {
    /// Posts `report` signed with the key of `signer`.
    async fn post(&self, signer: &str, report: &Value) -> Answer {
        self.post_bytes(signer, report.to_string().as_bytes()).await
    }

    async fn post_bytes(&self, signer: &str, body: &[u8]) -> Answer {
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        let h = head(
            &format!("k-{signer}"),
            &key(signer),
            now_ms() / 1000,
            body,
            body.len(),
        );
        tcp.write_all(h.as_bytes()).await.unwrap();
        tcp.write_all(body).await.unwrap();
        answer(&mut tcp).await.expect("an answer")
    }

    async fn evaluate(&self) -> Snapshot {
        self.aggregator.evaluate(SystemTime::now()).await
    }
}

fn in_service(s: &Snapshot, region: &str) -> bool {
    s.decision
        .regions
        .iter()
        .find(|r| r.region == region)
        .unwrap()
        .in_service
}

fn reason(a: &Answer) -> &str {
    a.body["reason"].as_str().unwrap_or("")
}

/// Attack (finding: one agent key speaks for every vantage): a thief with eu-west-1's key
/// reports us-east-1 failing from eu-west-1 (its own vantage) and from us-east-1 (someone
/// else's), to fake a quorum of two. The second is 403 and the Region stays in; the same two
/// reports sent by their rightful keys do take it out, so the test can tell the difference.
#[tokio::test]
async fn one_stolen_key_cannot_fake_a_quorum() {
    let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(recorder);

    let server = start(config(None)).await;
    let a = server
        .post("eu-west-1", &report("eu-west-1", 1, &["us-east-1"]))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = server
        .post("eu-west-1", &report("us-east-1", 1, &["us-east-1"]))
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(
        reason(&a).contains("k-eu-west-1") && reason(&a).contains("us-east-1"),
        "{}",
        a.body
    );
    assert!(!a.body.to_string().contains(&key("eu-west-1")), "no secret");
    assert!(in_service(&server.evaluate().await, "us-east-1"));

    let forbidden = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .any(|(k, _, _, v)| {
            let labels: Vec<(String, String)> = k
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            k.key().name() == service::names::REPORTS_TOTAL
                && labels.contains(&("result".into(), "rejected".into()))
                && labels.contains(&("reason".into(), "forbidden".into()))
                && matches!(v, DebugValue::Counter(1))
        });
    assert!(forbidden, "counted as rejected, forbidden");

    let a = server
        .post("us-east-1", &report("us-east-1", 1, &["us-east-1"]))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        !in_service(&server.evaluate().await, "us-east-1"),
        "two rightful vantages do reach quorum"
    );
}

/// Attack (finding: bodies buffered before the signature is checked): a client announces a
/// 1 MB body under a key id that does not exist, or with a day-old timestamp, and sends
/// nothing more. It is answered 401 from the headers alone.
#[tokio::test]
async fn a_request_that_cannot_verify_is_answered_before_its_body() {
    let server = start(config(None)).await;
    let now = now_ms() / 1000;
    for (key_id, ts, why) in [
        ("k-nobody", now, "unknown key id"),
        (
            "k-eu-west-1",
            now - 86_400,
            "away from the aggregator's clock",
        ),
    ] {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let h = head(key_id, &key("eu-west-1"), ts, b"", 1_000_000);
        tcp.write_all(h.as_bytes()).await.unwrap();
        let a = answer(&mut tcp).await.expect("answered without the body");
        assert_eq!(a.status, 401, "{}", a.body);
        assert!(reason(&a).contains(why), "{}", a.body);
    }
}

/// Attack (same finding): 40 uploads with a valid key id and fresh timestamp that send 1 KB of
/// a 1 MB body, then stall. Only MAX_PENDING_UPLOADS of them may hold a body buffer; the rest
/// are told 503 with Retry-After at once, and once the stalled ones go away a real report is
/// accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_are_capped_and_the_rest_told_to_retry() {
    let server = start(config(None)).await;
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let h = head(
            "k-eu-west-1",
            &key("eu-west-1"),
            now_ms() / 1000,
            b"",
            1_000_000,
        );
        tcp.write_all(h.as_bytes()).await.unwrap();
        tcp.write_all(&[b' '; 1024]).await.unwrap();
        stalled.push(tcp);
    }
    let mut busy = 0;
    let mut holding = Vec::new();
    // Answers come at once; one shared deadline bounds the wait for those that never come.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    for mut tcp in stalled {
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, tcp.read(&mut first)).await {
            Err(_) => holding.push(tcp),
            Ok(_) => {
                let mut rest = first.to_vec();
                let _ = tcp.read_to_end(&mut rest).await;
                let text = String::from_utf8_lossy(&rest).to_ascii_lowercase();
                assert!(text.starts_with("http/1.1 503"), "{text}");
                assert!(text.contains("retry-after: 1"), "{text}");
                busy += 1;
            }
        }
    }
    assert_eq!(
        holding.len(),
        MAX_PENDING_UPLOADS,
        "stalled uploads holding a slot"
    );
    assert_eq!(busy, 40 - MAX_PENDING_UPLOADS);
    let a = server.post("eu-west-1", &report("eu-west-1", 1, &[])).await;
    assert_eq!(a.status, 503, "still full: {}", a.body);

    drop(holding);
    let mut status = 0;
    for _ in 0..50 {
        status = server
            .post("eu-west-1", &report("eu-west-1", 1, &[]))
            .await
            .status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "slots come back when the stalled uploads go");
}

/// Attack (finding: decode under a lock, sender-chosen bounds): histograms with a shape the
/// fleet does not use (wide bounds at 5 digits inflate to megabytes of counters) and
/// histograms whose sample counts disagree with the report's own counts are refused by name;
/// a large report (over 64 KiB, decoded on the blocking pool) still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_must_have_the_fleets_shape_and_the_reports_counts() {
    let server = start(config(None)).await;

    let mut wide = hdrhistogram::Histogram::<u64>::new_with_bounds(1, u64::MAX / 2, 5).unwrap();
    wide.record_n(20_000, 10).unwrap();
    let mut r = report("eu-west-1", 1, &[]);
    r["targets"][0]["histograms"]["total"] = json!(encode_base64(&wide).unwrap());
    let a = server.post("eu-west-1", &r).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(reason(&a).contains("differ from the fleet"), "{}", a.body);

    let mut r = report("eu-west-1", 2, &[]);
    r["targets"][0]["histograms"]["total"] = json!(histogram(1_000_000, 3));
    let a = server.post("eu-west-1", &r).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        reason(&a).contains("histogram total holds 1000000 samples")
            && reason(&a).contains("10 ok probes"),
        "{}",
        a.body
    );

    let mut r = report("eu-west-1", 3, &[]);
    r["targets"][1]["histograms"]["connect"] = json!(histogram(11, 3));
    let a = server.post("eu-west-1", &r).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(reason(&a).contains("at most the 10 attempts"), "{}", a.body);

    let mut big = report("eu-west-1", 4, &[]).to_string().into_bytes();
    big.extend(std::iter::repeat_n(b' ', 100 * 1024));
    let a = server.post_bytes("eu-west-1", &big).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.head.contains("content-type: application/json"));
}

/// Attack (low: unknown names grow the window's map): targets and Regions the fleet file does
/// not have are refused, naming them.
#[tokio::test]
async fn unknown_targets_and_regions_are_refused_by_name() {
    let server = start(config(None)).await;
    let mut r = report("eu-west-1", 1, &[]);
    r["targets"][0]["target"] = json!("status:mars-north-1");
    let a = server.post("eu-west-1", &r).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(reason(&a).contains("status:mars-north-1"), "{}", a.body);

    let mut r = report("eu-west-1", 2, &[]);
    r["targets"][0]["region"] = json!("mars-north-1");
    let a = server.post("eu-west-1", &r).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(reason(&a).contains("mars-north-1"), "{}", a.body);

    let a = server.post("eu-west-1", &report("eu-west-1", 3, &[])).await;
    assert_eq!(a.status, 200, "the same agent's good report: {}", a.body);
}

/// Attack (low: unchecked arithmetic): `ok = 2^64-1, timeout = 1, attempts = 0` wraps to a
/// matching sum without checked addition.
#[tokio::test]
async fn outcome_counts_that_wrap_around_are_refused() {
    let server = start(config(None)).await;
    let mut r = report("eu-west-1", 1, &[]);
    r["targets"][0]["outcomes"] = json!({"ok": u64::MAX, "timeout": 1});
    r["targets"][0]["attempts"] = json!(0);
    r["targets"][0]["histograms"] = json!({});
    let a = server.post("eu-west-1", &r).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(reason(&a).contains("overflow"), "{}", a.body);
}

/// Attack (low: duplicate detection forgets on restart): a captured report replayed after the
/// aggregator restarted is still a duplicate (409), and so is an older sequence number.
#[tokio::test]
async fn replays_after_a_restart_are_still_duplicates() {
    let dir = std::env::temp_dir().join(format!("vantage-attack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let _ = std::fs::remove_file(&state);
    let captured = report("eu-west-1", 7, &[]);
    {
        let server = start(config(Some(&state))).await;
        assert_eq!(
            server
                .post("eu-west-1", &report("eu-west-1", 6, &[]))
                .await
                .status,
            200
        );
        assert_eq!(server.post("eu-west-1", &captured).await.status, 200);
        server.evaluate().await; // writes the state file
    }
    let server = start(config(Some(&state))).await;
    let a = server.post("eu-west-1", &captured).await;
    assert_eq!(a.status, 409, "{}", a.body);
    let a = server.post("eu-west-1", &report("eu-west-1", 6, &[])).await;
    assert_eq!(a.status, 409, "{}", a.body);
    let a = server.post("eu-west-1", &report("eu-west-1", 8, &[])).await;
    assert_eq!(a.status, 200, "the next report is new: {}", a.body);
    std::fs::remove_dir_all(dir).ok();
}
