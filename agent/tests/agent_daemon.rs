//! The agent daemon end to end: real status servers and a real aggregator stand-in on
//! loopback, reports signed, delivered and counted against what the servers saw.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use vantage_agent::daemon::{self, AgentSettings};
use vantage_agent::push::PushConfig;
use vantage_agent::spool::SpoolConfig;
use vantage_protocol::auth;
use vantage_protocol::config::FleetConfig;
use vantage_protocol::report::IntervalReport;
use vantage_protocol::{Outcome, Phase};

const KEY: &[u8] = b"test-key-0123456789abcdef";

/// A Region's status server: answers 200 with its Region header, counting connections.
fn status_server(region: &'static str) -> (String, Arc<AtomicU64>) {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/status", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"status":"pass"}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nx-vantage-region: {region}\r\ncontent-type: application/health+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (url, hits)
}

#[derive(Default)]
struct Received {
    reports: Vec<IntervalReport>,
    rejected: u64,
}

/// An aggregator stand-in that verifies signatures and keeps every report.
async fn aggregator() -> (String, Arc<Mutex<Received>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Received::default()));
    let store = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap()
                            .as_secs();
                        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
                        let verdict =
                            auth::verify(header, |id| (id == "k1").then_some(KEY), &body, now, 60);
                        let status = match verdict {
                            Err(_) => {
                                store.lock().unwrap().rejected += 1;
                                401
                            }
                            Ok(_) => match serde_json::from_slice::<IntervalReport>(&body) {
                                Ok(r) if r.validate().is_ok() => {
                                    store.lock().unwrap().reports.push(r);
                                    200
                                }
                                _ => 400,
                            },
                        };
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (url, received)
}

fn fleet(global: &str, use1: &str, euw1: &str, aggregator: &str) -> FleetConfig {
    let text = format!(
        r#"
[fleet]
name = "orders-api"
report_interval = "1s"

[probe]
interval = "100ms"
expect_json = ["/status=pass"]

[global]
url = "{global}"

[[regions]]
name = "us-east-1"
status_url = "{use1}"

[[regions]]
name = "eu-west-1"
status_url = "{euw1}"

[[vantages]]
region = "eu-west-1"

[aggregator]
url = "{aggregator}"

[agents.auth]
key_id = "k1"
"#
    );
    FleetConfig::parse(&text, "test fleet").unwrap()
}

fn settings(
    fleet: FleetConfig,
    spool: &std::path::Path,
    run_for: Option<Duration>,
) -> AgentSettings {
    let push = PushConfig {
        aggregator: fleet.aggregator.url.get_ref().parse().unwrap(),
        key_id: "k1".into(),
        key: KEY.to_vec(),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..PushConfig::default()
    };
    AgentSettings {
        vantage: "eu-west-1".into(),
        agent_id: "vantage-eu-west-1".into(),
        push,
        spool: Some(SpoolConfig {
            dir: spool.to_owned(),
            max_bytes: 16 << 20,
            max_age: Duration::from_secs(3600),
        }),
        metrics_listener: None,
        run_for,
        fleet,
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vantage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_probe_is_reported_once_and_counts_match_the_servers() {
    let (global, global_hits) = status_server("us-east-1");
    let (use1, use1_hits) = status_server("us-east-1");
    let (euw1, euw1_hits) = status_server("eu-west-1");
    let (agg, received) = aggregator().await;
    let spool = temp_dir("daemon-e2e");
    let (_signals, rx) = watch::channel(0u32);
    let summary = daemon::run(
        settings(
            fleet(&global, &use1, &euw1, &agg),
            &spool,
            Some(Duration::from_millis(3_300)),
        ),
        rx,
    )
    .await
    .unwrap();

    let got = received.lock().unwrap();
    assert_eq!(got.rejected, 0);
    assert!(summary.reports >= 3, "{summary:?}");
    assert_eq!(summary.push.delivered, summary.reports, "{summary:?}");
    assert_eq!(got.reports.len() as u64, summary.reports);
    let seqs: Vec<u64> = got.reports.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    let mut attempts: BTreeMap<String, u64> = BTreeMap::new();
    let mut ok: BTreeMap<String, u64> = BTreeMap::new();
    let mut answered: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in got.reports.iter() {
        assert_eq!(r.interval_ms, 1_000);
        assert_eq!(r.interval_start_ms % 1_000, 0, "aligned to the wall clock");
        assert_eq!(
            (r.vantage.as_str(), r.fleet.as_str()),
            ("eu-west-1", "orders-api")
        );
        for t in &r.targets {
            *attempts.entry(t.target.clone()).or_default() += t.attempts;
            *ok.entry(t.target.clone()).or_default() +=
                t.outcomes.get(&Outcome::Ok).copied().unwrap_or(0);
            for (region, n) in &t.answered_by {
                *answered
                    .entry((t.target.clone(), region.clone()))
                    .or_default() += n;
            }
            let h = t.decode_histograms().unwrap();
            assert_eq!(
                h[&Phase::Total].len(),
                t.outcomes[&Outcome::Ok],
                "{}",
                t.target
            );
            assert_eq!(h[&Phase::Connect].len(), t.attempts);
        }
    }
    // Nothing lost, nothing doubled: what the servers served is what the reports say.
    assert_eq!(attempts["global"], global_hits.load(Ordering::SeqCst));
    assert_eq!(
        attempts["status:us-east-1"],
        use1_hits.load(Ordering::SeqCst)
    );
    assert_eq!(
        attempts["status:eu-west-1"],
        euw1_hits.load(Ordering::SeqCst)
    );
    assert_eq!(attempts.values().sum::<u64>(), summary.probes);
    assert_eq!(ok, attempts, "every probe passed its assertions");
    assert_eq!(
        answered[&("status:eu-west-1".to_owned(), "eu-west-1".to_owned())],
        attempts["status:eu-west-1"]
    );
    // 3.3 s at 100 ms: about 30 probes a target (the first slot is spread within 100 ms).
    assert!(attempts["global"] >= 25, "{attempts:?}");
    assert_eq!(summary.missed_slots, 0);
    std::fs::remove_dir_all(&spool).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_request_finishes_the_current_interval_and_flushes() {
    let (global, global_hits) = status_server("us-east-1");
    let (use1, _) = status_server("us-east-1");
    let (euw1, _) = status_server("eu-west-1");
    let (agg, received) = aggregator().await;
    let spool = temp_dir("daemon-stop");
    let (signals, rx) = watch::channel(0u32);
    let run = tokio::spawn(daemon::run(
        settings(fleet(&global, &use1, &euw1, &agg), &spool, None),
        rx,
    ));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let asked_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    signals.send_modify(|n| *n += 1);
    let summary = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let stopped_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let current_interval_end = asked_at_ms - asked_at_ms % 1_000 + 1_000;
    assert!(
        stopped_at_ms >= current_interval_end,
        "stopped before the interval ended"
    );
    let got = received.lock().unwrap();
    assert_eq!(summary.push.delivered, summary.reports);
    let last = got
        .reports
        .iter()
        .map(|r| r.interval_start_ms)
        .max()
        .unwrap();
    assert_eq!(
        last,
        current_interval_end - 1_000,
        "the interval in progress was reported"
    );
    let reported: u64 = got
        .reports
        .iter()
        .flat_map(|r| &r.targets)
        .filter(|t| t.target == "global")
        .map(|t| t.attempts)
        .sum();
    assert_eq!(reported, global_hits.load(Ordering::SeqCst));
    std::fs::remove_dir_all(&spool).ok();
}
