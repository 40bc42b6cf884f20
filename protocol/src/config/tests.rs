//! The fleet file end to end: the example parses into the planned targets, and each kind of
//! mistake comes back as one line with its file, line, key and fix.

use super::*;

pub const EXAMPLE: &str = r#"
[fleet]
name = "orders-api"
report_interval = "10s"

[probe]
interval = "5s"
expect_status = "200"

[global]
url = "https://api.example.com/status"

[[regions]]
name = "us-east-1"
status_url = "https://use1.example.com/status"
deep_url = "https://use1.example.com/status/deep"
probe = { interval = "2s" }

[[regions]]
name = "eu-west-1"
status_url = "https://euw1.example.com/status"

[[vantages]]
region = "us-east-1"

[[vantages]]
region = "eu-west-1"
agent_id = "probe-euw1"
key_id = "k-euw1"

[aggregator]
url = "https://aggregator.example.com"

[agents.auth]
key_id = "fleet-2026"

[aggregator.keys]
fleet-2026 = { env = "KEY_USE1", vantages = ["us-east-1"] }
k-euw1 = { env = "KEY_EUW1", vantages = ["eu-west-1"] }
"#;

#[test]
fn example_parses_and_plans_targets() {
    let c = FleetConfig::parse(EXAMPLE, "fleet.toml").unwrap();
    let t = c.targets();
    let ids: Vec<&str> = t.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "global",
            "status:us-east-1",
            "deep:us-east-1",
            "status:eu-west-1"
        ]
    );
    assert_eq!(
        t[0].settings.interval,
        Some(DurationText(Duration::from_secs(5)))
    );
    assert_eq!(
        t[1].settings.interval,
        Some(DurationText(Duration::from_secs(2)))
    );
    assert_eq!(
        t[1].settings.expect_status.as_ref().unwrap().get_ref(),
        "200"
    );
    assert_eq!(c.vantage("eu-west-1").unwrap().agent_id(), "probe-euw1");
    assert_eq!(
        c.vantage("us-east-1").unwrap().agent_id(),
        "vantage-us-east-1"
    );
    assert_eq!(c.report_interval(), Duration::from_secs(10));
}

pub(super) fn error_of(text: &str) -> String {
    FleetConfig::parse(text, "fleet.toml")
        .unwrap_err()
        .to_string()
}

#[test]
fn errors_name_the_key_the_line_and_the_fix() {
    let typo = EXAMPLE.replace("status_url = \"https://euw1", "statusurl = \"https://euw1");
    let e = error_of(&typo);
    assert!(e.contains("statusurl") && e.contains("line 21"), "{e}");

    let dup = EXAMPLE.replace("name = \"eu-west-1\"", "name = \"us-east-1\"");
    let e = error_of(&dup);
    assert!(
        e.contains("fleet.toml:20: regions[1].name") && e.contains("twice"),
        "{e}"
    );

    let scheme = EXAMPLE.replace(
        "https://euw1.example.com/status",
        "ftp://euw1.example.com/status",
    );
    let e = error_of(&scheme);
    assert!(
        e.contains("regions[1].status_url") && e.contains("https://"),
        "{e}"
    );

    let duration = EXAMPLE.replace("interval = \"5s\"", "interval = \"5 parsecs\"");
    let e = error_of(&duration);
    assert!(e.contains("line 7") && e.contains("bad duration"), "{e}");

    let fast = EXAMPLE.replace("interval = \"5s\"", "interval = \"10ms\"");
    let e = error_of(&fast);
    assert!(
        e.contains("global.url") && e.contains("minimum is 100ms"),
        "{e}"
    );

    let blocks = "[[vantages]]\nregion = \"us-east-1\"\n\n[[vantages]]\nregion = \"eu-west-1\"\nagent_id = \"probe-euw1\"\nkey_id = \"k-euw1\"\n";
    assert!(EXAMPLE.contains(blocks));
    let no_vantage = format!("vantages = []\n{}", EXAMPLE.replace(blocks, ""));
    let e = error_of(&no_vantage);
    assert!(
        e.contains("vantages") && e.contains("add at least one"),
        "{e}"
    );

    let e = error_of("this is not toml");
    assert!(e.starts_with("fleet.toml: line 1"), "{e}");
}

const ROUTE53: &str = r#"
[route53]
hosted_zone_id = "/hostedzone/Z0123456789ABCDEFGHIJ"
record_name = "API-Origin.example.com"
health = "control-plane"

[route53.regions.us-east-1]
set_identifier = "use1"
health_check_id = "hc-use1"

[route53.regions.eu-west-1]
set_identifier = "euw1"
health_check_id = "hc-euw1"
"#;

