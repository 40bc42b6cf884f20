//! The DynamoDB check where moto cannot go (aws-smithy-mocks): a table that is not ACTIVE,
//! replicas (moto does not model global-table replicas) and their statuses, throttling that
//! outlasts the client's retries, and the heartbeat writer's cadence on a paused clock. Error
//! responses are DynamoDB's JSON bodies with their HTTP status, so the SDK's own error parsing
//! and retry classification run.

use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReplicaDescription, ReplicaStatus, TableDescription, TableStatus,
};
use aws_sdk_dynamodb::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_status_endpoint::checks::dynamodb::{DynamoCheck, DynamoSpec};
use vantage_status_endpoint::checks::{
    run_round, Check, CheckSpec, ComponentType, LagLimits, Probe, Status,
};

const REGION: &str = "eu-west-1";
const TABLE: &str = "rates";
const TIMEOUT: Duration = Duration::from_secs(1);

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |c| {
        vantage_status_endpoint::checks::dynamodb::configure(c, TIMEOUT)
    })
}

fn spec(peers: Option<Vec<String>>) -> DynamoSpec {
    DynamoSpec {
        table: TABLE.into(),
        region: REGION.into(),
        canary_key: vec![("pk".into(), "canary".into())],
        peers,
        partition_key: "pk".into(),
        lag: LagLimits {
            warn: Duration::from_secs(5),
            fail: Duration::from_secs(30),
        },
        timeout: TIMEOUT,
    }
}

/// A DynamoDB (awsJson 1.0) error body.
fn aws_error(code: &str, message: &str) -> Option<String> {
    Some(format!(
        r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"{message}"}}"#
    ))
}

fn described(status: TableStatus, replicas: &[(&str, ReplicaStatus)]) -> Rule {
    let replicas: Vec<_> = replicas
        .iter()
        .map(|(r, s)| {
            ReplicaDescription::builder()
                .region_name(*r)
                .replica_status(s.clone())
                .build()
        })
        .collect();
    mock!(Client::describe_table).then_output(move || {
        DescribeTableOutput::builder()
            .table(
                TableDescription::builder()
                    .table_name(TABLE)
                    .table_status(status.clone())
                    .set_replicas(Some(replicas.clone()))
                    .build(),
            )
            .build()
    })
}

fn asks_for(input: &aws_sdk_dynamodb::operation::get_item::GetItemInput, pk: &str) -> bool {
    input
        .key()
        .and_then(|k| k.get("pk"))
        .and_then(|v| v.as_s().ok())
        .is_some_and(|v| v == pk)
}

fn canary_found() -> Rule {
    mock!(Client::get_item)
        .match_requests(|i| asks_for(i, "canary"))
        .then_output(|| {
            GetItemOutput::builder()
                .set_item(Some(HashMap::from([(
                    "pk".to_owned(),
                    AttributeValue::S("canary".into()),
                )])))
                .build()
        })
}

/// `region`'s heartbeat item, written `age` ago with a 5 s period.
fn heartbeat(region: &'static str, age: Duration) -> Rule {
    let at = SystemTime::now() - age;
    let at_ms = at.duration_since(UNIX_EPOCH).unwrap().as_millis();
    mock!(Client::get_item)
        .match_requests(move |i| asks_for(i, &format!("vantage#heartbeat#{region}")))
        .then_output(move || {
            GetItemOutput::builder()
                .set_item(Some(HashMap::from([
                    ("at_ms".to_owned(), AttributeValue::N(at_ms.to_string())),
                    ("period_ms".to_owned(), AttributeValue::N("5000".into())),
                ])))
                .build()
        })
}

async fn run(rules: &[&Rule], peers: Option<Vec<String>>) -> Probe {
    DynamoCheck::new(client(rules), spec(peers), None)
        .run()
        .await
        .expect("the check completes")
}

