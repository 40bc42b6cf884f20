//! The DNS probe against a real DNS server (BIND 9 on loopback): answers map to Regions with
//! their TTL, a missing name is outcome `dns`, a resolver that never answers is `timeout`.

use std::net::UdpSocket;
use std::time::Duration;
use vantage_probe::dns::DnsProber;
use vantage_protocol::config::{DnsPlan, DnsRecordType};
use vantage_protocol::{Outcome, Phase};
use vantage_testkit::dns::{DnsRecord, DnsServer};

const NAME: &str = "api.example.test.";

fn plan(name: &str, resolver: std::net::SocketAddr, timeout: Duration) -> DnsPlan {
    DnsPlan {
        name: name.to_owned(),
        record_type: DnsRecordType::A,
        resolvers: vec![resolver],
        interval: Duration::from_secs(1),
        timeout,
        answers: [
            ("127.0.0.10".to_owned(), "eu-west-1".to_owned()),
            (
                "euw1.regional.example.test".to_owned(),
                "eu-west-1".to_owned(),
            ),
            ("127.0.0.20".to_owned(), "us-east-1".to_owned()),
        ]
        .into(),
    }
}

#[tokio::test]
async fn answers_map_to_regions_and_failures_have_codes() {
    let server = DnsServer::start(
        "example.test.",
        &[
            DnsRecord::a(NAME, 30, "127.0.0.10"),
            DnsRecord::a(NAME, 30, "127.0.0.99"),
            DnsRecord::cname("cdn.example.test.", 30, "euw1.regional.example.test."),
            DnsRecord::a("euw1.regional.example.test.", 30, "127.0.0.11"),
        ],
    )
    .unwrap();
    let timeout = Duration::from_secs(3);
    let prober = DnsProber::new(&plan("api.example.test", server.addr, timeout)).unwrap();
    let r = prober.probe().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.failure);
    assert!(r.timings.get(Phase::Dns).is_some() && r.timings.get(Phase::Total).is_some());
    let dns = r.dns.unwrap();
    let (regions, unmatched) = dns.by_region();
    assert_eq!(regions.get("eu-west-1"), Some(&1));
    assert_eq!(unmatched, 1, "127.0.0.99 stands for no Region: {dns:?}");
    assert!(
        dns.answers.iter().all(|a| a.ttl <= 30 && a.ttl > 0),
        "{dns:?}"
    );

    // A CNAME chain: its target maps the answer to eu-west-1 although the question is A.
    let cname = DnsProber::new(&plan("cdn.example.test", server.addr, timeout)).unwrap();
    let r = cname.probe().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.failure);
    let (regions, unmatched) = r.dns.as_ref().unwrap().by_region();
    assert_eq!(regions.get("eu-west-1"), Some(&1), "{:?}", r.dns);
    assert_eq!(unmatched, 1, "the final address is not listed: {:?}", r.dns);

    let missing = DnsProber::new(&plan("nope.example.test", server.addr, timeout)).unwrap();
    let r = missing.probe().await;
    assert_eq!(r.outcome, Outcome::Dns, "{r:?}");
    assert!(r.dns.is_none() && r.timings.get(Phase::Total).is_none());
    assert_eq!(r.failure.unwrap().phase, Some(Phase::Dns));

    // A resolver that reads queries and never answers.
    let black_hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = DnsProber::new(&plan(
        "api.example.test",
        black_hole.local_addr().unwrap(),
        Duration::from_millis(300),
    ))
    .unwrap();
    let r = silent.probe().await;
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert!(r.timings.get(Phase::Dns).unwrap() < Duration::from_secs(3));
}

/// Without `resolvers` the prober reads the system's configuration (`/etc/resolv.conf`); it is
/// only built here, never asked, so the test sends nothing off the machine.
#[test]
fn without_resolvers_the_system_configuration_is_read() {
    if !std::path::Path::new("/etc/resolv.conf").is_file() {
        // hickory's error names the file: that is what an agent without one reports.
        let e = DnsProber::new(&DnsPlan {
            resolvers: Vec::new(),
            ..plan(
                "api.example.test",
                "127.0.0.1:53".parse().unwrap(),
                Duration::from_secs(1),
            )
        })
        .err()
        .expect("no system configuration");
        assert!(e.to_string().contains("resolv.conf"), "{e}");
        return;
    }
    DnsProber::new(&DnsPlan {
        resolvers: Vec::new(),
        ..plan(
            "api.example.test",
            "127.0.0.1:53".parse().unwrap(),
            Duration::from_secs(1),
        )
    })
    .unwrap();
}
