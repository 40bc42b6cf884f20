//! SIGTERM is how ECS, systemd and `docker stop` ask a process to stop (SIGKILL follows after
//! a grace period, 30 s by default on ECS). Every long-running command must take it as a clean
//! stop: exit 0, well within 5 s. (The agent's drain-and-flush on SIGTERM is covered in
//! `tests/cli.rs`; here each command is started for real and stopped the way ECS stops it.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const STOP_WITHIN: Duration = Duration::from_secs(5);
const START_WITHIN: Duration = Duration::from_secs(30);

/// A child whose stderr lines are forwarded on a channel, killed if the test fails early.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vantage"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("VANTAGE_CONFIG")
            .env_remove("VANTAGE_LISTEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start vantage");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a stderr line containing `text`.
    fn wait_for_line(&mut self, text: &str) {
        let deadline = std::time::SystemTime::now() + START_WITHIN;
        while std::time::SystemTime::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "no stderr line with {text:?} within {START_WITHIN:?}; saw:\n{}",
            self.seen.join("\n")
        );
    }

    /// Sends SIGTERM and asserts a clean exit within [`STOP_WITHIN`].
    fn terminate_cleanly(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let asked = std::time::SystemTime::now();
        loop {
            if let Some(exit) = self.child.try_wait().expect("wait for vantage") {
                self.seen.extend(self.lines.try_iter());
                assert_eq!(
                    exit.code(),
                    Some(0),
                    "exit after SIGTERM; stderr:\n{}",
                    self.seen.join("\n")
                );
                return;
            }
            let waited = asked.elapsed().unwrap_or_default();
            assert!(
                waited < STOP_WITHIN,
                "still running {waited:?} after SIGTERM; stderr:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now, for commands that print no bound address.
fn free_port() -> u16 {
    vantage_testkit::process::free_port().expect("a free loopback port")
}

#[test]
fn aggregator_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.toml");
    std::fs::write(&fleet, include_str!("../examples/fleet.toml")).unwrap();
    let mut aggregator = Running::spawn(
        &[
            "aggregator",
            "--config",
            fleet.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--backend",
            "dry-run",
            "--decision-log",
            dir.path().join("decisions.jsonl").to_str().unwrap(),
        ],
        // The example fleet's one key per vantage.
        &[
            ("VANTAGE_KEY_USE1", "signals-test-key-use1-0123456789"),
            ("VANTAGE_KEY_EUW1", "signals-test-key-euw1-0123456789"),
            ("VANTAGE_KEY_APSE1", "signals-test-key-apse1-0123456789"),
        ],
    );
    aggregator.wait_for_line("vantage aggregator: listening on");
    aggregator.terminate_cleanly();
}

#[test]
fn status_endpoint_exits_0_on_sigterm() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut endpoint = Running::spawn(
        &[
            "status-endpoint",
            "--listen",
            &listen,
            "--region",
            "eu-west-1",
        ],
        &[("VANTAGE_LOG", "info")],
    );
    // Ready once /status answers.
    let deadline = std::time::SystemTime::now() + START_WITHIN;
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            std::time::SystemTime::now() < deadline,
            "status endpoint never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    endpoint.seen.extend(endpoint.lines.try_iter());
    endpoint.terminate_cleanly();
}

#[test]
fn demo_exits_0_on_sigterm_with_its_summary() {
    let mut demo = Running::spawn(
        &[
            "demo",
            "--no-live",
            "--no-faults",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "600",
        ],
        &[],
    );
    demo.wait_for_line("vantage demo: status page on");
    demo.terminate_cleanly();
}

/// Started where AWS cannot be reached (no credentials, Route 53's endpoint refusing
/// connections), the aggregator says so in one line and keeps ingesting and deciding instead of
/// exiting; SIGTERM still stops it cleanly.
#[test]
fn aggregator_without_aws_keeps_deciding_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.toml");
    let closed = format!("http://127.0.0.1:{}", free_port());
    std::fs::write(
        &fleet,
        format!(
            r#"
[fleet]
name = "no-aws"
report_interval = "1s"
[global]
url = "https://api.example.com/status"
[[regions]]
name = "us-east-1"
status_url = "https://use1.example.com/status"
[[vantages]]
region = "us-east-1"
[aggregator]
url = "http://127.0.0.1:1"
backend = "route53"
[agents.auth]
key_id = "k1"
[route53]
hosted_zone_id = "Z0123456789ABCDEFGHIJ"
record_name = "api-origin.example.com."
endpoint_url = "{closed}"
[route53.regions.us-east-1]
set_identifier = "use1"
"#
        ),
    )
    .unwrap();
    let home = dir.path().to_str().unwrap();
    let mut aggregator = Running::spawn(
        &[
            "aggregator",
            "--config",
            fleet.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--decision-log",
            dir.path().join("decisions.jsonl").to_str().unwrap(),
        ],
        &[
            ("VANTAGE_AGENT_KEY", "signals-test-key-0123456789"),
            // No credentials anywhere the SDK looks.
            ("HOME", home),
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    aggregator.wait_for_line("no AWS credentials found");
    aggregator.wait_for_line("vantage aggregator: listening on");
    aggregator.terminate_cleanly();
}
