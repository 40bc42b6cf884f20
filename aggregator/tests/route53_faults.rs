//! The Route 53 backend under injected AWS errors (aws-smithy-mocks): what is retried, how
//! often, what is counted, and what surfaces. Error responses are real Route 53 XML bodies with
//! their HTTP status, so the SDK's own error parsing runs. Time is paused: backoffs and INSYNC
//! polling take no wall-clock time.

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
use aws_sdk_route53::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::time::Duration;
use vantage_aggregator::backend::route53::{
    HealthMode, RegionRecord, RetryPolicy, Route53Backend, Route53Config, RETRIES_METRIC,
};
use vantage_aggregator::backend::{Backend, BackendError, Change, DesiredRegion, DesiredState};

const RECORD: &str = "api-origin.example.com.";

fn config(health: HealthMode) -> Route53Config {
    Route53Config {
        hosted_zone_id: "Z123".into(),
        record_name: RECORD.into(),
        record_type: "CNAME".into(),
        regions: ["eu-west-1", "us-east-1"]
            .iter()
            .map(|r| {
                (
                    r.to_string(),
                    RegionRecord {
                        set_identifier: format!("vantage-{r}"),
                        health_check_id: Some(format!("hc-{r}")),
                    },
                )
            })
            .collect(),
        health,
        insync_timeout: Duration::from_secs(60),
        retry: RetryPolicy::default(),
        replica: None,
    }
}

fn desired() -> DesiredState {
    [("eu-west-1", 120), ("us-east-1", 0)]
        .iter()
        .map(|(r, w)| {
            (
                r.to_string(),
                DesiredRegion {
                    in_service: *w > 0,
                    weight: *w,
                },
            )
        })
        .collect()
}

fn weight_change() -> Vec<Change> {
    vec![Change::Weight {
        region: "eu-west-1".into(),
        from: Some(100),
        to: 120,
    }]
}

fn backend(rules: &[&Rule], health: HealthMode) -> Route53Backend {
    let route53 = mock_client!(aws_sdk_route53, RuleMode::MatchAny, rules);
    // Never called in these tests: health changes go through Route 53 (control plane) and
    // weight changes never touch CloudWatch.
    let cloudwatch = aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::Config::builder()
            .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudwatch::config::Region::new("us-east-1"))
            .build(),
    );
    Route53Backend::from_clients(route53, cloudwatch, config(health))
}

fn records_rule() -> Rule {
    mock!(Client::list_resource_record_sets).then_output(|| {
        let record = |region: &str, weight: i64| {
            ResourceRecordSet::builder()
                .name(RECORD)
                .r#type(RrType::Cname)
                .set_identifier(format!("vantage-{region}"))
                .weight(weight)
                .ttl(60)
                .resource_records(
                    ResourceRecord::builder()
                        .value(format!("{region}.origin.example.net"))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        };
        ListResourceRecordSetsOutput::builder()
            .resource_record_sets(record("eu-west-1", 100))
            .resource_record_sets(record("us-east-1", 50))
            .is_truncated(false)
            .max_items(300)
            .build()
            .unwrap()
    })
}

fn change_info(status: ChangeStatus) -> ChangeInfo {
    ChangeInfo::builder()
        .id("/change/C1")
        .status(status)
        .submitted_at(DateTime::from_secs(0))
        .build()
        .unwrap()
}

fn changed(status: ChangeStatus) -> ChangeResourceRecordSetsOutput {
    ChangeResourceRecordSetsOutput::builder()
        .change_info(change_info(status))
        .build()
}

/// A Route 53 error response body.
fn aws_error(code: &str, message: &str) -> Option<String> {
    Some(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>0f7e4f3c-test</RequestId></ErrorResponse>"#
    ))
}

fn calculated(version: i64, threshold: i32) -> GetHealthCheckOutput {
    GetHealthCheckOutput::builder()
        .health_check(
            HealthCheck::builder()
                .id("hc-us-east-1")
                .caller_reference("ref")
                .health_check_version(version)
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
                .unwrap(),
        )
        .build()
}

