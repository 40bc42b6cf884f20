//! The ARC backend against five stand-in cluster endpoints on loopback (moto has no ARC), with
//! the real SDK and its real HTTP client: two hang, two refuse (a closed port, a reset), one
//! answers. The change must land within the budget, each hanging endpoint costing at most
//! `timeout_per_endpoint`, whatever order the rotation picks; with every endpoint down the call
//! fails with a clear error within the budget; a safety rule's ConflictException arrives as
//! such. The requests are checked as the stand-in read them (awsJson1_0, `X-Amz-Target`), so a
//! change in what the SDK sends fails here.

use aws_sdk_route53recoverycluster::config::Credentials;
use metrics_util::debugging::DebuggingRecorder;
use std::collections::BTreeMap;
use std::time::Duration;
use vantage_aggregator::backend::arc::{ArcBackend, Endpoints, ATTEMPTS_METRIC};
use vantage_aggregator::backend::route53::{
    sdk_loader, HealthMode, RetryPolicy, Route53Backend, Route53Config,
};
use vantage_aggregator::backend::{Backend, BackendError, Change, DesiredState};
use vantage_testkit::arc::{ArcCluster, Behaviour};

const PANEL: &str = "arn:aws:route53-recovery-control::123456789012:controlpanel/p1";
const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "us-west-2"];
const PER_ENDPOINT: Duration = Duration::from_millis(300);

fn arn(region: &str) -> String {
    format!("{PANEL}/routingcontrol/rc-{region}")
}

/// Weights are not exercised here: a Route 53 backend that is never called.
fn unused_weights() -> Route53Backend {
    let r53 = aws_sdk_route53::Client::from_conf(
        aws_sdk_route53::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_route53::config::Region::new("us-east-1"))
            .build(),
    );
    let cw = aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_cloudwatch::config::Region::new("us-east-1"))
            .build(),
    );
    let config = Route53Config {
        hosted_zone_id: "Z1".into(),
        record_name: "api.example.com.".into(),
        record_type: "CNAME".into(),
        regions: BTreeMap::new(),
        health: HealthMode::ControlPlane,
        insync_timeout: Duration::from_secs(1),
        retry: RetryPolicy::default(),
        replica: None,
    };
    Route53Backend::from_clients(r53, cw, config)
}

async fn backend(cluster: &ArcCluster, budget: Duration) -> ArcBackend {
    let sdk = sdk_loader(None, None)
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .load()
        .await;
    let endpoints = Endpoints::connect(&sdk, &cluster.endpoints(), PER_ENDPOINT, budget);
    let controls = REGIONS.iter().map(|r| (r.to_string(), arn(r))).collect();
    ArcBackend::new(endpoints, controls, unused_weights())
}

async fn start(behaviours: &[Behaviour]) -> ArcCluster {
    let arns: Vec<String> = REGIONS.iter().map(|r| arn(r)).collect();
    let refs: Vec<&str> = arns.iter().map(String::as_str).collect();
    ArcCluster::start(behaviours, &refs).await
}

fn health(region: &str, in_service: bool) -> Change {
    Change::Health {
        region: region.into(),
        in_service,
    }
}

const MIXED: [Behaviour; 5] = [
    Behaviour::Hang,
    Behaviour::Refuse,
    Behaviour::Answer,
    Behaviour::Reset,
    Behaviour::Hang,
];

