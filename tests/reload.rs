//! The real binary rereads its fleet file: `vantage aggregator` and `vantage agent` are
//! started, the file is edited, SIGHUP is sent (or, with `--watch-config`, nothing), and the
//! change shows where an operator would look: the aggregator's `/v1/state` and decision log,
//! the reports a stand-in aggregator receives from the agent. A broken edit changes nothing
//! and says where the file is wrong.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use vantage_testkit::aggregator::{Mode, StandIn};
use vantage_testkit::eventually::{wait_for, wait_for_blocking};
use vantage_testkit::fleet::{quoted, FleetToml};
use vantage_testkit::http::exchange_blocking;
use vantage_testkit::process::{free_port, ChildGuard};
use vantage_testkit::server;

const LIMIT: Duration = Duration::from_secs(20);
const KEY: &str = "reload-test-key-0123456789abcdef";

/// A fleet of `regions` probed from us-east-1, reporting every second.
fn fleet(regions: &[&str], aggregator: &str) -> String {
    let mut f = FleetToml::new("orders-api")
        .probe("interval", &quoted("100ms"))
        .aggregator("url", &quoted(aggregator))
        .aggregator("window", &quoted("3s"))
        .aggregator("evaluate_every", &quoted("1s"))
        .vantage("us-east-1");
    for r in regions {
        f = f.region(r, &format!("https://{r}.example.com/status"));
    }
    f.build()
}

/// Starts `vantage` with `args`, stderr into `log`.
fn start(args: &[&str], log: &Path, extra_env: &[(&str, &str)]) -> ChildGuard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vantage"));
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .env_remove("VANTAGE_CONFIG")
        .env_remove("VANTAGE_LISTEN")
        .env_remove("VANTAGE_WATCH_CONFIG")
        .env("VANTAGE_AGENT_KEY", KEY)
        .env("VANTAGE_LOG", "info");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    ChildGuard::spawn(args[0], &mut cmd, "TERM").unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The Regions of the aggregator's last decision, once it has one.
fn decided_regions(port: u16) -> Option<Vec<String>> {
    let answer = exchange_blocking(port, "GET", "/v1/state", &[], b"").ok()?;
    if answer.status != 200 {
        return None;
    }
    let state = answer.json();
    let regions = state["decision"]["regions"].as_array()?;
    Some(
        regions
            .iter()
            .filter_map(|r| r["region"].as_str().map(str::to_owned))
            .collect(),
    )
}

fn aggregator(dir: &Path, fleet_file: &Path, watch: bool) -> (ChildGuard, u16) {
    let port = free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let decisions = dir.join("decisions.jsonl");
    let mut args = vec![
        "aggregator",
        "--config",
        fleet_file.to_str().unwrap(),
        "--listen",
        &listen,
        "--backend",
        "dry-run",
        "--decision-log",
        decisions.to_str().unwrap(),
    ];
    if watch {
        args.push("--watch-config");
    }
    let mut child = start(&args, &dir.join("aggregator.log"), &[]);
    child
        .wait_until(LIMIT, || decided_regions(port).is_some())
        .unwrap_or_else(|e| panic!("{e}\n{}", read(&dir.join("aggregator.log"))));
    (child, port)
}

#[test]
fn aggregator_applies_an_edited_fleet_file_on_sighup_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.toml");
    let log = dir.path().join("aggregator.log");
    std::fs::write(&file, fleet(&["us-east-1"], "http://127.0.0.1:1")).unwrap();
    let (mut child, port) = aggregator(dir.path(), &file, false);
    assert_eq!(decided_regions(port).unwrap(), ["us-east-1"]);

    let two = fleet(&["us-east-1", "eu-west-1"], "http://127.0.0.1:1");
    std::fs::write(&file, &two).unwrap();
    child.signal("HUP");
    child
        .wait_until(LIMIT, || {
            decided_regions(port).is_some_and(|r| r.contains(&"eu-west-1".to_owned()))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", read(&log)));
    let decisions = read(&dir.path().join("decisions.jsonl"));
    let reloaded: Vec<serde_json::Value> = decisions
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "config_reloaded")
        .collect();
    assert_eq!(reloaded.len(), 1, "{decisions}");
    assert_eq!(
        reloaded[0]["regions_added"],
        serde_json::json!(["eu-west-1"])
    );
    assert_eq!(reloaded[0]["why"], "SIGHUP");

    // A broken edit: refused, named by file, line and key; the process runs on unchanged.
    let broken = two.replace(
        "https://eu-west-1.example.com/status",
        "ftp://eu-west-1.example.com/status",
    );
    let line = broken.lines().position(|l| l.contains("ftp://")).unwrap() + 1;
    std::fs::write(&file, &broken).unwrap();
    child.signal("HUP");
    let expected = format!("{}:{line}: regions[1].status_url", file.display());
    child
        .wait_until(LIMIT, || read(&log).contains(&expected))
        .unwrap_or_else(|e| panic!("{e}: want {expected:?} in\n{}", read(&log)));
    assert!(
        read(&log).contains("fleet file reload refused"),
        "{}",
        read(&log)
    );
    child.check_running().unwrap();
    assert_eq!(decided_regions(port).unwrap(), ["eu-west-1", "us-east-1"]);
    child.stop();
}