/// Counts recorded on this thread (tokio's test runtime is single-threaded).
fn retries(snapshotter: &Snapshotter, operation: &str) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| {
            key.key().name() == RETRIES_METRIC
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "operation" && l.value() == operation)
        })
        .map(|(_, _, _, value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

fn recorder() -> (DebuggingRecorder, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    (recorder, snapshotter)
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_with_backoff_and_counted() {
    let (recorder, snapshotter) = recorder();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let list = records_rule();
    let change = mock!(Client::change_resource_record_sets)
        .match_requests(|req| {
            // One batch, eu-west-1's record with the new weight and its value kept.
            let changes = req.change_batch().map(|b| b.changes()).unwrap_or_default();
            changes.len() == 1
                && changes[0].resource_record_set().is_some_and(|r| {
                    r.weight() == Some(120)
                        && r.ttl() == Some(60)
                        && r.resource_records()[0].value() == "eu-west-1.origin.example.net"
                })
        })
        .sequence()
        .http_status(400, aws_error("Throttling", "Rate exceeded"))
        .times(2)
        .output(|| changed(ChangeStatus::Insync))
        .build();
    let backend = backend(&[&list, &change], HealthMode::ControlPlane);
    let started = tokio::time::Instant::now();
    backend
        .apply(&weight_change(), &desired())
        .await
        .expect("applied after retries");
    assert_eq!(change.num_calls(), 3);
    assert_eq!(backend.write_calls(), 3);
    assert_eq!(retries(&snapshotter, "ChangeResourceRecordSets"), 2);
    // Two backoffs of the default policy: 250 ms, then at least 250 ms (half of 500 ms).
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn prior_request_not_complete_is_retried_then_insync_is_awaited() {
    let (recorder, snapshotter) = recorder();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let list = records_rule();
    let change = mock!(Client::change_resource_record_sets)
        .sequence()
        .http_status(
            400,
            aws_error(
                "PriorRequestNotComplete",
                "The request was rejected because Route 53 was still processing a prior request.",
            ),
        )
        .output(|| changed(ChangeStatus::Pending))
        .build();
    let get_change = mock!(Client::get_change)
        .sequence()
        .output(|| {
            GetChangeOutput::builder()
                .change_info(change_info(ChangeStatus::Pending))
                .build()
        })
        .output(|| {
            GetChangeOutput::builder()
                .change_info(change_info(ChangeStatus::Insync))
                .build()
        })
        .build();
    let backend = backend(&[&list, &change, &get_change], HealthMode::ControlPlane);
    backend
        .apply(&weight_change(), &desired())
        .await
        .expect("applied");
    assert_eq!(change.num_calls(), 2);
    assert_eq!(get_change.num_calls(), 2, "polled until INSYNC");
    assert_eq!(retries(&snapshotter, "ChangeResourceRecordSets"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_change_stuck_pending_is_reported_after_the_insync_timeout() {
    let list = records_rule();
    let change =
        mock!(Client::change_resource_record_sets).then_output(|| changed(ChangeStatus::Pending));
    let get_change = mock!(Client::get_change).then_output(|| {
        GetChangeOutput::builder()
            .change_info(change_info(ChangeStatus::Pending))
            .build()
    });
    let backend = backend(&[&list, &change, &get_change], HealthMode::ControlPlane);
    let started = tokio::time::Instant::now();
    let err = backend
        .apply(&weight_change(), &desired())
        .await
        .expect_err("still pending");
    assert!(err.to_string().contains("still PENDING"), "{err}");
    assert_eq!(change.num_calls(), 1, "the batch is not resent");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn health_check_version_mismatch_is_re_read_and_retried() {
    let (recorder, snapshotter) = recorder();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let get = mock!(Client::get_health_check)
        .sequence()
        .output(|| calculated(7, 0))
        // Someone else wrote in between: the second read has a new version.
        .output(|| calculated(8, 0))
        .build();
    let update = mock!(Client::update_health_check)
        .sequence()
        .http_status(
            409,
            aws_error(
                "HealthCheckVersionMismatch",
                "The value of HealthCheckVersion in the request doesn't match the value in the health check.",
            ),
        )
        .output(|| {
            UpdateHealthCheckOutput::builder()
                .health_check(calculated(8, 3).health_check.unwrap())
                .build()
        })
        .build();
    let versions = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = versions.clone();
    let spy = mock!(Client::update_health_check)
        .match_requests(move |req| {
            seen.lock().unwrap().push((
                req.health_check_version(),
                req.health_threshold(),
                req.child_health_checks().len(),
            ));
            false
        })
        .then_output(|| UpdateHealthCheckOutput::builder().build());
    let backend = backend(&[&spy, &get, &update], HealthMode::ControlPlane);
    backend
        .apply(
            &[Change::Health {
                region: "us-east-1".into(),
                in_service: false,
            }],
            &desired(),
        )
        .await
        .expect("applied after re-read");
    assert_eq!(get.num_calls(), 2);
    assert_eq!(update.num_calls(), 2);
    assert_eq!(
        *versions.lock().unwrap(),
        [(Some(7), Some(3), 2), (Some(8), Some(3), 2)],
        "each write carries the version it was computed from; threshold = children + 1"
    );
    assert_eq!(retries(&snapshotter, "UpdateHealthCheck"), 1);
}

#[tokio::test(start_paused = true)]
async fn access_denied_surfaces_at_once_with_its_code() {
    let (recorder, snapshotter) = recorder();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let list = records_rule();
    let change = mock!(Client::change_resource_record_sets)
        .sequence()
        .http_status(
            403,
            aws_error(
                "AccessDenied",
                "User: arn:aws:iam::123456789012:user/vantage is not authorized to perform: route53:ChangeResourceRecordSets",
            ),
        )
        .repeatedly()
        .build();
    let backend = backend(&[&list, &change], HealthMode::ControlPlane);
    let err = backend
        .apply(&weight_change(), &desired())
        .await
        .expect_err("denied");
    match &err {
        BackendError::Apply { change, message } => {
            assert!(change.contains("eu-west-1: weight 100 -> 120"), "{err}");
            assert!(message.contains("AccessDenied"), "{err}");
            assert!(message.contains("not authorized"), "{err}");
        }
        other => panic!("expected Apply, got {other:?}"),
    }
    assert_eq!(change.num_calls(), 1, "not retried");
    assert_eq!(retries(&snapshotter, "ChangeResourceRecordSets"), 0);
}

#[tokio::test(start_paused = true)]
async fn invalid_change_batch_surfaces_with_route53s_messages() {
    let list = records_rule();
    let change = mock!(Client::change_resource_record_sets)
        .sequence()
        .http_status(
            400,
            Some(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<InvalidChangeBatch xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Messages><Message>RRSet with DNS name api-origin.example.com., type CNAME, SetIdentifier vantage-eu-west-1 cannot be created as weighted</Message></Messages><RequestId>b25f48e8-test</RequestId></InvalidChangeBatch>"#
                    .into(),
            ),
        )
        .repeatedly()
        .build();
    let backend = backend(&[&list, &change], HealthMode::ControlPlane);
    let err = backend
        .apply(&weight_change(), &desired())
        .await
        .expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("InvalidChangeBatch"), "{text}");
    assert!(text.contains("cannot be created as weighted"), "{text}");
    assert_eq!(change.num_calls(), 1, "not retried");
}

#[tokio::test(start_paused = true)]
async fn retries_are_bounded() {
    let (recorder, snapshotter) = recorder();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let list = records_rule();
    let change = mock!(Client::change_resource_record_sets)
        .sequence()
        .http_status(503, None)
        .repeatedly()
        .build();
    let backend = backend(&[&list, &change], HealthMode::ControlPlane);
    let err = backend
        .apply(&weight_change(), &desired())
        .await
        .expect_err("gives up");
    assert!(matches!(err, BackendError::Apply { .. }), "{err}");
    let attempts = RetryPolicy::default().max_attempts as usize;
    assert_eq!(change.num_calls(), attempts);
    assert_eq!(
        retries(&snapshotter, "ChangeResourceRecordSets"),
        attempts as u64 - 1
    );
}

#[tokio::test(start_paused = true)]
async fn one_regions_failure_does_not_stop_the_others() {
    // us-east-1's check is gone; eu-west-1's weight must still be written.
    let list = records_rule();
    let get = mock!(Client::get_health_check)
        .sequence()
        .http_status(
            404,
            aws_error(
                "NoSuchHealthCheck",
                "No health check exists with the specified ID hc-us-east-1",
            ),
        )
        .build();
    let change =
        mock!(Client::change_resource_record_sets).then_output(|| changed(ChangeStatus::Insync));
    let backend = backend(&[&list, &get, &change], HealthMode::ControlPlane);
    let mut changes = vec![Change::Health {
        region: "us-east-1".into(),
        in_service: false,
    }];
    changes.extend(weight_change());
    let err = backend
        .apply(&changes, &desired())
        .await
        .expect_err("the health check is missing");
    assert!(
        matches!(&err, BackendError::Shape(what, _) if what.contains("hc-us-east-1")),
        "{err}"
    );
    assert_eq!(change.num_calls(), 1, "the weight batch still went out");
}
