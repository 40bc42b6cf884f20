//! Route 53 for a fleet with `[[services]]`: two services sharing us-east-1 and eu-west-1 on
//! moto's server (one service's Region goes out and only its record changes, the health metric
//! carries the `Service` dimension, bootstrap builds per-(service, Region) objects once), and
//! 200 services against aws-smithy-mocks, where the calls are counted: a heartbeat is one
//! PutMetricData per 1,000 metrics, an observe pass one ListResourceRecordSets sweep and one
//! GetMetricData per 500 metrics, a weight move one ChangeResourceRecordSets per full batch.

mod support;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use std::collections::BTreeMap;
use support::{AwsMoto as _, Moto, SeedRecord};
use vantage_aggregator::backend::route53::layout::layout;
use vantage_aggregator::backend::route53::{
    HealthMode, RegionRecord, RetryPolicy, Route53Backend, Route53Config, ServiceRecords,
    DEFAULT_METRIC_NAMESPACE,
};
use vantage_aggregator::backend::{plan, Backend, Change, DesiredRegion, DesiredState};
use vantage_aggregator::bootstrap::{bootstrap, Clients, Line, Mode, Status};
use vantage_protocol::config::FleetConfig;

const SERVICES: [&str; 2] = ["orders", "payments"];
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];

fn record_name(service: &str) -> String {
    format!("{service}-origin.example.com.")
}

fn set_id(fleet: &str, service: &str, region: &str) -> String {
    format!("{fleet}-{service}-{region}")
}

/// Two services over [`REGIONS`], each with its own records in `zone`; one aggregator, every
/// AWS endpoint pointed at moto.
fn fleet(moto: &Moto, name: &str, zone: &str) -> FleetConfig {
    let endpoint = moto.endpoint();
    let mut text = format!(
        "[fleet]\nname = \"{name}\"\n[[vantages]]\nregion = \"eu-west-1\"\n\
         [aggregator]\nbackend = \"route53\"\nurl = \"https://agg.example.com\"\n\
         [agents.auth]\nkey_id = \"k1\"\n\
         [route53]\nhosted_zone_id = \"{zone}\"\nendpoint_url = \"{endpoint}\"\n"
    );
    for s in SERVICES {
        text += &format!(
            "[[services]]\nname = \"{s}\"\nglobal = {{ url = \"https://{s}.example.com/status\" }}\n"
        );
        for r in REGIONS {
            text += &format!(
                "[[services.regions]]\nname = \"{r}\"\nstatus_url = \"https://{s}.{r}.example.com/status\"\n"
            );
        }
        text += &format!("[services.route53]\nrecord_name = \"{}\"\n", record_name(s));
        for r in REGIONS {
            text += &format!(
                "[services.route53.regions.{r}]\nset_identifier = \"{}\"\n",
                set_id(name, s, r)
            );
        }
    }
    FleetConfig::parse(&text, "services test fleet").expect("fleet file")
}

/// The weights each service's records start with: (service, Region, weight).
const START: [(&str, &str, i64); 4] = [
    ("orders", "eu-west-1", 50),
    ("orders", "us-east-1", 100),
    ("payments", "eu-west-1", 120),
    ("payments", "us-east-1", 80),
];

/// A hosted zone with every service's weighted records (weights from [`START`]).
async fn seed(moto: &Moto, name: &str) -> String {
    let r53 = moto.route53().await;
    let zone = support::create_zone(&r53).await.expect("zone");
    for s in SERVICES {
        let records: Vec<SeedRecord> = START
            .iter()
            .filter(|(service, _, _)| *service == s)
            .map(|(_, r, weight)| SeedRecord {
                set_identifier: set_id(name, s, r),
                weight: *weight,
                value: format!("{s}.{r}.origin.example.net"),
                health_check_id: None,
            })
            .collect();
        support::create_records_named(&r53, &zone, &record_name(s), &records)
            .await
            .expect("records");
    }
    zone
}

