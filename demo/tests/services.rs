//! `--services`: a `[[services]]` fleet in the demo, each service with its own endpoints in
//! every Region, run end to end (real status endpoints, agents, links and the aggregator on
//! loopback) and judged by the events and the status page's state, as the scenarios are: by
//! what happened and in which order, never by how long it took.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use vantage_demo::scenario::parse_region_at;
use vantage_demo::{DemoOptions, DemoSummary, Event, Outputs, Scheduled};

fn options(services: &[&str], faults: Vec<Scheduled>, secs: u64) -> DemoOptions {
    let mut o = DemoOptions::embedded_default();
    o.services = services.iter().map(|s| s.to_string()).collect();
    o.faults = faults;
    o.duration = Some(Duration::from_secs(secs));
    o
}

fn outputs(page: Option<TcpListener>) -> Outputs {
    Outputs {
        page,
        events_file: None,
        live: false,
        print_events: true,
        metrics: None,
    }
}

fn fail(spec: &str) -> Scheduled {
    parse_region_at("--fail", spec, false).unwrap()
}

/// `name` events about `service` in `region`.
fn about<'a>(s: &'a DemoSummary, name: &str, service: &str, region: &str) -> Vec<&'a Event> {
    s.events
        .iter()
        .filter(|e| {
            e.event == name
                && e.service.as_deref() == Some(service)
                && e.region.as_deref() == Some(region)
        })
        .collect()
}

fn named<'a>(s: &'a DemoSummary, name: &str) -> Vec<&'a Event> {
    s.events.iter().filter(|e| e.event == name).collect()
}

/// The last weight announced for `unit`.
fn last_weight(s: &DemoSummary, unit: &str) -> Option<u64> {
    named(s, "weights")
        .iter()
        .rev()
        .find_map(|e| e.detail[unit].as_u64())
}

/// The status page's `/api/state`, by a plain HTTP/1.0 GET.
async fn page_state(addr: std::net::SocketAddr) -> Option<serde_json::Value> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /api/state HTTP/1.0\r\nhost: demo\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out).to_string();
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