#[tokio::test]
async fn a_local_table_not_active_fails() {
    for status in [
        TableStatus::Updating,
        TableStatus::Creating,
        TableStatus::InaccessibleEncryptionCredentials,
    ] {
        let describe = described(status.clone(), &[]);
        let canary = canary_found();
        let probe = run(&[&describe, &canary], Some(vec![])).await;
        assert_eq!(probe.status, Status::Fail, "{status:?}: {probe:?}");
        let expected = format!(
            "table rates is {} in eu-west-1, not ACTIVE",
            status.as_str()
        );
        assert_eq!(probe.output.as_deref(), Some(expected.as_str()));
        let state = &probe.extra[0];
        assert_eq!(state.measurement, "tableStatus");
        assert_eq!(state.status, Status::Fail);
        assert_eq!(state.value, Some(status.as_str().into()));
    }
}

#[tokio::test]
async fn a_replica_not_active_warns_and_the_replicas_are_the_default_peers() {
    let describe = described(
        TableStatus::Active,
        &[
            (REGION, ReplicaStatus::Active),
            ("us-east-1", ReplicaStatus::Active),
            ("ap-south-1", ReplicaStatus::Updating),
        ],
    );
    let canary = canary_found();
    let us = heartbeat("us-east-1", Duration::from_secs(1));
    let ap = heartbeat("ap-south-1", Duration::from_secs(12));
    let probe = run(&[&describe, &canary, &us, &ap], None).await;
    assert_eq!(probe.status, Status::Warn, "{probe:?}");
    let output = probe.output.as_deref().unwrap();
    assert!(
        output.contains("replica in ap-south-1 is UPDATING, not ACTIVE"),
        "{output}"
    );
    let replicas: Vec<_> = probe
        .extra
        .iter()
        .filter(|o| o.measurement == "replicaStatus")
        .map(|o| (o.peer.as_deref().unwrap(), o.status))
        .collect();
    assert_eq!(
        replicas,
        [
            (REGION, Status::Pass),
            ("us-east-1", Status::Pass),
            ("ap-south-1", Status::Warn)
        ]
    );
    // Every listed replica but this Region's own is a peer: lag 0 (a fresh item) and 7 s
    // (12 s old, 5 s period) over the 5 s warn limit.
    let lags: Vec<_> = probe
        .extra
        .iter()
        .filter(|o| o.measurement == "replicationLag")
        .map(|o| (o.peer.as_deref().unwrap(), o.status))
        .collect();
    assert_eq!(
        lags,
        [("us-east-1", Status::Pass), ("ap-south-1", Status::Warn)]
    );
    assert_eq!(us.num_calls(), 1);
    assert_eq!(ap.num_calls(), 1);
}

/// A canary read throttled past the client's retries fails with the code, well within the
/// check's timeout (the retries ran: three attempts).
#[tokio::test]
async fn throttled_canary_fails_with_the_code_within_the_deadline() {
    let describe = described(TableStatus::Active, &[]);
    let throttled = mock!(Client::get_item)
        .match_requests(|i| asks_for(i, "canary"))
        .sequence()
        .http_status(
            400,
            aws_error(
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded.",
            ),
        )
        .repeatedly()
        .build();
    let check = Arc::new(CheckSpec {
        name: "dynamodb-rates".into(),
        critical: true,
        timeout: TIMEOUT,
        check: Check::Dynamodb(DynamoCheck::new(
            client(&[&describe, &throttled]),
            spec(Some(vec![])),
            None,
        )),
    });
    let round = run_round(&[check], Duration::from_millis(1500)).await;
    let result = &round.results[0];
    assert_eq!(result.component_type, ComponentType::Datastore);
    assert_eq!(result.component_id, TABLE);
    assert_eq!(result.status(), Status::Fail);
    let output = result.observations[0].output.as_deref().unwrap();
    assert!(
        output.starts_with(
            "canary GetItem failed: ProvisionedThroughputExceededException: The level"
        ),
        "{output}"
    );
    // Reported with its code, not as a timeout: the retries ended inside the deadline.
    assert_eq!(throttled.num_calls(), 3, "attempts");
}