/// The weight of every record of every service, by (service, Region).
async fn weights(moto: &Moto, name: &str, zone: &str) -> BTreeMap<(String, String), i64> {
    let r53 = moto.route53().await;
    let mut out = BTreeMap::new();
    for s in SERVICES {
        let records = support::read_records_named(&r53, zone, &record_name(s))
            .await
            .expect("read back");
        for r in REGIONS {
            let record = &records[&set_id(name, s, r)];
            assert_eq!(record.ttl(), Some(60), "{s}/{r}: TTL kept");
            let values: Vec<_> = record
                .resource_records()
                .iter()
                .map(|v| v.value())
                .collect();
            assert_eq!(
                values,
                [format!("{s}.{r}.origin.example.net")],
                "{s}/{r}: value kept"
            );
            out.insert(
                (s.to_owned(), r.to_owned()),
                record.weight().expect("weighted"),
            );
        }
    }
    out
}

fn desired(entries: &[(&str, bool, u8)]) -> DesiredState {
    entries
        .iter()
        .map(|(key, in_service, weight)| {
            let d = DesiredRegion {
                in_service: *in_service,
                weight: *weight,
            };
            (key.to_string(), d)
        })
        .collect()
}

#[tokio::test]
async fn one_services_region_goes_out_and_only_its_record_changes() {
    let moto = Moto::shared();
    let name = "svc-apply";
    let zone = seed(moto, name).await;
    let fleet = fleet(moto, name, &zone);
    // A metric name of this test's own: the binary's tests share one moto.
    let services: Vec<ServiceRecords> = ServiceRecords::of_fleet(&fleet)
        .expect("every service has records")
        .into_iter()
        .map(|mut s| {
            s.config.health = HealthMode::DataPlane {
                namespace: DEFAULT_METRIC_NAMESPACE.into(),
                metric_name: "ServicesApplyHealth".into(),
            };
            s
        })
        .collect();
    let backend = Route53Backend::connect_services_with(&moto.sdk_config().await, services)
        .await
        .expect("connect");
    assert_eq!(
        backend.unit_keys(),
        [
            "orders/eu-west-1",
            "orders/us-east-1",
            "payments/eu-west-1",
            "payments/us-east-1"
        ]
    );

    let observed = backend.observe().await.expect("observe");
    for (s, r, weight) in START {
        assert_eq!(
            observed[&format!("{s}/{r}")].weight,
            Some(weight as u8),
            "{s}/{r}"
        );
    }
    let before = weights(moto, name, &zone).await;

    let want = desired(&[
        ("orders/eu-west-1", true, 50),
        ("orders/us-east-1", true, 100),
        ("payments/eu-west-1", false, 0),
        ("payments/us-east-1", true, 80),
    ]);
    let changes = plan(&want, &observed);
    let weight_changes: Vec<_> = changes
        .iter()
        .filter(|c| matches!(c, Change::Weight { .. }))
        .collect();
    assert_eq!(
        weight_changes,
        [&Change::Weight {
            region: "payments/eu-west-1".into(),
            from: Some(120),
            to: 0
        }]
    );
    backend.apply(&changes, &want).await.expect("apply");
    // One PutMetricData for the four health values, one ChangeResourceRecordSets.
    assert_eq!(backend.write_calls(), 2);

    let after = weights(moto, name, &zone).await;
    for ((s, r), weight) in &after {
        if (s.as_str(), r.as_str()) == ("payments", "eu-west-1") {
            assert_eq!(*weight, 0, "payments/eu-west-1 is out");
        } else {
            assert_eq!(
                *weight,
                before[&(s.clone(), r.clone())],
                "{s}/{r} untouched"
            );
        }
    }

    // Idempotent: the second pass plans and writes nothing.
    let again = backend.observe().await.expect("observe again");
    assert_eq!(again["payments/eu-west-1"].in_service, Some(false));
    assert_eq!(again["orders/eu-west-1"].in_service, Some(true));
    let second = plan(&want, &again);
    assert!(second.is_empty(), "second pass: {second:?}");
    backend.apply(&second, &want).await.expect("empty apply");
    assert_eq!(backend.write_calls(), 2, "an empty pass writes nothing");

    // The health metric carries Service beside Region.
    let cw = moto.cloudwatch().await;
    let listed = cw
        .list_metrics()
        .namespace(DEFAULT_METRIC_NAMESPACE)
        .metric_name("ServicesApplyHealth")
        .send()
        .await
        .expect("ListMetrics");
    let mut sets: Vec<Vec<(String, String)>> = listed
        .metrics()
        .iter()
        .map(|m| {
            let mut d: Vec<(String, String)> = m
                .dimensions()
                .iter()
                .map(|d| {
                    let pair = (d.name().unwrap_or_default(), d.value().unwrap_or_default());
                    (pair.0.to_owned(), pair.1.to_owned())
                })
                .collect();
            d.sort();
            d
        })
        .collect();
    sets.sort();
    sets.dedup();
    let mut expected: Vec<Vec<(String, String)>> = SERVICES
        .iter()
        .flat_map(|s| {
            REGIONS.iter().map(move |r| {
                vec![
                    ("Region".to_owned(), r.to_string()),
                    ("Service".to_owned(), s.to_string()),
                ]
            })
        })
        .collect();
    expected.sort();
    assert_eq!(sets, expected);
    let now = std::time::SystemTime::now();
    for (s, r, value) in [
        ("payments", "eu-west-1", 0.0),
        ("orders", "eu-west-1", 1.0),
        ("payments", "us-east-1", 1.0),
    ] {
        let stats = cw
            .get_metric_statistics()
            .namespace(DEFAULT_METRIC_NAMESPACE)
            .metric_name("ServicesApplyHealth")
            .dimensions(Dimension::builder().name("Region").value(r).build())
            .dimensions(Dimension::builder().name("Service").value(s).build())
            .start_time(DateTime::from(now - std::time::Duration::from_secs(600)))
            .end_time(DateTime::from(now + std::time::Duration::from_secs(600)))
            .period(60)
            .statistics(Statistic::Minimum)
            .send()
            .await
            .expect("GetMetricStatistics");
        let points = stats.datapoints();
        assert!(!points.is_empty(), "{s}/{r}: no point");
        assert!(
            points.iter().all(|p| p.minimum() == Some(value)),
            "{s}/{r}: {points:?}"
        );
    }
}

