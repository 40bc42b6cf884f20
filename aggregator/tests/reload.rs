//! A new fleet file put in force while the aggregator runs: signed reports ingested and
//! decisions made at chosen instants (no sockets, no clock), the file rewritten between them.
//! The decision state of Regions that stay is compared field by field in the state file.

mod reports;

use reports::{ingest, stats, Sender};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_agent::recorder::IntervalStats;
use vantage_agent::report::TargetInterval;
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::ingest::{IngestError, Ingested};
use vantage_aggregator::reload;
use vantage_aggregator::service::Aggregator;
use vantage_protocol::config::TargetKind;
use vantage_testkit::fleet::{quoted, FleetToml};
use vantage_testkit::log::JsonLines;

const KEY: &str = "aggregator-reload-key-0123456789";
const ADMIN_KEY: &str = "aggregator-reload-admin-0123456789";
const VANTAGES: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];

/// The fleet: `regions` served, three vantages with one key, `extra` appended.
fn fleet_text(regions: &[&str], state_file: &Path, extra: &str) -> String {
    let mut fleet = FleetToml::new("orders-api")
        .aggregator("window", &quoted("3s"))
        .aggregator("evaluate_every", &quoted("1s"))
        .aggregator("state_file", &quoted(&state_file.display().to_string()))
        .aggregator_key_from_env("k1", "VANTAGE_TEST_RELOAD_KEY", &VANTAGES)
        .extra("[policy]\nfail_after = 2\nrecover_after = 3\n")
        .extra(extra);
    for r in regions {
        fleet = fleet.region(r, &format!("https://{r}.example.com/status"));
    }
    for v in VANTAGES {
        fleet = fleet.vantage(v);
    }
    fleet.build()
}

fn write(path: &Path, text: &str) {
    std::env::set_var("VANTAGE_TEST_RELOAD_KEY", KEY);
    std::env::set_var("VANTAGE_TEST_RELOAD_ADMIN_KEY", ADMIN_KEY);
    std::fs::write(path, text).unwrap();
}

/// A test aggregator and the clock its reports and decisions follow.
struct Fleet {
    agg: Aggregator<DryRun>,
    log: JsonLines,
    /// Start of the next interval to report (Unix ms).
    next_ms: u64,
    seq: BTreeMap<String, u64>,
}

impl Fleet {
    fn start(path: &Path) -> Fleet {
        let log = JsonLines::default();
        let config = reload::load(path, None).unwrap();
        let agg = Aggregator::new(config, DryRun::new(), Some(Box::new(log.clone()))).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Fleet {
            agg,
            log,
            next_ms: now.as_millis() as u64 / 1000 * 1000 - 60_000,
            seq: BTreeMap::new(),
        }
    }

    /// One report from `vantage` for the next interval about `regions`, `failing` ones failing.
    fn report(
        &mut self,
        vantage: &str,
        regions: &[&str],
        failing: &[&str],
    ) -> Result<Ingested, IngestError> {
        let stats: Vec<(String, String, IntervalStats)> = regions
            .iter()
            .map(|r| {
                (
                    format!("status:{r}"),
                    r.to_string(),
                    stats(failing.contains(r)),
                )
            })
            .collect();
        let targets: Vec<TargetInterval<'_>> = stats
            .iter()
            .map(|(id, region, s)| TargetInterval {
                id,
                kind: TargetKind::Status,
                region: Some(region),
                stats: s,
            })
            .collect();
        let seq = self.seq.entry(vantage.to_owned()).or_insert(1);
        *seq += 1;
        let sender = Sender {
            fleet: "orders-api",
            vantage,
            key_id: "k1",
            key: KEY.as_bytes(),
        };
        ingest(&self.agg, &sender, *seq, self.next_ms, &targets, self.now())
    }

    /// Just after the interval being reported ends.
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.next_ms + 1_200)
    }

    /// Every vantage reports one interval about `regions`, then the aggregator decides.
    fn interval(&mut self, regions: &[&str], failing: &[&str]) -> BTreeMap<String, (bool, u8)> {
        for v in VANTAGES {
            let r = self.report(v, regions, failing);
            assert!(matches!(r, Ok(Ingested::Accepted { .. })), "{v}: {r:?}");
        }
        let snapshot = self.agg.decide(self.now());
        self.next_ms += 1_000;
        snapshot
            .decision
            .regions
            .iter()
            .map(|r| (r.region.clone(), (r.in_service, r.weight)))
            .collect()
    }
}

