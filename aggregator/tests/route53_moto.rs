//! The Route 53 backend against moto's server: the real wire protocols of Route 53 and
//! CloudWatch, set up through the SDK as an operator's stack would be, on the test binary's
//! one moto_server, each test in a hosted zone of its own.

mod support;

use std::collections::BTreeMap;
use support::{AwsMoto as _, Moto, SeedRecord};
use vantage_aggregator::backend::route53::{
    HealthMode, RegionRecord, RetryPolicy, Route53Backend, Route53Config, DEFAULT_METRIC_NAME,
    DEFAULT_METRIC_NAMESPACE,
};
use vantage_aggregator::backend::{
    plan, Backend, BackendError, Change, DesiredRegion, DesiredState,
};

const REGIONS: [&str; 3] = ["ap-southeast-2", "eu-west-1", "us-east-1"];

fn set_id(region: &str) -> String {
    format!("vantage-{region}")
}

fn origin(region: &str) -> String {
    format!("abc123.execute-api.{region}.amazonaws.com")
}

/// Data-plane health as CloudWatch metric `metric_name`. The tests of a binary share one moto
/// and metrics outlive a test, so each test that publishes uses a metric name of its own (a
/// namespace of its own is not enough: moto's GetMetricData ignores the namespace of a query
/// with dimensions).
fn data_plane(metric_name: &str) -> HealthMode {
    HealthMode::DataPlane {
        namespace: DEFAULT_METRIC_NAMESPACE.into(),
        metric_name: metric_name.into(),
    }
}

fn config(zone: &str, health: HealthMode, checks: &BTreeMap<String, String>) -> Route53Config {
    Route53Config {
        hosted_zone_id: zone.to_owned(),
        record_name: support::RECORD.into(),
        record_type: "CNAME".into(),
        regions: REGIONS
            .iter()
            .map(|r| {
                (
                    r.to_string(),
                    RegionRecord {
                        set_identifier: set_id(r),
                        health_check_id: checks.get(*r).cloned(),
                    },
                )
            })
            .collect(),
        health,
        insync_timeout: std::time::Duration::from_secs(30),
        retry: RetryPolicy::default(),
        replica: None,
    }
}

fn desired(entries: &[(&str, bool, u8)]) -> DesiredState {
    entries
        .iter()
        .map(|(r, in_service, weight)| {
            (
                r.to_string(),
                DesiredRegion {
                    in_service: *in_service,
                    weight: *weight,
                },
            )
        })
        .collect()
}

/// A zone with a weighted record per Region (weights 10/100/50) and, when `calculated`, a
/// CALCULATED health check per Region over two HTTPS children, referenced by its record.
/// Returns the zone id and the CALCULATED checks by Region.
async fn seed(moto: &Moto, calculated: bool) -> (String, BTreeMap<String, String>) {
    let r53 = moto.route53().await;
    let zone = support::create_zone(&r53).await.expect("hosted zone");
    let mut checks = BTreeMap::new();
    if calculated {
        for region in REGIONS {
            let a = support::create_https_check(&r53, &format!("a.{}", origin(region)))
                .await
                .expect("child a");
            let b = support::create_https_check(&r53, &format!("b.{}", origin(region)))
                .await
                .expect("child b");
            let id = support::create_calculated_check(&r53, region, &[a, b])
                .await
                .expect("calculated check");
            checks.insert(region.to_owned(), id);
        }
    }
    let records: Vec<SeedRecord> = REGIONS
        .iter()
        .zip([10, 100, 50])
        .map(|(region, weight)| SeedRecord {
            set_identifier: set_id(region),
            weight,
            value: origin(region),
            health_check_id: checks.get(*region).cloned(),
        })
        .collect();
    support::create_records(&r53, &zone, &records)
        .await
        .expect("records");
    (zone, checks)
}

async fn connect(moto: &Moto, config: Route53Config) -> Result<Route53Backend, BackendError> {
    Route53Backend::connect_with(&moto.sdk_config().await, config).await
}