fn statuses(lines: &[Line]) -> BTreeMap<Status, usize> {
    let mut count = BTreeMap::new();
    for l in lines {
        *count.entry(l.status).or_insert(0) += 1;
    }
    count
}

#[tokio::test]
async fn bootstrap_builds_per_service_objects_once() {
    let moto = Moto::shared();
    let name = "svc-boot";
    let zone = seed(moto, name).await;
    let layout = layout(&fleet(moto, name, &zone)).unwrap().unwrap();
    assert_eq!(layout.regions.len(), 4, "two services × two Regions");
    let sdk = moto.sdk_config().await;
    let clients = Clients::new(&layout, &sdk, &sdk);
    let run = |mode| {
        let (layout, clients) = (&layout, &clients);
        async move {
            bootstrap(layout, clients, mode, &mut |_| {})
                .await
                .expect("bootstrap")
        }
    };

    let dry = run(Mode::Inspect).await;
    assert_eq!(
        statuses(&dry),
        BTreeMap::from([(Status::Missing, 8), (Status::Differs, 4)]),
        "{dry:#?}"
    );
    let first = run(Mode::Apply).await;
    assert_eq!(
        statuses(&first),
        BTreeMap::from([(Status::Created, 8), (Status::Updated, 4)]),
        "{first:#?}"
    );
    let second = run(Mode::Apply).await;
    assert_eq!(
        statuses(&second),
        BTreeMap::from([(Status::Exists, 12)]),
        "a re-run creates nothing: {second:#?}"
    );

    // Alarms named for the service, on the metric's Service dimension.
    let cw = moto.cloudwatch().await;
    let alarms = cw
        .describe_alarms()
        .alarm_name_prefix(format!("vantage-{name}-"))
        .send()
        .await
        .expect("DescribeAlarms");
    let mut found: Vec<(String, Vec<(String, String)>)> = alarms
        .metric_alarms()
        .iter()
        .map(|a| {
            let mut dims: Vec<(String, String)> = a
                .dimensions()
                .iter()
                .map(|d| {
                    let name = d.name().unwrap_or_default().to_owned();
                    (name, d.value().unwrap_or_default().to_owned())
                })
                .collect();
            dims.sort();
            (a.alarm_name().unwrap_or_default().to_owned(), dims)
        })
        .collect();
    found.sort();
    let expected: Vec<(String, Vec<(String, String)>)> = SERVICES
        .iter()
        .flat_map(|s| {
            REGIONS.iter().map(move |r| {
                (
                    format!("vantage-{name}-{s}-{r}"),
                    vec![
                        ("Region".to_owned(), r.to_string()),
                        ("Service".to_owned(), s.to_string()),
                    ],
                )
            })
        })
        .collect();
    assert_eq!(found, expected);

    // Each record is guarded by its own service's check, found by its CallerReference.
    let r53 = moto.route53().await;
    let checks = r53
        .list_health_checks()
        .send()
        .await
        .expect("ListHealthChecks");
    for s in SERVICES {
        let records = support::read_records_named(&r53, &zone, &record_name(s))
            .await
            .unwrap();
        for r in REGIONS {
            let reference = format!("vantage:{name}:{s}:{r}:vote");
            let check = checks
                .health_checks()
                .iter()
                .find(|c| c.caller_reference() == reference)
                .unwrap_or_else(|| panic!("no check {reference}"));
            assert_eq!(
                records[&set_id(name, s, r)].health_check_id(),
                Some(check.id()),
                "{s}/{r}"
            );
        }
    }
}

