//! A fleet of several services (`[[services]]`) run by one agent: real status servers on
//! loopback for every service, a real DNS server (BIND 9) answering each service's global
//! name, the aggregator stand-in. One scheduler probes every service's targets, one report per
//! interval carries them all under their `<service>/...` ids, each DNS target maps answers to
//! its own service's Regions, every metric names its service, and a reload adds and removes
//! whole services without touching the others. Real time, bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use vantage_agent::daemon::{self, AgentSettings};
use vantage_agent::push::PushConfig;
use vantage_agent::reload::FleetReload;
use vantage_protocol::config::FleetConfig;
use vantage_protocol::report::IntervalReport;
use vantage_runtime::reload::ReloadTrigger;
use vantage_testkit::aggregator::{Mode, StandIn};
use vantage_testkit::dns::{DnsRecord, DnsServer};
use vantage_testkit::fleet::quoted;
use vantage_testkit::log::JsonLines;
use vantage_testkit::{server, TestServer};

const KEY: &[u8] = b"test-key-0123456789abcdef";
/// The one address both services' names resolve to: each service's map says which of its
/// Regions it stands for, and the two maps disagree on purpose.
const SHARED_ANSWER: &str = "127.0.0.10";

async fn status_server(region: &str) -> TestServer {
    server()
        .header("x-vantage-region", region)
        .body(r#"{"status":"pass"}"#)
        .start()
        .await
}

/// One `[[services]]` entry: its global URL, its Regions (name, status URL, DNS answers) and,
/// optionally, its DNS target (name, resolver).
struct Svc<'a> {
    name: &'a str,
    global: String,
    regions: Vec<(&'a str, String, Option<&'a str>)>,
    dns: Option<(&'a str, SocketAddr)>,
}

impl Svc<'_> {
    fn toml(&self) -> String {
        let mut t = format!(
            "[[services]]\nname = {}\nglobal = {{ url = {} }}\n",
            quoted(self.name),
            quoted(&self.global)
        );
        if let Some((name, resolver)) = self.dns {
            t.push_str(&format!(
                "dns = {{ name = {}, resolvers = [{}], interval = \"200ms\", timeout = \"2s\" }}\n",
                quoted(name),
                quoted(&resolver.to_string())
            ));
        }
        for (region, url, answer) in &self.regions {
            t.push_str(&format!(
                "[[services.regions]]\nname = {}\nstatus_url = {}\n",
                quoted(region),
                quoted(url)
            ));
            if let Some(a) = answer {
                t.push_str(&format!("dns_answers = [{}]\n", quoted(a)));
            }
        }
        t
    }
}

/// A fleet of `services` probing every 100 ms, reporting every second, from eu-west-1.
fn fleet_text(services: &[Svc<'_>], aggregator: &str) -> String {
    let mut t = format!(
        "[fleet]\nname = \"shop\"\nreport_interval = \"1s\"\n[probe]\ninterval = \"100ms\"\n\
         [aggregator]\nurl = {}\n[agents.auth]\nkey_id = \"k1\"\n\
         [[vantages]]\nregion = \"eu-west-1\"\n",
        quoted(aggregator)
    );
    for s in services {
        t.push_str(&s.toml());
    }
    t
}

fn settings(
    fleet: FleetConfig,
    aggregator: &str,
    run_for: Duration,
    metrics: Option<tokio::net::TcpListener>,
) -> AgentSettings {
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
        metrics_listener: metrics,
        run_for: Some(run_for),
        fleet,
    }
}

/// Per target: (interval start, attempts) of every report, in order.
fn by_target(reports: &[IntervalReport]) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut out: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for r in reports {
        for t in &r.targets {
            out.entry(t.target.clone())
                .or_default()
                .push((r.interval_start_ms, t.attempts));
        }
    }
    out
}

