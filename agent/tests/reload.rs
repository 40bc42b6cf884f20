//! The agent rereads its fleet file while it runs: real status servers on loopback, a real
//! aggregator stand-in, a reload asked for mid-interval (as SIGHUP would). Every probe a server
//! saw must be reported exactly once, whatever the reload did to its target. Real time, bounded
//! (probes are real TCP exchanges, which a paused clock cannot drive).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use vantage_agent::daemon::{self, AgentSettings};
use vantage_agent::push::PushConfig;
use vantage_agent::reload::FleetReload;
use vantage_protocol::config::FleetConfig;
use vantage_protocol::report::IntervalReport;
use vantage_runtime::reload::ReloadTrigger;
use vantage_testkit::aggregator::{Mode, StandIn};
use vantage_testkit::fleet::{quoted, FleetToml};
use vantage_testkit::log::JsonLines;
use vantage_testkit::{server, TestServer};

const KEY: &[u8] = b"test-key-0123456789abcdef";

async fn status_server(region: &str) -> TestServer {
    server()
        .header("x-vantage-region", region)
        .body(r#"{"status":"pass"}"#)
        .start()
        .await
}

/// A fleet probing every 100 ms, reporting every second, from eu-west-1.
fn fleet_text(global: &str, regions: &[(&str, &str)], aggregator: &str, extra: &str) -> String {
    let mut t = FleetToml::new("orders-api")
        .probe("interval", &quoted("100ms"))
        .global(global)
        .vantage("eu-west-1")
        .aggregator("url", &quoted(aggregator))
        .extra(extra);
    for (name, url) in regions {
        t = t.region(name, url);
    }
    t.build()
}

fn settings(fleet: FleetConfig, aggregator: &str, run_for: Duration) -> AgentSettings {
    AgentSettings {
        vantage: "eu-west-1".into(),
        agent_id: "vantage-eu-west-1".into(),
        push: PushConfig {
            aggregator: aggregator.parse().unwrap(),
            key_id: "k1".into(),
            key: KEY.to_vec(),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            ..PushConfig::default()
        },
        replicas: Vec::new(),
        spool: None,
        metrics_listener: None,
        run_for: Some(run_for),
        fleet,
    }
}

/// Per target: (interval start, attempts) of every report, in order.
fn by_target(reports: &[IntervalReport]) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut out: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for r in reports {
        for t in &r.targets {
            out.entry(t.target.clone())
                .or_default()
                .push((r.interval_start_ms, t.attempts));
        }
    }
    out
}

