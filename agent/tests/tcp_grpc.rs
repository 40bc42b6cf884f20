//! TCP and gRPC targets end to end: a fleet file whose Regions are probed as `tcp://` (a
//! banner server) and `grpc://` (a tonic health service, one service SERVING and one
//! NOT_SERVING); the agent daemon probes them and its reports carry their outcomes and phase
//! histograms like an HTTP target's, in report version 3 once a gRPC outcome code is counted.

use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use vantage_agent::daemon::{self, AgentSettings};
use vantage_agent::push::PushConfig;
use vantage_protocol::config::FleetConfig;
use vantage_protocol::report::{IntervalReport, TargetReport};
use vantage_protocol::{Outcome, Phase};
use vantage_testkit::aggregator::{Mode, StandIn};
use vantage_testkit::eventually::wait_for;
use vantage_testkit::fleet::{quoted, FleetToml};
use vantage_testkit::{banner_server, server};

const KEY: &[u8] = b"test-key-0123456789abcdef";

fn settings(fleet: FleetConfig, aggregator: &str) -> AgentSettings {
    AgentSettings {
        vantage: "eu-west-1".into(),
        agent_id: "vantage-eu-west-1".into(),
        push: PushConfig {
            aggregator: aggregator.parse().unwrap(),
            key_id: "k1".into(),
            key: KEY.to_vec(),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            ..PushConfig::default()
        },
        replicas: Vec::new(),
        spool: None,
        metrics_listener: None,
        run_for: None,
        fleet,
    }
}

/// Every report's entries for `target`.
fn entries<'a>(reports: &'a [IntervalReport], target: &str) -> Vec<(u32, &'a TargetReport)> {
    reports
        .iter()
        .flat_map(|r| {
            r.targets
                .iter()
                .filter(move |t| t.target == target)
                .map(move |t| (r.version, t))
        })
        .collect()
}

fn count(reports: &[IntervalReport], target: &str, outcome: Outcome) -> u64 {
    entries(reports, target)
        .iter()
        .map(|(_, t)| t.outcomes.get(&outcome).copied().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_tcp_and_grpc_targets_from_the_fleet_file() {
    let global = server().body("ok").start().await;
    let smtp = banner_server(b"220 use1 ESMTP ready\r\n", false).await;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("orders.Up", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("orders.Down", ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let agg = StandIn::builder()
        .key("k1", KEY)
        .mode(Mode::Healthy)
        .start()
        .await;
    let text = FleetToml::new("orders-api")
        .report_interval("1s")
        .probe("interval", &quoted("200ms"))
        .probe("first_byte_timeout", &quoted("1s"))
        .global(&global.url("/status"))
        .region("us-east-1", &format!("tcp://127.0.0.1:{}", smtp.port()))
        .region_key("deep_url", &quoted(&format!("grpc://{grpc}/orders.Down")))
        .region_key("probe", r#"{ expect_body = "ESMTP" }"#)
        .region("eu-west-1", &format!("grpc://{grpc}/orders.Up"))
        .vantage("eu-west-1")
        .aggregator("url", &quoted(&agg.url()))
        .build();
    let fleet = FleetConfig::parse(&text, "test fleet").unwrap();
    let (signals, rx) = watch::channel(0u32);
    let run = tokio::spawn(daemon::run(settings(fleet, &agg.url()), rx));

    wait_for(
        "reports with every new target counted",
        Duration::from_secs(20),
        || {
            let r = agg.reports();
            count(&r, "status:us-east-1", Outcome::Ok) >= 2
                && count(&r, "status:eu-west-1", Outcome::Ok) >= 2
                && count(&r, "deep:us-east-1", Outcome::NotServing) >= 2
        },
    )
    .await;
    signals.send_modify(|n| *n += 1);
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let reports = agg.reports();
    for (target, outcome, phases) in [
        (
            "status:us-east-1",
            Outcome::Ok,
            &[Phase::Connect, Phase::Ttfb, Phase::Transfer, Phase::Total][..],
        ),
        (
            "status:eu-west-1",
            Outcome::Ok,
            &[Phase::Connect, Phase::Ttfb, Phase::Transfer, Phase::Total],
        ),
        (
            "deep:us-east-1",
            Outcome::NotServing,
            // A failed probe's total is not a latency sample (see the recorder).
            &[Phase::Connect, Phase::Ttfb, Phase::Transfer],
        ),
    ] {
        let seen = entries(&reports, target);
        assert!(!seen.is_empty(), "{target} never reported");
        for (version, t) in seen {
            assert_eq!(
                t.outcomes.get(&outcome),
                Some(&t.attempts),
                "{target}: {t:?}"
            );
            let histograms = t.decode_histograms().unwrap();
            for p in phases {
                assert_eq!(
                    histograms.get(p).map(|h| h.len()),
                    Some(t.attempts),
                    "{target} {p}: {t:?}"
                );
            }
            assert!(!histograms.contains_key(&Phase::Tls), "{target}: no TLS");
            if t.attempts > 0 && outcome == Outcome::NotServing {
                assert_eq!(version, 3, "a gRPC outcome code needs version 3");
            }
        }
    }
    // The banner server saw no request: a banner check only reads.
    assert!(smtp.received().is_empty());
}