/// The example with a `[route53]` section, and the line of `needle` in it.
fn with_route53(section: &str, needle: &str) -> (String, usize) {
    let text = format!("{EXAMPLE}{section}");
    let line = text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    (text, line)
}

#[test]
fn route53_section_is_checked_and_normalised_at_load() {
    let (text, _) = with_route53(ROUTE53, "[route53]");
    let c = FleetConfig::parse(&text, "fleet.toml").unwrap();
    let s = c.route53.as_ref().unwrap().settings().unwrap();
    assert_eq!(s.hosted_zone_id, "Z0123456789ABCDEFGHIJ");
    assert_eq!(s.record_name, "api-origin.example.com.");
    assert_eq!(s.record_type, RecordType::Cname);
    assert_eq!(s.health, Route53Health::ControlPlane);
    assert_eq!(
        s.regions["eu-west-1"].health_check_id.as_deref(),
        Some("hc-euw1")
    );
}

#[test]
fn route53_errors_name_the_line_the_key_and_the_fix() {
    let (text, line) = with_route53(
        &ROUTE53.replace("\"control-plane\"", "\"both\""),
        "health = \"both\"",
    );
    assert_eq!(
        error_of(&text),
        format!(
            "fleet.toml:{line}: route53.health: \"both\" is not a health mode; \
             use \"data-plane\" or \"control-plane\""
        )
    );

    let (text, line) = with_route53(
        &ROUTE53.replace("health = ", "record_type = \"MX\"\nhealth = "),
        "record_type",
    );
    let e = error_of(&text);
    assert!(
        e.starts_with(&format!("fleet.toml:{line}: route53.record_type: \"MX\""))
            && e.contains("; use \"A\", \"AAAA\" or \"CNAME\""),
        "{e}"
    );

    // control-plane health without a health check: at the Region's table.
    let (text, line) = with_route53(
        &ROUTE53.replace("health_check_id = \"hc-euw1\"\n", ""),
        "set_identifier = \"euw1\"",
    );
    let e = error_of(&text);
    assert!(
        e.starts_with(&format!(
            "fleet.toml:{line}: route53.regions.eu-west-1.health_check_id: missing"
        )),
        "{e}"
    );

    let (text, line) = with_route53(&ROUTE53.replace("\"euw1\"", "\"use1\""), "\"use1\"");
    let e = error_of(&text);
    // BTreeMap order: eu-west-1 takes "use1" first, us-east-1 is the duplicate.
    assert!(
        e.starts_with(&format!(
            "fleet.toml:{}: route53.regions.us-east-1.set_identifier: \"use1\" is also eu-west-1's",
            line
        )),
        "{e}"
    );

    let no_regions = ROUTE53.split("\n[route53.regions").next().unwrap();
    let (text, line) = with_route53(no_regions, "[route53]");
    let e = error_of(&text);
    assert!(
        e.starts_with(&format!("fleet.toml:{line}: route53.regions: empty; add")),
        "{e}"
    );

    let (text, line) = with_route53(
        &ROUTE53.replace("health = \"control-plane\"", "metric_namespace = \" \""),
        "metric_namespace",
    );
    let e = error_of(&text);
    assert!(
        e.starts_with(&format!(
            "fleet.toml:{line}: route53.metric_namespace: empty"
        )),
        "{e}"
    );
}

