//! DNS evidence in the aggregator: answers from a real DNS server (BIND 9 on loopback),
//! resolved by the agent's DNS prober and reported as the agent reports them, show in
//! `GET /v1/state` per Region, next to the global endpoint's Region header — which layer shows
//! traffic where, and since which interval. A zone change shows in the DNS layer first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use vantage_agent::recorder::IntervalStats;
use vantage_agent::report::{build, ReportIdentity, TargetInterval};
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::config::AggregatorConfig;
use vantage_aggregator::service::{self, Aggregator};
use vantage_probe::dns::DnsProber;
use vantage_probe::{PhaseTimings, ProbeResult};
use vantage_protocol::auth;
use vantage_protocol::config::{FleetConfig, TargetKind};
use vantage_protocol::{Outcome, Phase};
use vantage_testkit::dns::{DnsRecord, DnsServer};
use vantage_testkit::fleet::{quoted, FleetToml};
use vantage_testkit::http::exchange;
use vantage_testkit::unix_now_ms;

const KEY: &str = "aggregator-dns-test-key-0123456789";
const REGIONS: [(&str, &str); 3] = [
    ("ap-southeast-1", "127.0.0.30"),
    ("eu-west-1", "127.0.0.10"),
    ("us-east-1", "127.0.0.20"),
];
const NAME: &str = "api.example.test.";

fn fleet(resolver: SocketAddr) -> FleetConfig {
    std::env::set_var("VANTAGE_TEST_DNS_AGG_KEY", KEY);
    let vantages: Vec<&str> = REGIONS.iter().map(|(r, _)| *r).collect();
    let mut fleet = FleetToml::new("orders-api")
        .aggregator("window", &quoted("5s"))
        .extra("[policy]\nfail_after = 2\n")
        .aggregator_key_from_env("k1", "VANTAGE_TEST_DNS_AGG_KEY", &vantages)
        .extra(&format!(
            "[dns]\nresolvers = [{}]\n",
            quoted(&resolver.to_string())
        ));
    for (region, answer) in REGIONS {
        fleet = fleet
            .region_with_vantage(region)
            .region_key("dns_answers", &format!("[{}]", quoted(answer)));
    }
    FleetConfig::parse(
        &fleet.global("https://api.example.test/status").build(),
        "test fleet",
    )
    .unwrap()
}

/// One interval of one vantage: three resolutions of the global name through `prober`, three
/// global-endpoint answers carrying `http_region` in the Region header, and each Region's
/// status target (eu-west-1's failing, so the aggregator takes it out).
async fn report(
    prober: &DnsProber,
    vantage: &str,
    seq: u64,
    start_ms: u64,
    http_region: &str,
) -> Vec<u8> {
    let mut dns = IntervalStats::new(3);
    let mut global = IntervalStats::new(3);
    for _ in 0..3 {
        dns.record(&prober.probe().await, Duration::ZERO);
        let mut t = PhaseTimings::default();
        t.set(Phase::Total, Duration::from_millis(20));
        let mut r = ProbeResult::synthetic(Outcome::Ok, t);
        r.status = Some(200);
        r.answered_by = Some(http_region.to_owned());
        global.record(&r, Duration::ZERO);
    }
    let identity = ReportIdentity {
        fleet: "orders-api".into(),
        agent_id: format!("vantage-{vantage}"),
        vantage: vantage.into(),
    };
    let status: Vec<(String, String, IntervalStats)> = REGIONS
        .iter()
        .map(|(region, _)| {
            let mut s = IntervalStats::new(3);
            for _ in 0..5 {
                let mut t = PhaseTimings::default();
                t.set(Phase::Total, Duration::from_millis(20));
                let outcome = if *region == "eu-west-1" {
                    Outcome::Timeout
                } else {
                    Outcome::Ok
                };
                let mut r = ProbeResult::synthetic(outcome, t);
                r.status = outcome.is_ok().then_some(200);
                s.record(&r, Duration::ZERO);
            }
            (format!("status:{region}"), region.to_string(), s)
        })
        .collect();
    let mut targets = vec![
        TargetInterval {
            id: "global",
            kind: TargetKind::Global,
            region: None,
            stats: &global,
        },
        TargetInterval {
            id: "dns",
            kind: TargetKind::Dns,
            region: None,
            stats: &dns,
        },
    ];
    for (id, region, stats) in &status {
        targets.push(TargetInterval {
            id,
            kind: TargetKind::Status,
            region: Some(region),
            stats,
        });
    }
    serde_json::to_vec(&build(
        &identity,
        seq,
        start_ms,
        Duration::from_secs(1),
        &targets,
    ))
    .unwrap()
}

async fn post(addr: SocketAddr, body: &[u8]) -> (u16, serde_json::Value) {
    let ts = (unix_now_ms() / 1000).to_string();
    let sig = auth::sign(KEY.as_bytes(), ts.parse().unwrap(), body);
    let headers = [
        ("content-type", "application/json"),
        (auth::HEADER_KEY_ID, "k1"),
        (auth::HEADER_TIMESTAMP, ts.as_str()),
        (auth::HEADER_SIGNATURE, sig.as_str()),
    ];
    let r = exchange(addr, "POST", "/v1/reports", &headers, body)
        .await
        .unwrap();
    (r.status, r.json())
}

