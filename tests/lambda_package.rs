//! The Lambda artifact as Lambda runs it: a file named `bootstrap`, started with no arguments
//! and a bare environment in its task directory, the subcommand taken from the function's
//! Handler (`_HANDLER`), talking to the Runtime API stand-in on loopback. It must fetch the
//! invocation, do the work (probe the target, or answer the API Gateway event) and post the
//! invocation's response.
//!
//! By default the debug binary plays `bootstrap`; `scripts/package.sh --check` sets
//! `VANTAGE_LAMBDA_BOOTSTRAP` to the one it unzipped from the packaged zip, so the same checks
//! run on the release artifact. No timings here: the cold-start figure is `bench/lambda`'s.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::runtime::Runtime;
use vantage_testkit::aggregator::StandIn;
use vantage_testkit::dirs::temp_dir;
use vantage_testkit::fleet::{quoted, FleetToml};
use vantage_testkit::lambda::{Outcome, RuntimeApi};
use vantage_testkit::{server, unix_now_ms, TestServer};

const AGENT_KEY: &[u8] = b"lambda-package-key-0123456789";
/// How long the stand-in waits for an answer: the agent probes up to 3 s, then flushes.
const ANSWER_LIMIT: Duration = Duration::from_secs(20);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The binary under test: the packaged one when the packaging script names it.
fn bootstrap_source() -> PathBuf {
    match std::env::var_os("VANTAGE_LAMBDA_BOOTSTRAP") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_vantage")),
    }
}

/// Kills the function's process when the test ends, however it ends.
struct Function(Child);

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lays out a task directory holding only `bootstrap` (as the zip unpacks into /var/task) and
/// starts it as Lambda would: no arguments, only Lambda's variables and the function's own.
fn start_function(
    api: &RuntimeApi,
    handler: &str,
    function_env: &[(&str, &str)],
) -> (Function, tempfile::TempDir) {
    let task = temp_dir("lambda-task");
    let bootstrap = task.path().join("bootstrap");
    // A hard link when it can be (the debug binary is ~500 MB), else a copy.
    let source = bootstrap_source();
    if std::fs::hard_link(&source, &bootstrap).is_err() {
        std::fs::copy(&source, &bootstrap).expect("copy the binary as bootstrap");
    }
    let mut cmd = Command::new(&bootstrap);
    cmd.env_clear()
        .current_dir(task.path())
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LAMBDA_TASK_ROOT", task.path())
        .env("AWS_REGION", "eu-west-1")
        .envs(api.lambda_env(handler))
        .envs(function_env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start bootstrap");
    (Function(child), task)
}

fn healthy_target(rt: &Runtime) -> TestServer {
    rt.block_on(
        server()
            .header("content-type", "application/health+json")
            .header("x-vantage-region", "eu-west-1")
            .body("{\"status\":\"pass\"}\n")
            .start(),
    )
}

#[test]
fn the_agent_bootstrap_fetches_the_invocation_probes_and_answers_it() {
    let rt = runtime();
    let target = healthy_target(&rt);
    let aggregator = rt.block_on(StandIn::builder().key("k1", AGENT_KEY).start());
    let fleet = FleetToml::new("lambda-package")
        .probe("interval", &quoted("100ms"))
        .global(&target.url("/status"))
        .region("eu-west-1", &target.url("/status"))
        .vantage("eu-west-1")
        .aggregator("url", &quoted(&aggregator.url()))
        .build();
    let api = RuntimeApi::start().unwrap();
    let spool = temp_dir("lambda-spool");
    let spool_dir = spool.path().to_str().unwrap();
    let key = std::str::from_utf8(AGENT_KEY).unwrap();
    let (_function, _task) = start_function(
        &api,
        "agent",
        &[
            ("VANTAGE_CONFIG_TOML", &fleet),
            ("VANTAGE_AGENT_KEY", key),
            ("VANTAGE_SPOOL_DIR", spool_dir),
            // It stops at the last 1 s report boundary inside run_for: at least 2 s of probing.
            ("VANTAGE_RUN_FOR", "3s"),
        ],
    );
    let id = api.invoke(&serde_json::json!({}), unix_now_ms() + 30_000);
    let answer = api
        .wait_for_answer(&id, ANSWER_LIMIT)
        .expect("the invocation was answered");
    assert_eq!(answer.outcome, Outcome::Response, "{}", answer.body);
    let summary = answer.json();
    assert!(summary["probes"].as_u64().unwrap() >= 1, "{summary}");
    assert!(target.accepts() >= 1, "the target saw no probe");
    assert_eq!(summary["delivered"], summary["reports"], "{summary}");
    assert_eq!(summary["left_in_spool"], 0, "{summary}");
    assert_eq!(
        aggregator.stored().len() as u64,
        summary["reports"].as_u64().unwrap(),
        "{summary}"
    );
    // The environment stays warm: after answering, the runtime asks for the next invocation.
    vantage_testkit::eventually::wait_for_blocking("the next `next` call", ANSWER_LIMIT, || {
        api.next_calls() >= 2
    });
    assert_eq!(api.handed_out(), vec![id]);
}

#[test]
fn the_status_endpoint_bootstrap_answers_an_api_gateway_event() {
    let api = RuntimeApi::start().unwrap();
    let (_function, _task) =
        start_function(&api, "status-endpoint", &[("VANTAGE_REGION", "eu-west-1")]);
    let event = serde_json::json!({
        "version": "2.0",
        "routeKey": "GET /status",
        "rawPath": "/status",
        "rawQueryString": "",
        "headers": {"host": "api.example.com"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api2",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {"method": "GET", "path": "/status", "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "test"},
            "requestId": "req-2",
            "routeKey": "GET /status",
            "stage": "$default",
            "time": "01/May/2024:12:00:00 +0000",
            "timeEpoch": 1714564800000u64
        },
        "isBase64Encoded": false
    });
    let id = api.invoke(&event, unix_now_ms() + 30_000);
    let answer = api
        .wait_for_answer(&id, ANSWER_LIMIT)
        .expect("the invocation was answered");
    assert_eq!(answer.outcome, Outcome::Response, "{}", answer.body);
    let response = answer.json();
    assert_eq!(response["statusCode"], 200, "{response}");
}

#[test]
fn a_bootstrap_without_a_handler_says_which_to_set() {
    let api = RuntimeApi::start().unwrap();
    let (mut function, _task) = start_function(&api, "", &[]);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut function.0.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = function.0.wait().expect("bootstrap exits");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Handler to `agent` or `status-endpoint`"),
        "{stderr}"
    );
    assert_eq!(api.next_calls(), 0, "it asked for work it cannot do");
}
