//! The targets beyond the HTTP status URLs, end to end through the example fleet file: the DNS
//! target and its answer → Region map, and Regions probed over TCP or gRPC; each mistake named
//! with its key.

use super::tests::*;
use super::*;

/// The example with `[dns]` and `dns_answers` spliced in (`extra` goes at the end; `answers`
/// after the eu-west-1 Region's status_url).
fn with_dns(dns: &str, answers: &str) -> String {
    EXAMPLE.replace(
        "status_url = \"https://euw1.example.com/status\"\n",
        &format!("status_url = \"https://euw1.example.com/status\"\n{answers}\n"),
    ) + "\n[dns]\n"
        + dns
}

#[test]
fn dns_target_maps_answers_to_regions() {
    let text = with_dns(
        "resolvers = [\"127.0.0.1:5353\"]\ninterval = \"2s\"\n",
        "dns_answers = [\"192.0.2.10\", \"Euw1.execute-api.example.com.\"]",
    );
    let c = FleetConfig::parse(&text, "fleet.toml").unwrap();
    let plan = c.dns_plan().unwrap();
    assert_eq!(plan.name, "api.example.com");
    assert_eq!(plan.record_type, DnsRecordType::A);
    assert_eq!(plan.resolvers, ["127.0.0.1:5353".parse().unwrap()]);
    assert_eq!(plan.interval, std::time::Duration::from_secs(2));
    // us-east-1 has no dns_answers: its status_url host stands for it.
    assert_eq!(plan.answers["use1.example.com"], "us-east-1");
    assert_eq!(plan.answers["192.0.2.10"], "eu-west-1");
    assert_eq!(plan.answers["euw1.execute-api.example.com"], "eu-west-1");
    assert!(
        !plan.answers.contains_key("euw1.example.com"),
        "listed answers replace the host"
    );
    let last = c.targets().pop().unwrap();
    assert_eq!((last.id.as_str(), last.kind), ("dns", TargetKind::Dns));
    assert!(FleetConfig::parse(EXAMPLE, "f")
        .unwrap()
        .dns_plan()
        .is_none());
}

#[test]
fn dns_mistakes_name_their_key() {
    let cases = [
        (with_dns("record_type = \"MX\"\n", ""), "dns.record_type"),
        (
            with_dns("resolvers = [\"127.0.0.1\"]\n", ""),
            "dns.resolvers[0]",
        ),
        (with_dns("name = \"not a name\"\n", ""), "dns.name"),
        (
            with_dns("", "dns_answers = [\"use1.example.com\"]"),
            "regions[1].dns_answers",
        ),
        (
            with_dns("record_type = \"CNAME\"\n", "dns_answers = [\"192.0.2.1\"]"),
            "regions[1].dns_answers",
        ),
        (
            with_dns("", "dns_answers = [\"a b\"]"),
            "regions[1].dns_answers",
        ),
        (
            EXAMPLE.replace(
                "status_url = \"https://euw1.example.com/status\"\n",
                "status_url = \"https://euw1.example.com/status\"\ndns_answers = [\"192.0.2.1\"]\n",
            ),
            "regions[1].dns_answers",
        ),
        (with_dns("ttl = 5\n", ""), "ttl"),
    ];
    for (text, key) in cases {
        let e = FleetConfig::parse(&text, "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("fleet.toml:"), "{e}");
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[test]
fn regions_may_probe_tcp_and_grpc_urls_with_ports() {
    let text = EXAMPLE
        .replace(
            "https://euw1.example.com/status",
            "grpcs://euw1.example.com:443/orders.v1.Orders",
        )
        .replace(
            "https://use1.example.com/status/deep",
            "tcps://use1-db.example.com:5432",
        );
    let config = FleetConfig::parse(&text, "fleet.toml").unwrap();
    let urls: Vec<_> = config
        .targets()
        .into_iter()
        .map(|t| t.url.get_ref().clone())
        .collect();
    assert!(urls.contains(&"tcps://use1-db.example.com:5432".to_owned()));

    for (bad, why) in [
        ("tcp://euw1.example.com", "needs a host and a port"),
        ("grpc://euw1.example.com:0/x", "needs a host and a port"),
        ("tcp://:25", "needs a host and a port"),
        ("gopher://euw1.example.com:70", "grpcs://"),
    ] {
        let e = error_of(&EXAMPLE.replace("https://euw1.example.com/status", bad));
        assert!(
            e.contains("fleet.toml:21: regions[1].status_url") && e.contains(why),
            "{bad}: {e}"
        );
    }
    // Only Region targets take them: the aggregator's URL stays http(s).
    let e = error_of(&EXAMPLE.replace(
        "https://aggregator.example.com",
        "tcp://aggregator.example.com:443",
    ));
    assert!(e.contains("aggregator.url"), "{e}");
}