/// DescribeTable throttled (a control-plane limit) warns; the canary read still decides
/// whether the table serves.
#[tokio::test]
async fn throttled_describe_table_warns() {
    let describe = mock!(Client::describe_table)
        .sequence()
        .http_status(400, aws_error("ThrottlingException", "Rate exceeded"))
        .repeatedly()
        .build();
    let canary = canary_found();
    let probe = run(&[&describe, &canary], Some(vec![])).await;
    assert_eq!(probe.status, Status::Warn, "{probe:?}");
    assert_eq!(
        probe.output.as_deref(),
        Some("DescribeTable failed: ThrottlingException: Rate exceeded")
    );
    assert_eq!(describe.num_calls(), 3);
}

/// Any other refusal of the canary read fails, naming the code and never more than AWS's
/// (cut) message.
#[tokio::test]
async fn refused_canary_fails_with_a_bounded_message() {
    let describe = described(TableStatus::Active, &[]);
    let long = "x".repeat(5000);
    let refused = mock!(Client::get_item)
        .sequence()
        .http_status(400, aws_error("AccessDeniedException", &long))
        .repeatedly()
        .build();
    let probe = run(&[&describe, &refused], Some(vec![])).await;
    assert_eq!(probe.status, Status::Fail);
    let output = probe.output.unwrap();
    assert!(
        output.starts_with("canary GetItem failed: AccessDeniedException: xxx"),
        "{output}"
    );
    assert!(output.len() < 300, "{} bytes", output.len());
    assert_eq!(refused.num_calls(), 1, "not retried");
}

/// The writer puts this Region's item at once and then once per period, on a paused clock;
/// a failing write is reported by the check as a warning until a write succeeds again.
#[tokio::test(start_paused = true)]
async fn the_writer_writes_once_per_period_and_its_failures_warn() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let put = mock!(Client::put_item)
        .match_requests(move |i| {
            let item = i.item().cloned().unwrap_or_default();
            record
                .lock()
                .unwrap()
                .push((tokio::time::Instant::now(), item));
            true
        })
        .then_output(|| PutItemOutput::builder().build());
    let describe = described(TableStatus::Active, &[]);
    let canary = canary_found();
    let check = DynamoCheck::new(
        client(&[&put, &describe, &canary]),
        spec(Some(vec![])),
        Some(Duration::from_secs(5)),
    );
    let start = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(62)).await;
    let seen = seen.lock().unwrap().clone();
    // t = 0, 5, ..., 60.
    assert_eq!(seen.len(), 13, "{seen:?}");
    for (n, (at, item)) in seen.iter().enumerate() {
        assert_eq!(*at - start, Duration::from_secs(5 * n as u64));
        assert_eq!(item["pk"].as_s().unwrap(), "vantage#heartbeat#eu-west-1");
        assert_eq!(item["period_ms"].as_n().unwrap(), "5000");
        assert!(item["at_ms"].as_n().unwrap().parse::<u64>().is_ok());
    }
    assert_eq!(check.run().await.unwrap().status, Status::Pass);
    drop(check);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(put.num_calls(), 13, "the writer stops with the check");

    // A table that refuses writes: the check warns with the code.
    let refused = mock!(Client::put_item)
        .sequence()
        .http_status(400, aws_error("AccessDeniedException", "not authorized"))
        .repeatedly()
        .build();
    let describe = described(TableStatus::Active, &[]);
    let canary = canary_found();
    let check = DynamoCheck::new(
        client(&[&refused, &describe, &canary]),
        spec(Some(vec![])),
        Some(Duration::from_secs(5)),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let probe = check.run().await.unwrap();
    assert_eq!(probe.status, Status::Warn, "{probe:?}");
    assert_eq!(
        probe.output.as_deref(),
        Some("this Region's heartbeat PutItem failed: AccessDeniedException: not authorized")
    );
}