fn attempts(series: &[(u64, u64)]) -> u64 {
    series.iter().map(|(_, n)| n).sum()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn added_changed_removed_and_unchanged_targets_follow_the_reload() {
    let log = JsonLines::default();
    let _guard = tracing::subscriber::set_default(log.subscriber());
    let (global, use1, euw1, apse1) = (
        status_server("us-east-1").await,
        status_server("us-east-1").await,
        status_server("eu-west-1").await,
        status_server("ap-southeast-1").await,
    );
    let agg = StandIn::builder()
        .key("k1", KEY)
        .mode(Mode::Healthy)
        .start()
        .await;
    let dir = vantage_testkit::dirs::temp_dir("agent-reload");
    let path = dir.path().join("fleet.toml");
    let first = fleet_text(
        &global.url("/status"),
        &[
            ("us-east-1", &use1.url("/status")),
            ("eu-west-1", &euw1.url("/status")),
        ],
        &agg.url(),
        "",
    );
    std::fs::write(&path, &first).unwrap();
    let fleet = FleetConfig::load(&path).unwrap();

    let (hangup, hangups) = watch::channel(0u64);
    let reload = FleetReload {
        path: path.clone(),
        trigger: ReloadTrigger::new(hangups),
    };
    let (_signals, signals) = watch::channel(0u32);
    let run = tokio::spawn(daemon::run_with_reload(
        settings(fleet, &agg.url(), Duration::from_millis(5_600)),
        signals,
        Some(reload),
    ));

    // Mid-interval, well after the first probes: us-east-1 leaves, ap-southeast-1 arrives,
    // the global endpoint is probed every 250 ms instead of 100, eu-west-1 stays as it was.
    // Intervals follow the wall clock's seconds: reload at .400 of one.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    tokio::time::sleep(Duration::from_millis((1_400 - now_ms() % 1_000) % 1_000)).await;
    let wall = now_ms() / 1000 * 1000;
    let second = fleet_text(
        &global.url("/status"),
        &[
            ("eu-west-1", &euw1.url("/status")),
            ("ap-southeast-1", &apse1.url("/status")),
        ],
        &agg.url(),
        "[global.probe]\ninterval = \"250ms\"\n",
    );
    std::fs::write(&path, &second).unwrap();
    let use1_before = use1.requests();
    hangup.send_modify(|n| *n += 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let use1_after = use1.requests();

    let summary = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the agent stops within its run_for")
        .unwrap()
        .unwrap();
    let reports = agg.reports();
    assert_eq!(reports.len() as u64, summary.reports);
    let seen = by_target(&reports);
    let logged = log.text();
    assert!(logged.contains("fleet file reloaded"), "{logged}");
    assert!(
        logged.contains(r#"added=["status:ap-southeast-1"]"#)
            && logged.contains(r#"changed=["global"]"#)
            && logged.contains(r#"removed=["status:us-east-1"]"#),
        "{logged}"
    );

    // Every probe a server answered is in exactly one report: nothing lost, nothing twice,
    // across the reload, for every kind of change.
    for (target, server) in [
        ("global", &global),
        ("status:us-east-1", &use1),
        ("status:eu-west-1", &euw1),
        ("status:ap-southeast-1", &apse1),
    ] {
        let series = seen
            .get(target)
            .unwrap_or_else(|| panic!("{target}: {seen:?}"));
        assert_eq!(
            attempts(series),
            server.requests() as u64,
            "{target}: {series:?}"
        );
    }

    // Unchanged: eu-west-1's interval in progress at the reload kept the samples taken before
    // it (ten probes a second, not the few after it).
    let euw1_series = &seen["status:eu-west-1"];
    let (_, n) = euw1_series
        .iter()
        .find(|(start, _)| *start == wall)
        .expect("eu-west-1 reported for the reload's interval");
    assert!(*n >= 8, "{euw1_series:?}");

    // Removed: us-east-1 stopped probing at the reload (at most the probe in flight after
    // it), was reported up to the reload's interval, never after.
    assert!(
        use1_after <= use1_before + 2,
        "{use1_before} -> {use1_after}"
    );
    let use1_series = &seen["status:us-east-1"];
    let last = use1_series.iter().map(|(s, _)| *s).max().unwrap();
    assert_eq!(last, wall, "{use1_series:?}");
    let later = reports
        .iter()
        .filter(|r| r.interval_start_ms > wall + 1000)
        .count();
    assert!(later >= 1, "the run went on after the reload");

    // Added: probed from its first slot after the reload and reported from then on.
    let apse1_series = &seen["status:ap-southeast-1"];
    let first_seen = apse1_series.iter().map(|(s, _)| *s).min().unwrap();
    assert!(first_seen >= wall, "{apse1_series:?}");
    assert!(apse1.requests() >= 10, "{}", apse1.requests());

    // Changed: the global endpoint ran every 100 ms before the reload and every 250 ms after
    // (four probes in a whole interval).
    let global_series = &seen["global"];
    let before: Vec<u64> = global_series
        .iter()
        .filter(|(s, _)| *s < wall)
        .map(|(_, n)| *n)
        .collect();
    let after: Vec<u64> = global_series
        .iter()
        .filter(|(s, _)| *s > wall)
        .map(|(_, n)| *n)
        .collect();
    assert!(before.iter().max() >= Some(&9), "{global_series:?}");
    assert!(
        !after.is_empty() && after.iter().all(|n| *n <= 5),
        "{global_series:?}"
    );
}

#[tokio::test]
async fn a_broken_file_keeps_the_targets_and_names_file_line_and_key() {
    let log = JsonLines::default();
    let _guard = tracing::subscriber::set_default(log.subscriber());
    let (global, euw1) = (
        status_server("us-east-1").await,
        status_server("eu-west-1").await,
    );
    let agg = StandIn::builder()
        .key("k1", KEY)
        .mode(Mode::Healthy)
        .start()
        .await;
    let dir = vantage_testkit::dirs::temp_dir("agent-reload-bad");
    let path = dir.path().join("fleet.toml");
    let good = fleet_text(
        &global.url("/status"),
        &[("eu-west-1", &euw1.url("/status"))],
        &agg.url(),
        "",
    );
    std::fs::write(&path, &good).unwrap();
    let fleet = FleetConfig::load(&path).unwrap();
    let (hangup, hangups) = watch::channel(0u64);
    let (_signals, signals) = watch::channel(0u32);
    let run = tokio::spawn(daemon::run_with_reload(
        settings(fleet, &agg.url(), Duration::from_millis(3_000)),
        signals,
        Some(FleetReload {
            path: path.clone(),
            trigger: ReloadTrigger::new(hangups),
        }),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    // eu-west-1's status URL turns into an unsupported scheme.
    let broken = good.replace(&euw1.url("/status"), "ftp://127.0.0.1/status");
    let line = broken
        .lines()
        .position(|l| l.contains("ftp://"))
        .map(|i| i + 1)
        .unwrap();
    std::fs::write(&path, &broken).unwrap();
    hangup.send_modify(|n| *n += 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_reload = euw1.requests();

    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the agent stops within its run_for")
        .unwrap()
        .unwrap();
    let logged = log.text();
    let expected = format!("{}:{line}: regions[0].status_url", path.display());
    assert!(
        logged.contains("fleet file reload refused") && logged.contains(&expected),
        "want {expected:?} in:\n{logged}"
    );
    assert!(!logged.contains("fleet file reloaded"), "{logged}");
    // Still probing the old targets, every probe reported. (How many more probes fit in the
    // rest of run_for depends on how busy the machine is; that some do is the point.)
    assert!(
        euw1.requests() > at_reload,
        "{at_reload} -> {}",
        euw1.requests()
    );
    let seen = by_target(&agg.reports());
    assert_eq!(attempts(&seen["status:eu-west-1"]), euw1.requests() as u64);
    assert_eq!(attempts(&seen["global"]), global.requests() as u64);
}

#[tokio::test]
async fn a_key_that_needs_a_restart_keeps_its_value_and_the_rest_applies() {
    let log = JsonLines::default();
    let _guard = tracing::subscriber::set_default(log.subscriber());
    let (global, euw1, use1) = (
        status_server("us-east-1").await,
        status_server("eu-west-1").await,
        status_server("us-east-1").await,
    );
    let agg = StandIn::builder()
        .key("k1", KEY)
        .mode(Mode::Healthy)
        .start()
        .await;
    let dir = vantage_testkit::dirs::temp_dir("agent-reload-restart");
    let path = dir.path().join("fleet.toml");
    let first = fleet_text(
        &global.url("/status"),
        &[("eu-west-1", &euw1.url("/status"))],
        &agg.url(),
        "",
    );
    std::fs::write(&path, &first).unwrap();
    let fleet = FleetConfig::load(&path).unwrap();
    let (hangup, hangups) = watch::channel(0u64);
    let (_signals, signals) = watch::channel(0u32);
    let run = tokio::spawn(daemon::run_with_reload(
        settings(fleet, &agg.url(), Duration::from_millis(3_500)),
        signals,
        Some(FleetReload {
            path: path.clone(),
            trigger: ReloadTrigger::new(hangups),
        }),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Reports every 2 s (needs a restart) and one more Region (applies now).
    let second = fleet_text(
        &global.url("/status"),
        &[
            ("eu-west-1", &euw1.url("/status")),
            ("us-east-1", &use1.url("/status")),
        ],
        &agg.url(),
        "",
    )
    .replace("report_interval = \"1s\"", "report_interval = \"2s\"");
    assert!(second.contains("\"2s\""), "{second}");
    std::fs::write(&path, &second).unwrap();
    hangup.send_modify(|n| *n += 1);
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the agent stops within its run_for")
        .unwrap()
        .unwrap();
    let logged = log.text();
    assert!(
        logged.contains("fleet.report_interval changed: restart the agent to apply it"),
        "{logged}"
    );
    assert!(logged.contains(r#"added=["status:us-east-1"]"#), "{logged}");
    let reports = agg.reports();
    assert!(
        reports.iter().all(|r| r.interval_ms == 1_000),
        "the interval in use stays"
    );
    let seen = by_target(&reports);
    assert_eq!(attempts(&seen["status:us-east-1"]), use1.requests() as u64);
    assert!(use1.requests() > 0);
}
