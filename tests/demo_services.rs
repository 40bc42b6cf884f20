//! `vantage demo --services` as a user runs it: the flags checked before anything starts, and
//! a run whose events (`--events`) and summary say per service what happened. Judged by the
//! events and their order, not by how long anything took.

use std::process::{Command, Output, Stdio};
use std::time::Duration;
use vantage_testkit::dirs::temp_dir;

fn vantage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(args)
        .output()
        .expect("run vantage")
}

#[test]
fn services_and_service_faults_are_checked_before_anything_starts() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--services", ""], &["1 to 50"]),
        (&["--services", "orders,,rates"], &["empty name"]),
        (
            &["--services", "orders,orders"],
            &["\"orders\" is listed twice"],
        ),
        (
            &["--services", "or ders"],
            &["\"or ders\" is not a service name"],
        ),
        (
            &[
                "--services",
                "orders,payments",
                "--fail",
                "billing:eu-west-1@5",
            ],
            &["\"billing\"", "orders, payments"],
        ),
        (
            &["--services", "orders", "--slow", "orders:mars-1@5:+100"],
            &["\"mars-1\"", "us-east-1, eu-west-1, ap-southeast-1"],
        ),
        (
            &["--services", "orders", "--flaky", "orders:mars-1@5:0.5"],
            &["\"mars-1\"", "vantages"],
        ),
        (&["--fail", "payments:eu-west-1@5"], &["--services"]),
        (
            &["--services", "orders", "--recover", "orders:@5"],
            &["[SERVICE:]REGION@SECS"],
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["demo", "--no-live", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let out = vantage(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for e in *expected {
            assert!(stderr.contains(e), "{args:?}: want {e:?} in {stderr}");
        }
    }
    let fifty: Vec<String> = (0..51).map(|i| format!("s{i}")).collect();
    let out = vantage(&["demo", "--no-live", "--services", &fifty.join(",")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 50"));
}

#[test]
fn demo_services_takes_one_service_out_of_a_region_and_says_so_per_service() {
    let dir = temp_dir("demo-services");
    let events = dir.path().join("events.jsonl");
    let stdout_path = dir.path().join("stdout.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args([
            "demo",
            "--services",
            "orders,payments,rates",
            "--fail",
            "payments:eu-west-1@4",
            "--duration",
            "14",
            "--no-live",
            "--listen",
            "127.0.0.1:0",
            "--events",
        ])
        .arg(&events)
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("run vantage demo");
    // Bounded: one look every 100 ms, 90 s in all (the run itself is 14 s).
    let mut looks = 900;
    while child.try_wait().expect("wait").is_none() {
        if looks == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vantage demo --services still running after 90 s");
        }
        looks -= 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.wait().expect("status").success());
    let stdout = std::fs::read_to_string(&stdout_path).expect("stdout");
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .expect("events file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event a line"))
        .collect();
    let named = |name: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["event"] == name).collect()
    };
    let fault = named("fault");
    assert_eq!(fault.len(), 1);
    assert_eq!(fault[0]["service"], "payments");
    assert_eq!(fault[0]["region"], "eu-west-1");
    let outs = named("region_out");
    assert_eq!(outs.len(), 1, "{stdout}");
    assert_eq!(outs[0]["service"], "payments");
    assert_eq!(outs[0]["region"], "eu-west-1");
    assert!(outs[0]["t"].as_f64() > fault[0]["t"].as_f64());
    assert!(named("region_wide").is_empty(), "{stdout}");
    let last = named("weights").last().copied().expect("weights");
    assert_eq!(last["detail"]["payments/eu-west-1"], 0);
    for other in ["orders/eu-west-1", "rates/eu-west-1"] {
        assert!(last["detail"][other].as_u64() > Some(0), "{other}: {last}");
    }
    // The summary's section per service.
    assert!(
        stdout.contains("per service, Regions out and back:"),
        "{stdout}"
    );
    let line = |service: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(service))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("payments").contains("eu-west-1 out @"), "{stdout}");
    assert!(
        line("orders").contains("every Region stayed in"),
        "{stdout}"
    );
    assert!(line("rates").contains("every Region stayed in"), "{stdout}");
    assert!(stdout.contains("false transitions 0, flaps 0"), "{stdout}");
}
