//! The estimate's figures for single-API and multi-service fleets: steady and moving calls,
//! the limits it warns about, the monthly bill and each service's share.

use super::*;

fn fleet(aggregator: &str, route53: &str) -> FleetConfig {
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"];
    let mut text = String::from(
        "[fleet]\nname = \"orders-api\"\n[global]\nurl = \"https://api.example.com/status\"\n",
    );
    for r in regions {
        text += &format!(
            "[[regions]]\nname = \"{r}\"\nstatus_url = \"https://{r}.example.com/status\"\n"
        );
    }
    text += "[[vantages]]\nregion = \"us-east-1\"\n[agents.auth]\nkey_id = \"k1\"\n";
    text += &format!("[aggregator]\n{aggregator}\n");
    text += &format!(
        "[route53]\nhosted_zone_id = \"Z1\"\nrecord_name = \"api.example.com\"\n{route53}\n"
    );
    for r in regions {
        text += &format!("[route53.regions.{r}]\nset_identifier = \"{r}\"\n");
        if route53.contains("control-plane") {
            text += &format!("health_check_id = \"hc-{r}\"\n");
        }
    }
    FleetConfig::parse(&text, "fleet.toml").unwrap()
}

#[track_caller]
fn approx(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-9, "{got} != {want}");
}

const THREE: &str = "backend = \"route53\"\nreplicas = [\n\
    { id = \"use1\", region = \"us-east-1\", url = \"https://a.example.com\" },\n\
    { id = \"euw1\", region = \"eu-west-1\", url = \"https://b.example.com\" },\n\
    { id = \"apse1\", region = \"ap-southeast-1\", url = \"https://c.example.com\" },\n]\n\
    [aggregator.lease]\ntable = \"vantage-lease\"\n";

#[test]
fn steady_state_writes_nothing_and_reads_a_handful() {
    let b = estimate(&fleet("url = \"https://agg.example.com\"", "")).unwrap();
    // Defaults: heartbeat 10 s, observe 5 min, weights at most once a minute.
    approx(b.per_minute(Service::Route53, false), 0.2);
    approx(b.per_minute(Service::CloudWatch, false), 6.2);
    approx(b.per_minute(Service::Route53, true), 0.2 + 1.0 + 9.0);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    // 3 checks, 3 metrics, 3 alarms, 262,800 PutMetricData, 26,280 metrics read (730 h).
    let usd = b.monthly_usd();
    assert!(
        (usd - (1.5 + 0.9 + 0.3 + 2.628 + 0.2628)).abs() < 1e-6,
        "{usd}"
    );
}

#[test]
fn replicas_multiply_the_data_plane_and_add_the_lease() {
    let b = estimate(&fleet(THREE, "")).unwrap();
    assert_eq!(b.replicas, 3);
    approx(b.per_minute(Service::CloudWatch, false), 3.0 * 6.2);
    approx(b.per_minute(Service::Route53, false), 0.6);
    // A 30 s lease renewed every 10 s by its holder and read as often by the two others
    // (measured with bench/aws: 6 UpdateItem and 12 GetItem a minute).
    approx(b.per_minute(Service::DynamoDb, false), 18.0);
    let checks = &b.costs[0];
    assert!(
        checks.item.starts_with("12 Route 53 health checks"),
        "{}",
        checks.item
    );
    let text = render(&b);
    assert!(text.contains("3 aggregator replica(s)"), "{text}");
    assert!(text.contains("dynamodb"), "{text}");
}

#[test]
fn periods_beyond_the_route53_limit_are_warned_about() {
    let b = estimate(&fleet(
        "url = \"https://agg.example.com\"\nevaluate_every = \"1s\"\nobserve_every = \"1s\"",
        "health = \"control-plane\"\n",
    ))
    .unwrap();
    // One ListResourceRecordSets and three GetHealthCheck a second: 240/min, plus the
    // weights' 10/min. Under 300: no warning yet.
    approx(b.per_minute(Service::Route53, false), 240.0);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let fast = fleet(
        "url = \"https://agg.example.com\"\nevaluate_every = \"1s\"\nobserve_every = \"1s\"",
        "health = \"control-plane\"\n",
    );
    let mut fast = fast;
    fast.weights.min_interval = Some(vantage_protocol::config::DurationText(Duration::from_secs(
        1,
    )));
    let b = estimate(&fast).unwrap();
    assert_eq!(b.warnings.len(), 1, "{:?}", b.warnings);
    assert!(b.warnings[0].contains("5 requests/s"), "{}", b.warnings[0]);
}