#[tokio::test]
async fn weights_change_in_one_batch_values_survive_and_a_second_pass_writes_nothing() {
    let moto = Moto::shared();
    let (zone, checks) = seed(moto, false).await;
    let backend = connect(
        moto,
        config(&zone, data_plane("WeightsTestHealth"), &checks),
    )
    .await
    .expect("connect");

    let observed = backend.observe().await.expect("observe");
    let weights: Vec<_> = REGIONS.iter().map(|r| observed[*r].weight).collect();
    assert_eq!(weights, [Some(10), Some(100), Some(50)]);
    assert!(
        observed.values().all(|o| o.in_service.is_none()),
        "nothing published yet: {observed:?}"
    );

    let want = desired(&[
        ("ap-southeast-2", false, 0),
        ("eu-west-1", true, 120),
        ("us-east-1", true, 50),
    ]);
    let changes = plan(&want, &observed);
    let weight_changes: Vec<_> = changes
        .iter()
        .filter(|c| matches!(c, Change::Weight { .. }))
        .collect();
    assert_eq!(weight_changes.len(), 2, "{changes:?}");
    backend.apply(&changes, &want).await.expect("apply");
    // One PutMetricData for the three health changes, one ChangeResourceRecordSets for both
    // weights.
    assert_eq!(backend.write_calls(), 2);

    let records = support::read_records(&moto.route53().await, &zone)
        .await
        .expect("read back");
    for (region, weight) in [("ap-southeast-2", 0), ("eu-west-1", 120), ("us-east-1", 50)] {
        let record = &records[&set_id(region)];
        assert_eq!(record.weight(), Some(weight), "{region}");
        assert_eq!(record.ttl(), Some(60), "{region}: TTL kept");
        let values: Vec<_> = record
            .resource_records()
            .iter()
            .map(|r| r.value())
            .collect();
        assert_eq!(values, [origin(region)], "{region}: value kept");
    }

    let again = backend.observe().await.expect("observe again");
    assert_eq!(again["ap-southeast-2"].in_service, Some(false));
    assert_eq!(again["eu-west-1"].in_service, Some(true));
    assert_eq!(again["eu-west-1"].weight, Some(120));
    let second = plan(&want, &again);
    assert!(second.is_empty(), "second pass: {second:?}");
    backend.apply(&second, &want).await.expect("empty apply");
    assert_eq!(backend.write_calls(), 2, "an empty pass writes nothing");
}

#[tokio::test]
async fn control_plane_forces_calculated_checks_out_and_back() {
    let moto = Moto::shared();
    let (zone, checks) = seed(moto, true).await;
    let backend = connect(moto, config(&zone, HealthMode::ControlPlane, &checks))
        .await
        .expect("connect");
    let r53 = moto.route53().await;

    // Threshold 2 of 2 children: the check follows its children, vantage has no say yet.
    let observed = backend.observe().await.expect("observe");
    assert!(
        observed.values().all(|o| o.in_service.is_none()),
        "{observed:?}"
    );

    let want = desired(&[
        ("ap-southeast-2", true, 10),
        ("eu-west-1", true, 100),
        ("us-east-1", false, 50),
    ]);
    let changes = plan(&want, &observed);
    assert_eq!(changes.len(), 3, "health only: {changes:?}");
    backend.apply(&changes, &want).await.expect("apply");
    assert_eq!(
        support::threshold_and_children(&r53, &checks["us-east-1"])
            .await
            .unwrap(),
        (Some(3), 2),
        "out: threshold above the two children, children kept"
    );
    assert_eq!(
        support::threshold_and_children(&r53, &checks["eu-west-1"])
            .await
            .unwrap(),
        (Some(0), 2)
    );

    let observed = backend.observe().await.expect("observe");
    assert_eq!(observed["us-east-1"].in_service, Some(false));
    assert_eq!(observed["eu-west-1"].in_service, Some(true));
    let writes = backend.write_calls();
    assert!(plan(&want, &observed).is_empty());
    backend.apply(&[], &want).await.unwrap();
    backend.heartbeat(&want).await.unwrap();
    assert_eq!(backend.write_calls(), writes, "no writes when converged");

    let back = desired(&[
        ("ap-southeast-2", true, 10),
        ("eu-west-1", true, 100),
        ("us-east-1", true, 50),
    ]);
    let changes = plan(&back, &backend.observe().await.unwrap());
    assert_eq!(
        changes,
        vec![Change::Health {
            region: "us-east-1".into(),
            in_service: true
        }]
    );
    backend.apply(&changes, &back).await.expect("back in");
    assert_eq!(
        support::threshold_and_children(&r53, &checks["us-east-1"])
            .await
            .unwrap(),
        (Some(0), 2)
    );
    assert!(plan(&back, &backend.observe().await.unwrap()).is_empty());
}

#[tokio::test]
async fn data_plane_heartbeat_publishes_every_region_at_standard_resolution() {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, Statistic};
    let moto = Moto::shared();
    let (zone, checks) = seed(moto, false).await;
    let backend = connect(
        moto,
        config(&zone, data_plane(DEFAULT_METRIC_NAME), &checks),
    )
    .await
    .expect("connect");
    let want = desired(&[
        ("ap-southeast-2", true, 10),
        ("eu-west-1", true, 100),
        ("us-east-1", false, 0),
    ]);
    backend.heartbeat(&want).await.expect("heartbeat");
    assert_eq!(
        backend.write_calls(),
        1,
        "one PutMetricData for every Region"
    );

    let cw = moto.cloudwatch().await;
    let listed = cw
        .list_metrics()
        .namespace(DEFAULT_METRIC_NAMESPACE)
        .metric_name(DEFAULT_METRIC_NAME)
        .send()
        .await
        .expect("ListMetrics");
    let mut dimensions: Vec<String> = listed
        .metrics()
        .iter()
        .flat_map(|m| m.dimensions())
        .filter(|d| d.name() == Some("Region"))
        .filter_map(|d| d.value().map(str::to_owned))
        .collect();
    dimensions.sort();
    assert_eq!(dimensions, REGIONS);

    let now = std::time::SystemTime::now();
    for (region, value) in [
        ("ap-southeast-2", 1.0),
        ("eu-west-1", 1.0),
        ("us-east-1", 0.0),
    ] {
        let stats = cw
            .get_metric_statistics()
            .namespace(DEFAULT_METRIC_NAMESPACE)
            .metric_name(DEFAULT_METRIC_NAME)
            .dimensions(Dimension::builder().name("Region").value(region).build())
            .start_time(DateTime::from(now - std::time::Duration::from_secs(600)))
            .end_time(DateTime::from(now + std::time::Duration::from_secs(600)))
            .period(60)
            .statistics(Statistic::Maximum)
            .statistics(Statistic::SampleCount)
            .send()
            .await
            .expect("GetMetricStatistics");
        let points = stats.datapoints();
        assert_eq!(points.len(), 1, "{region}: {points:?}");
        assert_eq!(points[0].maximum(), Some(value), "{region}");
        assert_eq!(points[0].sample_count(), Some(1.0), "{region}");
        assert_eq!(
            points[0].unit().map(|u| u.as_str()),
            Some("Count"),
            "{region}"
        );
    }

    // Observe reads the published values back.
    let observed = backend.observe().await.expect("observe");
    assert_eq!(observed["us-east-1"].in_service, Some(false));
    assert_eq!(observed["eu-west-1"].in_service, Some(true));
}

