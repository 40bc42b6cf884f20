//! End-to-end failover scenarios: real status endpoints, agents, links and the aggregator on
//! loopback, driven by the demo's fault timeline, judged by the events. Time is real (probes go
//! over real sockets); bounds are budgets in evaluations of the policy, not speed targets.

use std::time::Duration;
use tokio::sync::watch;
use vantage_demo::scenario::{parse_degrade, parse_flaky, parse_region_at, parse_slow};
use vantage_demo::{DemoOptions, DemoSummary, Event, Outputs, Scheduled};

fn options(faults: Vec<Scheduled>, secs: u64) -> DemoOptions {
    let mut o = DemoOptions::embedded_default();
    o.faults = faults;
    o.duration = Some(Duration::from_secs(secs));
    o
}

async fn run(options: DemoOptions) -> DemoSummary {
    let (_stop, rx) = watch::channel(false);
    let outputs = Outputs {
        page: None,
        events_file: None,
        live: false,
        print_events: std::env::var_os("VANTAGE_DEMO_PRINT_EVENTS").is_some(),
        metrics: None,
    };
    let summary = vantage_demo::run(options, outputs, rx)
        .await
        .expect("demo runs");
    print!("{}", summary.render());
    summary
}

fn events<'a>(s: &'a DemoSummary, name: &str, region: &str) -> Vec<&'a Event> {
    s.events
        .iter()
        .filter(|e| e.event == name && e.region.as_deref() == Some(region))
        .collect()
}

fn fail(spec: &str) -> Scheduled {
    parse_region_at("--fail", spec, false).unwrap()
}

fn recover(spec: &str) -> Scheduled {
    parse_region_at("--recover", spec, true).unwrap()
}

