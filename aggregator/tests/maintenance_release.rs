//! After a maintenance window the Region is released to the usual rules, not put back by the
//! window's end: with healthy reports it comes back only after `recover_after` up evaluations,
//! and with failing ones it stays out. Signed reports ingested and decisions made at chosen
//! instants (no sockets, no clock).

mod reports;

use reports::{ingest, stats, Sender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_agent::report::TargetInterval;
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::ingest::Ingested;
use vantage_aggregator::reload;
use vantage_aggregator::service::Aggregator;
use vantage_protocol::config::{parse_rfc3339_ms, TargetKind};

const KEY: &str = "aggregator-release-key-0123456789";
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];
const START: &str = "2030-01-01T00:00:00Z";

fn start_ms() -> u64 {
    parse_rfc3339_ms(START).unwrap()
}

fn aggregator(dir: &std::path::Path) -> Aggregator<DryRun> {
    let mut t = format!(
        r#"[fleet]
name = "orders"
report_interval = "1s"
[policy]
fail_after = 2
recover_after = 4
[aggregator]
url = "http://127.0.0.1:1"
window = "3s"
evaluate_every = "1s"
state_file = {state:?}
[aggregator.keys.k1]
env = "VANTAGE_TEST_RELEASE_KEY"
vantages = ["eu-west-1", "us-east-1"]
allow_shared = true
[agents.auth]
key_id = "k1"
[global]
url = "https://orders.example.com/"
[[maintenance]]
start = "{START}"
duration = "30s"
regions = ["eu-west-1"]
reason = "database upgrade"
"#,
        state = dir.join("state.json").display().to_string()
    );
    for r in REGIONS {
        t.push_str(&format!(
            "[[regions]]\nname = \"{r}\"\nstatus_url = \"https://{r}.example.com/status\"\n[[vantages]]\nregion = \"{r}\"\n"
        ));
    }
    let path = dir.join("fleet.toml");
    std::env::set_var("VANTAGE_TEST_RELEASE_KEY", KEY);
    std::fs::write(&path, t).unwrap();
    Aggregator::new(reload::load(&path, None).unwrap(), DryRun::new(), None).unwrap()
}

/// Both vantages report the interval starting `offset_s` after the window's start, eu-west-1
/// failing or not, then the aggregator decides; whether eu-west-1 is in service.
fn interval(agg: &Aggregator<DryRun>, offset_s: u64, eu_fails: bool) -> bool {
    let start = start_ms() + offset_s * 1000;
    let (eu, us) = (stats(eu_fails), stats(false));
    let targets = [
        TargetInterval {
            id: "status:eu-west-1",
            kind: TargetKind::Status,
            region: Some("eu-west-1"),
            stats: &eu,
        },
        TargetInterval {
            id: "status:us-east-1",
            kind: TargetKind::Status,
            region: Some("us-east-1"),
            stats: &us,
        },
    ];
    let now = UNIX_EPOCH + Duration::from_millis(start + 1_200);
    for (k, v) in REGIONS.iter().enumerate() {
        let sender = Sender {
            fleet: "orders",
            vantage: v,
            key_id: "k1",
            key: KEY.as_bytes(),
        };
        let seq = 10 + offset_s * 2 + k as u64;
        let r = ingest(agg, &sender, seq, start, &targets, now);
        assert!(matches!(r, Ok(Ingested::Accepted { .. })), "{r:?}");
    }
    in_service_at(agg, now)
}

fn in_service_at(agg: &Aggregator<DryRun>, now: SystemTime) -> bool {
    agg.decide(now)
        .decision
        .regions
        .iter()
        .find(|r| r.region == "eu-west-1")
        .unwrap()
        .in_service
}

#[test]
fn after_the_window_a_healthy_region_earns_its_way_back_with_recover_after() {
    let dir = vantage_testkit::dirs::temp_dir("agg-release");
    let agg = aggregator(dir.path());
    // Healthy all along: held out for the window's 30 s however good its figures. The
    // decision for the interval starting at +s is made at +s+1.2 s, so +28 is the last one
    // inside the window and +29 the first after it.
    for s in 0..29 {
        assert!(!interval(&agg, s, false), "held out at +{s} s");
    }
    // Released at +29: its up streak starts again there, so it is back at the fourth up
    // evaluation (recover_after = 4), +32, not at once.
    let back: Vec<bool> = (29..40).map(|s| interval(&agg, s, false)).collect();
    assert_eq!(
        back.iter().position(|b| *b),
        Some(3),
        "in service from the release on: {back:?}"
    );
    assert!(back[3..].iter().all(|b| *b));
}

#[test]
fn after_the_window_a_failing_region_stays_out() {
    let dir = vantage_testkit::dirs::temp_dir("agg-release-fail");
    let agg = aggregator(dir.path());
    for s in 0..60 {
        assert!(!interval(&agg, s, s >= 20), "out at +{s} s");
    }
}
