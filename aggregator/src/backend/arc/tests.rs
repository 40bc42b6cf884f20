//! The ARC backend against aws-smithy-mocks: the shape of the calls it makes (one batch per
//! pass, the right ARNs and states, observe through GetRoutingControlState only), weights left
//! to the Route 53 backend, a ConflictException as a safety-rule refusal that is not sent again,
//! and the planes turning that refusal into one alert in the decision log.

use super::*;
use crate::backend::route53::{HealthMode, RegionRecord, RetryPolicy, Route53Config};
use crate::backend::{DesiredRegion, SAFETY_RULE_CODE};
use crate::config::AggregatorConfig;
use crate::reconcile::PlaneKind;
use crate::service::Aggregator;
use aws_sdk_route53 as route53;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use cluster::operation::get_routing_control_state::GetRoutingControlStateOutput;
use cluster::operation::update_routing_control_states::{
    UpdateRoutingControlStatesError, UpdateRoutingControlStatesOutput,
};
use cluster::types::error::ConflictException;
use route53::operation::change_resource_record_sets::ChangeResourceRecordSetsOutput;
use route53::operation::get_change::GetChangeOutput;
use route53::operation::list_resource_record_sets::ListResourceRecordSetsOutput;
use route53::types::{ChangeInfo, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType};
use std::time::Duration;
use vantage_protocol::config::FleetConfig;
use vantage_testkit::log::JsonLines;

const PANEL: &str = "arn:aws:route53-recovery-control::123456789012:controlpanel/p1";
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];

fn arn(region: &str) -> String {
    format!("{PANEL}/routingcontrol/rc-{region}")
}

fn controls() -> BTreeMap<String, String> {
    REGIONS.iter().map(|r| (r.to_string(), arn(r))).collect()
}

/// Route 53 as the weights see it: both records at weight 100, writes reach INSYNC at once.
/// Weight batches Route 53 accepted: `(set identifier, weight)` each.
type Writes = Arc<Mutex<Vec<Vec<(String, i64)>>>>;

fn route53_backend(writes: Writes) -> Route53Backend {
    let records = || {
        let sets = REGIONS.iter().map(|r| {
            ResourceRecordSet::builder()
                .name("api-origin.example.com.")
                .r#type(RrType::Cname)
                .set_identifier(format!("vantage-{r}"))
                .weight(100)
                .ttl(60)
                .resource_records(ResourceRecord::builder().value("x").build().unwrap())
                .build()
                .unwrap()
        });
        ListResourceRecordSetsOutput::builder()
            .set_resource_record_sets(Some(sets.collect()))
            .is_truncated(false)
            .max_items(300)
            .build()
            .unwrap()
    };
    let change_info = || {
        ChangeInfo::builder()
            .id("C1")
            .status(ChangeStatus::Insync)
            .submitted_at(route53::primitives::DateTime::from_secs(0))
            .build()
            .unwrap()
    };
    let rules = [
        mock!(route53::Client::list_resource_record_sets).then_output(records),
        mock!(route53::Client::change_resource_record_sets)
            .match_requests(move |req| {
                let batch = req.change_batch().map_or_else(Vec::new, |b| {
                    b.changes()
                        .iter()
                        .filter_map(|c| {
                            let set = c.resource_record_set()?;
                            Some((set.set_identifier()?.to_owned(), set.weight()?))
                        })
                        .collect()
                });
                lock(&writes).push(batch);
                true
            })
            .then_output(move || {
                ChangeResourceRecordSetsOutput::builder()
                    .change_info(change_info())
                    .build()
            }),
        mock!(route53::Client::get_change).then_output(move || {
            GetChangeOutput::builder()
                .change_info(change_info())
                .build()
        }),
    ];
    let refs: Vec<&Rule> = rules.iter().collect();
    let route53 = mock_client!(aws_sdk_route53, RuleMode::MatchAny, &refs);
    let cloudwatch = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, &[]);
    let config = Route53Config {
        hosted_zone_id: "Z123".into(),
        record_name: "api-origin.example.com.".into(),
        record_type: "CNAME".into(),
        regions: REGIONS
            .iter()
            .map(|r| {
                let record = RegionRecord {
                    set_identifier: format!("vantage-{r}"),
                    health_check_id: None,
                };
                (r.to_string(), record)
            })
            .collect(),
        health: HealthMode::DataPlane {
            namespace: "Vantage".into(),
            metric_name: "RegionHealthy".into(),
        },
        insync_timeout: Duration::from_secs(5),
        retry: RetryPolicy::default(),
        replica: None,
    };
    Route53Backend::from_clients(route53, cloudwatch, config)
}

/// What the mocked cluster saw.
#[derive(Default)]
struct Seen {
    batches: Mutex<Vec<Vec<(String, String)>>>,
}