#[test]
fn url_errors_do_not_echo_credentials() {
    let text = EXAMPLE.replace(
        "https://euw1.example.com/status",
        "https://user:hunter2-password@ /status",
    );
    let e = error_of(&text);
    assert!(
        e.contains("regions[1].status_url") && e.contains("***@"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn every_agent_key_is_bound_to_its_own_vantage() {
    let c = FleetConfig::parse(EXAMPLE, "fleet.toml").unwrap();
    assert!(c.warnings().is_empty());
    assert_eq!(c.agent_key_id(&c.vantages[1]), "k-euw1");
    assert_eq!(c.agent_key_id(&c.vantages[0]), "fleet-2026");
    assert_eq!(
        c.key_vantages()["k-euw1"].iter().collect::<Vec<_>>(),
        ["eu-west-1"]
    );

    let unknown = EXAMPLE.replace(
        r#"vantages = ["eu-west-1"]"#,
        r#"vantages = ["eu-north-1"]"#,
    );
    let e = error_of(&unknown);
    assert!(
        e.contains("aggregator.keys.k-euw1.vantages") && e.contains("eu-north-1"),
        "{e}"
    );

    let missing = EXAMPLE.replace(r#", vantages = ["eu-west-1"]"#, "");
    let e = error_of(&missing);
    assert!(
        e.contains("aggregator.keys.k-euw1") && e.contains("vantages = ["),
        "{e}"
    );

    let shared = EXAMPLE.replace(
        r#"vantages = ["eu-west-1"]"#,
        r#"vantages = ["eu-west-1", "us-east-1"]"#,
    );
    let e = error_of(&shared);
    assert!(e.contains("allow_shared") && e.contains("quorum"), "{e}");
    let allowed = shared.replace(
        r#"vantages = ["eu-west-1", "us-east-1"]"#,
        r#"vantages = ["eu-west-1", "us-east-1"], allow_shared = true"#,
    );
    let c = FleetConfig::parse(&allowed, "fleet.toml").unwrap();
    let w = c.warnings();
    assert!(
        w.len() == 1 && w[0].contains("k-euw1") && w[0].contains("quorum"),
        "{w:?}"
    );

    // The agent's own key must cover it.
    let e = error_of(&EXAMPLE.replace("key_id = \"k-euw1\"\n", ""));
    assert!(
        e.contains("vantages[1].key_id") && e.contains("fleet-2026"),
        "{e}"
    );

    // Without [aggregator.keys], one agents.auth key is fine for one vantage only.
    let keys_at = EXAMPLE.find("\n[aggregator.keys]").unwrap();
    let no_keys = EXAMPLE[..keys_at].replace("key_id = \"k-euw1\"\n", "");
    let e = error_of(&no_keys);
    assert!(
        e.contains("agents.auth.key_id") && e.contains("2 vantages"),
        "{e}"
    );
}

/// The example with `extra` appended to its `[aggregator]` table, and the line of `needle`.
fn with_aggregator(extra: &str, needle: &str) -> (String, usize) {
    let text = EXAMPLE.replace(
        "url = \"https://aggregator.example.com\"\n",
        &format!("url = \"https://aggregator.example.com\"\n{extra}"),
    );
    let line = text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    (text, line)
}

#[test]
fn admin_keys_parse_apart_from_agent_keys() {
    let (text, _) = with_aggregator(
        "state_token_env = \"STATE_TOKEN\"\n[aggregator.admin_keys.ops-alice]\nenv = \"ALICE_KEY\"\n",
        "ops-alice",
    );
    let c = FleetConfig::parse(&text, "fleet.toml").unwrap();
    assert_eq!(
        c.aggregator.admin_keys["ops-alice"].env.as_deref(),
        Some("ALICE_KEY")
    );
    assert_eq!(
        c.aggregator.state_token_env.as_ref().unwrap().get_ref(),
        "STATE_TOKEN"
    );
}

#[test]
fn control_path_mistakes_name_the_key_line_and_fix() {
    // The old list of agent key ids allowed to override: refused with the way forward.
    let (text, line) = with_aggregator("override_key_ids = [\"fleet-2026\"]\n", "override_key_ids");
    let e = error_of(&text);
    assert!(
        e.starts_with(&format!(
            "fleet.toml:{line}: aggregator.override_key_ids: was removed"
        )) && e.contains("[aggregator.admin_keys.<id>]"),
        "{e}"
    );

    // An admin key id that is the agents' key id.
    let (text, line) = with_aggregator(
        "[aggregator.admin_keys.fleet-2026]\nenv = \"K\"\n",
        "admin_keys.fleet-2026",
    );
    let e = error_of(&text);
    assert!(
        e.starts_with(&format!(
            "fleet.toml:{line}: aggregator.admin_keys.fleet-2026: \"fleet-2026\" is also an agent key id"
        )),
        "{e}"
    );

    // ... or one of [aggregator.keys].
    let (text, line) = with_aggregator(
        "[aggregator.keys.k9]\nenv = \"K9\"\nvantages = [\"us-east-1\"]\n[aggregator.admin_keys.k9]\nenv = \"K\"\n",
        "admin_keys.k9",
    );
    let e = error_of(&text);
    assert!(
        e.starts_with(&format!("fleet.toml:{line}: aggregator.admin_keys.k9:"))
            && e.contains("agent key id"),
        "{e}"
    );

    let (text, line) = with_aggregator("[aggregator.admin_keys.ops]\n", "admin_keys.ops");
    let e = error_of(&text);
    assert!(
        e.starts_with(&format!(
            "fleet.toml:{line}: aggregator.admin_keys.ops: give env"
        )),
        "{e}"
    );

    let text = format!("{EXAMPLE}\n[policy]\nmin_healthy = 0\n");
    let line = text
        .lines()
        .position(|l| l.contains("min_healthy"))
        .unwrap()
        + 1;
    let e = error_of(&text);
    assert!(
        e.starts_with(&format!("fleet.toml:{line}: policy.min_healthy: 0 would"))
            && e.contains("use 1 or more"),
        "{e}"
    );
    let ok = format!("{EXAMPLE}\n[policy]\nmin_healthy = 1\n");
    assert!(FleetConfig::parse(&ok, "fleet.toml").is_ok());
}

/// The example with its one aggregator replaced by `replicas` (and `rest` after it).
fn with_replicas(replicas: &str, rest: &str) -> String {
    EXAMPLE.replace(
        "url = \"https://aggregator.example.com\"\n",
        &format!("replicas = [\n{replicas}]\n{rest}"),
    )
}

const THREE: &str =
    "  { id = \"use1\", region = \"us-east-1\", url = \"https://agg-use1.example.com\" },\n  \
{ id = \"euw1\", region = \"eu-west-1\", url = \"https://agg-euw1.example.com\" },\n  \
{ id = \"apse1\", region = \"ap-southeast-1\", url = \"https://agg-apse1.example.com\" },\n";

#[test]
fn replicas_are_where_agents_deliver() {
    let one = FleetConfig::parse(EXAMPLE, "fleet.toml").unwrap();
    assert_eq!(
        one.aggregator.replica_endpoints(),
        [ReplicaEndpoint {
            id: None,
            region: None,
            url: "https://aggregator.example.com".into()
        }]
    );
    let text = with_replicas(THREE, "[aggregator.lease]\ntable = \"vantage-lease\"\n");
    let three = FleetConfig::parse(&text, "fleet.toml").unwrap();
    let endpoints = three.aggregator.replica_endpoints();
    let ids: Vec<_> = endpoints.iter().map(|e| e.id.as_deref().unwrap()).collect();
    assert_eq!(ids, ["use1", "euw1", "apse1"]);
    assert_eq!(endpoints[1].region.as_deref(), Some("eu-west-1"));
    assert_eq!(endpoints[2].url, "https://agg-apse1.example.com");
    let lease = three.aggregator.lease.as_ref().unwrap();
    assert_eq!(lease.duration(), Duration::from_secs(30));
    assert_eq!(lease.max_clock_skew(), Duration::from_secs(2));
    assert_eq!(
        three.aggregator.replica("euw1").unwrap().region.get_ref(),
        "eu-west-1"
    );
}

#[test]
fn replica_mistakes_name_the_key_line_and_fix() {
    let both = EXAMPLE.replace(
        "url = \"https://aggregator.example.com\"\n",
        &format!("url = \"https://aggregator.example.com\"\nreplicas = [\n{THREE}]\n"),
    );
    let e = error_of(&both);
    assert!(
        e.contains("aggregator.url") && e.contains("not both"),
        "{e}"
    );
    let neither = EXAMPLE.replace("url = \"https://aggregator.example.com\"\n", "");
    let e = error_of(&neither);
    assert!(
        e.contains("aggregator.url: missing") && e.contains("replicas"),
        "{e}"
    );
    let twice = with_replicas(&THREE.replace("\"euw1\"", "\"use1\""), "");
    let e = error_of(&twice);
    assert!(
        e.contains("aggregator.replicas[1].id") && e.contains("listed twice"),
        "{e}"
    );
    let shared = with_replicas(&THREE.replace("agg-euw1", "agg-use1"), "");
    let e = error_of(&shared);
    assert!(
        e.contains("aggregator.replicas[1].url") && e.contains("own"),
        "{e}"
    );
    let six = with_replicas(&THREE.repeat(2), "");
    let e = error_of(&six);
    assert!(
        e.contains("aggregator.replicas") && e.contains("at most 5"),
        "{e}"
    );
    let no_lease = with_replicas(THREE, "backend = \"route53\"\n");
    let e = error_of(&no_lease);
    assert!(e.contains("aggregator.lease: missing"), "{e}");
    let skew = with_replicas(
        THREE,
        "[aggregator.lease]\ntable = \"vantage-lease\"\nduration = \"10s\"\nmax_clock_skew = \"5s\"\n",
    );
    let e = error_of(&skew);
    assert!(e.contains("aggregator.lease.max_clock_skew"), "{e}");
    let e = error_of(&EXAMPLE.replace("agent_id = \"probe-euw1\"", "agent_id = \"..\""));
    assert!(e.contains("vantages[1].agent_id"), "{e}");
    let dots = with_replicas(&THREE.replace("\"euw1\"", "\"..\""), "");
    let e = error_of(&dots);
    assert!(e.contains("aggregator.replicas[1].id"), "{e}");
    let table = with_replicas(THREE, "[aggregator.lease]\ntable = \"a b\"\n");
    let e = error_of(&table);
    assert!(e.contains("aggregator.lease.table"), "{e}");
}
