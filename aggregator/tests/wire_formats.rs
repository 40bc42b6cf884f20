//! Both histogram encodings through a whole aggregator: reports as today's agents send them
//! (plain V2 for small histograms), as older agents sent them (V2-deflate always), and a mix in
//! one report are accepted and decided on identically, down to each vantage's latency; so is a
//! body whose strings carry JSON escapes (ingest parses strings borrowed from the body, and
//! falls back to owned ones for those).

mod reports;

use reports::{ingest_body, ingest_report, Sender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_agent::recorder::IntervalStats;
use vantage_agent::report::{build, ReportIdentity, TargetInterval};
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::ingest::Ingested;
use vantage_aggregator::model::RegionObservation;
use vantage_aggregator::reload;
use vantage_aggregator::service::Aggregator;
use vantage_probe::{PhaseTimings, ProbeResult};
use vantage_protocol::config::TargetKind;
use vantage_protocol::histogram::{decode_base64, encode_base64_deflate};
use vantage_protocol::report::IntervalReport;
use vantage_protocol::{Outcome, Phase};

const KEY: &str = "aggregator-wire-key-0123456789abc";
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];

fn fleet_text(state_file: &std::path::Path) -> String {
    let mut t = format!(
        r#"[fleet]
name = "orders"
report_interval = "1s"
[aggregator]
url = "http://127.0.0.1:1"
window = "3s"
evaluate_every = "1s"
state_file = {state:?}
[aggregator.keys.k1]
env = "VANTAGE_TEST_WIRE_KEY"
vantages = ["eu-west-1", "us-east-1"]
allow_shared = true
[agents.auth]
key_id = "k1"
[global]
url = "https://orders.example.com/"
"#,
        state = state_file.display().to_string()
    );
    for r in REGIONS {
        t.push_str(&format!(
            "[[regions]]\nname = \"{r}\"\nstatus_url = \"https://{r}.example.com/status\"\n[[vantages]]\nregion = \"{r}\"\n"
        ));
    }
    t
}

/// `n` ok probes spread over 10..10+n ms: small `n` encodes as plain V2, large as V2-deflate.
fn probes(n: u64) -> IntervalStats {
    let mut s = IntervalStats::new(3);
    for i in 0..n {
        let mut t = PhaseTimings::default();
        t.set(Phase::Total, Duration::from_micros(10_000 + i * 37));
        let mut r = ProbeResult::synthetic(Outcome::Ok, t);
        r.status = Some(200);
        s.record(&r, Duration::ZERO);
    }
    s
}

/// Every histogram of `report` re-encoded as V2-deflate, as agents before the change sent it.
fn as_old_agent(mut report: IntervalReport, only_first_target: bool) -> IntervalReport {
    for (i, t) in report.targets.iter_mut().enumerate() {
        if only_first_target && i > 0 {
            continue;
        }
        for text in t.histograms.values_mut() {
            *text = encode_base64_deflate(&decode_base64(text).unwrap()).unwrap();
        }
    }
    report
}

/// What an aggregator decides from three intervals of reports, each made by `shape`.
fn observed(
    shape: impl Fn(IntervalReport) -> IntervalReport,
    escaped: bool,
) -> (Vec<RegionObservation>, Vec<String>) {
    let dir = vantage_testkit::dirs::temp_dir("agg-wire");
    let path = dir.path().join("fleet.toml");
    std::env::set_var("VANTAGE_TEST_WIRE_KEY", KEY);
    std::fs::write(&path, fleet_text(&dir.path().join("state.json"))).unwrap();
    let agg = Aggregator::new(reload::load(&path, None).unwrap(), DryRun::new(), None).unwrap();
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        / 1000
        * 1000
        - 30_000;
    let (few, many) = (probes(6), probes(400));
    let mut formats = Vec::new();
    for (k, vantage) in REGIONS.iter().enumerate() {
        for i in 0..3u64 {
            let interval = start + i * 1000;
            let targets = [
                TargetInterval {
                    id: "status:eu-west-1",
                    kind: TargetKind::Status,
                    region: Some("eu-west-1"),
                    stats: &few,
                },
                TargetInterval {
                    id: "status:us-east-1",
                    kind: TargetKind::Status,
                    region: Some("us-east-1"),
                    stats: &many,
                },
            ];
            let identity = ReportIdentity {
                fleet: "orders".into(),
                agent_id: format!("vantage-{vantage}"),
                vantage: (*vantage).into(),
            };
            let report = shape(build(
                &identity,
                1 + i + 10 * k as u64,
                interval,
                Duration::from_secs(1),
                &targets,
            ));
            for t in &report.targets {
                formats.extend(t.histograms.values().map(|h| h[..5].to_owned()));
            }
            let sender = Sender {
                fleet: "orders",
                vantage,
                key_id: "k1",
                key: KEY.as_bytes(),
            };
            let now = UNIX_EPOCH + Duration::from_millis(interval + 1_200);
            let r = if escaped {
                // `\u0073` is `s`: the same target ids, written with an escape.
                let body = serde_json::to_string(&report)
                    .unwrap()
                    .replace("\"status:", "\"\\u0073tatus:");
                assert!(body.contains("u0073tatus"));
                ingest_body(&agg, &sender, body.as_bytes(), now)
            } else {
                ingest_report(&agg, &sender, &report, now)
            };
            assert!(matches!(r, Ok(Ingested::Accepted { .. })), "{r:?}");
        }
    }
    let now = UNIX_EPOCH + Duration::from_millis(start + 3_200);
    (agg.window_view(now, 0.99, 0.5), formats)
}

#[test]
fn old_agents_new_agents_and_a_mix_are_read_alike() {
    let (new, new_formats) = observed(|r| r, false);
    let (old, old_formats) = observed(|r| as_old_agent(r, false), false);
    let (mixed, _) = observed(|r| as_old_agent(r, true), false);
    let (escaped, _) = observed(|r| r, true);
    // Today's agent sends the few-sample histogram plain, the 400-sample one deflated; the old
    // agent deflates every one ("HISTE" / "HISTF" are the two cookies in base64).
    assert!(new_formats.iter().any(|f| f == "HISTE"));
    assert!(new_formats.iter().any(|f| f == "HISTF"));
    assert!(old_formats.iter().all(|f| f == "HISTF"));
    assert!(new
        .iter()
        .all(|o| o.vantages.len() == 2 && o.vantages.iter().all(|v| v.attempts > 0)));
    assert_eq!(new, old);
    assert_eq!(new, mixed);
    assert_eq!(new, escaped);
    // Every report version an agent may write (1 without DNS or gRPC outcomes, as these are;
    // 2 and 3 from newer agents) is read alike, in both encodings.
    for version in
        vantage_protocol::report::MIN_WIRE_VERSION..=vantage_protocol::report::WIRE_VERSION
    {
        let labelled = |mut r: IntervalReport| {
            r.version = version;
            r
        };
        assert_eq!(observed(labelled, false).0, new, "version {version}");
        let old_agent = |r: IntervalReport| labelled(as_old_agent(r, false));
        assert_eq!(
            observed(old_agent, false).0,
            new,
            "version {version}, V2-deflate"
        );
    }
}