async fn state(addr: SocketAddr) -> serde_json::Value {
    let r = exchange(addr, "GET", "/v1/state", &[], b"").await.unwrap();
    assert_eq!(r.status, 200);
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_says_which_layer_shows_traffic_where() {
    let mut dns =
        DnsServer::start("example.test.", &[DnsRecord::a(NAME, 1, "127.0.0.10")]).unwrap();
    let fleet = fleet(dns.addr);
    let prober = DnsProber::new(&fleet.dns_plan().unwrap()).unwrap();
    let log = vantage_testkit::log::JsonLines::default();
    let config = AggregatorConfig::from_fleet(fleet).unwrap();
    let agg =
        Arc::new(Aggregator::new(config, DryRun::new(), Some(Box::new(log.clone()))).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, rx) = watch::channel(false);
    tokio::spawn(service::serve(agg.clone(), listener, rx));

    let first = unix_now_ms() / 1000 * 1000 - 1000;
    let mut seq = 0;
    for (vantage, _) in REGIONS {
        seq += 1;
        let body = report(&prober, vantage, seq, first, "eu-west-1").await;
        let (status, reply) = post(addr, &body).await;
        assert_eq!(status, 200, "{reply}");
    }
    agg.evaluate(SystemTime::now()).await;
    let s = state(addr).await;
    let euw1 = &s["traffic"]["regions"]["eu-west-1"];
    assert_eq!(euw1["dns_share"], 1.0, "{s}");
    assert_eq!(euw1["http_share"], 1.0, "{s}");
    assert_eq!(euw1["confirmed_by"], serde_json::json!(["http", "dns"]));
    assert_eq!(euw1["dns_last_ms"], first);
    let use1 = &s["traffic"]["regions"]["us-east-1"];
    assert_eq!(
        (use1["dns_share"].as_f64(), use1["dns_last_ms"].is_null()),
        (Some(0.0), true)
    );
    assert_eq!(use1["confirmed_by"], serde_json::json!([]));
    assert_eq!(s["traffic"]["dns_unmatched"], 0);

    // Route 53 sends the name to us-east-1; once the 1 s TTL ran out the vantages' resolvers
    // see it, while the HTTP answers (the clients still connected) come from eu-west-1.
    dns.set(NAME, "A", &[DnsRecord::a(NAME, 1, "127.0.0.20")])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let second = unix_now_ms() / 1000 * 1000 - 1000;
    assert!(second > first);
    for (vantage, _) in REGIONS {
        seq += 1;
        let body = report(&prober, vantage, seq, second, "eu-west-1").await;
        let (status, reply) = post(addr, &body).await;
        assert_eq!(status, 200, "{reply}");
    }
    agg.evaluate(SystemTime::now()).await;
    let s = state(addr).await;
    let use1 = &s["traffic"]["regions"]["us-east-1"];
    assert_eq!(use1["confirmed_by"], serde_json::json!(["dns"]), "{s}");
    assert_eq!(use1["dns_last_ms"], second);
    assert!(use1["http_last_ms"].is_null());
    let euw1 = &s["traffic"]["regions"]["eu-west-1"];
    assert_eq!(
        euw1["dns_last_ms"], first,
        "DNS stopped answering eu-west-1: {s}"
    );
    assert_eq!(euw1["http_last_ms"], second);
    assert_eq!(euw1["moved_away"], serde_json::json!(["dns"]), "{s}");
    // eu-west-1 failed everywhere twice: it is out, and the decision log says DNS confirmed
    // traffic left it (HTTP has not yet: clients still land there).
    let out = s["decision"]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == "eu-west-1")
        .unwrap()
        .clone();
    assert_eq!(out["in_service"], false, "{s}");
    let moved = log.events_of("traffic_moved");
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(
        (
            &moved[0]["region"],
            &moved[0]["layer"],
            &moved[0]["last_seen_ms"]
        ),
        (
            &serde_json::json!("eu-west-1"),
            &serde_json::json!("dns"),
            &serde_json::json!(first)
        )
    );
    let (a, b) = (
        use1["dns_share"].as_f64().unwrap(),
        euw1["dns_share"].as_f64().unwrap(),
    );
    assert!(
        (a - 0.5).abs() < 1e-9 && (b - 0.5).abs() < 1e-9,
        "{a} {b}: half the window each"
    );

    // DNS answers naming a Region the fleet does not have are refused whole.
    let text = String::from_utf8(report(&prober, "eu-west-1", seq + 1, second, "eu-west-1").await)
        .unwrap()
        .replace("\"us-east-1\":3", "\"mars-north-1\":3");
    let (status, reply) = post(addr, text.as_bytes()).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply.to_string().contains("mars-north-1"), "{reply}");
}
