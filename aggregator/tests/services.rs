//! Several services in one fleet, decided each on its own: signed reports carrying every
//! service's targets are ingested and decisions made at chosen instants (no sockets, no clock).
//! One service failing in a Region moves only that service; a change cap hit by one service
//! never blocks another; a Region down for every service is one `region_wide` event; pins
//! address one service or all; a reload that adds a service leaves the others' state alone.

mod reports;

use reports::{ingest, stats, Sender};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_agent::report::TargetInterval;
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::ingest::Ingested;
use vantage_aggregator::model::{AlertKind, Pin};
use vantage_aggregator::overrides::{Caller, OverrideRequest};
use vantage_aggregator::reload;
use vantage_aggregator::service::Aggregator;
use vantage_protocol::config::TargetKind;
use vantage_testkit::log::JsonLines;

const KEY: &str = "aggregator-services-key-0123456789";
const ADMIN_KEY: &str = "aggregator-services-admin-0123456789";
const VANTAGES: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];
const REGIONS: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];

/// One `[[services]]` entry served in every Region; `policy` is an inline table or empty.
fn service(name: &str, policy: &str) -> String {
    let mut s = format!(
        "[[services]]\nname = \"{name}\"\nglobal = {{ url = \"https://{name}.example.com/status\" }}\n"
    );
    if !policy.is_empty() {
        s.push_str(&format!("policy = {policy}\n"));
    }
    for r in REGIONS {
        s.push_str(&format!(
            "[[services.regions]]\nname = \"{r}\"\nstatus_url = \"https://{name}-{r}.example.com/status\"\n"
        ));
    }
    s
}

fn fleet_text(services: &[String], state_file: &Path) -> String {
    let mut t = format!(
        r#"[fleet]
name = "shop"
report_interval = "1s"
[policy]
fail_after = 2
recover_after = 3
[aggregator]
url = "http://127.0.0.1:1"
window = "3s"
evaluate_every = "1s"
state_file = {state:?}
[aggregator.keys.k1]
env = "VANTAGE_TEST_SERVICES_KEY"
vantages = ["ap-southeast-1", "eu-west-1", "us-east-1"]
allow_shared = true
[aggregator.admin_keys.ops-alice]
env = "VANTAGE_TEST_SERVICES_ADMIN_KEY"
[agents.auth]
key_id = "k1"
"#,
        state = state_file.display().to_string()
    );
    for v in VANTAGES {
        t.push_str(&format!("[[vantages]]\nregion = \"{v}\"\n"));
    }
    for s in services {
        t.push_str(s);
    }
    t
}

fn write(path: &Path, text: &str) {
    std::env::set_var("VANTAGE_TEST_SERVICES_KEY", KEY);
    std::env::set_var("VANTAGE_TEST_SERVICES_ADMIN_KEY", ADMIN_KEY);
    std::fs::write(path, text).unwrap();
}

/// A test aggregator and the clock its reports and decisions follow.
struct Fleet {
    agg: Aggregator<DryRun>,
    log: JsonLines,
    next_ms: u64,
    seq: u64,
}

/// (service, Region) → (in service, weight).
type View = BTreeMap<(String, String), (bool, u8)>;

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
            seq: 1,
        }
    }

    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.next_ms + 1_200)
    }

    /// Every vantage reports one interval about every service's status targets (`failing`
    /// lists the `service/region` units that fail), then the aggregator decides.
    fn interval(&mut self, services: &[&str], failing: &[&str]) -> View {
        let mut units = Vec::new();
        for s in services {
            for r in REGIONS {
                let unit = format!("{s}/{r}");
                let failed = failing.contains(&unit.as_str());
                units.push((format!("{s}/status:{r}"), r.to_owned(), stats(failed)));
            }
        }
        let targets: Vec<TargetInterval<'_>> = units
            .iter()
            .map(|(id, region, s)| TargetInterval {
                id,
                kind: TargetKind::Status,
                region: Some(region),
                stats: s,
            })
            .collect();
        for v in VANTAGES {
            self.seq += 1;
            let sender = Sender {
                fleet: "shop",
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
            .decision
            .regions
            .iter()
            .map(|r| {
                (
                    (r.service.clone(), r.region.clone()),
                    (r.in_service, r.weight),
                )
            })
            .collect()
    }
}

fn at<'v>(view: &'v View, service: &str, region: &str) -> &'v (bool, u8) {
    &view[&(service.to_owned(), region.to_owned())]
}