#[test]
fn dry_run_without_route53_makes_no_calls() {
    let mut f = fleet("url = \"https://agg.example.com\"", "");
    f.route53 = None;
    assert!(estimate(&f).is_none());
}

/// A fleet of `count` services over the same three Regions, records in one zone.
fn services(count: usize, aggregator: &str) -> FleetConfig {
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"];
    let mut text = String::from("[fleet]\nname = \"shop\"\n");
    text += &format!("[aggregator]\n{aggregator}\n");
    text += "[route53]\nhosted_zone_id = \"Z1\"\n";
    text += "[[vantages]]\nregion = \"us-east-1\"\n[agents.auth]\nkey_id = \"k1\"\n";
    for i in 0..count {
        text += &format!(
            "[[services]]\nname = \"s{i}\"\nglobal = {{ url = \"https://s{i}.example.com/status\" }}\n"
        );
        for r in regions {
            text += &format!(
                "[[services.regions]]\nname = \"{r}\"\nstatus_url = \"https://s{i}.{r}.example.com/status\"\n"
            );
        }
        text += &format!("[services.route53]\nrecord_name = \"s{i}-origin.example.com\"\n");
        for r in regions {
            text += &format!("[services.route53.regions.{r}]\nset_identifier = \"s{i}-{r}\"\n");
        }
    }
    FleetConfig::parse(&text, "fleet.toml").unwrap()
}

#[test]
fn services_scale_reads_and_objects_but_share_writes() {
    let url = "url = \"https://agg.example.com\"";
    let one = estimate(&fleet(url, "")).unwrap();
    let two = estimate(&services(2, url)).unwrap();
    assert_eq!(two.regions, 6);
    // One ListResourceRecordSets per record name (at most), the rest shared.
    approx(two.per_minute(Service::Route53, false), 2.0 * 0.2);
    approx(two.per_minute(Service::CloudWatch, false), 6.2);
    approx(two.per_minute(Service::Route53, true), 0.4 + 1.0 + 9.0);
    // Objects per (service, Region): twice the single-API fleet's three.
    let objects = |b: &Budget| b.costs[..3].iter().map(|c| c.usd_per_month).sum::<f64>();
    approx(objects(&two), 2.0 * objects(&one));
    let names: Vec<_> = two.services.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, [Some("s0".to_owned()), Some("s1".to_owned())]);
    assert_eq!(two.services[1].health_checks, 3);
    let text = render(&two);
    assert!(text.contains("2 service(s), 6 service Region(s)"), "{text}");
    assert!(text.contains("Per service"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("s1 ")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("total ")),
        "{text}"
    );
    assert!(!render(&one).contains("Per service"));
}

#[test]
fn two_hundred_services_batch_their_calls_and_warn_about_route53() {
    let b = estimate(&services(
        200,
        "url = \"https://agg.example.com\"\nevaluate_every = \"10s\"\nobserve_every = \"10s\"",
    ))
    .unwrap();
    assert_eq!(b.regions, 600);
    let rate = |op: &str| b.rates.iter().find(|r| r.operation == op).unwrap().clone();
    // 600 metrics: one PutMetricData per heartbeat (10 s), two GetMetricData per observe.
    approx(rate("PutMetricData").steady_per_minute, 6.0);
    approx(rate("GetMetricData").steady_per_minute, 12.0);
    // 600 records in one zone, an UPSERT counting twice: two batches per weight move.
    approx(rate("ChangeResourceRecordSets").moving_per_minute, 2.0);
    // 200 record names read every 10 s: 1,200/min, four times Route 53's 5 requests/s.
    approx(rate("ListResourceRecordSets").steady_per_minute, 1200.0);
    assert!(
        b.warnings
            .iter()
            .any(|w| w.contains("steady state") && w.contains("5 requests/s")),
        "{:?}",
        b.warnings
    );
}
