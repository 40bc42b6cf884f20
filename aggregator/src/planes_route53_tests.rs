//! The planes driving the real Route 53 backend, with AWS played by aws-smithy-mocks on a
//! paused clock: Route 53 answering 503, Throttling and AccessDenied for five minutes, and a
//! weight batch taking 30 s to reach INSYNC. What is checked is what a failover waits on: the
//! health metric keeps flowing every period through the outage, a Region failing in the
//! middle of it is published at once, a take-out is never queued behind a weight write's
//! INSYNC wait, and the weights catch up when Route 53 answers again.

use crate::backend::route53::{
    HealthMode, RegionRecord, RetryPolicy, Route53Backend, Route53Config,
};
use crate::backend::{DesiredRegion, DesiredState};
use crate::config::AggregatorConfig;
use crate::reconcile::PlaneKind;
use crate::service::{lock, Aggregator};
use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataOutput;
use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsOutput;
use aws_sdk_route53::operation::get_change::GetChangeOutput;
use aws_sdk_route53::operation::get_health_check::GetHealthCheckOutput;
use aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsOutput;
use aws_sdk_route53::operation::update_health_check::UpdateHealthCheckOutput;
use aws_sdk_route53::primitives::DateTime;
use aws_sdk_route53::types::{
    ChangeInfo, ChangeStatus, HealthCheck, HealthCheckConfig, HealthCheckType, ResourceRecord,
    ResourceRecordSet, RrType,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use vantage_protocol::config::FleetConfig;

const RECORD: &str = "api-origin.example.com.";
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];

/// How Route 53 answers right now.
const ROUTE53_UP: u8 = 0;
const ROUTE53_503: u8 = 1;
const ROUTE53_THROTTLING: u8 = 2;
const ROUTE53_ACCESS_DENIED: u8 = 3;

/// What the mocked AWS saw, with the (paused) time it saw it.
#[derive(Default)]
struct Aws {
    /// Route 53's mood (one of the `ROUTE53_*` values).
    route53: AtomicU8,
    /// The weighted records' weights as Route 53 holds them.
    weights: Mutex<BTreeMap<String, i64>>,
    /// Successful ChangeResourceRecordSets: when, and the weights written.
    weight_writes: Mutex<Vec<(Instant, BTreeMap<String, i64>)>>,
    /// PutMetricData: when, and each Region's published value.
    health_puts: Mutex<Vec<(Instant, BTreeMap<String, f64>)>>,
    /// UpdateHealthCheck: when, health check id and threshold.
    health_updates: Mutex<Vec<(Instant, String, i32)>>,
    /// When the last weight batch was accepted (GetChange answers PENDING until `insync` later).
    last_change: Mutex<Option<Instant>>,
    insync: Mutex<Duration>,
    /// CALCULATED thresholds (control-plane mode) by health check id.
    thresholds: Mutex<BTreeMap<String, i32>>,
}

impl Aws {
    fn new() -> Arc<Aws> {
        let aws = Aws::default();
        *lock(&aws.weights) = REGIONS.iter().map(|r| (set_id(r), 100)).collect();
        *lock(&aws.thresholds) = REGIONS.iter().map(|r| (check_id(r), 0)).collect();
        Arc::new(aws)
    }

    fn down(&self) -> bool {
        self.route53.load(Ordering::Relaxed) != ROUTE53_UP
    }

    /// When each Region was first published with `value` at or after `since`.
    fn published(&self, region: &str, value: f64, since: Instant) -> Option<Instant> {
        lock(&self.health_puts)
            .iter()
            .find(|(at, values)| *at >= since && values.get(region) == Some(&value))
            .map(|(at, _)| *at)
    }

    fn written(&self, region: &str, weight: i64, since: Instant) -> Option<Instant> {
        lock(&self.weight_writes)
            .iter()
            .find(|(at, w)| *at >= since && w.get(&set_id(region)) == Some(&weight))
            .map(|(at, _)| *at)
    }
}

fn set_id(region: &str) -> String {
    format!("vantage-{region}")
}

fn check_id(region: &str) -> String {
    format!("hc-{region}")
}

/// A Route 53 error body with its HTTP status.
fn route53_error(code: &str, message: &str) -> Option<String> {
    Some(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>planes-test</RequestId></ErrorResponse>"#
    ))
}