#[test]
fn one_service_failing_in_a_region_moves_only_that_service() {
    let dir = vantage_testkit::dirs::temp_dir("agg-services-one");
    let path = dir.path().join("fleet.toml");
    let state = dir.path().join("state.json");
    write(
        &path,
        &fleet_text(&[service("orders", ""), service("payments", "")], &state),
    );
    let mut f = Fleet::start(&path);
    let both = ["orders", "payments"];
    let healthy = f.interval(&both, &[]);
    assert_eq!(healthy.len(), 6, "{healthy:?}");
    // Two failed intervals of three in the window make a down verdict; two of those, out.
    f.interval(&both, &["payments/eu-west-1"]);
    f.interval(&both, &["payments/eu-west-1"]);
    let view = f.interval(&both, &["payments/eu-west-1"]);
    assert_eq!(at(&view, "payments", "eu-west-1"), &(false, 0), "{view:?}");
    assert_eq!(
        at(&view, "orders", "eu-west-1"),
        at(&healthy, "orders", "eu-west-1")
    );
    assert!(at(&view, "orders", "eu-west-1").0);
    let outs = f.log.events_of("region_out");
    assert_eq!(outs.len(), 1, "{outs:?}");
    assert_eq!(outs[0]["service"], "payments");
    assert_eq!(outs[0]["region"], "eu-west-1");
    assert_eq!(outs[0]["region_wide"], false);
    assert!(f.log.events_of("region_wide").is_empty());
    // The state file keeps each unit apart.
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        saved["model"]["regions"]["payments/eu-west-1"]["in_service"],
        false
    );
    assert_eq!(
        saved["model"]["regions"]["orders/eu-west-1"]["in_service"],
        true
    );
}

#[test]
fn a_change_cap_hit_by_one_service_never_blocks_another() {
    let dir = vantage_testkit::dirs::temp_dir("agg-services-cap");
    let path = dir.path().join("fleet.toml");
    let state = dir.path().join("state.json");
    write(
        &path,
        &fleet_text(
            // One change each: with a shared budget payments' change would hold orders'. Two
            // of payments' Regions fail close together here, so the correlated-failure rule
            // (tested on its own) is off to let the change cap be what holds.
            &[
                service("orders", "{ max_changes = 1, correlated_fraction = 0 }"),
                service("payments", "{ max_changes = 1, correlated_fraction = 0 }"),
            ],
            &state,
        ),
    );
    let mut f = Fleet::start(&path);
    let both = ["orders", "payments"];
    f.interval(&both, &[]);
    // payments spends its one change on eu-west-1.
    f.interval(&both, &["payments/eu-west-1"]);
    f.interval(&both, &["payments/eu-west-1"]);
    let view = f.interval(&both, &["payments/eu-west-1"]);
    assert!(!at(&view, "payments", "eu-west-1").0);
    // ap-southeast-1 then fails for both: orders takes it out, payments is held by its cap.
    let failing = [
        "payments/eu-west-1",
        "payments/ap-southeast-1",
        "orders/ap-southeast-1",
    ];
    f.interval(&both, &failing);
    f.interval(&both, &failing);
    let view = f.interval(&both, &failing);
    assert!(!at(&view, "orders", "ap-southeast-1").0, "{view:?}");
    assert!(at(&view, "payments", "ap-southeast-1").0, "{view:?}");
    let held: Vec<serde_json::Value> = f
        .log
        .events_of("alert")
        .into_iter()
        .filter(|a| a["kind"] == serde_json::json!(AlertKind::ChangeLimit))
        .collect();
    assert!(!held.is_empty());
    assert!(held.iter().all(|a| a["service"] == "payments"), "{held:?}");
}

#[test]
fn a_region_down_for_every_service_is_one_region_wide_event() {
    let dir = vantage_testkit::dirs::temp_dir("agg-services-wide");
    let path = dir.path().join("fleet.toml");
    let state = dir.path().join("state.json");
    write(
        &path,
        &fleet_text(
            &[
                service("orders", ""),
                service("payments", ""),
                service("rates", ""),
            ],
            &state,
        ),
    );
    let mut f = Fleet::start(&path);
    let all = ["orders", "payments", "rates"];
    f.interval(&all, &[]);
    let failing = ["orders/eu-west-1", "payments/eu-west-1", "rates/eu-west-1"];
    for _ in 0..4 {
        f.interval(&all, &failing);
    }
    let wide = f.log.events_of("region_wide");
    assert_eq!(wide.len(), 1, "one line while it lasts: {wide:?}");
    assert_eq!(wide[0]["region"], "eu-west-1");
    assert_eq!(wide[0]["state"], "down");
    assert_eq!(
        wide[0]["services"],
        serde_json::json!(["orders", "payments", "rates"])
    );
    let outs = f.log.events_of("region_out");
    assert_eq!(outs.len(), 3);
    assert!(outs.iter().all(|o| o["region_wide"] == true), "{outs:?}");
    // Healthy again: the Region-wide condition clears with one line.
    for _ in 0..2 {
        f.interval(&all, &[]);
    }
    let wide = f.log.events_of("region_wide");
    assert_eq!(wide.len(), 2, "{wide:?}");
    assert_eq!(wide[1]["state"], "cleared");
    // Two services down in a Region the third still serves is not Region-wide.
    f.interval(&all, &["orders/us-east-1", "payments/us-east-1"]);
    f.interval(&all, &["orders/us-east-1", "payments/us-east-1"]);
    assert_eq!(f.log.events_of("region_wide").len(), 2);
}

