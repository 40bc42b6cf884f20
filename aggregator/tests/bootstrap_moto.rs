//! The replica layout against moto's server: `bootstrap` builds it from a fleet file (alarms
//! in each replica's own Region, CLOUDWATCH_METRIC checks found by CallerReference, the
//! CALCULATED majority, the records' HealthCheckId, the lease table), a second run only finds
//! it, a dry run writes nothing; and a replica's heartbeat lands with its `Replica` dimension
//! in its own Region's CloudWatch. moto drops a CLOUDWATCH_METRIC check's AlarmIdentifier, so
//! alarms are verified through CloudWatch's DescribeAlarms, checks by CallerReference.

mod support;

use aws_sdk_cloudwatch::types::{ComparisonOperator, Statistic};
use aws_sdk_route53::types::{HealthCheck, HealthCheckType};
use std::collections::BTreeMap;
use support::{AwsMoto as _, Moto, SeedRecord};
use vantage_aggregator::backend::route53::layout::{layout, Layout};
use vantage_aggregator::backend::route53::{Route53Backend, Route53Config};
use vantage_aggregator::backend::{Backend, DesiredRegion, DesiredState};
use vantage_aggregator::bootstrap::{bootstrap, Clients, Line, Mode, Status};
use vantage_protocol::config::FleetConfig;

const REGIONS: [&str; 3] = ["ap-southeast-2", "eu-west-1", "us-east-1"];
/// (replica id, its AWS Region): one replica in each Region.
const REPLICAS: [(&str, &str); 3] = [
    ("apse2", "ap-southeast-2"),
    ("euw1", "eu-west-1"),
    ("use1", "us-east-1"),
];

/// A fleet named `name` over [`REGIONS`] on `zone`, with the three replicas (or one aggregator)
/// and a lease table, every AWS endpoint pointed at moto.
fn fleet(moto: &Moto, name: &str, zone: &str, replicas: bool) -> FleetConfig {
    let endpoint = moto.endpoint();
    let mut text =
        format!("[fleet]\nname = \"{name}\"\n[global]\nurl = \"https://api.example.com/status\"\n");
    for r in REGIONS {
        text += &format!(
            "[[regions]]\nname = \"{r}\"\nstatus_url = \"https://{r}.example.com/status\"\n"
        );
    }
    text += "[[vantages]]\nregion = \"eu-west-1\"\n[aggregator]\nbackend = \"route53\"\n";
    if replicas {
        text += "replicas = [\n";
        for (id, region) in REPLICAS {
            text += &format!("  {{ id = \"{id}\", region = \"{region}\", url = \"https://agg-{id}.example.com\" }},\n");
        }
        text += &format!("]\n[aggregator.lease]\ntable = \"{name}-lease\"\nregion = \"eu-west-1\"\nendpoint_url = \"{endpoint}\"\n");
    } else {
        text += "url = \"https://agg.example.com\"\n";
    }
    text += &format!(
        "[agents.auth]\nkey_id = \"k1\"\n[route53]\nhosted_zone_id = \"{zone}\"\nrecord_name = \"{}\"\nendpoint_url = \"{endpoint}\"\n",
        support::RECORD
    );
    for r in REGIONS {
        text += &format!("[route53.regions.{r}]\nset_identifier = \"{name}-{r}\"\n");
    }
    FleetConfig::parse(&text, "bootstrap test fleet").expect("fleet file")
}

/// A hosted zone with one weighted record per Region (weights 10, 20, 30; no health check).
async fn seed(moto: &Moto, name: &str) -> String {
    let r53 = moto.route53().await;
    let zone = support::create_zone(&r53).await.expect("zone");
    let records: Vec<SeedRecord> = REGIONS
        .iter()
        .zip([10, 20, 30])
        .map(|(r, weight)| SeedRecord {
            set_identifier: format!("{name}-{r}"),
            weight,
            value: format!("{r}.origin.example.com"),
            health_check_id: None,
        })
        .collect();
    support::create_records(&r53, &zone, &records)
        .await
        .expect("records");
    zone
}

async fn clients(moto: &Moto, layout: &Layout) -> Clients {
    let sdk = moto.sdk_config().await;
    Clients::new(layout, &sdk, &sdk)
}

async fn run(layout: &Layout, clients: &Clients, mode: Mode) -> Vec<Line> {
    bootstrap(layout, clients, mode, &mut |_| {})
        .await
        .expect("bootstrap")
}

