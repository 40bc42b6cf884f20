//! The DNS target end to end: a real DNS server (BIND 9 on loopback) serves the global name,
//! the agent daemon resolves it every 200 ms through its own resolver and reports the answers
//! per Region; the zone changes as Route 53 would change the record (a dynamic update) and the
//! agent's view follows once the old answer's 2 s TTL has run out, not before.

use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use vantage_agent::daemon::{self, AgentSettings};
use vantage_agent::push::PushConfig;
use vantage_protocol::config::{FleetConfig, TargetKind};
use vantage_protocol::report::IntervalReport;
use vantage_protocol::{Outcome, Phase};
use vantage_testkit::aggregator::{Mode, StandIn};
use vantage_testkit::dns::{DnsRecord, DnsServer};
use vantage_testkit::eventually::wait_for;
use vantage_testkit::fleet::{quoted, FleetToml};
use vantage_testkit::{server, unix_now_ms, TestServer};

const KEY: &[u8] = b"test-key-0123456789abcdef";
const NAME: &str = "api.example.test.";
const EUW1: &str = "127.0.0.10";
const USE1: &str = "127.0.0.20";
const TTL: u32 = 2;

async fn status_server(region: &str) -> TestServer {
    server()
        .header("x-vantage-region", region)
        .body(r#"{"status":"pass"}"#)
        .start()
        .await
}

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

/// The dns target of every report, by interval start.
fn dns_intervals(
    reports: &[IntervalReport],
) -> BTreeMap<u64, vantage_protocol::report::TargetReport> {
    let mut out = BTreeMap::new();
    for r in reports {
        for t in r.targets.iter().filter(|t| t.kind == TargetKind::Dns) {
            assert_eq!(r.version, 2, "a report with a dns target is version 2");
            out.insert(r.interval_start_ms, t.clone());
        }
    }
    out
}

/// Answers per Region in the intervals starting at or after `from_ms`.
fn answers_since(reports: &[IntervalReport], from_ms: u64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (start, t) in dns_intervals(reports).range(from_ms..) {
        let _ = start;
        for (r, n) in &t.dns.as_ref().unwrap().regions {
            *out.entry(r.clone()).or_default() += n;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_view_follows_the_zone_once_the_ttl_runs_out() {
    let mut dns = DnsServer::start("example.test.", &[DnsRecord::a(NAME, TTL, EUW1)]).unwrap();
    let (global, use1, euw1) = (
        status_server("eu-west-1").await,
        status_server("us-east-1").await,
        status_server("eu-west-1").await,
    );
    let agg = StandIn::builder()
        .key("k1", KEY)
        .mode(Mode::Healthy)
        .start()
        .await;
    let text = FleetToml::new("orders-api")
        .probe("interval", &quoted("500ms"))
        .global(&global.url("/status"))
        .region("us-east-1", &use1.url("/status"))
        .region_key("dns_answers", &format!("[{}]", quoted(USE1)))
        .region("eu-west-1", &euw1.url("/status"))
        .region_key("dns_answers", &format!("[{}]", quoted(EUW1)))
        .vantage("eu-west-1")
        .aggregator("url", &quoted(&agg.url()))
        .extra(&format!(
            "[dns]\nname = \"api.example.test\"\nresolvers = [{}]\ninterval = \"200ms\"\ntimeout = \"2s\"\n",
            quoted(&dns.addr.to_string())
        ))
        .build();
    let fleet = FleetConfig::parse(&text, "test fleet").unwrap();
    let (signals, rx) = watch::channel(0u32);
    let run = tokio::spawn(daemon::run(settings(fleet, &agg.url()), rx));

    // Every answer maps to eu-west-1: a 100 % share.
    wait_for(
        "two reports with DNS answers",
        Duration::from_secs(15),
        || dns_intervals(&agg.reports()).len() >= 2,
    )
    .await;
    let before = answers_since(&agg.reports(), 0);
    assert!(
        before.get("eu-west-1").copied().unwrap_or(0) >= 2,
        "{before:?}"
    );
    assert_eq!(before.len(), 1, "only eu-west-1: {before:?}");

    // Route 53 moves the record to us-east-1. The agent's resolver cached the old answer for
    // at most its TTL, so the new answer shows within TTL + one resolution interval.
    dns.set(NAME, "A", &[DnsRecord::a(NAME, TTL, USE1)])
        .unwrap();
    let changed_ms = unix_now_ms();
    assert_eq!(
        dns.query(NAME, "A").unwrap(),
        [USE1],
        "the server answers anew at once"
    );
    wait_for("an answer from us-east-1", Duration::from_secs(15), || {
        answers_since(&agg.reports(), 0).contains_key("us-east-1")
    })
    .await;
    // One more interval after the switch, so the last eu-west-1 answers are all in.
    let first_use1 = *dns_intervals(&agg.reports())
        .iter()
        .find(|(_, t)| t.dns.as_ref().unwrap().regions.contains_key("us-east-1"))
        .unwrap()
        .0;
    wait_for(
        "the interval after the switch",
        Duration::from_secs(10),
        || {
            dns_intervals(&agg.reports())
                .keys()
                .any(|start| *start > first_use1)
        },
    )
    .await;
    signals.send_modify(|n| *n += 1);
    let summary = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(summary.reports >= 4, "{summary:?}");

    let reports = agg.reports();
    let intervals = dns_intervals(&reports);
    let last_euw1 = *intervals
        .iter()
        .rev()
        .find(|(_, t)| t.dns.as_ref().unwrap().regions.contains_key("eu-west-1"))
        .unwrap()
        .0;
    // Not before the change (1 s intervals: the change's own interval may hold both)...
    assert!(
        first_use1 + 1_000 > changed_ms,
        "{first_use1} vs change at {changed_ms}"
    );
    // ...and the old answer gone once its TTL ran out (plus a resolution and an interval).
    let ttl_ms = u64::from(TTL) * 1_000;
    assert!(
        last_euw1 <= changed_ms + ttl_ms + 200,
        "eu-west-1 still answered in the interval at {last_euw1}, change at {changed_ms}"
    );
    let after = answers_since(&reports, first_use1 + 1_000);
    assert_eq!(after.keys().collect::<Vec<_>>(), ["us-east-1"], "{after:?}");
    for t in intervals.values() {
        let a = t.dns.as_ref().unwrap();
        assert_eq!(a.unmatched, 0, "{a:?}");
        assert!(
            a.ttl_max.unwrap() <= TTL,
            "TTLs are the remaining ones: {a:?}"
        );
        assert_eq!(t.outcomes.get(&Outcome::Ok), Some(&t.attempts), "{t:?}");
        assert_eq!(
            t.decode_histograms().unwrap()[&Phase::Dns].len(),
            t.attempts
        );
    }
    // The HTTP targets went on beside it, in the same reports.
    assert!(reports
        .iter()
        .any(|r| r.targets.iter().any(|t| t.target == "global")));
}

/// The cache within the TTL: right after a fresh resolution the zone changes, and every
/// resolution until the TTL runs out still gives the cached answer, with a shrinking TTL.
#[tokio::test]
async fn the_resolver_keeps_the_old_answer_until_its_ttl_runs_out() {
    use vantage_probe::dns::DnsProber;
    let ttl = 3;
    let mut dns = DnsServer::start("example.test.", &[DnsRecord::a(NAME, ttl, EUW1)]).unwrap();
    let text = FleetToml::new("orders-api")
        .global("https://api.example.test/status")
        .region("us-east-1", "https://use1.example.test/status")
        .region_key("dns_answers", &format!("[{}]", quoted(USE1)))
        .region("eu-west-1", "https://euw1.example.test/status")
        .region_key("dns_answers", &format!("[{}]", quoted(EUW1)))
        .vantage("eu-west-1")
        .extra(&format!(
            "[dns]\nresolvers = [{}]\n",
            quoted(&dns.addr.to_string())
        ))
        .build();
    let plan = FleetConfig::parse(&text, "test fleet")
        .unwrap()
        .dns_plan()
        .unwrap();
    assert_eq!(
        plan.name, "api.example.test",
        "the global URL's host by default"
    );
    let prober = DnsProber::new(&plan).unwrap();
    let region = |r: &vantage_probe::ProbeResult| {
        let (regions, _) = r.dns.as_ref().expect("answered").by_region();
        regions.keys().map(|r| r.to_string()).collect::<Vec<_>>()
    };
    let first = prober.probe().await;
    let cached_at = tokio::time::Instant::now();
    assert_eq!(region(&first), ["eu-west-1"]);
    dns.set(NAME, "A", &[DnsRecord::a(NAME, ttl, USE1)])
        .unwrap();
    let mut seen_ttls = Vec::new();
    // Until a second before the TTL ends (a whole second of margin for a slow machine).
    while cached_at.elapsed() < Duration::from_secs(u64::from(ttl) - 1) {
        let r = prober.probe().await;
        assert_eq!(region(&r), ["eu-west-1"], "changed before the TTL ran out");
        seen_ttls.push(r.dns.unwrap().answers[0].ttl);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen_ttls.len() >= 3, "{seen_ttls:?}");
    assert!(seen_ttls.windows(2).all(|w| w[1] <= w[0]), "{seen_ttls:?}");
    assert!(
        seen_ttls.last() < seen_ttls.first(),
        "the TTL counts down: {seen_ttls:?}"
    );
    // After it: the new answer, within a bounded wait.
    let mut now = region(&prober.probe().await);
    for _ in 0..40 {
        if now == ["us-east-1"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = region(&prober.probe().await);
    }
    assert_eq!(now, ["us-east-1"]);
    assert!(cached_at.elapsed() >= Duration::from_secs(u64::from(ttl) - 1));
}
