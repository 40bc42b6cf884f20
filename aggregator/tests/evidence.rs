//! What the aggregator makes of evidence beyond the Regions' verdicts, through signed reports
//! ingested and decisions made at chosen instants (no sockets, no clock): every Region failing
//! its deep check the same way while its shallow `/status` answers is a correlated failure whose
//! alert names the shared dependency; each vantage's control target reaches the window and
//! decides whether it is confirmed or suspect.

mod reports;

use reports::{ingest, stats, Sender};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_agent::recorder::IntervalStats;
use vantage_agent::report::TargetInterval;
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::decide::Suspicion;
use vantage_aggregator::ingest::Ingested;
use vantage_aggregator::model::AlertKind;
use vantage_aggregator::reload;
use vantage_aggregator::service::{Aggregator, Snapshot};
use vantage_probe::{PhaseTimings, ProbeResult};
use vantage_protocol::config::TargetKind;
use vantage_protocol::{Outcome, Phase};

const KEY: &str = "aggregator-evidence-key-0123456789";
const VANTAGES: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];
const REGIONS: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];

fn fleet_text(state_file: &Path) -> String {
    let mut t = format!(
        r#"[fleet]
name = "orders"
report_interval = "1s"
[policy]
fail_after = 2
[aggregator]
url = "http://127.0.0.1:1"
window = "3s"
evaluate_every = "1s"
state_file = {state:?}
[aggregator.keys.k1]
env = "VANTAGE_TEST_EVIDENCE_KEY"
vantages = ["ap-southeast-1", "eu-west-1", "us-east-1"]
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
            "[[regions]]\nname = \"{r}\"\nstatus_url = \"https://{r}.example.com/status\"\n\
             deep_url = \"https://{r}.example.com/status/deep\"\n"
        ));
    }
    for v in VANTAGES {
        t.push_str(&format!(
            "[[vantages]]\nregion = \"{v}\"\ncontrol_url = \"https://control.example.com/\"\n"
        ));
    }
    t
}

/// Thirty probes answered 503: a deep check whose dependency is down, probed more often than
/// the ten shallow probes (status and deep attempts count together in a vantage's verdict).
fn answered_503() -> IntervalStats {
    let mut s = IntervalStats::new(3);
    for _ in 0..30 {
        let mut t = PhaseTimings::default();
        t.set(Phase::Total, Duration::from_millis(20));
        let mut r = ProbeResult::synthetic(Outcome::HttpStatus, t);
        r.status = Some(503);
        s.record(&r, Duration::ZERO);
    }
    s
}

struct Fleet {
    agg: Aggregator<DryRun>,
    next_ms: u64,
    seq: u64,
    _dir: vantage_testkit::dirs::TempDir,
}

impl Fleet {
    fn start() -> Fleet {
        let dir = vantage_testkit::dirs::temp_dir("agg-evidence");
        let path = dir.path().join("fleet.toml");
        std::env::set_var("VANTAGE_TEST_EVIDENCE_KEY", KEY);
        std::fs::write(&path, fleet_text(&dir.path().join("state.json"))).unwrap();
        let config = reload::load(&path, None).unwrap();
        let agg = Aggregator::new(config, DryRun::new(), None).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Fleet {
            agg,
            next_ms: now.as_millis() as u64 / 1000 * 1000 - 60_000,
            seq: 1,
            _dir: dir,
        }
    }

    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.next_ms + 1_200)
    }

    /// Every vantage reports one interval: `/status` as `shallow`, `/status/deep` as `deep`,
    /// its control target failing when it is in `broken`; then the aggregator decides.
    fn interval(
        &mut self,
        shallow: &IntervalStats,
        deep: &IntervalStats,
        broken: &[&str],
    ) -> Snapshot {
        let ids: Vec<(String, String, &str)> = REGIONS
            .iter()
            .flat_map(|r| {
                [
                    (format!("status:{r}"), "status", *r),
                    (format!("deep:{r}"), "deep", *r),
                ]
            })
            .map(|(id, kind, r)| (id, kind.to_owned(), r))
            .collect();
        let (ok, failed) = (stats(false), stats(true));
        for v in VANTAGES {
            let mut targets: Vec<TargetInterval<'_>> = ids
                .iter()
                .map(|(id, kind, region)| TargetInterval {
                    id,
                    kind: if kind == "status" {
                        TargetKind::Status
                    } else {
                        TargetKind::Deep
                    },
                    region: Some(region),
                    stats: if kind == "status" { shallow } else { deep },
                })
                .collect();
            targets.push(TargetInterval {
                id: "control",
                kind: TargetKind::Control,
                region: None,
                stats: if broken.contains(&v) { &failed } else { &ok },
            });
            self.seq += 1;
            let sender = Sender {
                fleet: "orders",
                vantage: v,
                key_id: "k1",
                key: KEY.as_bytes(),
            };
            let r = ingest(
                &self.agg,
                &sender,
                self.seq,
                self.next_ms,
                &targets,
                self.now(),
            );
            assert!(matches!(r, Ok(Ingested::Accepted { .. })), "{v}: {r:?}");
        }
        let snapshot = self.agg.decide(self.now());
        self.next_ms += 1_000;
        snapshot
    }
}

#[test]
fn deep_checks_failing_the_same_way_everywhere_name_the_shared_dependency() {
    let mut fleet = Fleet::start();
    let (ok, deep_down) = (stats(false), answered_503());
    for _ in 0..3 {
        fleet.interval(&ok, &ok, &[]);
    }
    let mut alert = None;
    for _ in 0..5 {
        let s = fleet.interval(&ok, &deep_down, &[]);
        assert!(
            s.decision.transitions.is_empty(),
            "{:?}",
            s.decision.transitions
        );
        alert = alert.or_else(|| {
            s.decision
                .alerts
                .iter()
                .find(|a| a.kind == AlertKind::CorrelatedFailure)
                .cloned()
        });
    }
    let alert = alert.expect("a correlated failure");
    for needle in [
        "deep checks fail in every one of these Regions",
        "every one with http_status",
        "taking Regions out would not help",
    ] {
        assert!(
            alert.message.contains(needle),
            "{needle:?} missing: {}",
            alert.message
        );
    }
}

#[test]
fn control_targets_confirm_healthy_vantages_and_make_a_broken_one_suspect() {
    let mut fleet = Fleet::start();
    let ok = stats(false);
    let mut last = None;
    for _ in 0..4 {
        last = Some(fleet.interval(&ok, &ok, &["eu-west-1"]));
    }
    let s = last.unwrap();
    assert!(matches!(
        s.vantages.suspect.get("eu-west-1"),
        Some(Suspicion::ControlFailing { .. })
    ));
    assert_eq!(
        s.vantages
            .confirmed
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["ap-southeast-1", "us-east-1"]
    );
    assert!(s
        .active_alerts
        .iter()
        .any(|a| a.kind == AlertKind::VantageSuspect && a.region.as_deref() == Some("eu-west-1")));
    assert!(s.decision.regions.iter().all(|r| r.in_service));
}
