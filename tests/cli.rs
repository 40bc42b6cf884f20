//! `vantage probe` as a user runs it: the real binary against real sockets on loopback.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::Arc;
use std::thread;
use tokio::runtime::Runtime;
use vantage_protocol::histogram::decode_base64;
use vantage_testkit::aggregator::StandIn;
use vantage_testkit::dirs::temp_dir;
use vantage_testkit::fleet::{quoted, FleetToml};
use vantage_testkit::lambda::{Outcome, RuntimeApi};
use vantage_testkit::{server, TestServer};

fn vantage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(args)
        .output()
        .expect("run vantage")
}

/// The fakes' runtime: these tests are synchronous (they run the binary and wait for it), the
/// kit's servers are async, so they run on this runtime's worker threads meanwhile.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A healthy eu-west-1 status server; it counts the connections it accepts.
fn healthy(rt: &Runtime) -> TestServer {
    rt.block_on(
        server()
            .header("content-type", "application/health+json")
            .header("x-vantage-region", "eu-west-1")
            .body("{\"status\":\"pass\"}\n")
            .start(),
    )
}

/// The aggregator stand-in, verifying the agents' key.
fn report_sink(rt: &Runtime) -> StandIn {
    rt.block_on(StandIn::builder().key("k1", AGENT_KEY).start())
}

fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}/", vantage_testkit::closed_port())
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let url = closed_port_url();
    let cases: &[&[&str]] = &[
        &["probe", "not a url"],
        &["probe", "ftp://example.com/"],
        &["probe", "https://"],
        &["probe", &url, "--count", "abc"],
        &["probe", &url, "--count", "0"],
        &["probe", &url, "--interval", "5 parsecs"],
        &["probe", &url, "--expect-status", "700"],
        &["probe", &url, "--resolve", "example.com:443"],
        &["probe", &url, "--header", "no colon"],
        &["probe", &url, "--timeout", "2m"],
        &["probe", &url, "--cacert", "/nonexistent/ca.pem"],
        &["probe", &url, "--expect-json", "status=pass"],
        &["probe", &url, "--no-such-flag"],
    ];
    for args in cases {
        let out = vantage(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("vantage: "), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn unreachable_target_is_a_result_not_a_crash() {
    let url = closed_port_url();
    let out = vantage(&["probe", &url, "-n", "3", "-i", "0", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["attempts"], 3);
    assert_eq!(v["outcomes"]["connect"], 3);
    assert_eq!(v["outcomes"]["ok"], 0);
    assert!(v["phases"]["total"].is_null());
    assert!(v["errors"]["connect"].as_str().unwrap().contains("refused"));
}

#[test]
fn json_output_has_quantiles_and_decodable_histograms() {
    let rt = runtime();
    let status = healthy(&rt);
    let url = status.url("/status");
    let out = vantage(&[
        "probe",
        &url,
        "-n",
        "5",
        "-i",
        "20ms",
        "--expect-json",
        "/status=pass",
        "--expect-header",
        "content-type: application/health+json",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(status.accepts(), 5, "a fresh connection per probe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["attempts"], 5);
    assert_eq!(v["outcomes"]["ok"], 5);
    assert_eq!(v["answered_by"]["eu-west-1"], 5);
    assert!(v["phases"]["dns"].is_null(), "IP literal: no DNS phase");
    assert!(v["phases"]["tls"].is_null(), "plain HTTP: no TLS phase");
    for phase in ["connect", "ttfb", "transfer", "total"] {
        let p = &v["phases"][phase];
        let (p50, p99, max) = (
            p["p50"].as_f64().unwrap(),
            p["p99"].as_f64().unwrap(),
            p["max"].as_f64().unwrap(),
        );
        assert!(
            0.0 < p50 && p50 <= p99 && p99 <= max && max < 10.0,
            "{phase}: {p}"
        );
        let h = decode_base64(v["histograms"][phase].as_str().unwrap()).unwrap();
        assert_eq!(h.len(), 5, "{phase}");
        assert_eq!(h.max() as f64 / 1e6, max, "{phase}");
    }
    assert_eq!(
        v["histograms"]["tls"]
            .as_str()
            .map(|h| decode_base64(h).unwrap().len()),
        Some(0)
    );
}

#[test]
fn table_output_and_failing_assertion() {
    let rt = runtime();
    let status = healthy(&rt);
    let url = status.url("/status");
    let out = vantage(&["probe", &url, "-n", "2", "-i", "0"]);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "phase",
        "p50",
        "p99",
        "ttfb",
        "total",
        "outcomes: ok 2",
        "answered by: eu-west-1 2",
    ] {
        assert!(table.contains(needle), "missing {needle:?} in\n{table}");
    }
    let out = vantage(&["probe", &url, "--expect-body", "degraded"]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("body_mismatch 1"), "{table}");
}

/// `vantage probe` takes tcp:// and grpc:// URLs: a banner read after the bytes of --data,
/// matched by --expect-body, with the phases of a TCP exchange; a refused port is `connect`.
#[test]
fn probe_takes_tcp_urls() {
    let rt = runtime();
    let redis = rt.block_on(vantage_testkit::banner_server(b"+PONG\r\n", true));
    let url = format!("tcp://127.0.0.1:{}", redis.port());
    let out = vantage(&[
        "probe",
        &url,
        "--data",
        "PING\r\n",
        "--expect-body",
        "+PONG",
    ]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{table}");
    for needle in ["connect", "ttfb", "transfer", "outcomes: ok 1"] {
        assert!(table.contains(needle), "missing {needle:?} in\n{table}");
    }
    assert_eq!(redis.received(), b"PING\r\n");

    let refused = format!("grpc://127.0.0.1:{}/x", vantage_testkit::closed_port());
    let out = vantage(&["probe", &refused]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("connect 1"), "{table}");

    let out = vantage(&["probe", "tcp://127.0.0.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port is required"));
}

#[test]
fn check_config_accepts_the_tcp_grpc_example() {
    let out = vantage(&[
        "check-config",
        &workspace_file("examples/fleet-tcp-grpc.toml"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "no warnings: {stderr}");
    let plan = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "status:us-east-1         status         10s        5s SERVING        grpcs://orders.us-east-1.example.com:443/orders.v1.Orders",
        "deep:us-east-1           deep           10s        5s banner         tcps://cache.us-east-1.example.com:6380\n",
        "deep:eu-west-1           deep           10s        5s connect        tcp://db.eu-west-1.example.com:5432\n",
    ] {
        assert!(plan.contains(needle), "missing {needle:?} in\n{plan}");
    }
}

#[test]
fn help_teaches() {
    let out = vantage(&["probe", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--resolve",
        "--expect-status",
        "Outcome codes",
        "Exit status",
        "Examples",
    ] {
        assert!(help.contains(needle), "missing {needle:?}");
    }
}

fn workspace_file(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_config_prints_the_plan() {
    let out = vantage(&["check-config", &workspace_file("examples/fleet.toml")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "fleet orders-api: 3 Regions, 3 vantages, 6 targets per vantage",
        "status:ap-southeast-1",
        "vantage-apse1",
        "total: 2.40 probes/s across 3 vantages",
        "(with its control target https://checkip.amazonaws.com/)",
    ] {
        assert!(plan.contains(needle), "missing {needle:?} in\n{plan}");
    }
}

/// `[[services]]`: the plan is printed service by service, each heading (global URL, Regions,
/// policy keys over the fleet's) above its own targets, then the totals; a single-API file is
/// one service named after the fleet, printed the same way.
#[test]
fn check_config_prints_the_plan_per_service() {
    let out = vantage(&[
        "check-config",
        &workspace_file("examples/fleet-services.toml"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let plan = String::from_utf8(out.stdout).unwrap();
    let at = |needle: &str| {
        plan.find(needle)
            .unwrap_or_else(|| panic!("missing {needle:?} in\n{plan}"))
    };
    let in_order = [
        at("fleet shop: 3 Regions, 3 vantages, 8 targets per vantage"),
        at(
            "\nservice orders: global https://orders.api.example.com/status; Regions us-east-1, \
            eu-west-1; 4 targets",
        ),
        at("\norders/global "),
        at("\norders/deep:us-east-1 "),
        at(
            "\nservice payments: global https://payments.api.example.com/status; Regions \
            us-east-1, eu-west-1, ap-southeast-1; 4 targets",
        ),
        at("\n  policy over the fleet's: fail_after = 1, min_healthy = 2\n"),
        at("\npayments/global "),
        at("\npayments/status:ap-southeast-1 status          5s"),
        at("\n2 services, 8 targets\n"),
        at("total: 2.70 probes/s across 3 vantages"),
    ];
    assert!(
        in_order.windows(2).all(|w| w[0] < w[1]),
        "{in_order:?}\n{plan}"
    );
    assert_eq!(plan.matches("policy over the fleet's").count(), 1, "{plan}");

    let out = vantage(&["check-config", &workspace_file("examples/fleet.toml")]);
    assert_eq!(out.status.code(), Some(0));
    let plan = String::from_utf8(out.stdout).unwrap();
    assert_eq!(plan.matches("\nservice ").count(), 1, "{plan}");
    for needle in [
        "\nservice orders-api: global https://api.example.com/status; Regions us-east-1, \
         eu-west-1, ap-southeast-1; 6 targets",
        "\nstatus:us-east-1 ",
        "\n1 service, 6 targets\n",
    ] {
        assert!(plan.contains(needle), "missing {needle:?} in\n{plan}");
    }
}

/// The example with every section (three replicas, the lease, Route 53): check-config prints
/// the AWS calls per minute and the monthly cost of its periods; periods beyond Route 53's
/// account limit are warned about on stderr.
#[test]
fn check_config_prints_the_aws_budget() {
    let example = workspace_file("examples/fleet-replicas.toml");
    let out = vantage(&["check-config", &example]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let plan = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "AWS calls per minute (3 Region(s), 3 aggregator replica(s))",
        "Route 53 total: 0.6 / 10.6 calls/min",
        "GetItem (lease)",
        "12 Route 53 health checks",
    ] {
        assert!(plan.contains(needle), "missing {needle:?} in\n{plan}");
    }
    assert!(!stderr.contains("5 requests/s"), "{stderr}");

    let text = std::fs::read_to_string(&example).unwrap();
    let busy = text
        .replace(
            "backend = \"route53\"",
            "backend = \"route53\"\nevaluate_every = \"1s\"\nobserve_every = \"1s\"",
        )
        .replace("min_interval = \"60s\"", "min_interval = \"1s\"");
    let dir = temp_dir("cli-budget");
    let path = dir.path().join("busy.toml");
    std::fs::write(&path, busy).unwrap();
    let out = vantage(&["check-config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: Route 53:") && stderr.contains("5 requests/s"),
        "{stderr}"
    );
}

/// A key shared by several vantages is accepted only with allow_shared, and then warned about.
#[test]
fn check_config_warns_about_a_shared_key() {
    let example = std::fs::read_to_string(workspace_file("examples/fleet.toml")).unwrap();
    let shared = example.replace(
        "vantages = [\"eu-west-1\"]",
        "vantages = [\"eu-west-1\", \"us-east-1\"], allow_shared = true",
    );
    let path = std::env::temp_dir().join(format!("vantage-cli-shared-{}.toml", std::process::id()));
    std::fs::write(&path, shared).unwrap();
    let out = vantage(&["check-config", path.to_str().unwrap()]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: aggregator.keys.euw1-2026-11")
            && stderr.contains("2 vantages (eu-west-1, us-east-1)")
            && stderr.contains("quorum"),
        "{stderr}"
    );
    std::fs::remove_file(path).ok();
}

/// Broken fleet files: each must fail with exit 2 and one line naming the file, the line and
/// the key.
#[test]
fn check_config_names_key_line_and_fix() {
    let example = std::fs::read_to_string(workspace_file("examples/fleet.toml")).unwrap();
    let line_of = |needle: &str| example.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let cases: Vec<(String, String)> = vec![
        (
            example.replace("first_byte_timeout", "first_byte_timeuot"),
            format!(
                "line {}: unknown field `first_byte_timeuot`",
                line_of("first_byte_timeout")
            ),
        ),
        (
            example.replace("timeout = \"10s\"", "timeout = \"ten seconds\""),
            format!(
                "line {}: probe.timeout: bad duration",
                line_of("timeout = \"10s\"")
            ),
        ),
        (
            example.replace("name = \"eu-west-1\"", "name = \"us-east-1\""),
            format!(
                ":{}: regions[1].name: Region \"us-east-1\" is listed twice",
                line_of("name = \"eu-west-1\"")
            ),
        ),
        (
            example.replace("https://def456", "ftp://def456"),
            format!(
                ":{}: regions[1].status_url",
                line_of("status_url = \"https://def456")
            ),
        ),
        (
            example.replace(
                "expect_status = \"200-299\"",
                "expect_status = \"200-2999\"",
            ),
            format!(
                ":{}: probe.expect_status: bad status list",
                line_of("expect_status = \"200-299\"")
            ),
        ),
        (
            example.replace("histogram_precision = 3", "histogram_precision = 9"),
            format!(
                ":{}: fleet.histogram_precision: must be 1..=5",
                line_of("histogram_precision")
            ),
        ),
        (
            example.replace("max_bytes = \"64MiB\"", "max_bytes = \"64 lots\""),
            format!(
                "line {}: agents.spool.max_bytes: bad size",
                line_of("max_bytes")
            ),
        ),
        (
            example.replace(
                "vantages = [\"eu-west-1\"]",
                "vantages = [\"eu-west-1\", \"us-east-1\"]",
            ),
            format!(
                ":{}: aggregator.keys.euw1-2026-11: one key for 2 vantages",
                line_of("euw1-2026-11 = {")
            ),
        ),
        (
            example.replace("vantages = [\"eu-west-1\"]", "vantages = [\"eu-north-1\"]"),
            format!(
                ":{}: aggregator.keys.euw1-2026-11.vantages: \"eu-north-1\" is not a [[vantages]] region",
                line_of("euw1-2026-11 = {")
            ),
        ),
        (
            // min_healthy = 0 lets every Region be taken out.
            example.replace("min_healthy = 1 ", "min_healthy = 0 "),
            format!(
                ":{}: policy.min_healthy: 0 would let automation or pins take every Region out",
                line_of("min_healthy = 1 ")
            ),
        ),
    ];
    let dir = temp_dir("cli-config");
    let dir = dir.path();
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.join(format!("broken-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = vantage(&["check-config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "case {i}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "case {i}: {stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "case {i}: {stderr}"
        );
        assert!(
            stderr.contains(expected.as_str()),
            "case {i}: expected {expected:?} in {stderr}"
        );
    }
    let missing = vantage(&["check-config", "/nonexistent/fleet.toml"]);
    assert_eq!(missing.status.code(), Some(2));
}

/// `[route53]` is checked by check-config like every other section, not first when the
/// aggregator starts: a bad value fails with exit 2 and its file, line and key.
#[test]
fn check_config_checks_the_route53_section() {
    // The example has a [route53] section (for the dry-run backend, which ignores it).
    let good = std::fs::read_to_string(workspace_file("examples/fleet.toml")).unwrap();
    assert!(
        good.contains("\n[route53]\n"),
        "the example shows [route53]"
    );
    let dir = temp_dir("cli-route53");
    let dir = dir.path();
    let check = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = vantage(&["check-config", path.to_str().unwrap()]);
        let stderr = String::from_utf8(out.stderr).unwrap();
        (out.status.code(), path, stderr)
    };
    let (code, _, stderr) = check("good.toml", &good);
    assert_eq!(code, Some(0), "{stderr}");

    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let both = good.replace("health = \"data-plane\"", "health = \"both\"");
    let blank_id = good.replace("set_identifier = \"us-east-1\"", "set_identifier = \" \"");
    let cases = [
        (
            "both.toml",
            format!(
                ":{}: route53.health: \"both\" is not a health mode; use \"data-plane\" or \"control-plane\"",
                line_of(&both, "health = ")
            ),
            both,
        ),
        (
            "blank-id.toml",
            format!(
                ":{}: route53.regions.us-east-1.set_identifier: empty; set the SetIdentifier",
                line_of(&blank_id, "set_identifier")
            ),
            blank_id,
        ),
    ];
    for (name, expected, text) in &cases {
        let (code, path, stderr) = check(name, text);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{}{expected}", path.display())),
            "{name}: expected {expected:?} in {stderr}"
        );
    }
}

fn agent_fleet(status_url: &str, aggregator: &str) -> String {
    FleetToml::new("cli-test")
        .probe("interval", &quoted("200ms"))
        .global(status_url)
        .region("eu-west-1", status_url)
        .vantage("eu-west-1")
        .aggregator("url", &quoted(aggregator))
        .build()
}

const AGENT_KEY: &[u8] = b"cli-test-key-0123456789";

#[test]
fn agent_bad_input_exits_2_with_the_reason() {
    let rt = runtime();
    let (status, aggregator) = (healthy(&rt), report_sink(&rt));
    let fleet = agent_fleet(&status.url("/status"), &aggregator.url());
    let run = |vantage: &str, key: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vantage"));
        cmd.args([
            "agent",
            "--vantage",
            vantage,
            "--no-spool",
            "--run-for",
            "1s",
        ])
        .env("VANTAGE_CONFIG_TOML", &fleet)
        .env_remove("VANTAGE_CONFIG")
        .env_remove("VANTAGE_AGENT_KEY");
        if let Some(k) = key {
            cmd.env("VANTAGE_AGENT_KEY", k);
        }
        cmd.output().unwrap()
    };
    let out = run("eu-west-1", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent key: set VANTAGE_AGENT_KEY"));
    let out = run("eu-west-1", Some("short"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
    let out = run(
        "mars-north-1",
        Some(std::str::from_utf8(AGENT_KEY).unwrap()),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("known: eu-west-1"));
}

#[test]
fn agent_from_environment_runs_reports_and_stops_on_sigterm() {
    let rt = runtime();
    let (status, aggregator) = (healthy(&rt), report_sink(&rt));
    let spool = temp_dir("cli-spool");
    let child = Command::new(env!("CARGO_BIN_EXE_vantage"))
        .arg("agent")
        .env(
            "VANTAGE_CONFIG_TOML",
            agent_fleet(&status.url("/status"), &aggregator.url()),
        )
        .env("AWS_REGION", "eu-west-1")
        .env("VANTAGE_AGENT_KEY", std::str::from_utf8(AGENT_KEY).unwrap())
        .env("VANTAGE_SPOOL_DIR", spool.path())
        .env_remove("VANTAGE_CONFIG")
        .env_remove("VANTAGE_VANTAGE")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) for the first report, then ask the agent to stop.
    vantage_testkit::eventually::wait_for_blocking(
        "the first report",
        std::time::Duration::from_secs(5),
        || !aggregator.stored().is_empty(),
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("vantage agent:"))
        .expect(&stderr);
    let field = |name: &str| -> usize {
        let words: Vec<&str> = summary
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .collect();
        let at = words.iter().position(|w| *w == name).unwrap();
        words[at - 1].parse().unwrap()
    };
    assert_eq!(field("reports"), aggregator.stored().len(), "{summary}");
    assert_eq!(field("delivered"), field("reports"), "{summary}");
    assert!(summary.ends_with("0 left in the spool"), "{summary}");
}

#[test]
fn lambda_mode_probes_for_run_for_then_answers_the_invocation() {
    let rt = runtime();
    let (status, aggregator) = (healthy(&rt), report_sink(&rt));
    let deadline_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 30_000;
    let api = RuntimeApi::start().unwrap();
    let id = api.invoke(&serde_json::json!({}), deadline_ms);
    let spool = temp_dir("cli-lambda");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vantage"))
        .arg("agent")
        .envs(api.lambda_env("agent"))
        .env("AWS_REGION", "eu-west-1")
        .env(
            "VANTAGE_CONFIG_TOML",
            agent_fleet(&status.url("/status"), &aggregator.url()),
        )
        .env("VANTAGE_AGENT_KEY", std::str::from_utf8(AGENT_KEY).unwrap())
        .env("VANTAGE_SPOOL_DIR", spool.path())
        .env("VANTAGE_RUN_FOR", "2500ms")
        .env_remove("VANTAGE_CONFIG")
        .env_remove("VANTAGE_VANTAGE")
        .spawn()
        .unwrap();
    let answer = api.wait_for_answer(&id, std::time::Duration::from_secs(15));
    let _ = child.kill();
    let _ = child.wait();
    let answer = answer.expect("the invocation was answered within 15 s");
    assert_eq!(answer.outcome, Outcome::Response, "{}", answer.body);
    let v = answer.json();
    assert!(v["probes"].as_u64().unwrap() >= 10, "{v}");
    assert!(v["reports"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["delivered"], v["reports"], "{v}");
    assert_eq!(v["left_in_spool"], 0, "{v}");
    assert_eq!(
        aggregator.stored().len() as u64,
        v["reports"].as_u64().unwrap()
    );
}

#[test]
fn lambda_mode_writes_cloudwatch_data_as_emf_lines_on_stdout() {
    let rt = runtime();
    let (status, aggregator) = (healthy(&rt), report_sink(&rt));
    let deadline_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 30_000;
    let api = RuntimeApi::start().unwrap();
    let id = api.invoke(&serde_json::json!({}), deadline_ms);
    let fleet = format!(
        "{}\n[export.cloudwatch]\nenabled = true\nnamespace = \"VantageCli\"\n",
        agent_fleet(&status.url("/status"), &aggregator.url())
    );
    let child = Command::new(env!("CARGO_BIN_EXE_vantage"))
        .arg("agent")
        .envs(api.lambda_env("agent"))
        .env("AWS_REGION", "eu-west-1")
        .env("VANTAGE_CONFIG_TOML", &fleet)
        .env("VANTAGE_AGENT_KEY", std::str::from_utf8(AGENT_KEY).unwrap())
        .env("VANTAGE_RUN_FOR", "2500ms")
        .env("VANTAGE_SPOOL_DIR", temp_dir("cli-emf").path())
        .env_remove("VANTAGE_CONFIG")
        .env_remove("VANTAGE_VANTAGE")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let answer = api.wait_for_answer(&id, std::time::Duration::from_secs(15));
    // Lambda keeps the process for the next invocation: stop it, then read what it wrote.
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert_eq!(answer.expect("answered").outcome, Outcome::Response);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v.get("_aws").is_some())
        .collect();
    let latency: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["Phase"] == "total" && v["Target"] == "global")
        .collect();
    assert!(
        !latency.is_empty(),
        "no EMF latency line in stdout:\n{stdout}"
    );
    let l = latency[0];
    assert_eq!(l["_aws"]["CloudWatchMetrics"][0]["Namespace"], "VantageCli");
    assert_eq!(
        l["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
        "Latency"
    );
    assert_eq!(l["Vantage"], "eu-west-1");
    assert_eq!(l["Region"], "global");
    let values = l["Latency"]["Values"].as_array().unwrap();
    assert!(!values.is_empty() && values.len() <= 100);
    assert!(lines
        .iter()
        .any(|v| v["Outcome"] == "ok" && v["Probes"]["Sum"].as_f64() > Some(0.0)));
}

/// An aggregator (dry-run) serving its API on 127.0.0.1:0 from a thread of its own, for the
/// `vantage override` tests; returns its base URL.
fn aggregator_for(fleet: &str) -> String {
    use vantage_aggregator::backend::DryRun;
    use vantage_aggregator::config::AggregatorConfig;
    use vantage_aggregator::service::{self, Aggregator};
    let fleet = vantage_protocol::config::FleetConfig::parse(fleet, "test fleet").unwrap();
    let config = AggregatorConfig::from_fleet(fleet).unwrap();
    let aggregator = Arc::new(Aggregator::new(config, DryRun::new(), None).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            // Held for as long as the server runs: dropping it would stop the server.
            let (stop, rx) = tokio::sync::watch::channel(false);
            service::serve(aggregator, listener, rx).await;
            drop(stop);
        });
    });
    base
}

const OVERRIDE_AGENT_KEY: &str = "cli-override-agent-key-0123456789";
const OVERRIDE_ADMIN_KEY: &str = "cli-override-admin-key-0123456789";

fn override_fleet(aggregator: &str) -> String {
    format!(
        r#"
[fleet]
name = "orders-api"
[global]
url = "https://api.example.com/status"
[[regions]]
name = "us-east-1"
status_url = "https://use1.example.com/status"
[[regions]]
name = "eu-west-1"
status_url = "https://euw1.example.com/status"
[[vantages]]
region = "us-east-1"
[aggregator]
url = "{aggregator}"
[aggregator.keys]
k1 = {{ env = "VANTAGE_CLI_OVERRIDE_AGENT_KEY", vantages = ["us-east-1"] }}
[aggregator.admin_keys]
ops-alice = {{ env = "VANTAGE_CLI_OVERRIDE_ADMIN_KEY" }}
[agents.auth]
key_id = "k1"
"#
    )
}

/// `vantage override` with the admin key in `VANTAGE_ADMIN_KEY` (or none).
fn override_cmd(key: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vantage"));
    c.arg("override").args(args).env_remove("VANTAGE_ADMIN_KEY");
    if let Some(key) = key {
        c.env("VANTAGE_ADMIN_KEY", key);
    }
    c.output().expect("run vantage")
}

#[test]
fn override_signs_sends_and_reports_the_answer() {
    std::env::set_var("VANTAGE_CLI_OVERRIDE_AGENT_KEY", OVERRIDE_AGENT_KEY);
    std::env::set_var("VANTAGE_CLI_OVERRIDE_ADMIN_KEY", OVERRIDE_ADMIN_KEY);
    let dir = std::env::temp_dir().join(format!("vantage-cli-override-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fleet = dir.join("fleet.toml");
    let base = aggregator_for(&override_fleet("http://127.0.0.1:1"));
    std::fs::write(&fleet, override_fleet(&base)).unwrap();
    let config = fleet.to_str().unwrap();
    let key = Some(OVERRIDE_ADMIN_KEY);

    let out = override_cmd(
        key,
        &[
            "--config",
            config,
            "--key-id",
            "ops-alice",
            "--pin",
            "eu-west-1=down",
            "--freeze",
            "--reason",
            "INC-1",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["pinned"]["eu-west-1"], "down");
    assert_eq!(answer["frozen"], true);
    assert_eq!(answer["pinned_by"]["eu-west-1"]["by"], "ops-alice");
    assert_eq!(answer["pinned_by"]["eu-west-1"]["reason"], "INC-1");

    // Every Region down without --force: the aggregator refuses, exit 1, its reason printed.
    let out = override_cmd(
        key,
        &[
            "--config",
            config,
            "--key-id",
            "ops-alice",
            "--pin",
            "us-east-1=down",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("force"),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{out:?}"
    );
    let out = override_cmd(
        key,
        &[
            "--config",
            config,
            "--key-id",
            "ops-alice",
            "--pin",
            "us-east-1=down",
            "--force",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // The wrong key for the id: refused by the aggregator (401), exit 1.
    let out = override_cmd(
        Some("not-the-admin-key-0123456789"),
        &["--config", config, "--key-id", "ops-alice", "--unfreeze"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // Bad input never reaches the aggregator: exit 2, one line saying what is wrong.
    for (key, args, needle) in [
        (
            key,
            vec!["--key-id", "k1", "--freeze"],
            "not in [aggregator.admin_keys]",
        ),
        (
            key,
            vec!["--key-id", "ops-alice", "--pin", "mars-1=down"],
            "not a Region",
        ),
        (
            key,
            vec!["--key-id", "ops-alice", "--pin", "eu-west-1=sideways"],
            "not up, down or clear",
        ),
        (key, vec!["--key-id", "ops-alice"], "nothing to change"),
        (
            None,
            vec!["--key-id", "ops-alice", "--freeze"],
            "VANTAGE_ADMIN_KEY",
        ),
        (
            Some("short"),
            vec!["--key-id", "ops-alice", "--freeze"],
            "at least 16",
        ),
        (
            key,
            vec!["--key-id", "ops-alice", "--freeze", "--unfreeze"],
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["--config", config];
        all.extend(args);
        let out = override_cmd(key, &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{all:?}: {stderr}");
        assert!(stderr.contains(needle), "{all:?}: {stderr}");
    }

    let help = vantage(&["override", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8(help.stdout).unwrap();
    for needle in [
        "--pin eu-west-1=down",
        "VANTAGE_ADMIN_KEY",
        "admin_keys",
        "--force",
        "Exit status",
    ] {
        assert!(help.contains(needle), "missing {needle:?} in\n{help}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn agent_id_with_path_characters_exits_2_in_one_line() {
    // The id names the default spool directory: `../../etc` would move it out of the temp dir.
    for id in ["../../etc", ".."] {
        let out = vantage(&["agent", "--agent-id", id, "--no-spool"]);
        assert_eq!(out.status.code(), Some(2), "{id}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{id}: {stderr}");
        assert!(stderr.starts_with("vantage: "), "{id}: {stderr}");
        assert!(stderr.contains("agent id"), "{id}: {stderr}");
    }
}

/// `vantage demo` as a user runs it, its events read back from `--events`.
fn demo_events(args: &[&str], budget: std::time::Duration) -> (Vec<serde_json::Value>, String) {
    let dir = temp_dir("demo");
    let events = dir.path().join("events.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vantage"))
        .arg("demo")
        .args(args)
        .args(["--no-live", "--listen", "127.0.0.1:0", "--events"])
        .arg(&events)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run vantage demo");
    // Bounded: one look every 100 ms for the budget.
    let mut looks = budget.as_millis() / 100;
    while child.try_wait().expect("wait").is_none() {
        if looks == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vantage demo {args:?} still running after {budget:?}");
        }
        looks -= 1;
        thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "vantage demo {args:?}: {}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let text = std::fs::read_to_string(&events).expect("events file");
    let parsed = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event a line"))
        .collect();
    (parsed, stdout)
}

#[test]
fn demo_with_three_replicas_goes_out_by_majority_and_moves_the_lease_without_flapping() {
    let (events, stdout) = demo_events(
        &[
            "--aggregators",
            "3",
            "--fail",
            "eu-west-1@4",
            "--kill-aggregator",
            "1@7",
            "--duration",
            "20",
        ],
        std::time::Duration::from_secs(45),
    );
    let named = |name: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["event"] == name).collect()
    };
    let t = |e: &serde_json::Value| e["t"].as_f64().unwrap();
    let all = || {
        events
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Out by majority, once, and never back while failing (no flap).
    let outs = named("region_out");
    assert_eq!(outs.len(), 1, "one take-out:\n{}", all());
    let out = outs[0];
    assert_eq!(out["region"], "eu-west-1");
    let voters = out["detail"]["voters"].as_array().expect("voters");
    assert!(voters.len() >= 2, "a majority voted it out: {out}");
    assert_eq!(out["detail"]["threshold"], 2);
    assert!(named("region_in").is_empty(), "no flap:\n{}", all());
    // Replica 1 stopped; the lease moved on if it held it.
    let down = named("replica_down");
    assert_eq!(down.len(), 1, "{}", all());
    assert_eq!(down[0]["detail"]["replica"], "1");
    let killed_at = t(down[0]);
    let acquired = named("lease_acquired");
    let holder_at_kill = acquired
        .iter()
        .rev()
        .find(|e| t(e) <= killed_at)
        .and_then(|e| e["detail"]["holder"].as_str())
        .unwrap_or_else(|| panic!("someone held the lease before the kill:\n{}", all()))
        .to_owned();
    let holder = if holder_at_kill == "1" {
        // The holder died without letting go: another takes the lease once it has expired.
        let taken = acquired
            .iter()
            .find(|e| t(e) > killed_at)
            .unwrap_or_else(|| panic!("lease taken over:\n{}", all()));
        assert_ne!(taken["detail"]["holder"], "1");
        assert!(
            t(taken) - killed_at >= 5.0,
            "not before the 6 s lease expired: {taken}"
        );
        taken["detail"]["holder"].as_str().unwrap().to_owned()
    } else {
        holder_at_kill
    };
    // Weights resume from the holder after the kill.
    assert!(
        named("weights")
            .iter()
            .any(|e| t(e) > killed_at && e["detail"]["writer"] == holder.as_str()),
        "weights written by {holder} after the kill:\n{}",
        all()
    );
    assert!(stdout.contains("3 aggregator replicas"), "{stdout}");
    assert!(stdout.contains("false transitions 0, flaps 0"), "{stdout}");
}

#[test]
fn demo_replica_flags_are_checked_before_anything_starts() {
    let cases: &[(&[&str], &str)] = &[
        (&["--aggregators", "6"], "6"),
        (
            &["--aggregators", "3", "--kill-aggregator", "4@5"],
            "no replica 4",
        ),
        (&["--kill-aggregator", "2@5"], "--aggregators"),
        (
            &["--aggregators", "3", "--revive-aggregator", "2@5"],
            "not down",
        ),
        (
            &[
                "--aggregators",
                "3",
                "--kill-aggregator",
                "2@40",
                "--duration",
                "30",
            ],
            "after the end",
        ),
        (
            &["--aggregators", "3", "--kill-aggregator", "two@5"],
            "ID@SECS",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["demo", "--no-live", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let out = vantage(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// The ARC example: check-config shows the routing controls instead of a CloudWatch health
/// layout, ARC's calls and the cluster's hourly bill; a Region without a routing control or a
/// malformed ARN is refused with its key and line.
#[test]
fn check_config_on_the_arc_example() {
    let example = workspace_file("examples/fleet-arc.toml");
    let out = vantage(&["check-config", &example]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let plan = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "ARC routing controls of fleet orders-api",
        "5 cluster endpoint(s), tried in a random order per call: 2s each, 10s in all",
        "arc        UpdateRoutingControlStates",
        "arc        GetRoutingControlState",
        "1825.00  1 ARC cluster ($2.50/hour",
        "RECOVERY_CONTROL, one per Region",
    ] {
        assert!(plan.contains(needle), "missing {needle:?} in\n{plan}");
    }
    for absent in ["CLOUDWATCH_METRIC", "PutMetricData", "alarm vantage-"] {
        assert!(!plan.contains(absent), "{absent:?} in\n{plan}");
    }

    let text = std::fs::read_to_string(&example).unwrap();
    let dir = temp_dir("cli-arc");
    let check = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = vantage(&["check-config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let unmapped = text.replace("[arc.regions.eu-west-1]", "[arc.regions.eu-west-9]");
    let stderr = check("unmapped.toml", unmapped);
    assert!(
        stderr.contains("arc.regions") && stderr.contains("eu-west-1"),
        "{stderr}"
    );
    let foreign = text.replace(
        "controlpanel/0123456789abcdef0123456789abcdef/routingcontrol/cccc3333dddd4444",
        "controlpanel/ffff/routingcontrol/cccc3333dddd4444",
    );
    let stderr = check("foreign.toml", foreign);
    assert!(
        stderr.contains("arc.regions.eu-west-1.routing_control_arn")
            && stderr.contains("is not in control panel"),
        "{stderr}"
    );
    let line = text
        .lines()
        .position(|l| l.contains("ffff") || l.contains("cccc3333dddd4444"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(":{line}:")),
        "line {line}: {stderr}"
    );
    // The weights stay in Route 53: backend "arc" without [route53] is refused at start.
    let start = text.find("\n[route53]\n").unwrap();
    let path = dir.path().join("no-route53.toml");
    std::fs::write(&path, &text[..start]).unwrap();
    let out = vantage(&["plan", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("aggregator.backend") && stderr.contains("[route53] section"),
        "{stderr}"
    );
    let no_endpoints = text.replace("cluster_endpoints = [", "old_endpoints = [");
    let stderr = check("no-endpoints.toml", no_endpoints);
    assert!(stderr.contains("old_endpoints"), "{stderr}");
}