#[tokio::test]
async fn connect_names_a_missing_record() {
    let moto = Moto::shared();
    let r53 = moto.route53().await;
    let zone = support::create_zone(&r53).await.unwrap();
    // us-east-1's record is missing.
    let records: Vec<SeedRecord> = ["ap-southeast-2", "eu-west-1"]
        .iter()
        .map(|region| SeedRecord {
            set_identifier: set_id(region),
            weight: 100,
            value: origin(region),
            health_check_id: None,
        })
        .collect();
    support::create_records(&r53, &zone, &records)
        .await
        .unwrap();
    let err = connect(
        moto,
        config(&zone, data_plane(DEFAULT_METRIC_NAME), &BTreeMap::new()),
    )
    .await
    .expect_err("a Region without a record");
    match &err {
        BackendError::Shape(what, _) => {
            assert!(what.contains("vantage-us-east-1"), "{err}")
        }
        other => panic!("expected Shape, got {other:?}"),
    }

    let err = connect(
        moto,
        config(
            "ZNOSUCHZONE",
            data_plane(DEFAULT_METRIC_NAME),
            &BTreeMap::new(),
        ),
    )
    .await
    .expect_err("no such zone");
    assert!(
        matches!(&err, BackendError::Shape(what, _) if what.contains("ZNOSUCHZONE")),
        "{err}"
    );
}

#[tokio::test]
async fn connect_names_a_missing_or_misshaped_health_check() {
    let moto = Moto::shared();
    let (zone, mut checks) = seed(moto, true).await;
    let good = config(&zone, HealthMode::ControlPlane, &checks);
    connect(moto, good).await.expect("well-shaped stack");

    // A record guarded by a check that does not exist.
    let r53 = moto.route53().await;
    let missing = "11111111-2222-3333-4444-555555555555".to_owned();
    upsert_health_check_id(&r53, &zone, "us-east-1", &missing).await;
    checks.insert("us-east-1".into(), missing.clone());
    let err = connect(moto, config(&zone, HealthMode::ControlPlane, &checks))
        .await
        .expect_err("missing check");
    assert!(
        matches!(&err, BackendError::Shape(what, _) if what.contains(&missing)),
        "{err}"
    );

    // A check that exists but is not CALCULATED.
    let https = support::create_https_check(&r53, "plain.example.net")
        .await
        .unwrap();
    upsert_health_check_id(&r53, &zone, "us-east-1", &https).await;
    checks.insert("us-east-1".into(), https.clone());
    let err = connect(moto, config(&zone, HealthMode::ControlPlane, &checks))
        .await
        .expect_err("HTTPS check");
    assert!(
        matches!(&err, BackendError::Shape(what, why) if what.contains(&https) && why.contains("not CALCULATED")),
        "{err}"
    );

    // The configured check exists but does not guard the record.
    let calculated = support::create_calculated_check(&r53, "spare", &[])
        .await
        .unwrap();
    checks.insert("us-east-1".into(), calculated);
    let err = connect(moto, config(&zone, HealthMode::ControlPlane, &checks))
        .await
        .expect_err("check not on the record");
    assert!(
        matches!(&err, BackendError::Shape(what, why) if what.contains("vantage-us-east-1") && why.contains("would not move traffic")),
        "{err}"
    );
}

async fn upsert_health_check_id(
    r53: &aws_sdk_route53::Client,
    zone: &str,
    region: &str,
    check: &str,
) {
    use aws_sdk_route53::types::{Change as R53Change, ChangeAction, ChangeBatch};
    let mut record = support::read_records(r53, zone).await.unwrap()[&set_id(region)].clone();
    record.health_check_id = Some(check.to_owned());
    r53.change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    R53Change::builder()
                        .action(ChangeAction::Upsert)
                        .resource_record_set(record)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}