fn statuses(lines: &[Line]) -> BTreeMap<Status, usize> {
    let mut count = BTreeMap::new();
    for l in lines {
        *count.entry(l.status).or_insert(0) += 1;
    }
    count
}

/// Every health check by CallerReference.
async fn checks(moto: &Moto) -> BTreeMap<String, HealthCheck> {
    let out = moto
        .route53()
        .await
        .list_health_checks()
        .send()
        .await
        .expect("ListHealthChecks");
    out.health_checks()
        .iter()
        .map(|c| (c.caller_reference().to_owned(), c.clone()))
        .collect()
}

/// Alarm names starting with `prefix` in `region`'s CloudWatch.
async fn alarms(
    moto: &Moto,
    region: &str,
    prefix: &str,
) -> Vec<aws_sdk_cloudwatch::types::MetricAlarm> {
    let sdk = moto.sdk_config().await;
    let cw = aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::config::Builder::from(&sdk)
            .region(aws_sdk_cloudwatch::config::Region::new(region.to_owned()))
            .build(),
    );
    let out = cw
        .describe_alarms()
        .alarm_name_prefix(prefix)
        .send()
        .await
        .expect("DescribeAlarms");
    out.metric_alarms().to_vec()
}

#[tokio::test]
async fn bootstrap_builds_three_regions_by_three_replicas_once_and_dry_run_writes_nothing() {
    let moto = Moto::shared();
    let name = "bt-replicas";
    let zone = seed(moto, name).await;
    let layout = layout(&fleet(moto, name, &zone, true)).unwrap().unwrap();
    let clients = clients(moto, &layout).await;
    let checks_before = checks(moto).await.len();

    // Dry run: every object is reported missing (records: different) and nothing appears.
    let dry = run(&layout, &clients, Mode::Inspect).await;
    assert_eq!(
        statuses(&dry),
        BTreeMap::from([(Status::Missing, 9 + 9 + 3 + 1), (Status::Differs, 3)]),
        "{dry:#?}"
    );
    assert_eq!(
        checks(moto).await.len(),
        checks_before,
        "dry run created a health check"
    );
    for (_, region) in REPLICAS {
        assert!(alarms(moto, region, "vantage-bt-replicas-")
            .await
            .is_empty());
    }

    // First run: everything created, each record guarded.
    let first = run(&layout, &clients, Mode::Apply).await;
    assert_eq!(
        statuses(&first),
        BTreeMap::from([(Status::Created, 9 + 9 + 3 + 1), (Status::Updated, 3)]),
        "{first:#?}"
    );

    // Each replica's alarms are in its own Region, one per fleet Region, on its own vote.
    for (id, region) in REPLICAS {
        let found = alarms(moto, region, "vantage-bt-replicas-").await;
        let mut names: Vec<_> = found.iter().filter_map(|a| a.alarm_name()).collect();
        names.sort();
        let want: Vec<String> = REGIONS
            .iter()
            .map(|r| format!("vantage-bt-replicas-{r}-{id}"))
            .collect();
        assert_eq!(names, want, "alarms in {region}");
        for a in &found {
            assert_eq!(a.metric_name(), Some("RegionHealthy"));
            assert_eq!(a.namespace(), Some("Vantage"));
            assert_eq!(a.statistic(), Some(&Statistic::Minimum));
            assert_eq!(a.period(), Some(60));
            assert_eq!(a.evaluation_periods(), Some(1));
            assert_eq!(a.threshold(), Some(1.0));
            assert_eq!(
                a.comparison_operator(),
                Some(&ComparisonOperator::LessThanThreshold)
            );
            assert_eq!(a.treat_missing_data(), Some("missing"));
            let dims: BTreeMap<_, _> = a
                .dimensions()
                .iter()
                .map(|d| (d.name().unwrap_or_default(), d.value().unwrap_or_default()))
                .collect();
            assert_eq!(dims.get("Replica"), Some(&id), "{a:?}");
            assert!(REGIONS.contains(&dims["Region"]), "{a:?}");
        }
    }

    // Checks by CallerReference: a CLOUDWATCH_METRIC check per (Region, replica) and a
    // CALCULATED majority (2 of 3) over exactly those, which each record now uses.
    let all = checks(moto).await;
    assert_eq!(all.len(), checks_before + 12);
    let records = support::read_records(&moto.route53().await, &zone)
        .await
        .unwrap();
    for (region, weight) in REGIONS.iter().zip([10, 20, 30]) {
        let mut votes = Vec::new();
        for (id, _) in REPLICAS {
            let check = &all[&format!("vantage:bt-replicas:{region}:vote:{id}")];
            let config = check.health_check_config().unwrap();
            assert_eq!(config.r#type(), &HealthCheckType::CloudwatchMetric);
            votes.push(check.id().to_owned());
        }
        let majority = &all[&format!("vantage:bt-replicas:{region}:majority")];
        let config = majority.health_check_config().unwrap();
        assert_eq!(config.r#type(), &HealthCheckType::Calculated);
        assert_eq!(config.health_threshold(), Some(2));
        let mut children = config.child_health_checks().to_vec();
        children.sort();
        votes.sort();
        assert_eq!(children, votes, "{region}");
        let record = &records[&format!("bt-replicas-{region}")];
        assert_eq!(record.health_check_id(), Some(majority.id()), "{region}");
        assert_eq!(record.weight(), Some(weight), "{region}: weight kept");
        assert_eq!(record.ttl(), Some(60), "{region}: TTL kept");
        assert_eq!(
            record.resource_records()[0].value(),
            format!("{region}.origin.example.com"),
            "{region}: value kept"
        );
    }

    // The lease table, partition key lease_id.
    let sdk = moto.sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .region(aws_sdk_dynamodb::config::Region::new("eu-west-1"))
            .build(),
    );
    let table = ddb
        .describe_table()
        .table_name("bt-replicas-lease")
        .send()
        .await
        .unwrap();
    let key = table.table().unwrap().key_schema();
    assert_eq!(key.len(), 1);
    assert_eq!(key[0].attribute_name(), "lease_id");

    // Second run: everything found, nothing written.
    let second = run(&layout, &clients, Mode::Apply).await;
    assert_eq!(
        statuses(&second),
        BTreeMap::from([(Status::Exists, 25)]),
        "{second:#?}"
    );
    assert_eq!(checks(moto).await.len(), checks_before + 12);
    let dry_after = run(&layout, &clients, Mode::Inspect).await;
    assert!(
        dry_after.iter().all(|l| l.status == Status::Exists),
        "{dry_after:#?}"
    );
}

#[tokio::test]
async fn one_aggregator_gets_one_alarm_and_one_check_per_region() {
    let moto = Moto::shared();
    let name = "bt-single";
    let zone = seed(moto, name).await;
    let layout = layout(&fleet(moto, name, &zone, false)).unwrap().unwrap();
    let clients = clients(moto, &layout).await;
    let first = run(&layout, &clients, Mode::Apply).await;
    assert_eq!(
        statuses(&first),
        BTreeMap::from([(Status::Created, 6), (Status::Updated, 3)]),
        "{first:#?}"
    );
    let found = alarms(moto, "us-east-1", "vantage-bt-single-").await;
    assert_eq!(found.len(), 3);
    assert!(
        found.iter().all(|a| a.dimensions().len() == 1),
        "no Replica dimension: {found:?}"
    );
    let all = checks(moto).await;
    let records = support::read_records(&moto.route53().await, &zone)
        .await
        .unwrap();
    for region in REGIONS {
        let check = &all[&format!("vantage:bt-single:{region}:vote")];
        assert_eq!(
            records[&format!("bt-single-{region}")].health_check_id(),
            Some(check.id()),
            "{region}: the record uses the one check"
        );
    }
    let second = run(&layout, &clients, Mode::Apply).await;
    assert!(
        second.iter().all(|l| l.status == Status::Exists),
        "{second:#?}"
    );

    // Someone loosens an alarm: bootstrap names what differs and puts it back.
    let tampered = found
        .iter()
        .find(|a| a.alarm_name() == Some("vantage-bt-single-eu-west-1"))
        .unwrap();
    clients.cloudwatch["us-east-1"]
        .put_metric_alarm()
        .alarm_name("vantage-bt-single-eu-west-1")
        .namespace(tampered.namespace().unwrap())
        .metric_name(tampered.metric_name().unwrap())
        .set_dimensions(Some(tampered.dimensions().to_vec()))
        .statistic(Statistic::Average)
        .period(60)
        .evaluation_periods(3)
        .threshold(0.5)
        .comparison_operator(ComparisonOperator::LessThanThreshold)
        .send()
        .await
        .unwrap();
    let dry = run(&layout, &clients, Mode::Inspect).await;
    let differs: Vec<_> = dry.iter().filter(|l| l.status == Status::Differs).collect();
    assert_eq!(differs.len(), 1, "{dry:#?}");
    assert!(
        differs[0]
            .object
            .ends_with("(differs: statistic, evaluation periods, threshold)"),
        "{differs:?}"
    );
    let fixed = run(&layout, &clients, Mode::Apply).await;
    assert_eq!(
        fixed.iter().filter(|l| l.status == Status::Updated).count(),
        1,
        "{fixed:#?}"
    );
    let again = run(&layout, &clients, Mode::Inspect).await;
    assert!(
        again.iter().all(|l| l.status == Status::Exists),
        "{again:#?}"
    );
}

#[tokio::test]
async fn a_missing_record_stops_bootstrap_before_anything_is_written() {
    let moto = Moto::shared();
    let name = "bt-norecord";
    let r53 = moto.route53().await;
    let zone = support::create_zone(&r53).await.expect("zone");
    let layout = layout(&fleet(moto, name, &zone, true)).unwrap().unwrap();
    let clients = clients(moto, &layout).await;
    let err = bootstrap(&layout, &clients, Mode::Apply, &mut |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"bt-norecord-ap-southeast-2\"") && err.contains("no such record"),
        "{err}"
    );
    assert!(alarms(moto, "eu-west-1", "vantage-bt-norecord-")
        .await
        .is_empty());
}