mod counted {
    //! 200 services against aws-smithy-mocks, every call counted.

    use super::*;
    use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
    use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataOutput;
    use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsOutput;
    use aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsOutput;
    use aws_sdk_route53::types::{
        ChangeInfo, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
    };
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
    use std::sync::{Arc, Mutex};

    const COUNT: usize = 200;
    const THREE: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];

    /// The sizes of the requests each operation received.
    #[derive(Default)]
    struct Calls {
        puts: Mutex<Vec<usize>>,
        gets: Mutex<Vec<usize>>,
        lists: Mutex<usize>,
        batches: Mutex<Vec<usize>>,
    }

    fn service(i: usize) -> String {
        format!("svc{i:03}")
    }

    fn config(i: usize) -> Route53Config {
        Route53Config {
            hosted_zone_id: "Z1".into(),
            record_name: record_name(&service(i)),
            record_type: "CNAME".into(),
            regions: THREE
                .iter()
                .map(|r| {
                    let record = RegionRecord {
                        set_identifier: format!("{}-{r}", service(i)),
                        health_check_id: None,
                    };
                    (r.to_string(), record)
                })
                .collect(),
            health: HealthMode::DataPlane {
                namespace: "Vantage".into(),
                metric_name: "RegionHealthy".into(),
            },
            insync_timeout: std::time::Duration::from_secs(5),
            retry: RetryPolicy::default(),
            replica: None,
        }
    }

    /// Every service's records in one page, as a zone holding only them would list.
    fn every_record() -> Vec<ResourceRecordSet> {
        (0..COUNT)
            .flat_map(|i| {
                THREE.iter().map(move |r| {
                    ResourceRecordSet::builder()
                        .name(record_name(&service(i)))
                        .r#type(RrType::Cname)
                        .set_identifier(format!("{}-{r}", service(i)))
                        .weight(100)
                        .ttl(60)
                        .resource_records(
                            ResourceRecord::builder()
                                .value("o.example.net")
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap()
                })
            })
            .collect()
    }

    fn backend(calls: &Arc<Calls>) -> Route53Backend {
        let (c1, c2, c3, c4) = (
            Arc::clone(calls),
            Arc::clone(calls),
            Arc::clone(calls),
            Arc::clone(calls),
        );
        let put = mock!(aws_sdk_cloudwatch::Client::put_metric_data)
            .match_requests(move |req| {
                c1.puts.lock().unwrap().push(req.metric_data().len());
                true
            })
            .then_output(|| PutMetricDataOutput::builder().build());
        let get = mock!(aws_sdk_cloudwatch::Client::get_metric_data)
            .match_requests(move |req| {
                c2.gets
                    .lock()
                    .unwrap()
                    .push(req.metric_data_queries().len());
                true
            })
            .then_output(|| GetMetricDataOutput::builder().build());
        let list = mock!(aws_sdk_route53::Client::list_resource_record_sets)
            .match_requests(move |_| {
                *c3.lists.lock().unwrap() += 1;
                true
            })
            .then_output(|| {
                ListResourceRecordSetsOutput::builder()
                    .set_resource_record_sets(Some(every_record()))
                    .is_truncated(false)
                    .max_items(300)
                    .build()
                    .unwrap()
            });
        let change = mock!(aws_sdk_route53::Client::change_resource_record_sets)
            .match_requests(move |req| {
                let n = req.change_batch().map_or(0, |b| b.changes().len());
                c4.batches.lock().unwrap().push(n);
                true
            })
            .then_output(|| {
                let info = ChangeInfo::builder()
                    .id("C1")
                    .status(ChangeStatus::Insync)
                    .submitted_at(aws_sdk_route53::primitives::DateTime::from_secs(0))
                    .build()
                    .unwrap();
                ChangeResourceRecordSetsOutput::builder()
                    .change_info(info)
                    .build()
            });
        let cw_rules: [&Rule; 2] = [&put, &get];
        let r53_rules: [&Rule; 2] = [&list, &change];
        let cloudwatch = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, &cw_rules);
        let route53 = mock_client!(aws_sdk_route53, RuleMode::MatchAny, &r53_rules);
        let services = (0..COUNT)
            .map(|i| ServiceRecords {
                service: service(i),
                config: config(i),
            })
            .collect();
        Route53Backend::from_service_clients(route53, cloudwatch, services).expect("backend")
    }

    fn every_unit(weight: u8) -> DesiredState {
        (0..COUNT)
            .flat_map(|i| {
                THREE.iter().map(move |r| {
                    let d = DesiredRegion {
                        in_service: true,
                        weight,
                    };
                    (format!("{}/{r}", service(i)), d)
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn two_hundred_services_heartbeat_in_one_put_metric_data() {
        let calls = Arc::new(Calls::default());
        let backend = backend(&calls);
        let want = every_unit(100);
        backend.heartbeat(&want).await.expect("heartbeat");
        // 600 metrics: one request (at most 1,000 metrics each).
        assert_eq!(*calls.puts.lock().unwrap(), [600]);

        // Observe: one ListResourceRecordSets sweep reads all 200 record names, and
        // GetMetricData takes 500 metrics a request.
        let observed = backend.observe().await.expect("observe");
        assert_eq!(observed.len(), 600);
        assert!(observed.values().all(|o| o.weight == Some(100)));
        assert_eq!(*calls.lists.lock().unwrap(), 1);
        assert_eq!(*calls.gets.lock().unwrap(), [500, 100]);

        // Every service's weights move: 600 UPSERTs counting twice against 1,000
        // ResourceRecord elements, so two batches, each service's three records in one.
        let moved = every_unit(120);
        let changes = plan(&moved, &observed);
        backend.apply(&changes, &moved).await.expect("apply");
        let batches = calls.batches.lock().unwrap().clone();
        assert_eq!(batches, [498, 102]);
        // The health change went out in one more PutMetricData of 600.
        assert_eq!(*calls.puts.lock().unwrap(), [600, 600]);
    }
}