/// Detection budget of the default policy with 1 s intervals: the window (3 intervals) plus
/// the interval in progress to see a majority of failures, fail_after (2) evaluations, and
/// two seconds for report delivery and scheduling.
const DETECTION_BUDGET_SECS: f64 = 3.0 + 1.0 + 2.0 + 2.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_region_goes_out_traffic_moves_and_it_returns_only_after_recover_after() {
    let s = run(options(
        vec![fail("us-east-1@3"), recover("us-east-1@13")],
        32,
    ))
    .await;
    let out = events(&s, "region_out", "us-east-1");
    assert_eq!(out.len(), 1, "{}", s.render());
    let detected = s.faults[0].detected_after.expect("detected");
    assert!(
        detected <= DETECTION_BUDGET_SECS,
        "detected after {detected:.1} s"
    );
    let moved = events(&s, "traffic_moved", "us-east-1");
    assert_eq!(moved.len(), 1, "traffic left the failed Region");
    assert!(moved[0].t >= out[0].t);
    let back = events(&s, "region_in", "us-east-1");
    assert_eq!(back.len(), 1, "{}", s.render());
    // recover_after = 6 up evaluations, and the failures must first leave the window.
    let back_after = s.faults[1].back_after.expect("came back");
    assert!(
        back_after >= 6.0,
        "came back {back_after:.1} s after recovery: too soon"
    );
    assert_eq!((s.false_transitions, s.flaps), (0, 0));
    for other in ["eu-west-1", "ap-southeast-1"] {
        assert!(events(&s, "region_out", other).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flaky_vantage_never_takes_a_region_out() {
    let s = run(options(vec![parse_flaky("eu-west-1@2:0.5").unwrap()], 22)).await;
    assert_eq!(s.transitions, 0, "{}", s.render());
    assert_eq!(s.false_transitions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_broken_vantages_of_three_move_no_region() {
    // Two of the three vantages drop 60 % of their own connections, their control target's
    // too: without the broken-vantage rule they would make a quorum of two against every Region.
    let faults = vec![
        parse_flaky("eu-west-1@2:0.6").unwrap(),
        parse_flaky("ap-southeast-1@2:0.6").unwrap(),
    ];
    let s = run(options(faults, 22)).await;
    assert_eq!(s.transitions, 0, "{}", s.render());
    assert_eq!(s.false_transitions, 0);
    let suspects: Vec<&str> = s
        .events
        .iter()
        .filter(|e| e.event == "alert" && e.detail["kind"] == "vantage_suspect")
        .filter_map(|e| e.region.as_deref())
        .collect();
    for broken in ["eu-west-1", "ap-southeast-1"] {
        assert!(
            suspects.contains(&broken),
            "{broken} not suspect: {suspects:?}"
        );
    }
    assert!(!suspects.contains(&"us-east-1"), "{suspects:?}");
    // The control targets travel end to end: agent → report → window → the rule.
    assert!(
        s.events
            .iter()
            .any(|e| e.event == "alert" && e.reason.contains("control target failed")),
        "no suspicion from a control target: {}",
        s.render()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_failure_beside_two_broken_vantages_is_found_by_the_healthy_one() {
    let faults = vec![
        parse_flaky("eu-west-1@2:0.6").unwrap(),
        parse_flaky("ap-southeast-1@2:0.6").unwrap(),
        fail("us-east-1@8"),
    ];
    let s = run(options(faults, 24)).await;
    assert_eq!(
        events(&s, "region_out", "us-east-1").len(),
        1,
        "{}",
        s.render()
    );
    for other in ["eu-west-1", "ap-southeast-1"] {
        assert!(events(&s, "region_out", other).is_empty(), "{}", s.render());
    }
    let fault = s
        .faults
        .iter()
        .find(|f| f.fault.starts_with("fail"))
        .expect("the failure");
    // Detected at all is the point here; how fast is the demo's figure, not this test's.
    assert!(fault.detected_after.is_some(), "{}", s.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gray_region_stays_in_and_loses_weight() {
    // 30 % of eu-west-1's answers are 503s (spread evenly over each vantage's requests, so a
    // window of three or four probes holds at most half failures: below max_failure_ratio).
    let s = run(options(vec![parse_degrade("eu-west-1@4:0.3").unwrap()], 22)).await;
    assert_eq!(
        s.transitions,
        0,
        "a gray failure is not taken out: {}",
        s.render()
    );
    let weights: Vec<(f64, u64)> = s
        .events
        .iter()
        .filter(|e| e.event == "weights")
        .filter_map(|e| e.detail["eu-west-1"].as_u64().map(|w| (e.t, w)))
        .collect();
    let before = weights
        .iter()
        .rev()
        .find(|(t, _)| *t < 4.0)
        .map(|(_, w)| *w)
        .expect("weights before");
    let lowest = weights
        .iter()
        .filter(|(t, _)| *t > 4.0)
        .map(|(_, w)| *w)
        .min()
        .expect("weights after");
    assert!(
        lowest < before,
        "eu-west-1 weight {before} -> {lowest}: expected a drop with its errors"
    );
    assert!(lowest >= 10, "stays above the floor while in service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_region_stays_in_and_loses_weight() {
    let s = run(options(vec![parse_slow("eu-west-1@4:+300").unwrap()], 22)).await;
    assert_eq!(s.transitions, 0, "{}", s.render());
    let weights: Vec<(f64, u64)> = s
        .events
        .iter()
        .filter(|e| e.event == "weights")
        .filter_map(|e| e.detail["eu-west-1"].as_u64().map(|w| (e.t, w)))
        .collect();
    let before = weights
        .iter()
        .rev()
        .find(|(t, _)| *t < 4.0)
        .map(|(_, w)| *w)
        .expect("weights before");
    let after = weights.last().map(|(_, w)| *w).unwrap();
    assert!(
        after < before,
        "eu-west-1 weight {before} -> {after}: expected a drop"
    );
    assert!(after >= 10, "stays above the floor while in service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_region_fails_at_once_nothing_moves_and_one_alert_is_raised() {
    let faults = vec![
        fail("us-east-1@3"),
        fail("eu-west-1@3"),
        fail("ap-southeast-1@3"),
    ];
    let s = run(options(faults, 16)).await;
    let outs: usize = ["us-east-1", "eu-west-1", "ap-southeast-1"]
        .iter()
        .map(|r| events(&s, "region_out", r).len())
        .sum();
    assert_eq!(
        outs,
        0,
        "a correlated failure takes nothing out: {}",
        s.render()
    );
    let alerts: Vec<_> = s.events.iter().filter(|e| e.event == "alert").collect();
    assert_eq!(alerts.len(), 1, "one alert, raised once: {}", s.render());
    assert_eq!(alerts[0].detail["kind"], "correlated_failure");
    assert_eq!(alerts[0].detail["state"], "raised");
    assert_eq!(s.alerts, 1, "{}", s.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_region_is_held_out_without_ping_pong() {
    let mut faults = Vec::new();
    for k in 0..4 {
        faults.push(fail(&format!("us-east-1@{}", 3 + k * 6)));
        faults.push(recover(&format!("us-east-1@{}", 6 + k * 6)));
    }
    let s = run(options(faults, 34)).await;
    let outs = events(&s, "region_out", "us-east-1").len();
    let ins = events(&s, "region_in", "us-east-1").len();
    assert!(outs >= 1, "{}", s.render());
    assert!(
        outs + ins <= 2,
        "ping-pong: {outs} out, {ins} in\n{}",
        s.render()
    );
}