#[tokio::test]
async fn the_change_lands_within_the_budget_through_the_one_endpoint_that_answers() {
    let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(recorder);
    let cluster = start(&MIXED).await;
    let budget = Duration::from_secs(5);
    let arc = backend(&cluster, budget).await;
    // Several passes, so the random order puts the answering endpoint in different places.
    for round in 0..6 {
        let on = round % 2 == 1;
        // The hanging endpoints never answer: landing within the budget at all means each
        // was abandoned after its own timeout and the rotation moved on.
        arc.apply(
            &[health("eu-west-1", on), health("us-east-1", on)],
            &DesiredState::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(cluster.control(&arn("eu-west-1")), Some(on));
        assert_eq!(cluster.control(&arn("us-east-1")), Some(on));
        assert_eq!(cluster.control(&arn("us-west-2")), Some(true));
    }
    let requests = cluster.requests();
    assert_eq!(
        requests.len(),
        6,
        "one request per pass reached the answering endpoint"
    );
    let first = &requests[0];
    assert_eq!(first.endpoint, cluster.urls(Behaviour::Answer)[0]);
    assert_eq!(first.target, "ToggleCustomerAPI.UpdateRoutingControlStates");
    assert_eq!(first.content_type, "application/x-amz-json-1.0");
    let entries = first.body["UpdateRoutingControlStateEntries"]
        .as_array()
        .expect("a batch of entries");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["RoutingControlArn"], arn("eu-west-1"));
    assert_eq!(entries[0]["RoutingControlState"], "Off");
    // Every attempt was counted by endpoint and outcome.
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() != ATTEMPTS_METRIC {
            continue;
        }
        let outcome = key
            .key()
            .labels()
            .find(|l| l.key() == "outcome")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        if let metrics_util::debugging::DebugValue::Counter(n) = value {
            *outcomes.entry(outcome).or_default() += n;
        }
    }
    assert_eq!(outcomes.get("ok"), Some(&6), "{outcomes:?}");
    assert!(
        outcomes
            .keys()
            .all(|o| ["ok", "timeout", "unreachable"].contains(&o.as_str())),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn observe_reads_each_control_through_the_rotation() {
    let cluster = start(&MIXED).await;
    cluster.set_control(&arn("us-east-1"), false);
    let arc = backend(&cluster, Duration::from_secs(5)).await;
    let states = arc.control_states().await.unwrap();
    let want: BTreeMap<String, bool> = [
        ("eu-west-1", true),
        ("us-east-1", false),
        ("us-west-2", true),
    ]
    .into_iter()
    .map(|(r, on)| (r.to_owned(), on))
    .collect();
    assert_eq!(states, want);
    let targets: Vec<String> = cluster.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, vec!["ToggleCustomerAPI.GetRoutingControlState"; 3]);
}

#[tokio::test]
async fn every_endpoint_down_is_a_clear_error_within_the_budget() {
    let cluster = start(&[
        Behaviour::Hang,
        Behaviour::Hang,
        Behaviour::Refuse,
        Behaviour::Reset,
        Behaviour::Hang,
    ])
    .await;
    // Three hanging endpoints would take 900 ms; the budget stops the call at 700 ms.
    let budget = Duration::from_millis(700);
    let arc = backend(&cluster, budget).await;
    // Three hangs outlast the budget: the error that names it is the budget's doing.
    let err = arc
        .apply(&[health("eu-west-1", false)], &DesiredState::new())
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Apply { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("no ARC cluster endpoint answered within the 700ms budget"),
        "{text}"
    );
    assert_eq!(err.code(), "apply_failed");
    assert_eq!(cluster.control(&arn("eu-west-1")), Some(true));
}

#[tokio::test]
async fn a_safety_rule_refuses_the_batch_and_it_is_not_sent_again() {
    let cluster = start(&[Behaviour::Refuse, Behaviour::Answer]).await;
    cluster.set_min_on(1);
    let arc = backend(&cluster, Duration::from_secs(5)).await;
    let all_out: Vec<Change> = REGIONS.iter().map(|r| health(r, false)).collect();
    let err = arc.apply(&all_out, &DesiredState::new()).await.unwrap_err();
    assert!(matches!(err, BackendError::SafetyRule(_)), "{err}");
    assert!(err.to_string().contains("at-least-1-on"), "{err}");
    assert!(REGIONS
        .iter()
        .all(|r| cluster.control(&arn(r)) == Some(true)));
    let sent = cluster.requests().len();
    let again = arc.apply(&all_out, &DesiredState::new()).await.unwrap_err();
    assert!(matches!(again, BackendError::SafetyRule(_)), "{again}");
    assert_eq!(
        cluster.requests().len(),
        sent,
        "the refused batch was re-sent"
    );
    // Two of three out keeps one On: ARC accepts it.
    arc.apply(&all_out[..2], &DesiredState::new())
        .await
        .unwrap();
    assert_eq!(cluster.control(&arn("us-west-2")), Some(true));
    assert_eq!(cluster.control(&arn("eu-west-1")), Some(false));
}