fn attempts(series: &[(u64, u64)]) -> u64 {
    series.iter().map(|(_, n)| n).sum()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The value of the one series of `name` whose labels include all of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|r| r.starts_with('{'))
                && labels.iter().all(|want| l.contains(want))
        })
        .collect();
    assert_eq!(lines.len(), 1, "one {name} {labels:?} in:\n{text}");
    lines[0].rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_probes_every_service_and_reports_them_together() {
    let dns = DnsServer::start(
        "example.test.",
        &[
            DnsRecord::a("orders.example.test.", 1, SHARED_ANSWER),
            DnsRecord::a("payments.example.test.", 1, SHARED_ANSWER),
        ],
    )
    .unwrap();
    let (orders_global, orders_use1, payments_global, payments_euw1) = (
        status_server("us-east-1").await,
        status_server("us-east-1").await,
        status_server("eu-west-1").await,
        status_server("eu-west-1").await,
    );
    let agg = StandIn::builder()
        .key("k1", KEY)
        .mode(Mode::Healthy)
        .start()
        .await;
    let text = fleet_text(
        &[
            Svc {
                name: "orders",
                global: orders_global.url("/status"),
                regions: vec![("us-east-1", orders_use1.url("/status"), Some(SHARED_ANSWER))],
                dns: Some(("orders.example.test", dns.addr)),
            },
            Svc {
                name: "payments",
                global: payments_global.url("/status"),
                regions: vec![(
                    "eu-west-1",
                    payments_euw1.url("/status"),
                    Some(SHARED_ANSWER),
                )],
                dns: Some(("payments.example.test", dns.addr)),
            },
        ],
        &agg.url(),
    );
    let fleet = FleetConfig::parse(&text, "services fleet").expect(&text);
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let (_signals, signals) = watch::channel(0u32);
    let summary = tokio::time::timeout(
        Duration::from_secs(20),
        daemon::run(
            settings(
                fleet,
                &agg.url(),
                Duration::from_millis(3_200),
                Some(metrics),
            ),
            signals,
        ),
    )
    .await
    .expect("the agent stops within its run_for")
    .unwrap();

    let reports = agg.reports();
    assert_eq!(reports.len() as u64, summary.reports);
    let every: BTreeSet<&str> = [
        "orders/global",
        "orders/status:us-east-1",
        "orders/dns",
        "payments/global",
        "payments/status:eu-west-1",
        "payments/dns",
    ]
    .into();
    // One report per interval, carrying both services' targets side by side.
    let whole = reports
        .iter()
        .filter(|r| {
            let ids: BTreeSet<&str> = r.targets.iter().map(|t| t.target.as_str()).collect();
            ids == every
        })
        .count();
    assert!(whole >= 2, "{reports:#?}");
    let starts: BTreeSet<u64> = reports.iter().map(|r| r.interval_start_ms).collect();
    assert_eq!(starts.len(), reports.len(), "one report per interval");
    for r in &reports {
        for t in &r.targets {
            assert!(every.contains(t.target.as_str()), "{}", t.target);
        }
    }

    // Every probe a server answered is reported once, under its service's id and Region.
    let seen = by_target(&reports);
    for (target, server) in [
        ("orders/global", &orders_global),
        ("orders/status:us-east-1", &orders_use1),
        ("payments/global", &payments_global),
        ("payments/status:eu-west-1", &payments_euw1),
    ] {
        assert_eq!(
            attempts(&seen[target]),
            server.requests() as u64,
            "{target}"
        );
    }
    let region_of = |id: &str| {
        reports
            .iter()
            .flat_map(|r| &r.targets)
            .find(|t| t.target == id)
            .and_then(|t| t.region.clone())
    };
    assert_eq!(
        region_of("payments/status:eu-west-1").as_deref(),
        Some("eu-west-1")
    );

    // Each DNS target resolved its own service's name and read the one shared answer through
    // its own service's map: us-east-1 for orders, eu-west-1 for payments.
    let mut dns_regions: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for t in reports.iter().flat_map(|r| &r.targets) {
        if let Some(d) = &t.dns {
            assert_eq!(d.unmatched, 0, "{}: {d:?}", t.target);
            let into = dns_regions.entry(t.target.as_str()).or_default();
            for (region, n) in &d.regions {
                *into.entry(region.clone()).or_default() += n;
            }
        }
    }
    let regions = |id: &str| dns_regions[id].keys().cloned().collect::<Vec<_>>();
    assert_eq!(regions("orders/dns"), ["us-east-1"], "{dns_regions:?}");
    assert_eq!(regions("payments/dns"), ["eu-west-1"], "{dns_regions:?}");

    // Every per-target series names its service beside the target.
    let scrape = vantage_testkit::http::exchange(metrics_addr, "GET", "/metrics", &[], b"")
        .await
        .expect("scrape /metrics");
    let text = scrape.body;
    let ok = r#"outcome="ok""#;
    for (service, target, server) in [
        ("orders", "orders/status:us-east-1", &orders_use1),
        ("payments", "payments/status:eu-west-1", &payments_euw1),
    ] {
        let service = format!("service=\"{service}\"");
        let target = format!("target=\"{target}\"");
        assert_eq!(
            value(&text, "vantage_probe_total", &[&service, &target, ok]),
            server.requests() as f64
        );
    }
    let answers = value(
        &text,
        "vantage_dns_answers_total",
        &[
            r#"service="payments""#,
            r#"target="payments/dns""#,
            r#"region="eu-west-1""#,
        ],
    );
    assert!(answers >= 1.0, "{text}");
    for line in text.lines().filter(|l| l.contains("target=\"")) {
        assert!(line.contains("service=\""), "no service label: {line}");
    }
    drop(dns);
}