#[tokio::test]
async fn a_replicas_heartbeat_lands_with_its_replica_dimension_in_its_own_region() {
    let moto = Moto::shared();
    let name = "bt-heartbeat";
    let zone = seed(moto, name).await;
    let fleet = fleet(moto, name, &zone, true);
    let mut config = Route53Config::from_section(fleet.route53.as_ref().unwrap())
        .unwrap()
        .with_replica("euw1", "eu-west-1");
    // A metric name of this test's own: metrics outlive tests on the shared moto.
    config.health = vantage_aggregator::backend::route53::HealthMode::DataPlane {
        namespace: "Vantage".into(),
        metric_name: "HeartbeatReplicaTest".into(),
    };
    // Connected through us-east-1, as the binary's Route 53 clients are.
    let backend = Route53Backend::connect_with(&moto.sdk_config().await, config)
        .await
        .expect("connect");
    let desired: DesiredState = REGIONS
        .iter()
        .map(|r| {
            let d = DesiredRegion {
                in_service: *r != "ap-southeast-2",
                weight: 100,
            };
            (r.to_string(), d)
        })
        .collect();
    backend.heartbeat(&desired).await.expect("heartbeat");

    let sdk = moto.sdk_config().await;
    let metrics_in = |region: &'static str| {
        let cw = aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(&sdk)
                .region(aws_sdk_cloudwatch::config::Region::new(region))
                .build(),
        );
        async move {
            let out = cw
                .list_metrics()
                .metric_name("HeartbeatReplicaTest")
                .send()
                .await
                .expect("ListMetrics");
            out.metrics()
                .iter()
                .map(|m| {
                    m.dimensions()
                        .iter()
                        .map(|d| {
                            format!(
                                "{}={}",
                                d.name().unwrap_or_default(),
                                d.value().unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect::<std::collections::BTreeSet<_>>()
        }
    };
    let want: std::collections::BTreeSet<String> = REGIONS
        .iter()
        .map(|r| format!("Region={r},Replica=euw1"))
        .collect();
    assert_eq!(metrics_in("eu-west-1").await, want);
    assert!(
        metrics_in("us-east-1").await.is_empty(),
        "the vote went to us-east-1's CloudWatch"
    );

    // observe reads the vote back with the same dimensions, from the same Region.
    let observed = backend.observe().await.expect("observe");
    assert_eq!(observed["ap-southeast-2"].in_service, Some(false));
    assert_eq!(observed["eu-west-1"].in_service, Some(true));
}

/// moto drops a CLOUDWATCH_METRIC check's AlarmIdentifier, so this runs Route 53 as
/// aws-smithy-mocks (answering as AWS would, AlarmIdentifier included) and CloudWatch on moto:
/// a check found by its CallerReference but following another alarm, or counting missing data
/// as healthy, is reported as different, then corrected with UpdateHealthCheck.
#[tokio::test]
async fn a_vote_check_on_the_wrong_alarm_is_corrected() {
    use aws_sdk_route53::operation::list_health_checks::ListHealthChecksOutput;
    use aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsOutput;
    use aws_sdk_route53::operation::update_health_check::UpdateHealthCheckOutput;
    use aws_sdk_route53::types::{
        AlarmIdentifier, CloudWatchRegion, HealthCheckConfig, InsufficientDataHealthStatus,
        ResourceRecord, ResourceRecordSet, RrType,
    };
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    let moto = Moto::shared();
    const NAME: &str = "bt-wrongalarm";
    let name = NAME;
    let layout = layout(&fleet(moto, name, "ZMOCK", false)).unwrap().unwrap();
    let check = move |region: &str, alarm: &str, missing: InsufficientDataHealthStatus| {
        HealthCheck::builder()
            .id(format!("hc-{region}"))
            .caller_reference(format!("vantage:{name}:{region}:vote"))
            .health_check_version(7)
            .health_check_config(
                HealthCheckConfig::builder()
                    .r#type(HealthCheckType::CloudwatchMetric)
                    .alarm_identifier(
                        AlarmIdentifier::builder()
                            .region(CloudWatchRegion::UsEast1)
                            .name(alarm)
                            .build()
                            .unwrap(),
                    )
                    .insufficient_data_health_status(missing)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let list_checks = mock!(aws_sdk_route53::Client::list_health_checks).then_output(move || {
        let last = InsufficientDataHealthStatus::LastKnownStatus;
        ListHealthChecksOutput::builder()
            .health_checks(check(
                "ap-southeast-2",
                &format!("vantage-{name}-ap-southeast-2"),
                last.clone(),
            ))
            .health_checks(check("eu-west-1", "someone-elses-alarm", last.clone()))
            .health_checks(check(
                "us-east-1",
                &format!("vantage-{name}-us-east-1"),
                InsufficientDataHealthStatus::Healthy,
            ))
            .marker("")
            .is_truncated(false)
            .max_items(1000)
            .build()
            .unwrap()
    });
    let list_records =
        mock!(aws_sdk_route53::Client::list_resource_record_sets).then_output(move || {
            let mut out = ListResourceRecordSetsOutput::builder()
                .is_truncated(false)
                .max_items(300);
            for region in REGIONS {
                out = out.resource_record_sets(
                    ResourceRecordSet::builder()
                        .name(support::RECORD)
                        .r#type(RrType::Cname)
                        .set_identifier(format!("{name}-{region}"))
                        .weight(50)
                        .ttl(60)
                        .health_check_id(format!("hc-{region}"))
                        .resource_records(
                            ResourceRecord::builder()
                                .value("o.example.com")
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                );
            }
            out.build().unwrap()
        });
    let expected = format!("vantage-{name}-");
    let update = mock!(aws_sdk_route53::Client::update_health_check)
        .match_requests(move |r| {
            r.health_check_version() == Some(7)
                && r.insufficient_data_health_status()
                    == Some(&InsufficientDataHealthStatus::LastKnownStatus)
                && r.alarm_identifier().is_some_and(|a| {
                    a.region() == &CloudWatchRegion::UsEast1
                        && a.name()
                            == format!(
                                "{expected}{}",
                                &r.health_check_id().unwrap_or_default()[3..]
                            )
                })
        })
        .then_output(|| UpdateHealthCheckOutput::builder().build());
    let route53 = mock_client!(
        aws_sdk_route53,
        RuleMode::MatchAny,
        [&list_checks, &list_records, &update]
    );
    let mut clients = clients(moto, &layout).await;
    clients.route53 = route53;

    let lines = run(&layout, &clients, Mode::Inspect).await;
    let checks: Vec<_> = lines
        .iter()
        .filter(|l| l.object.starts_with("health check"))
        .collect();
    let differs: Vec<_> = checks
        .iter()
        .filter(|l| l.status == Status::Differs)
        .collect();
    assert_eq!(differs.len(), 2, "{lines:#?}");
    assert!(
        differs.iter().any(|l| l.object.contains("id hc-eu-west-1")),
        "{lines:#?}"
    );
    assert!(
        differs.iter().any(|l| l.object.contains("id hc-us-east-1")),
        "{lines:#?}"
    );
    assert_eq!(update.num_calls(), 0, "inspect writes nothing");

    let lines = run(&layout, &clients, Mode::Apply).await;
    let updated = lines
        .iter()
        .filter(|l| l.status == Status::Updated && l.object.starts_with("health check"))
        .count();
    assert_eq!(updated, 2, "{lines:#?}");
    assert_eq!(
        update.num_calls(),
        2,
        "one UpdateHealthCheck per wrong check, each on its own alarm"
    );
}