/// An ARC backend whose single cluster endpoint answers UpdateRoutingControlStates with
/// ConflictException when `conflict` says so, and GetRoutingControlState with Off for
/// us-east-1's control and On for the rest.
fn backend(seen: &Arc<Seen>, conflict: bool) -> (ArcBackend, Writes) {
    let recorded = seen.clone();
    let update = mock!(cluster::Client::update_routing_control_states).match_requests(move |req| {
        let batch = req
            .update_routing_control_state_entries()
            .iter()
            .map(|e| {
                let state = e.routing_control_state().as_str().to_owned();
                (e.routing_control_arn().to_owned(), state)
            })
            .collect();
        lock(&recorded.batches).push(batch);
        true
    });
    let update = if conflict {
        update.then_error(|| {
            UpdateRoutingControlStatesError::ConflictException(
                ConflictException::builder()
                    .message("at-least-one-on would be violated")
                    .resource_id("rule-1")
                    .resource_type("AssertionRule")
                    // As the SDK's deserialiser sets it from the response's `__type`.
                    .meta(
                        cluster::error::ErrorMetadata::builder()
                            .code("ConflictException")
                            .message("at-least-one-on would be violated")
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
        })
    } else {
        update.then_output(|| UpdateRoutingControlStatesOutput::builder().build())
    };
    let asked = Arc::new(Mutex::new(String::new()));
    let asking = asked.clone();
    let get = mock!(cluster::Client::get_routing_control_state)
        .match_requests(move |req| {
            *lock(&asking) = req.routing_control_arn().unwrap_or_default().to_owned();
            true
        })
        .then_output(move || {
            let arn = lock(&asked).clone();
            let state = if arn.ends_with("us-east-1") {
                RoutingControlState::Off
            } else {
                RoutingControlState::On
            };
            GetRoutingControlStateOutput::builder()
                .routing_control_arn(arn)
                .routing_control_state(state)
                .build()
                .unwrap()
        });
    let client = mock_client!(
        aws_sdk_route53recoverycluster,
        RuleMode::MatchAny,
        &[&update, &get]
    );
    let endpoints = Endpoints::from_clients(
        vec![Endpoint {
            url: "https://host-a.example".into(),
            client,
        }],
        Duration::from_secs(2),
        Duration::from_secs(10),
    );
    let writes = Arc::new(Mutex::new(Vec::new()));
    let weights = route53_backend(writes.clone());
    (ArcBackend::new(endpoints, controls(), weights), writes)
}

fn health(region: &str, in_service: bool) -> Change {
    Change::Health {
        region: region.into(),
        in_service,
    }
}

#[tokio::test]
async fn health_changes_are_one_batch_and_weights_go_to_route53() {
    let seen = Arc::new(Seen::default());
    let (arc, writes) = backend(&seen, false);
    let changes = [
        health("eu-west-1", true),
        health("us-east-1", false),
        Change::Weight {
            region: "eu-west-1".into(),
            from: Some(100),
            to: 255,
        },
    ];
    arc.apply(&changes, &DesiredState::new()).await.unwrap();
    assert_eq!(
        *lock(&seen.batches),
        vec![vec![
            (arn("eu-west-1"), "On".to_owned()),
            (arn("us-east-1"), "Off".to_owned())
        ]],
        "one UpdateRoutingControlStates with both controls"
    );
    assert_eq!(
        *lock(&writes),
        vec![vec![("vantage-eu-west-1".to_owned(), 255)]],
        "the weight goes to the weighted record"
    );
    // Weights alone: no ARC call.
    let weight_only = [Change::Weight {
        region: "us-east-1".into(),
        from: Some(100),
        to: 0,
    }];
    arc.apply(&weight_only, &DesiredState::new()).await.unwrap();
    assert_eq!(lock(&seen.batches).len(), 1);
    assert_eq!(lock(&writes).len(), 2);
}

#[tokio::test]
async fn observe_reads_controls_and_weights() {
    let seen = Arc::new(Seen::default());
    let (arc, _) = backend(&seen, false);
    let observed = arc.observe().await.unwrap();
    assert_eq!(
        observed["eu-west-1"],
        ObservedRegion {
            in_service: Some(true),
            weight: Some(100)
        }
    );
    assert_eq!(
        observed["us-east-1"],
        ObservedRegion {
            in_service: Some(false),
            weight: Some(100)
        }
    );
}

#[tokio::test]
async fn a_safety_rule_refusal_is_typed_and_not_sent_again() {
    let seen = Arc::new(Seen::default());
    let (arc, _) = backend(&seen, true);
    let out = [health("eu-west-1", false), health("us-east-1", false)];
    let err = arc.apply(&out, &DesiredState::new()).await.unwrap_err();
    assert!(matches!(err, BackendError::SafetyRule(_)), "{err}");
    assert_eq!(err.code(), SAFETY_RULE_CODE);
    assert!(err.to_string().contains("ConflictException"), "{err}");
    // The same batch again: refused without a call.
    let again = arc.apply(&out, &DesiredState::new()).await.unwrap_err();
    assert!(matches!(again, BackendError::SafetyRule(_)), "{again}");
    assert_eq!(
        lock(&seen.batches).len(),
        1,
        "the refused batch was re-sent"
    );
    // A different batch is sent.
    let _ = arc
        .apply(&[health("us-east-1", false)], &DesiredState::new())
        .await;
    assert_eq!(lock(&seen.batches).len(), 2);
}

fn aggregator(arc: ArcBackend, log: &JsonLines) -> Arc<Aggregator<ArcBackend>> {
    std::env::set_var("VANTAGE_ARC_TEST_KEY", "arc-test-key-0123456789abcdef");
    let mut text = String::from(
        "[fleet]\nname = \"arc\"\nreport_interval = \"1s\"\n\
         [global]\nurl = \"https://api.example.com/status\"\n\
         [aggregator]\nurl = \"http://127.0.0.1:1\"\nevaluate_every = \"1s\"\n\
         [agents.auth]\nkey_id = \"k1\"\nkey_env = \"VANTAGE_ARC_TEST_KEY\"\n\
         [[vantages]]\nregion = \"eu-west-1\"\n",
    );
    for r in REGIONS {
        text += &format!(
            "[[regions]]\nname = \"{r}\"\nstatus_url = \"https://{r}.example.com/status\"\n"
        );
    }
    let config =
        AggregatorConfig::from_fleet(FleetConfig::parse(&text, "arc test").unwrap()).unwrap();
    Arc::new(Aggregator::new(config, arc, Some(Box::new(log.clone()))).unwrap())
}

#[tokio::test(start_paused = true)]
async fn the_planes_raise_one_alert_for_a_refusal_and_do_not_hammer_arc() {
    let seen = Arc::new(Seen::default());
    let (arc, _) = backend(&seen, true);
    let log = JsonLines::default();
    let agg = aggregator(arc, &log);
    let desired: DesiredState = REGIONS
        .iter()
        .map(|r| {
            let d = DesiredRegion {
                in_service: false,
                weight: 0,
            };
            (r.to_string(), d)
        })
        .collect();
    agg.planes.publish(desired);
    for _ in 0..5 {
        let result = agg.reconcile_plane(PlaneKind::Health).await;
        assert!(!result.ok);
        assert_eq!(result.error.as_deref(), Some(SAFETY_RULE_CODE));
        tokio::time::advance(Duration::from_secs(30)).await;
    }
    let alerts: Vec<_> = log
        .events()
        .into_iter()
        .filter(|e| e["event"] == "alert")
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["kind"], "arc_safety_rule");
    assert!(alerts[0]["reason"]
        .as_str()
        .unwrap()
        .contains("ConflictException"));
    assert_eq!(
        lock(&seen.batches).len(),
        1,
        "the refused batch was sent again"
    );
}

/// Every cluster endpoint down (the loopback stand-in: hanging, refusing, resetting): the health
/// pass fails within the budget with a clear error and no alert, the plane will retry with
/// backoff, and the heartbeat (a no-op for ARC, whose state persists) still succeeds.
#[tokio::test]
async fn all_endpoints_down_fails_the_pass_within_the_budget_without_an_alert() {
    use vantage_testkit::arc::{ArcCluster, Behaviour};
    let arns: Vec<String> = REGIONS.iter().map(|r| arn(r)).collect();
    let refs: Vec<&str> = arns.iter().map(String::as_str).collect();
    let cluster = ArcCluster::start(
        &[
            Behaviour::Hang,
            Behaviour::Refuse,
            Behaviour::Reset,
            Behaviour::Hang,
            Behaviour::Refuse,
        ],
        &refs,
    )
    .await;
    let sdk = crate::backend::route53::sdk_loader(None, None)
        .credentials_provider(cluster::config::Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))
        .load()
        .await;
    let budget = Duration::from_millis(600);
    let endpoints = Endpoints::connect(
        &sdk,
        &cluster.endpoints(),
        Duration::from_millis(250),
        budget,
    );
    let arc = ArcBackend::new(
        endpoints,
        controls(),
        route53_backend(Arc::new(Mutex::new(Vec::new()))),
    );
    let log = JsonLines::default();
    let agg = aggregator(arc, &log);
    let desired: DesiredState = [("eu-west-1", false, 0), ("us-east-1", true, 255)]
        .into_iter()
        .map(|(r, in_service, weight)| (r.to_owned(), DesiredRegion { in_service, weight }))
        .collect();
    agg.planes.publish(desired);
    let result = agg.reconcile_plane(PlaneKind::Health).await;
    // Observe fails first (GetRoutingControlState through the same rotation), stopped by the
    // budget (the detail names it).
    assert!(!result.ok);
    let detail = result.detail.unwrap_or_default();
    assert!(
        detail.contains("no ARC cluster endpoint answered within the 600ms budget"),
        "{detail}"
    );
    assert!(agg.heartbeat_now().await.is_ok());
    let events = log.events();
    assert!(events.iter().all(|e| e["event"] != "alert"), "{events:?}");
    assert!(
        events.iter().any(|e| e["event"] == "plan_failed"),
        "{events:?}"
    );
}