#[test]
fn pins_name_one_service_or_every_service_in_a_region() {
    let dir = vantage_testkit::dirs::temp_dir("agg-services-pins");
    let path = dir.path().join("fleet.toml");
    let state = dir.path().join("state.json");
    write(
        &path,
        &fleet_text(&[service("orders", ""), service("payments", "")], &state),
    );
    let mut f = Fleet::start(&path);
    let both = ["orders", "payments"];
    f.interval(&both, &[]);
    let caller = Caller {
        key_id: "ops-alice",
        peer: "127.0.0.1:9".parse().unwrap(),
    };
    let pin = |n: u32, key: &str, service: Option<&str>| OverrideRequest {
        nonce: format!("services-test-nonce-{n:08}"),
        pin: [(key.to_owned(), Some(Pin::Down))].into_iter().collect(),
        service: service.map(str::to_owned),
        ..OverrideRequest::default()
    };
    let now = f.now();
    let o = f
        .agg
        .set_overrides(caller, pin(1, "payments/us-east-1", None), now)
        .unwrap();
    assert_eq!(o.pinned.keys().collect::<Vec<_>>(), ["payments/us-east-1"]);
    let o = f
        .agg
        .set_overrides(caller, pin(2, "ap-southeast-1", Some("orders")), now)
        .unwrap();
    assert!(o.pinned.contains_key("orders/ap-southeast-1"));
    assert!(!o.pinned.contains_key("payments/ap-southeast-1"));
    let o = f
        .agg
        .set_overrides(caller, pin(3, "eu-west-1", None), now)
        .unwrap();
    assert!(
        o.pinned.contains_key("orders/eu-west-1") && o.pinned.contains_key("payments/eu-west-1")
    );
    let view = f.interval(&both, &[]);
    assert!(!at(&view, "payments", "us-east-1").0);
    assert!(at(&view, "orders", "us-east-1").0);
    assert!(!at(&view, "orders", "ap-southeast-1").0);
    assert!(at(&view, "payments", "ap-southeast-1").0);
    // Unknown names are refused with what exists.
    let e = f
        .agg
        .set_overrides(caller, pin(4, "eu-west-1", Some("billing")), now)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown service \"billing\""), "{e}");
    let e = f
        .agg
        .set_overrides(caller, pin(5, "billing/eu-west-1", None), now)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown Region"), "{e}");
}

#[test]
fn a_reload_adding_a_service_leaves_the_others_state_alone() {
    let dir = vantage_testkit::dirs::temp_dir("agg-services-reload");
    let path = dir.path().join("fleet.toml");
    let state = dir.path().join("state.json");
    write(
        &path,
        &fleet_text(&[service("orders", ""), service("payments", "")], &state),
    );
    let mut f = Fleet::start(&path);
    let both = ["orders", "payments"];
    f.interval(&both, &[]);
    f.interval(&both, &["payments/eu-west-1"]);
    f.interval(&both, &["payments/eu-west-1"]);
    let before: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    write(
        &path,
        &fleet_text(
            &[
                service("orders", ""),
                service("payments", ""),
                service("rates", ""),
            ],
            &state,
        ),
    );
    assert!(f.agg.reload_from(&path, None, "test"));
    let reloaded = f.log.events_of("config_reloaded");
    assert_eq!(reloaded[0]["services_added"], serde_json::json!(["rates"]));
    let after: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    for unit in [
        "orders/eu-west-1",
        "payments/eu-west-1",
        "payments/us-east-1",
    ] {
        assert_eq!(
            before["model"]["regions"][unit], after["model"]["regions"][unit],
            "{unit}"
        );
    }
    let all = ["orders", "payments", "rates"];
    let view = f.interval(&all, &["payments/eu-west-1"]);
    assert!(!at(&view, "payments", "eu-west-1").0);
    assert!(at(&view, "rates", "eu-west-1").0);
    assert_eq!(view.len(), 9);
}
