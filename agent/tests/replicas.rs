//! Delivery to several aggregator replicas, end to end: the agent daemon in-process, real
//! status servers and three aggregator stand-ins on loopback, one of which hangs, fails and
//! refuses connections for a while. The others must get every interval on time; the lagging
//! one its whole backlog, oldest first, once it answers; each replica has its own spool
//! directory and its own `replica`-labelled metrics.
//!
//! The daemon installs the process-global metrics recorder; nextest runs each test in its own
//! process.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use vantage_agent::daemon::{self, AgentSettings, AgentSummary};
use vantage_agent::push::{PushConfig, ReplicaTarget};
use vantage_agent::spool::{Spool, SpoolConfig};
use vantage_protocol::config::FleetConfig;
use vantage_testkit::aggregator::{report_body, Mode, StandIn};
use vantage_testkit::fleet::{quoted, FleetToml};
use vantage_testkit::{server, TestServer};

const KEY: &[u8] = b"replica-test-key-0123456789";
/// Every wait ends by this, so a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);
async fn status_server(region: &str) -> TestServer {
    server()
        .header("x-vantage-region", region)
        .header("content-type", "application/health+json")
        .body(r#"{"status":"pass"}"#)
        .start()
        .await
}

async fn stand_in() -> StandIn {
    StandIn::builder().key("k1", KEY).start().await
}

/// A fleet probing two status servers every 100 ms, reporting every second, to three
/// replicas `a`, `b`, `c`.
fn fleet(global: &str, euw1: &str, replicas: &[(&str, &StandIn)]) -> FleetConfig {
    let default_url = format!("url = {}\n", quoted("http://127.0.0.1:1"));
    let list = replicas
        .iter()
        .map(|(id, s)| {
            format!(
                "{{ id = {}, region = \"eu-west-1\", url = {} }}",
                quoted(id),
                quoted(&s.url())
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let text = FleetToml::new("orders-api")
        .probe("interval", &quoted("100ms"))
        .global(global)
        .region("eu-west-1", euw1)
        .vantage("eu-west-1")
        .build();
    assert!(text.contains(&default_url), "{text}");
    let text = text.replace(&default_url, &format!("replicas = [{list}]\n"));
    FleetConfig::parse(&text, "replica fleet").unwrap()
}

/// The replicas as `vantage agent` builds them: the fleet file's ids and URLs.
fn replica_targets(fleet: &FleetConfig) -> Vec<ReplicaTarget> {
    fleet
        .aggregator
        .replica_endpoints()
        .into_iter()
        .filter_map(|e| {
            Some(ReplicaTarget {
                id: e.id?,
                aggregator: e.url.parse().unwrap(),
            })
        })
        .collect()
}

fn settings(
    fleet: FleetConfig,
    spool: &Path,
    metrics: Option<tokio::net::TcpListener>,
    run_for: Option<Duration>,
) -> AgentSettings {
    let push = PushConfig {
        key_id: "k1".into(),
        key: KEY.to_vec(),
        request_timeout: Duration::from_secs(4),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..PushConfig::default()
    };
    AgentSettings {
        vantage: "eu-west-1".into(),
        agent_id: "vantage-eu-west-1".into(),
        push,
        replicas: replica_targets(&fleet),
        spool: Some(SpoolConfig {
            dir: spool.to_owned(),
            max_bytes: 16 << 20,
            max_age: Duration::from_secs(3600),
        }),
        metrics_listener: metrics,
        run_for,
        fleet,
    }
}

/// Seqs of the report files in a spool directory, sorted.
fn spooled_seqs(dir: &Path) -> Vec<u64> {
    let mut seqs: Vec<u64> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    name.strip_suffix(".json")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    seqs.sort_unstable();
    seqs
}

async fn wait_for(what: &str, done: impl FnMut() -> bool) {
    vantage_testkit::eventually::wait_for(what, PATIENCE, done).await
}

async fn scrape(addr: SocketAddr) -> String {
    let r = vantage_testkit::http::exchange(addr, "GET", "/metrics", &[], b"")
        .await
        .expect("scrape /metrics");
    assert_eq!(r.status, 200);
    r.body
}

/// The value of the one series of `name` whose labels include all of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|r| r.starts_with('{'))
                && labels.iter().all(|want| l.contains(want))
        })
        .collect();
    assert_eq!(lines.len(), 1, "{name} {labels:?} in\n{text}");
    lines[0].rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_delays_no_one_and_gets_its_backlog_in_order() {
    let (global, euw1) = (
        status_server("eu-west-1").await,
        status_server("eu-west-1").await,
    );
    let (a, b, c) = (
        Arc::new(stand_in().await),
        Arc::new(stand_in().await),
        Arc::new(stand_in().await),
    );
    // Replica c hangs at first: every attempt waits out the request timeout.
    c.set_mode(Mode::Slow(Duration::from_secs(60)));
    let spool = vantage_testkit::dirs::temp_dir("replicas-daemon");
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let fleet = fleet(
        &global.url("/status"),
        &euw1.url("/status"),
        &[("a", &a), ("b", &b), ("c", &c)],
    );
    let (signals, rx) = watch::channel(0u32);
    let run = tokio::spawn(daemon::run(
        settings(fleet, spool.path(), Some(metrics_listener), None),
        rx,
    ));

    // Hanging: the others get their reports, c's wait in c's spool only. Each request to c
    // is held until the agent's request timeout. Had a's or b's deliveries queued behind c's,
    // a and b could never be more than one report ahead of the requests c has received; they
    // get four ahead (a structural proof that a lagging replica delays no one, no clock in it).
    wait_for("a and b four reports ahead of c's requests", || {
        let c_requests = c.received().len();
        a.stored().len() >= c_requests + 4 && b.stored().len() >= c_requests + 4
    })
    .await;
    assert!(c.stored().is_empty(), "c's first request is still held");
    // Then answering 503, then refusing connections.
    c.set_mode(Mode::Failing);
    let n = a.stored().len();
    wait_for("2 more reports at a", || a.stored().len() >= n + 2).await;
    c.refuse();
    let n = a.stored().len();
    wait_for("2 more reports at a", || a.stored().len() >= n + 2).await;

    // During the outage: one spool directory per replica, private; c's holds the backlog.
    for id in ["a", "b", "c"] {
        let dir = spool.path().join(id);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    let backlog = spooled_seqs(&spool.path().join("c"));
    assert!(backlog.len() >= 5, "c's spool: {backlog:?}");
    assert!(spooled_seqs(&spool.path().join("a")).len() <= 1);
    assert!(spooled_seqs(spool.path()).is_empty(), "nothing at the top");
    let text = scrape(metrics_addr).await;
    let c_spool = value(&text, "vantage_spool_reports", &[r#"replica="c""#]);
    assert!(c_spool >= 5.0, "{text}");
    assert!(value(&text, "vantage_spool_reports", &[r#"replica="a""#]) <= 1.0);

    // c comes back and catches up, oldest first.
    c.recover(Mode::Healthy).await;
    wait_for("c caught up", || {
        let got = c.stored();
        !got.is_empty() && got.len() >= a.stored().len() && got.len() >= backlog.len()
    })
    .await;
    signals.send_modify(|n| *n += 1);
    let summary: AgentSummary =
        vantage_testkit::eventually::within("the agent stops", PATIENCE, run)
            .await
            .unwrap()
            .unwrap();

    // Everyone has every report exactly once, in order.
    let all: Vec<u64> = a.stored();
    assert_eq!(all.len() as u64, summary.reports, "{summary:?}");
    assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
    assert_eq!(b.stored(), all);
    assert_eq!(c.stored(), all, "c got its backlog oldest first");
    assert!(backlog.iter().all(|seq| all.contains(seq)));
    for s in [&a, &b, &c] {
        assert_eq!((s.bad_auth(), s.malformed()), (0, 0));
    }
    assert_eq!(a.received().len(), all.len(), "a never saw a resend");

    // Per-replica summaries and metrics tell the story.
    let ids: Vec<Option<&str>> = summary
        .replicas
        .iter()
        .map(|q| q.replica.as_deref())
        .collect();
    assert_eq!(ids, [Some("a"), Some("b"), Some("c")]);
    for q in &summary.replicas {
        assert_eq!(q.push.delivered, summary.reports, "{q:?}");
        assert_eq!(q.push.left_in_spool, 0, "{q:?}");
    }
    assert_eq!(summary.replicas[0].push.retries, 0);
    assert!(summary.replicas[2].push.retries >= 2, "{summary:?}");
    assert_eq!(summary.push.delivered, 3 * summary.reports);
    let text = scrape(metrics_addr).await;
    let deliveries = "vantage_report_deliveries_total";
    for id in ["a", "b", "c"] {
        let replica = format!("replica=\"{id}\"");
        let delivered = value(&text, deliveries, &[&replica, r#"result="delivered""#]);
        assert_eq!(delivered, summary.reports as f64, "{id}: {text}");
        assert_eq!(value(&text, "vantage_spool_reports", &[&replica]), 0.0);
        assert_eq!(
            value(
                &text,
                "vantage_reports_dropped_total",
                &[&replica, r#"reason="spool_full""#]
            ),
            0.0
        );
        let attempts = "vantage_report_delivery_duration_seconds_count";
        assert!(value(&text, attempts, &[&replica]) >= summary.reports as f64);
    }
    let retries = |id: &str| {
        let replica = format!("replica=\"{id}\"");
        value(&text, deliveries, &[&replica, r#"result="retry""#])
    };
    assert_eq!((retries("a"), retries("b")), (0.0, 0.0), "{text}");
    assert!(retries("c") >= 2.0, "{text}");
    // No unlabelled delivery series beside the replicas' own.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with(deliveries) && !l.contains("replica=")),
        "{text}"
    );
    promtool_check(&text);
}

/// Prometheus' own linter on a scrape: the `replica` label keeps the exposition clean.
fn promtool_check(text: &str) {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or_else(|| {
            panic!("promtool not found: install with apt-get install -y prometheus")
        });
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\nin:\n{text}"
    );
}

/// Lambda mode: the final flush tries every replica within the deadline and leaves each one's
/// undelivered reports in its own spool; the next run delivers them. Reports a
/// single-aggregator run left at the top of the spool directory go to every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_run_leaves_a_down_replicas_reports_in_its_own_spool() {
    let (global, euw1) = (
        status_server("eu-west-1").await,
        status_server("eu-west-1").await,
    );
    let (a, b, c) = (stand_in().await, stand_in().await, stand_in().await);
    c.refuse();
    let spool = vantage_testkit::dirs::temp_dir("replicas-lambda");
    // A single-aggregator run left two reports behind.
    let mut legacy = Spool::open(SpoolConfig {
        dir: spool.path().to_owned(),
        max_bytes: 1 << 20,
        max_age: Duration::from_secs(3600),
    })
    .unwrap();
    for seq in [1, 2] {
        legacy
            .put(seq, &report_body(seq), std::time::SystemTime::now())
            .unwrap();
    }
    drop(legacy);
    let fleet = fleet(
        &global.url("/status"),
        &euw1.url("/status"),
        &[("a", &a), ("b", &b), ("c", &c)],
    );

    let (_signals, rx) = watch::channel(0u32);
    let run_for = Some(Duration::from_millis(2_500));
    let first = daemon::run(settings(fleet.clone(), spool.path(), None, run_for), rx)
        .await
        .unwrap();
    assert!(first.reports >= 1, "{first:?}");
    let total = first.reports + 2;
    let stored = a.stored();
    assert_eq!(stored.len() as u64, total, "{first:?}");
    assert_eq!(&stored[..2], &[1, 2], "the legacy reports first");
    assert_eq!(b.stored(), stored);
    assert!(c.stored().is_empty());
    let c_dir = spool.path().join("c");
    assert_eq!(
        spooled_seqs(&c_dir),
        stored,
        "c's backlog waits in c's spool"
    );
    assert!(spooled_seqs(&spool.path().join("a")).is_empty());
    assert!(
        spooled_seqs(spool.path()).is_empty(),
        "legacy reports adopted"
    );
    let c_summary = &first.replicas[2];
    assert_eq!(c_summary.replica.as_deref(), Some("c"));
    assert_eq!(
        (c_summary.push.delivered, c_summary.push.left_in_spool),
        (0, total)
    );

    // The next invocation finds c up: its backlog goes first, then the new reports.
    c.recover(Mode::Healthy).await;
    let (_signals, rx) = watch::channel(0u32);
    let second = daemon::run(settings(fleet, spool.path(), None, run_for), rx)
        .await
        .unwrap();
    let all = a.stored();
    assert_eq!(all.len() as u64, total + second.reports);
    assert_eq!(c.stored(), all, "c: backlog then new reports, oldest first");
    assert_eq!(b.stored(), all);
    // A new run numbers on from the wall clock: increasing, not consecutive.
    assert!(all.windows(2).all(|w| w[1] > w[0]), "{all:?}");
    assert!(second.replicas.iter().all(|q| q.push.left_in_spool == 0));
    assert!(spooled_seqs(&c_dir).is_empty());
}

/// A replica list the daemon cannot give each replica a queue of its own is refused up front.
#[test]
fn the_daemon_refuses_replica_ids_that_are_not_plain_names() {
    let a_url = "http://127.0.0.1:9";
    let fleet = FleetConfig::parse(
        &FleetToml::new("orders-api")
            .region_with_vantage("eu-west-1")
            .aggregator("url", &quoted(a_url))
            .build(),
        "fleet",
    )
    .unwrap();
    let dir = vantage_testkit::dirs::temp_dir("replicas-bad-id");
    let mut s = settings(fleet, dir.path(), None, None);
    s.replicas = vec![ReplicaTarget {
        id: "..".into(),
        aggregator: a_url.parse().unwrap(),
    }];
    let err = daemon::check(&s).unwrap_err().to_string();
    assert!(err.contains("aggregator replica \"..\""), "{err}");
}