/// Rules answering `mood` with its error for any Route 53 operation while it lasts.
macro_rules! outage_rules {
    ($aws:expr, $op:path) => {{
        let when = |mood: u8| {
            let aws = $aws.clone();
            move |_: &_| aws.route53.load(Ordering::Relaxed) == mood
        };
        [
            mock!($op)
                .match_requests(when(ROUTE53_503))
                .sequence()
                .http_status(
                    503,
                    route53_error("ServiceUnavailable", "Service Unavailable"),
                )
                .repeatedly()
                .build(),
            mock!($op)
                .match_requests(when(ROUTE53_THROTTLING))
                .sequence()
                .http_status(400, route53_error("Throttling", "Rate exceeded"))
                .repeatedly()
                .build(),
            mock!($op)
                .match_requests(when(ROUTE53_ACCESS_DENIED))
                .sequence()
                .http_status(
                    403,
                    route53_error(
                        "AccessDenied",
                        "User: arn:aws:iam::123456789012:role/vantage is not authorized",
                    ),
                )
                .repeatedly()
                .build(),
        ]
    }};
}

fn change_info(status: ChangeStatus) -> ChangeInfo {
    ChangeInfo::builder()
        .id("/change/C1")
        .status(status)
        .submitted_at(DateTime::from_secs(0))
        .build()
        .unwrap()
}