#[tokio::test]
async fn a_reload_adds_and_removes_whole_services_and_leaves_the_others_alone() {
    let log = JsonLines::default();
    let _guard = tracing::subscriber::set_default(log.subscriber());
    let (orders_global, orders_euw1, payments_global, payments_euw1, rates_global, rates_use1) = (
        status_server("eu-west-1").await,
        status_server("eu-west-1").await,
        status_server("eu-west-1").await,
        status_server("eu-west-1").await,
        status_server("us-east-1").await,
        status_server("us-east-1").await,
    );
    let agg = StandIn::builder()
        .key("k1", KEY)
        .mode(Mode::Healthy)
        .start()
        .await;
    let orders = || Svc {
        name: "orders",
        global: orders_global.url("/status"),
        regions: vec![("eu-west-1", orders_euw1.url("/status"), None)],
        dns: None,
    };
    let payments = Svc {
        name: "payments",
        global: payments_global.url("/status"),
        regions: vec![("eu-west-1", payments_euw1.url("/status"), None)],
        dns: None,
    };
    let rates = Svc {
        name: "rates",
        global: rates_global.url("/status"),
        regions: vec![("us-east-1", rates_use1.url("/status"), None)],
        dns: None,
    };
    let dir = vantage_testkit::dirs::temp_dir("agent-reload-services");
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, fleet_text(&[orders(), payments], &agg.url())).unwrap();
    let fleet = FleetConfig::load(&path).unwrap();
    let (hangup, hangups) = watch::channel(0u64);
    let (_signals, signals) = watch::channel(0u32);
    let run = tokio::spawn(daemon::run_with_reload(
        settings(fleet, &agg.url(), Duration::from_millis(5_600), None),
        signals,
        Some(FleetReload {
            path: path.clone(),
            trigger: ReloadTrigger::new(hangups),
        }),
    ));

    // Mid-interval (.400 of a wall-clock second), well after the first probes: payments
    // leaves the file, rates arrives, orders stays as it was.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    tokio::time::sleep(Duration::from_millis((1_400 - now_ms() % 1_000) % 1_000)).await;
    let wall = now_ms() / 1000 * 1000;
    std::fs::write(&path, fleet_text(&[orders(), rates], &agg.url())).unwrap();
    let payments_before = payments_euw1.requests();
    hangup.send_modify(|n| *n += 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let payments_after = payments_euw1.requests();

    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the agent stops within its run_for")
        .unwrap()
        .unwrap();
    let logged = log.text();
    assert!(
        logged.contains(r#"added=["rates/global", "rates/status:us-east-1"]"#)
            && logged.contains("changed=[]")
            && logged.contains(r#"removed=["payments/global", "payments/status:eu-west-1"]"#),
        "{logged}"
    );

    let reports = agg.reports();
    let seen = by_target(&reports);
    // Nothing lost, nothing twice, for the service kept, the one removed and the one added.
    for (target, server) in [
        ("orders/global", &orders_global),
        ("orders/status:eu-west-1", &orders_euw1),
        ("payments/global", &payments_global),
        ("payments/status:eu-west-1", &payments_euw1),
        ("rates/global", &rates_global),
        ("rates/status:us-east-1", &rates_use1),
    ] {
        let series = seen
            .get(target)
            .unwrap_or_else(|| panic!("{target}: {seen:?}"));
        assert_eq!(
            attempts(series),
            server.requests() as u64,
            "{target}: {series:?}"
        );
    }

    // Orders was not touched (neither changed nor restarted, as logged above): the interval in
    // progress at the reload kept the samples taken before it (ten probes a second), and it
    // went on being reported after it.
    let orders_series = &seen["orders/status:eu-west-1"];
    let (_, n) = orders_series
        .iter()
        .find(|(start, _)| *start == wall)
        .expect("orders reported for the reload's interval");
    assert!(*n >= 8, "{orders_series:?}");
    let after: Vec<u64> = orders_series
        .iter()
        .filter(|(s, _)| *s > wall)
        .map(|(_, n)| *n)
        .collect();
    assert!(
        after.len() >= 2 && after.iter().max() >= Some(&8),
        "{orders_series:?}"
    );

    // Payments stopped at the reload and was reported up to that interval, its last.
    assert!(
        payments_after <= payments_before + 2,
        "{payments_before} -> {payments_after}"
    );
    for target in ["payments/global", "payments/status:eu-west-1"] {
        let last = seen[target].iter().map(|(s, _)| *s).max().unwrap();
        assert_eq!(last, wall, "{target}: {:?}", seen[target]);
    }

    // Rates probed from the reload on, in the same reports as orders.
    let first_seen = seen["rates/status:us-east-1"]
        .iter()
        .map(|(s, _)| *s)
        .min()
        .unwrap();
    assert!(first_seen >= wall, "{:?}", seen["rates/status:us-east-1"]);
    assert!(rates_use1.requests() >= 10, "{}", rates_use1.requests());
    let together = reports.iter().any(|r| {
        let ids: BTreeSet<&str> = r.targets.iter().map(|t| t.target.as_str()).collect();
        ids.contains("orders/status:eu-west-1") && ids.contains("rates/status:us-east-1")
    });
    assert!(together, "{reports:#?}");
}
