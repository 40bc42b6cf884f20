//! `vantage notify test` as a user runs it: the real binary, a fleet file with a webhook that
//! accepts, a Slack-compatible one that answers 500 and an unreachable one; one line per sink,
//! exit 1 when any failed, 0 when only good sinks are chosen, and no URL secret on any output.

use std::process::{Command, Output};
use vantage_testkit::dirs::temp_dir;
use vantage_testkit::fleet::FleetToml;
use vantage_testkit::{closed_port, server};

fn vantage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(args)
        .env("VANTAGE_AGENT_KEY", "agent-key-0123456789abcdef")
        .env("VANTAGE_TEST_HOOK_SECRET", "hook-secret-0123456789abcdef")
        .output()
        .expect("run vantage")
}

#[test]
fn notify_test_reports_each_sink_and_fails_when_one_does() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let good = rt.block_on(server().status(204).start());
    let bad = rt.block_on(server().status(500).start());
    let dir = temp_dir("notify-cli");
    let fleet = dir.path().join("fleet.toml");
    let text = FleetToml::new("orders-api")
        .region_with_vantage("eu-west-1")
        .extra(&format!(
            "[[notify]]\nname = \"good\"\nkind = \"webhook\"\nurl = \"{}?token=TOKEN123\"\n\
             secret_env = \"VANTAGE_TEST_HOOK_SECRET\"\n\n\
             [[notify]]\nname = \"bad\"\nkind = \"slack\"\nurl = \"{}\"\nmax_attempts = 2\n\n\
             [[notify]]\nname = \"gone\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{}/x?token=TOKEN123\"\n\
             max_attempts = 1\ntimeout = \"2s\"\n",
            good.url("/hook"),
            bad.url("/slack"),
            closed_port()
        ))
        .build();
    std::fs::write(&fleet, text).unwrap();
    let config = fleet.to_str().unwrap();

    let out = vantage(&["notify", "test", "--config", config]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("good (webhook): ok after 1 attempt(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bad (slack): failed: answered HTTP 500"),
        "{stdout}"
    );
    assert!(
        stdout.contains("gone (webhook): failed: the request failed before an answer (connect)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("TOKEN123") && !stderr.contains("TOKEN123"),
        "{stdout}{stderr}"
    );
    assert_eq!(good.requests(), 1);
    assert_eq!(bad.requests(), 2, "max_attempts");

    let out = vantage(&["notify", "test", "--config", config, "--sink", "good"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let help = vantage(&["notify", "test", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Exit status") && help.contains("--sink"),
        "{help}"
    );
}