#[test]
fn aggregator_with_watch_config_follows_the_file_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.toml");
    let log = dir.path().join("aggregator.log");
    std::fs::write(&file, fleet(&["us-east-1"], "http://127.0.0.1:1")).unwrap();
    let (mut child, port) = aggregator(dir.path(), &file, true);
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(
        &file,
        fleet(&["us-east-1", "ap-southeast-1"], "http://127.0.0.1:1"),
    )
    .unwrap();
    // The new Region can be decided a moment before the reload's log line is written (the
    // configuration is swapped first), so both are waited for.
    let logged = || {
        read(&log).contains("the file changed")
            || read(&dir.path().join("decisions.jsonl")).contains("the file changed")
    };
    child
        .wait_until(LIMIT, || {
            decided_regions(port).is_some_and(|r| r.contains(&"ap-southeast-1".to_owned()))
                && logged()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", read(&log)));
    child.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_probes_and_reports_a_region_added_on_sighup() {
    let agg = StandIn::builder()
        .key("k1", KEY.as_bytes())
        .mode(Mode::Healthy)
        .start()
        .await;
    let status = || server().body(r#"{"status":"pass"}"#).start();
    let (global, use1, euw1) = (status().await, status().await, status().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.toml");
    let log = dir.path().join("agent.log");
    let text = |regions: &[(&str, &vantage_testkit::TestServer)]| {
        let mut f = FleetToml::new("orders-api")
            .probe("interval", &quoted("100ms"))
            .global(&global.url("/status"))
            .aggregator("url", &quoted(&agg.url()))
            .vantage("us-east-1");
        for (name, s) in regions {
            f = f.region(name, &s.url("/status"));
        }
        f.build()
    };
    std::fs::write(&file, text(&[("us-east-1", &use1)])).unwrap();
    let mut child = start(
        &[
            "agent",
            "--config",
            file.to_str().unwrap(),
            "--vantage",
            "us-east-1",
            "--no-spool",
        ],
        &log,
        &[],
    );
    let has = |target: &str| {
        agg.reports()
            .iter()
            .any(|r| r.targets.iter().any(|t| t.target == target))
    };
    wait_for("the first report", LIMIT, || has("status:us-east-1")).await;
    assert!(!has("status:eu-west-1"));
    assert_eq!(euw1.requests(), 0);

    std::fs::write(&file, text(&[("us-east-1", &use1), ("eu-west-1", &euw1)])).unwrap();
    child.signal("HUP");
    wait_for("a report with the added Region", LIMIT, || {
        has("status:eu-west-1")
    })
    .await;
    assert!(euw1.requests() > 0);
    assert!(read(&log).contains("fleet file reloaded"), "{}", read(&log));
    child.check_running().unwrap();
    // Stopped with SIGTERM: the interval in progress is reported and every probe is in.
    let pid = child.pid();
    vantage_testkit::process::send_signal(pid, "TERM");
    wait_for_blocking("the agent to stop", LIMIT, || {
        child.check_running().is_err()
    });
    let reported: u64 = agg
        .reports()
        .iter()
        .flat_map(|r| r.targets.iter())
        .filter(|t| t.target == "status:eu-west-1")
        .map(|t| t.attempts)
        .sum();
    assert_eq!(reported, euw1.requests() as u64, "{}", read(&log));
}
