//! Maintenance windows and pins with an expiry, decided at chosen instants (the decision takes
//! the time as an argument, so no test sleeps through a window): a window holds its Regions
//! out from its start to its end, is shown as upcoming before, tells `maintenance_started` and
//! `maintenance_ended` (decision log and notification), never breaks `min_healthy`, and lets
//! an explicit pin win; a pin with `until` holds until then and is removed after; the pure
//! overlay is property-tested.

use proptest::prelude::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::config::AggregatorConfig;
use vantage_aggregator::maintenance::{expire_pins, overlay, windows};
use vantage_aggregator::model::{Overrides, Pin, SetBy};
use vantage_aggregator::overrides::{Caller, OverrideRequest};
use vantage_aggregator::service::Aggregator;
use vantage_protocol::config::{format_rfc3339_ms, parse_rfc3339_ms, FleetConfig};
use vantage_testkit::fleet::FleetToml;
use vantage_testkit::log::JsonLines;

const START: &str = "2030-01-01T00:00:00Z";

fn at(offset_s: u64) -> SystemTime {
    UNIX_EPOCH
        + Duration::from_millis(parse_rfc3339_ms(START).unwrap())
        + Duration::from_secs(offset_s)
}

fn fleet(extra: &str) -> FleetConfig {
    std::env::set_var("VANTAGE_AGENT_KEY", "agent-key-0123456789abcdef");
    let text = FleetToml::new("orders-api")
        .region("eu-west-1", "https://eu-west-1.example.com/status")
        .region("us-east-1", "https://us-east-1.example.com/status")
        .vantage("eu-west-1")
        .extra(extra)
        .build();
    FleetConfig::parse(&text, "test fleet").unwrap()
}

fn aggregator(extra: &str) -> (Aggregator<DryRun>, JsonLines) {
    let log = JsonLines::default();
    let config = AggregatorConfig::from_fleet(fleet(extra)).unwrap();
    (
        Aggregator::new(config, DryRun::new(), Some(Box::new(log.clone()))).unwrap(),
        log,
    )
}

fn in_service(a: &Aggregator<DryRun>, now: SystemTime, region: &str) -> bool {
    let s = a.decide(now);
    s.decision
        .regions
        .iter()
        .find(|r| r.region == region)
        .unwrap()
        .in_service
}

#[test]
fn a_window_holds_its_region_out_from_start_to_end_and_says_so() {
    let (a, log) = aggregator(&format!(
        "[[maintenance]]\nstart = \"{START}\"\nduration = \"1h\"\nregions = [\"eu-west-1\"]\nreason = \"database upgrade\"\n"
    ));
    let before = a.decide(at(0) - Duration::from_secs(60));
    assert_eq!(before.maintenance.upcoming.len(), 1);
    assert!(before.maintenance.active.is_empty());
    assert!(in_service(&a, at(0) - Duration::from_secs(1), "eu-west-1"));

    let during = a.decide(at(0));
    let eu = during
        .decision
        .regions
        .iter()
        .find(|r| r.region == "eu-west-1")
        .unwrap();
    assert!(!eu.in_service, "held out at the window's start");
    assert_eq!(
        during.maintenance.active[0].held,
        vec!["eu-west-1".to_owned()]
    );
    assert!(during.maintenance.upcoming.is_empty());
    assert!(
        during.overrides.pinned.is_empty(),
        "a window is not an operator's pin"
    );
    let started = log.events_of("maintenance_started");
    assert_eq!(started.len(), 1);
    assert!(started[0]["reason"]
        .as_str()
        .unwrap()
        .contains("database upgrade"));
    assert!(!in_service(&a, at(3599), "eu-west-1"));
    assert_eq!(log.events_of("maintenance_started").len(), 1, "told once");

    // Released at the end, but not put back by the window's end: no data never moves a
    // Region, and its up streak starts again (recover_after up evaluations).
    let after = a.decide(at(3600));
    assert!(after.maintenance.active.is_empty());
    assert!(
        !after
            .decision
            .regions
            .iter()
            .find(|r| r.region == "eu-west-1")
            .unwrap()
            .in_service
    );
    let ended = log.events_of("maintenance_ended");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["units"], serde_json::json!(["eu-west-1"]));
}

#[test]
fn a_window_over_every_region_leaves_min_healthy_in_service() {
    let (a, log) = aggregator(&format!(
        "[[maintenance]]\nstart = \"{START}\"\nduration = \"10m\"\nregions = [\"eu-west-1\", \"us-east-1\"]\n"
    ));
    let s = a.decide(at(1));
    let in_service = s.decision.regions.iter().filter(|r| r.in_service).count();
    assert_eq!(in_service, 1, "min_healthy (1) stays in service");
    assert_eq!(s.maintenance.active[0].held, vec!["eu-west-1".to_owned()]);
    assert_eq!(
        s.maintenance.active[0].not_held,
        vec!["us-east-1".to_owned()]
    );
    let line = &log.events_of("maintenance_started")[0];
    assert!(
        line["reason"].as_str().unwrap().contains("min_healthy"),
        "{line}"
    );
}

