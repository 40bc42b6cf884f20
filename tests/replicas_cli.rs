//! `vantage agent` and `vantage override` against several aggregator replicas, as an operator
//! runs them: the real binary, a fleet file listing three replicas, stand-ins (for the agent)
//! and real dry-run aggregators (for overrides) on loopback, one replica down for a while.

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use tokio::runtime::Runtime;
use vantage_testkit::aggregator::{Mode, StandIn};
use vantage_testkit::dirs::temp_dir;
use vantage_testkit::eventually::wait_for_blocking;
use vantage_testkit::{server, TestServer};

const AGENT_KEY: &str = "replicas-cli-agent-key-0123456789";
const ADMIN_KEY: &str = "replicas-cli-admin-key-0123456789";
const PATIENCE: Duration = Duration::from_secs(20);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A fleet file with two Regions, a vantage in eu-west-1 probing `status_url` every 200 ms,
/// and `aggregator` (TOML lines of the `[aggregator]` table).
fn fleet(status_url: &str, aggregator: &str) -> String {
    format!(
        r#"
[fleet]
name = "orders-api"
report_interval = "1s"
[probe]
interval = "200ms"
[global]
url = "{status_url}"
[[regions]]
name = "us-east-1"
status_url = "{status_url}"
[[regions]]
name = "eu-west-1"
status_url = "{status_url}"
[[vantages]]
region = "eu-west-1"
[aggregator]
{aggregator}
[aggregator.keys]
k1 = {{ env = "VANTAGE_REPLICAS_CLI_AGENT_KEY", vantages = ["eu-west-1"] }}
[aggregator.admin_keys]
ops-alice = {{ env = "VANTAGE_REPLICAS_CLI_ADMIN_KEY" }}
[agents.auth]
key_id = "k1"
"#
    )
}

/// `replicas = [...]` naming each `(id, url)`.
fn replicas_line(replicas: &[(&str, String)]) -> String {
    let list: Vec<String> = replicas
        .iter()
        .map(|(id, url)| format!(r#"{{ id = "{id}", region = "eu-west-1", url = "{url}" }}"#))
        .collect();
    format!("replicas = [{}]", list.join(", "))
}

fn agent_command(fleet: &str, spool: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vantage"));
    c.arg("agent")
        .env("VANTAGE_CONFIG_TOML", fleet)
        .env("AWS_REGION", "eu-west-1")
        .env("VANTAGE_AGENT_KEY", AGENT_KEY)
        .env("VANTAGE_SPOOL_DIR", spool)
        .env("VANTAGE_LOG", "vantage_agent=info")
        .env_remove("VANTAGE_CONFIG")
        .env_remove("VANTAGE_VANTAGE")
        .env_remove("VANTAGE_AGGREGATOR_URL");
    c
}

fn healthy(rt: &Runtime) -> TestServer {
    rt.block_on(
        server()
            .header("content-type", "application/health+json")
            .header("x-vantage-region", "eu-west-1")
            .body("{\"status\":\"pass\"}\n")
            .start(),
    )
}

fn seqs_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .count()
    })
}