/// Each Region's entry in the state file, as JSON.
fn persisted_regions(path: &Path) -> BTreeMap<String, serde_json::Value> {
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    state["model"]["regions"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn an_added_region_is_decided_and_the_others_keep_their_state() {
    let dir = vantage_testkit::dirs::temp_dir("agg-reload-add");
    let path = dir.path().join("fleet.toml");
    let state = dir.path().join("state.json");
    write(&path, &fleet_text(&["eu-west-1", "us-east-1"], &state, ""));
    let mut f = Fleet::start(&path);
    let two = ["eu-west-1", "us-east-1"];
    // eu-west-1 fails everywhere: out after two down evaluations.
    f.interval(&two, &["eu-west-1"]);
    let view = f.interval(&two, &["eu-west-1"]);
    assert_eq!(view["eu-west-1"], (false, 0), "{view:?}");
    // Good again: the first evaluation still sees two failed intervals of three in the
    // window (down), the second starts the up streak (three are needed to come back).
    f.interval(&two, &[]);
    let view = f.interval(&two, &[]);
    assert!(!view["eu-west-1"].0, "{view:?}");
    let before = persisted_regions(&state);
    assert_eq!(before.len(), 2);
    // Not in the fleet yet: a report about ap-southeast-1 is refused.
    let three = ["ap-southeast-1", "eu-west-1", "us-east-1"];
    assert!(matches!(
        f.report("us-east-1", &three, &[]),
        Err(IngestError::UnknownTarget(_))
    ));

    // The new file adds a Region and an admin key.
    write(
        &path,
        &fleet_text(
            &three,
            &state,
            "[aggregator.admin_keys]\nops = { env = \"VANTAGE_TEST_RELOAD_ADMIN_KEY\" }\n",
        ),
    );
    assert!(f.agg.reload_from(&path, None, "test"));
    let after = persisted_regions(&state);
    assert_eq!(
        after, before,
        "the state of the Regions that stay is untouched"
    );
    let events = f.log.events_of("config_reloaded");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0]["regions_added"],
        serde_json::json!(["ap-southeast-1"])
    );
    assert_eq!(events[0]["regions_removed"], serde_json::json!([]));
    assert_eq!(events[0]["admin_keys_added"], serde_json::json!(["ops"]));
    assert!(
        !events[0].to_string().contains(ADMIN_KEY),
        "no key material"
    );
    assert_eq!(f.agg.config().regions.len(), 3);
    assert!(f.agg.config().admin_keys.contains_key("ops"));

    // From now on the new Region is reported and decided; eu-west-1 keeps earning its way
    // back from where it was (two more up evaluations; a fresh state would be in at once).
    let view = f.interval(&three, &[]);
    assert_eq!(view.len(), 3, "{view:?}");
    assert!(
        view["ap-southeast-1"].0 && view["ap-southeast-1"].1 > 0,
        "{view:?}"
    );
    assert!(!view["eu-west-1"].0, "{view:?}");
    let view = f.interval(&three, &[]);
    assert!(
        view["eu-west-1"].0,
        "back after its third up evaluation: {view:?}"
    );
}

#[test]
fn a_removed_region_leaves_the_state_and_its_reports_are_refused() {
    let dir = vantage_testkit::dirs::temp_dir("agg-reload-remove");
    let path = dir.path().join("fleet.toml");
    let state = dir.path().join("state.json");
    let three = ["ap-southeast-1", "eu-west-1", "us-east-1"];
    write(&path, &fleet_text(&three, &state, ""));
    let mut f = Fleet::start(&path);
    f.interval(&three, &["ap-southeast-1"]);
    let view = f.interval(&three, &["ap-southeast-1"]);
    assert!(!view["ap-southeast-1"].0);
    let before = persisted_regions(&state);

    write(&path, &fleet_text(&["eu-west-1", "us-east-1"], &state, ""));
    assert!(f.agg.reload_from(&path, None, "test"));
    let after = persisted_regions(&state);
    assert_eq!(after.len(), 2, "{after:?}");
    for r in ["eu-west-1", "us-east-1"] {
        assert_eq!(after[r], before[r], "{r}");
    }
    let events = f.log.events_of("config_reloaded");
    assert_eq!(
        events[0]["regions_removed"],
        serde_json::json!(["ap-southeast-1"])
    );
    assert!(matches!(
        f.report("us-east-1", &three, &[]),
        Err(IngestError::UnknownTarget(_))
    ));
    let view = f.interval(&["eu-west-1", "us-east-1"], &[]);
    assert!(
        view.len() == 2 && !view.contains_key("ap-southeast-1"),
        "{view:?}"
    );
}

#[test]
fn a_broken_file_or_a_restart_key_changes_nothing() {
    let captured = JsonLines::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let dir = vantage_testkit::dirs::temp_dir("agg-reload-bad");
    let path = dir.path().join("fleet.toml");
    let state = dir.path().join("state.json");
    let two = ["eu-west-1", "us-east-1"];
    let good = fleet_text(&two, &state, "");
    write(&path, &good);
    let mut f = Fleet::start(&path);
    f.interval(&two, &["eu-west-1"]);
    f.interval(&two, &["eu-west-1"]);
    let before = persisted_regions(&state);

    // A policy value out of range, with the Region that would have been added.
    let broken = fleet_text(&["ap-southeast-1", "eu-west-1", "us-east-1"], &state, "")
        .replace("fail_after = 2", "fail_after = 2\nmax_failure_ratio = 7.0");
    let line = broken
        .lines()
        .position(|l| l.starts_with("max_failure_ratio"))
        .unwrap()
        + 1;
    write(&path, &broken);
    assert!(!f.agg.reload_from(&path, None, "test"));
    // The window cannot change while running: refused whole, even with a valid file.
    let window = good
        .replace("window = \"3s\"", "window = \"5s\"")
        .replace("[policy]\n", "[policy]\nmin_attempts = 5\n");
    write(&path, &window);
    assert!(!f.agg.reload_from(&path, None, "test"));

    let logged = captured.text();
    let expected = format!("{}:{line}: policy.max_failure_ratio", path.display());
    assert!(
        logged.contains(&expected),
        "want {expected:?} in:\n{logged}"
    );
    assert!(
        logged.contains("aggregator.window changed: restart the aggregator to apply it"),
        "{logged}"
    );
    assert!(f.log.events_of("config_reloaded").is_empty());
    let config = f.agg.config();
    assert_eq!(config.regions, ["eu-west-1", "us-east-1"]);
    assert_eq!(
        config.policy.min_attempts,
        vantage_aggregator::model::Policy::default().min_attempts
    );
    assert_eq!(persisted_regions(&state), before);
    // Still deciding on the old file: eu-west-1 stays out.
    let view = f.interval(&two, &[]);
    assert!(!view["eu-west-1"].0, "{view:?}");
}