#[test]
fn a_pin_with_until_holds_until_then_and_is_released_after() {
    let (a, log) = aggregator("");
    let caller = Caller {
        key_id: "ops-bob",
        peer: "127.0.0.1:1".parse().unwrap(),
    };
    let request = |nonce: &str, until: u64| OverrideRequest {
        nonce: nonce.into(),
        pin: [("us-east-1".to_owned(), Some(Pin::Down))].into(),
        until: Some(format_rfc3339_ms(until)),
        reason: Some("patching".into()),
        ..OverrideRequest::default()
    };
    let t0 = at(0);
    let t0_ms = t0.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    // An expiry in the past is refused.
    let e = a
        .set_overrides(caller, request("nonce-until-000001", t0_ms - 1), t0)
        .unwrap_err();
    assert!(e.to_string().contains("not in the future"), "{e}");
    a.set_overrides(caller, request("nonce-until-000002", t0_ms + 30_000), t0)
        .unwrap();
    let s = a.decide(at(10));
    assert!(
        !s.decision
            .regions
            .iter()
            .find(|r| r.region == "us-east-1")
            .unwrap()
            .in_service
    );
    assert_eq!(
        s.maintenance.pins_until["us-east-1"],
        format_rfc3339_ms(t0_ms + 30_000)
    );
    let s = a.decide(at(30));
    assert!(s.overrides.pinned.is_empty(), "expired at `until`");
    let ended = log.events_of("maintenance_ended");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["by"], "ops-bob");
}

#[test]
fn an_operator_pin_up_beats_a_window() {
    let config = AggregatorConfig::from_fleet(fleet(&format!(
        "[[maintenance]]\nstart = \"{START}\"\nduration = \"10m\"\nregions = [\"eu-west-1\"]\n"
    )))
    .unwrap();
    let ws = windows(&config);
    let mut ops = Overrides::default();
    ops.pinned.insert("eu-west-1".into(), Pin::Up);
    let now = parse_rfc3339_ms(START).unwrap() + 1;
    let o = overlay(&ops, &ws, &config.services, now);
    assert_eq!(o.overrides.pinned["eu-west-1"], Pin::Up);
    assert!(o.held[&0].is_empty());
}

fn set_by(until_ms: Option<u64>) -> SetBy {
    SetBy {
        by: "k".into(),
        at_ms: 0,
        reason: None,
        forced: false,
        until_ms,
    }
}

proptest! {
    /// Whatever the windows and the time: overlay only adds pins `down` to units of windows
    /// active then, never on a unit an operator pinned, and never leaves a service fewer than
    /// min(min_healthy, its units) units not pinned down when the operators' pins did not.
    #[test]
    fn overlay_holds_only_active_units_and_never_breaks_min_healthy(
        spans in proptest::collection::vec((0u64..100, 1u64..50, 0usize..4), 0..5),
        now in 0u64..160,
        pin_up in proptest::bool::ANY,
    ) {
        let regions = ["eu-west-1", "us-east-1", "ap-south-1"];
        let mut extra = String::new();
        for (start, dur, mask) in &spans {
            let rs: Vec<String> = regions.iter().enumerate()
                .filter(|(i, _)| (mask >> i) & 1 == 1 || (*mask == 0 && *i == 0))
                .map(|(_, r)| format!("\"{r}\"")).collect();
            extra += &format!(
                "[[maintenance]]\nstart = \"{}\"\nduration = \"{dur}s\"\nregions = [{}]\n",
                format_rfc3339_ms(start * 1000), rs.join(", ")
            );
        }
        std::env::set_var("VANTAGE_AGENT_KEY", "agent-key-0123456789abcdef");
        let mut b = FleetToml::new("orders-api");
        for r in regions {
            b = b.region(r, &format!("https://{r}.example.com/status"));
        }
        let text = b.vantage("eu-west-1").extra(&format!("[policy]\nmin_healthy = 2\n\n{extra}")).build();
        let config = AggregatorConfig::from_fleet(FleetConfig::parse(&text, "p").unwrap()).unwrap();
        let ws = windows(&config);
        let mut ops = Overrides::default();
        if pin_up {
            ops.pinned.insert("us-east-1".into(), Pin::Up);
        }
        let now_ms = now * 1000;
        let o = overlay(&ops, &ws, &config.services, now_ms);
        let active_units: Vec<&String> = ws.iter().filter(|w| w.active_at(now_ms)).flat_map(|w| &w.units).collect();
        for (unit, pin) in &o.overrides.pinned {
            if ops.pinned.get(unit) != Some(pin) {
                prop_assert!(active_units.contains(&unit));
                prop_assert!(!ops.pinned.contains_key(unit));
            }
        }
        let eligible = regions.iter().filter(|r| o.overrides.pinned.get(**r) != Some(&Pin::Down)).count();
        prop_assert!(eligible >= 2);
    }

    #[test]
    fn expire_pins_removes_exactly_the_pins_due(untils in proptest::collection::vec(proptest::option::of(0u64..100), 1..6), now in 0u64..100) {
        let mut o = Overrides::default();
        for (i, u) in untils.iter().enumerate() {
            o.pinned.insert(format!("r{i}"), Pin::Down);
            o.pinned_by.insert(format!("r{i}"), set_by(*u));
        }
        let gone = expire_pins(&mut o, now);
        let due = untils.iter().filter(|u| u.is_some_and(|u| u <= now)).count();
        prop_assert_eq!(gone.len(), due);
        prop_assert_eq!(o.pinned.len(), untils.len() - due);
        prop_assert!(o.pinned_by.values().all(|s| s.until_ms.is_none_or(|u| u > now)));
    }
}