#[test]
fn the_agent_delivers_to_every_replica_and_a_late_one_catches_up() {
    let rt = runtime();
    let status = healthy(&rt);
    let stand_in =
        || Arc::new(rt.block_on(StandIn::builder().key("k1", AGENT_KEY.as_bytes()).start()));
    let (a, b, c) = (stand_in(), stand_in(), stand_in());
    c.refuse();
    let fleet = fleet(
        &status.url("/status"),
        &replicas_line(&[("a", a.url()), ("b", b.url()), ("c", c.url())]),
    );
    let spool = temp_dir("replicas-cli");
    let child = agent_command(&fleet, spool.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_blocking("2 reports at a and b", PATIENCE, || {
        a.stored().len() >= 2 && b.stored().len() >= 2
    });
    assert!(c.stored().is_empty());
    let c_spool = spool.path().join("c");
    wait_for_blocking("c's backlog in c's spool", PATIENCE, || {
        seqs_in(&c_spool) >= 2
    });
    assert_eq!(seqs_in(spool.path()), 0, "nothing at the top of the spool");

    rt.block_on(c.recover(Mode::Healthy));
    wait_for_blocking("c caught up with a", PATIENCE, || {
        let n = a.stored().len();
        c.stored().len() >= n.max(3)
    });
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    // The start-up line names every replica with its URL.
    let started = stderr
        .lines()
        .find(|l| l.contains("agent started"))
        .unwrap_or_else(|| panic!("{stderr}"));
    for (id, s) in [("a", &a), ("b", &b), ("c", &c)] {
        assert!(started.contains(&format!("{id}={}", s.url())), "{started}");
    }
    // Every replica has every report, oldest first.
    let all = a.stored();
    assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
    assert_eq!(b.stored(), all);
    assert_eq!(c.stored(), all);
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("vantage agent:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let n = all.len();
    assert!(
        summary.contains(&format!("{n} reports, {} delivered", 3 * n)),
        "{summary}"
    );
    for id in ["a", "b", "c"] {
        assert!(
            summary.contains(&format!("replica {id}: {n} delivered, 0 left in the spool")),
            "{summary}"
        );
        assert!(spool.path().join(id).is_dir());
    }
}

#[test]
fn aggregator_url_is_refused_when_the_fleet_lists_replicas() {
    let fleet = fleet(
        "http://127.0.0.1:9/status",
        &replicas_line(&[
            ("a", "http://127.0.0.1:7".into()),
            ("b", "http://127.0.0.1:8".into()),
        ]),
    );
    let spool = temp_dir("replicas-cli-url");
    let out = agent_command(&fleet, spool.path())
        .args(["--aggregator-url", "http://127.0.0.1:7", "--run-for", "1s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("2 aggregator replicas (a, b)"), "{stderr}");

    let help = Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(["agent", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Refused when the"), "{help}");
}

/// A real aggregator (dry-run) serving its API on 127.0.0.1:0 from a thread of its own;
/// returns its base URL.
fn aggregator() -> String {
    use vantage_aggregator::backend::DryRun;
    use vantage_aggregator::config::AggregatorConfig;
    use vantage_aggregator::service::{self, Aggregator};
    let own = fleet(
        "https://use1.example.com/status",
        r#"url = "http://127.0.0.1:1""#,
    );
    let fleet = vantage_protocol::config::FleetConfig::parse(&own, "test fleet").unwrap();
    let config = AggregatorConfig::from_fleet(fleet).unwrap();
    let aggregator = Arc::new(Aggregator::new(config, DryRun::new(), None).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (_stop, rx) = tokio::sync::watch::channel(false);
            service::serve(aggregator, listener, rx).await;
        });
    });
    base
}

fn override_cmd(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vantage"))
        .arg("override")
        .arg("--config")
        .arg(config)
        .args(["--key-id", "ops-alice"])
        .args(args)
        .env("VANTAGE_ADMIN_KEY", ADMIN_KEY)
        .env_remove("VANTAGE_AGGREGATOR_URL")
        .output()
        .expect("run vantage")
}

#[test]
fn override_reaches_every_replica_and_names_the_one_that_missed_it() {
    std::env::set_var("VANTAGE_REPLICAS_CLI_AGENT_KEY", AGENT_KEY);
    std::env::set_var("VANTAGE_REPLICAS_CLI_ADMIN_KEY", ADMIN_KEY);
    let (a, b) = (aggregator(), aggregator());
    let down = format!("http://127.0.0.1:{}", vantage_testkit::closed_port());
    let dir = temp_dir("replicas-cli-override");
    let three = dir.path().join("three.toml");
    std::fs::write(
        &three,
        fleet(
            "https://x.example.com/status",
            &replicas_line(&[("a", a.clone()), ("b", b.clone()), ("c", down)]),
        ),
    )
    .unwrap();

    let out = override_cmd(&three, &["--pin", "eu-west-1=down", "--reason", "INC-7"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (line, id) in lines[..2].iter().zip(["a", "b"]) {
        assert!(
            line.starts_with(&format!("{id}: applied (200 OK) {{")),
            "{line}"
        );
        let answer: serde_json::Value =
            serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap();
        assert_eq!(answer["pinned"]["eu-west-1"], "down", "{line}");
        assert_eq!(answer["pinned_by"]["eu-west-1"]["reason"], "INC-7");
    }
    assert!(lines[2].starts_with("c: unreachable: "), "{stdout}");
    assert!(
        stderr.contains("did not reach every replica (2 of 3): c was unreachable"),
        "{stderr}"
    );

    // The two that answer: both apply it, exit 0. A refusal by one is exit 1 naming it.
    let two = dir.path().join("two.toml");
    std::fs::write(
        &two,
        fleet(
            "https://x.example.com/status",
            &replicas_line(&[("a", a.clone()), ("b", b)]),
        ),
    )
    .unwrap();
    let out = override_cmd(&two, &["--pin", "eu-west-1=clear"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.contains(": applied")).count(),
        2
    );
    // Every Region down without --force: both refuse (the policy), exit 1, both named.
    let out = override_cmd(
        &two,
        &["--pin", "us-east-1=down", "--pin", "eu-west-1=down"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("a refused it (") && stderr.contains("b refused it ("),
        "{stderr}"
    );

    // --aggregator-url would reach one replica only: refused before anything is sent.
    let out = override_cmd(&three, &["--freeze", "--aggregator-url", &a]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("3 aggregator replicas (a, b, c)"),
        "{stderr}"
    );
}