fn calculated(id: &str, threshold: i32) -> HealthCheck {
    HealthCheck::builder()
        .id(id)
        .caller_reference(id)
        .health_check_version(1)
        .health_check_config(
            HealthCheckConfig::builder()
                .r#type(HealthCheckType::Calculated)
                .health_threshold(threshold)
                .child_health_checks("child-a")
                .child_health_checks("child-b")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// Every Route 53 and CloudWatch rule, answering from and recording into `aws`.
fn rules(aws: &Arc<Aws>) -> (Vec<Rule>, Vec<Rule>) {
    use aws_sdk_cloudwatch::Client as CloudWatch;
    use aws_sdk_route53::Client as Route53;
    let mut route53 = Vec::new();
    route53.extend(outage_rules!(aws, Route53::list_resource_record_sets));
    route53.extend(outage_rules!(aws, Route53::change_resource_record_sets));
    route53.extend(outage_rules!(aws, Route53::get_change));
    route53.extend(outage_rules!(aws, Route53::get_health_check));
    route53.extend(outage_rules!(aws, Route53::update_health_check));
    let held = aws.clone();
    route53.push(
        mock!(Route53::list_resource_record_sets).then_output(move || {
            let mut out = ListResourceRecordSetsOutput::builder()
                .is_truncated(false)
                .max_items(300);
            for (id, weight) in lock(&held.weights).iter() {
                out = out.resource_record_sets(
                    ResourceRecordSet::builder()
                        .name(RECORD)
                        .r#type(RrType::Cname)
                        .set_identifier(id)
                        .weight(*weight)
                        .ttl(60)
                        .resource_records(
                            ResourceRecord::builder()
                                .value(format!("{id}.origin.example.net"))
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap(),
                );
            }
            out.build().unwrap()
        }),
    );
    let written = aws.clone();
    route53.push(
        mock!(Route53::change_resource_record_sets)
            .match_requests(move |req| {
                let mut weights = lock(&written.weights);
                for change in req.change_batch().map(|b| b.changes()).unwrap_or_default() {
                    if let Some(set) = change.resource_record_set() {
                        if let (Some(id), Some(w)) = (set.set_identifier(), set.weight()) {
                            weights.insert(id.to_owned(), w);
                        }
                    }
                }
                let now = Instant::now();
                lock(&written.weight_writes).push((now, weights.clone()));
                *lock(&written.last_change) = Some(now);
                true
            })
            .then_output(|| {
                ChangeResourceRecordSetsOutput::builder()
                    .change_info(change_info(ChangeStatus::Pending))
                    .build()
            }),
    );
    let polled = aws.clone();
    route53.push(mock!(Route53::get_change).then_output(move || {
        let insync = *lock(&polled.insync);
        let done = lock(&polled.last_change).is_none_or(|at| at.elapsed() >= insync);
        let status = if done {
            ChangeStatus::Insync
        } else {
            ChangeStatus::Pending
        };
        GetChangeOutput::builder()
            .change_info(change_info(status))
            .build()
    }));
    let checks = aws.clone();
    let asked = Arc::new(Mutex::new(String::new()));
    let asked_for = asked.clone();
    route53.push(
        mock!(Route53::get_health_check)
            .match_requests(move |req| {
                *lock(&asked_for) = req.health_check_id().unwrap_or_default().to_owned();
                true
            })
            .then_output(move || {
                let id = lock(&asked).clone();
                let threshold = lock(&checks.thresholds).get(&id).copied().unwrap_or(0);
                GetHealthCheckOutput::builder()
                    .health_check(calculated(&id, threshold))
                    .build()
            }),
    );
    let updated = aws.clone();
    route53.push(
        mock!(Route53::update_health_check)
            .match_requests(move |req| {
                let id = req.health_check_id().unwrap_or_default().to_owned();
                let threshold = req.health_threshold().unwrap_or_default();
                lock(&updated.thresholds).insert(id.clone(), threshold);
                lock(&updated.health_updates).push((Instant::now(), id, threshold));
                true
            })
            .then_output(|| {
                UpdateHealthCheckOutput::builder()
                    .health_check(calculated("updated", 0))
                    .build()
            }),
    );

    let published = aws.clone();
    let cloudwatch = vec![
        mock!(CloudWatch::put_metric_data)
            .match_requests(move |req| {
                let values = req
                    .metric_data()
                    .iter()
                    .filter_map(|d| {
                        let region = d.dimensions().first()?.value()?.to_owned();
                        Some((region, d.value()?))
                    })
                    .collect();
                lock(&published.health_puts).push((Instant::now(), values));
                true
            })
            .then_output(|| PutMetricDataOutput::builder().build()),
        mock!(CloudWatch::get_metric_data).then_output(|| GetMetricDataOutput::builder().build()),
    ];
    (route53, cloudwatch)
}

fn aggregator(aws: &Arc<Aws>, health: HealthMode) -> Arc<Aggregator<Route53Backend>> {
    std::env::set_var(
        "VANTAGE_PLANES_R53_TEST_KEY",
        "planes-route53-test-key-0123456789",
    );
    let mut text = String::from(
        "[fleet]\nname = \"planes\"\nreport_interval = \"1s\"\n\
         [global]\nurl = \"https://api.example.com/status\"\n\
         [aggregator]\nurl = \"http://127.0.0.1:1\"\nevaluate_every = \"1s\"\n\
         [agents.auth]\nkey_id = \"k1\"\nkey_env = \"VANTAGE_PLANES_R53_TEST_KEY\"\n\
         [[vantages]]\nregion = \"eu-west-1\"\n",
    );
    for r in REGIONS {
        text += &format!(
            "[[regions]]\nname = \"{r}\"\nstatus_url = \"https://{r}.example.com/status\"\n"
        );
    }
    let config =
        AggregatorConfig::from_fleet(FleetConfig::parse(&text, "planes test").unwrap()).unwrap();
    let (route53_rules, cloudwatch_rules) = rules(aws);
    let route53_refs: Vec<&Rule> = route53_rules.iter().collect();
    let cloudwatch_refs: Vec<&Rule> = cloudwatch_rules.iter().collect();
    let route53 = mock_client!(aws_sdk_route53, RuleMode::MatchAny, &route53_refs);
    let cloudwatch = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, &cloudwatch_refs);
    let backend_config = Route53Config {
        hosted_zone_id: "Z123".into(),
        record_name: RECORD.into(),
        record_type: "CNAME".into(),
        regions: REGIONS
            .iter()
            .map(|r| {
                let record = RegionRecord {
                    set_identifier: set_id(r),
                    health_check_id: Some(check_id(r)),
                };
                (r.to_string(), record)
            })
            .collect(),
        health,
        insync_timeout: Duration::from_secs(120),
        retry: RetryPolicy::default(),
        replica: None,
    };
    let backend = Route53Backend::from_clients(route53, cloudwatch, backend_config);
    Arc::new(Aggregator::new(config, backend, None).unwrap())
}

fn data_plane() -> HealthMode {
    HealthMode::DataPlane {
        namespace: "Vantage".into(),
        metric_name: "RegionHealthy".into(),
    }
}

fn desired(eu: (bool, u8), us: (bool, u8)) -> DesiredState {
    [("eu-west-1", eu), ("us-east-1", us)]
        .into_iter()
        .map(|(r, (in_service, weight))| (r.to_owned(), DesiredRegion { in_service, weight }))
        .collect()
}

/// Starts the heartbeat and both control planes; dropping the sender stops them.
fn start(agg: &Arc<Aggregator<Route53Backend>>) -> watch::Sender<bool> {
    let (stop, rx) = watch::channel(false);
    tokio::spawn(agg.clone().run_heartbeat(rx.clone()));
    tokio::spawn(agg.clone().run_plane(PlaneKind::Health, rx.clone()));
    tokio::spawn(agg.clone().run_plane(PlaneKind::Weights, rx));
    stop
}

#[tokio::test(start_paused = true)]
async fn five_minutes_of_route53_errors_never_stop_the_health_metric() {
    let aws = Aws::new();
    let agg = aggregator(&aws, data_plane());
    let _stop = start(&agg);
    let began = Instant::now();
    agg.planes.publish(desired((true, 128), (true, 128)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        aws.written("eu-west-1", 128, began).is_some(),
        "first weights written"
    );

    // Route 53 answers 503, then Throttling, then AccessDenied: 100 s each.
    let outage = Instant::now();
    aws.route53.store(ROUTE53_503, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(60)).await;
    // eu-west-1 fails in the middle of the outage: published at once, not after Route 53.
    agg.planes.publish(desired((false, 0), (true, 255)));
    let decided = Instant::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let published = aws
        .published("eu-west-1", 0.0, decided)
        .expect("eu-west-1 published unhealthy during the outage");
    assert!(
        published - decided < Duration::from_millis(50),
        "published {:?} after the decision",
        published - decided
    );
    tokio::time::sleep(Duration::from_secs(40)).await;
    aws.route53.store(ROUTE53_THROTTLING, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(100)).await;
    aws.route53.store(ROUTE53_ACCESS_DENIED, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert!(aws.down());

    // A publication every period of the outage, eu-west-1 at 0 from the decision on.
    let puts: Vec<(Instant, BTreeMap<String, f64>)> = lock(&aws.health_puts)
        .iter()
        .filter(|(at, _)| *at >= outage)
        .cloned()
        .collect();
    assert!(puts.len() >= 30, "{} publications in 5 min", puts.len());
    let mut last = outage;
    for (at, values) in &puts {
        assert!(
            *at - last <= Duration::from_secs(10),
            "gap {:?}",
            *at - last
        );
        last = *at;
        if *at >= published {
            assert_eq!(values.get("eu-west-1"), Some(&0.0));
        }
    }
    assert!(Instant::now() - last <= Duration::from_secs(10));
    assert!(
        aws.written("us-east-1", 255, outage).is_none(),
        "nothing reached Route 53 while it was failing"
    );
    let failing = agg.planes.last_result();
    assert!(!failing.ok, "{failing:?}");

    // Route 53 answers again: the weights follow within one backoff (at most 60 s).
    aws.route53.store(ROUTE53_UP, Ordering::Relaxed);
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(65)).await;
    let caught_up = aws
        .written("us-east-1", 255, back)
        .expect("weights caught up");
    assert!(
        caught_up - back <= Duration::from_secs(61),
        "{:?}",
        caught_up - back
    );
    assert_eq!(lock(&aws.weights).get(&set_id("eu-west-1")), Some(&0));
    assert!(agg.planes.last_result().ok);
}

#[tokio::test(start_paused = true)]
async fn a_take_out_reaches_route53_while_a_weight_batch_waits_30s_for_insync() {
    let aws = Aws::new();
    *lock(&aws.insync) = Duration::from_secs(30);
    let agg = aggregator(&aws, HealthMode::ControlPlane);
    let _stop = start(&agg);
    let began = Instant::now();
    agg.planes.publish(desired((true, 128), (true, 128)));
    // The weight batch is written, then waits 30 s for INSYNC on the weights plane.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(aws.written("eu-west-1", 128, began).is_some());
    assert!(lock(&aws.last_change).is_some_and(|at| at.elapsed() < Duration::from_secs(30)));

    // Route 53 throttles for a moment just as eu-west-1 fails.
    aws.route53.store(ROUTE53_THROTTLING, Ordering::Relaxed);
    agg.planes.publish(desired((false, 0), (true, 255)));
    let decided = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    aws.route53.store(ROUTE53_UP, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (forced_at, _, threshold) = lock(&aws.health_updates)
        .iter()
        .find(|(_, id, _)| *id == check_id("eu-west-1"))
        .cloned()
        .expect("eu-west-1's CALCULATED check forced unhealthy");
    assert_eq!(threshold, 3, "children + 1");
    // The take-out waited for the throttling to pass (one backoff), never for INSYNC.
    let waited = forced_at - decided;
    assert!(waited < Duration::from_secs(3), "take-out after {waited:?}");
    assert!(
        lock(&aws.last_change).is_some_and(|at| forced_at - at < Duration::from_secs(30)),
        "forced while the weight batch was still PENDING"
    );
    // The weights follow once the first batch is INSYNC and weights.min_interval has passed.
    tokio::time::sleep(Duration::from_secs(70)).await;
    assert!(aws.written("us-east-1", 255, decided).is_some());
}