/// The page's entry for `service` in `region`.
fn entry<'a>(
    state: &'a serde_json::Value,
    service: &str,
    region: &str,
) -> Option<&'a serde_json::Value> {
    state["regions"]
        .as_array()?
        .iter()
        .find(|r| r["service"] == service && r["region"] == region)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_failing_in_a_region_leaves_the_others_there_in_service() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind page");
    let addr = listener.local_addr().expect("page addr");
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(vantage_demo::run(
        options(
            &["orders", "payments"],
            vec![fail("payments:eu-west-1@5")],
            60,
        ),
        outputs(Some(listener)),
        stopped,
    ));
    // The page shows a table per service; wait until it shows payments out in eu-west-1
    // (the run's own events say when; the bound only ends a test that would hang).
    let bound = Instant::now() + Duration::from_secs(50);
    let state = loop {
        assert!(Instant::now() < bound, "the page never showed payments out");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(state) = page_state(addr).await else {
            continue;
        };
        if entry(&state, "payments", "eu-west-1").is_some_and(|r| r["in_service"] == false) {
            break state;
        }
    };
    let _ = stop.send(true);
    let s = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the demo stops")
        .expect("the demo task")
        .expect("the demo runs");
    print!("{}", s.render());

    assert_eq!(state["services"], serde_json::json!(["orders", "payments"]));
    let orders = entry(&state, "orders", "eu-west-1").expect("orders/eu-west-1 on the page");
    assert_eq!(orders["in_service"], true, "{state}");
    assert!(orders["weight"].as_u64() > Some(0), "{state}");
    assert_eq!(orders["unit"], "orders/eu-west-1");
    assert_eq!(entry(&state, "payments", "eu-west-1").unwrap()["weight"], 0);

    // The fault named payments alone; payments went out there once, orders never.
    let faults = named(&s, "fault");
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].service.as_deref(), Some("payments"));
    assert_eq!(
        faults[0].detail["units"],
        serde_json::json!(["payments/eu-west-1"])
    );
    assert_eq!(
        about(&s, "region_out", "payments", "eu-west-1").len(),
        1,
        "{}",
        s.render()
    );
    let outs = named(&s, "region_out");
    assert_eq!(
        outs.len(),
        1,
        "only payments/eu-west-1 went out: {}",
        s.render()
    );
    assert!(outs[0].t > faults[0].t);
    assert!(named(&s, "region_in").is_empty());
    assert!(
        named(&s, "region_wide").is_empty(),
        "one service down is not Region-wide"
    );
    // Routing: payments' weight in eu-west-1 is 0, orders' there keeps its weight.
    assert_eq!(last_weight(&s, "payments/eu-west-1"), Some(0));
    assert!(
        last_weight(&s, "orders/eu-west-1") > Some(0),
        "{}",
        s.render()
    );
    assert_eq!((s.false_transitions, s.flaps), (0, 0));
    // The summary says, per service, which Regions went out.
    let by = |name: &str| s.services.iter().find(|o| o.service == name).unwrap();
    let eu = |name: &str| {
        by(name)
            .regions
            .iter()
            .find(|r| r.region == "eu-west-1")
            .unwrap()
    };
    assert_eq!(eu("payments").out.len(), 1);
    assert!(eu("orders").out.is_empty());
    assert!(
        s.render().contains("every Region stayed in"),
        "{}",
        s.render()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_failing_for_every_service_is_one_region_wide_event_naming_them_all() {
    let (_stop, stopped) = watch::channel(false);
    let s = vantage_demo::run(
        options(&["orders", "payments"], vec![fail("eu-west-1@5")], 16),
        outputs(None),
        stopped,
    )
    .await
    .expect("demo runs");
    print!("{}", s.render());
    let faults = named(&s, "fault");
    assert_eq!(faults[0].service, None, "a bare Region: every service");
    assert_eq!(
        faults[0].detail["units"],
        serde_json::json!(["orders/eu-west-1", "payments/eu-west-1"])
    );
    for service in ["orders", "payments"] {
        let out = about(&s, "region_out", service, "eu-west-1");
        assert_eq!(out.len(), 1, "{service}: {}", s.render());
        assert_eq!(last_weight(&s, &format!("{service}/eu-west-1")), Some(0));
        for other in ["us-east-1", "ap-southeast-1"] {
            assert!(about(&s, "region_out", service, other).is_empty());
        }
    }
    let wide = named(&s, "region_wide");
    assert_eq!(
        wide.len(),
        1,
        "one event, not one per service: {}",
        s.render()
    );
    assert_eq!(wide[0].region.as_deref(), Some("eu-west-1"));
    assert_eq!(wide[0].service, None);
    assert_eq!(
        wide[0].detail["services"],
        serde_json::json!(["orders", "payments"])
    );
    assert_eq!(wide[0].detail["state"], "down");
    assert!(wide[0].t > faults[0].t);
    assert_eq!((s.false_transitions, s.flaps, s.region_wide), (0, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovering_one_service_brings_only_it_back_and_clears_the_region_wide_outage() {
    let (_stop, stopped) = watch::channel(false);
    let s = vantage_demo::run(
        options(
            &["orders", "payments"],
            vec![
                fail("eu-west-1@4"),
                parse_region_at("--recover", "payments:eu-west-1@9", true).unwrap(),
            ],
            24,
        ),
        outputs(None),
        stopped,
    )
    .await
    .expect("demo runs");
    print!("{}", s.render());
    for service in ["orders", "payments"] {
        assert_eq!(
            about(&s, "region_out", service, "eu-west-1").len(),
            1,
            "{}",
            s.render()
        );
    }
    let back = about(&s, "region_in", "payments", "eu-west-1");
    assert_eq!(back.len(), 1, "payments comes back: {}", s.render());
    assert!(
        about(&s, "region_in", "orders", "eu-west-1").is_empty(),
        "orders still failed"
    );
    assert_eq!(last_weight(&s, "orders/eu-west-1"), Some(0));
    assert!(
        last_weight(&s, "payments/eu-west-1") > Some(0),
        "{}",
        s.render()
    );
    // The outage was Region-wide, then no longer: down, then cleared, once each.
    let wide: Vec<&str> = named(&s, "region_wide")
        .iter()
        .map(|e| e.detail["state"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(wide, ["down", "cleared"], "{}", s.render());
    assert_eq!((s.false_transitions, s.flaps, s.region_wide), (0, 0, 1));
    let recover = s
        .faults
        .iter()
        .find(|f| f.fault.starts_with("recover"))
        .unwrap();
    assert!(recover.back_after.is_some());
}
