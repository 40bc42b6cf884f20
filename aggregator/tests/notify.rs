//! Notifications end to end: a webhook receiver on loopback that checks the HMAC signature
//! and the committed JSON Schema, the sink filter and deduplication by event id, a sink that
//! answers 500 (retries counted, dead-lettered after `max_attempts`), a sink that never
//! answers (decisions keep being made, its queue drops and counts), and SNS on moto read
//! back through an SQS subscription.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::config::AggregatorConfig;
use vantage_aggregator::model::Pin;
use vantage_aggregator::notify::{names, Notifier, NotifyEvent, Tuning};
use vantage_aggregator::overrides::{Caller, OverrideRequest};
use vantage_aggregator::service::Aggregator;
use vantage_protocol::auth;
use vantage_protocol::config::{EventKind, FleetConfig};
use vantage_runtime::Backoff;
use vantage_testkit::fleet::FleetToml;

const SECRET: &str = "webhook-secret-0123456789abcdef";

/// How the receiver answers.
#[derive(Clone, Copy)]
enum Mode {
    Ok,
    Fail,
    Hang,
}

/// Each request's headers and body, in arrival order.
type Requests = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

#[derive(Clone)]
struct Receiver {
    mode: Mode,
    got: Requests,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    r.got.lock().unwrap().push((headers, body.to_vec()));
    match r.mode {
        Mode::Ok => StatusCode::NO_CONTENT,
        Mode::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
    }
}

async fn receiver(mode: Mode) -> (SocketAddr, Receiver) {
    let r = Receiver {
        mode,
        got: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, r)
}

fn fleet(extra: &str) -> FleetConfig {
    std::env::set_var("VANTAGE_AGENT_KEY", "agent-key-0123456789abcdef");
    let text = FleetToml::new("orders-api")
        .region("eu-west-1", "https://eu-west-1.example.com/status")
        .region("us-east-1", "https://us-east-1.example.com/status")
        .vantage("eu-west-1")
        .extra(extra)
        .build();
    FleetConfig::parse(&text, "test fleet").unwrap()
}

fn fast() -> Tuning {
    Tuning {
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(40)),
    }
}

/// The counters by (name, sink), summed over snapshots (a debugging snapshot drains them).
struct Counts {
    snapshotter: Snapshotter,
    seen: Mutex<std::collections::HashMap<(String, String), u64>>,
}

impl Counts {
    fn get(&self, name: &str, sink: &str) -> u64 {
        let mut seen = self.seen.lock().unwrap();
        for (k, _, _, v) in self.snapshotter.snapshot().into_vec() {
            if let DebugValue::Counter(c) = v {
                let label = k
                    .key()
                    .labels()
                    .find(|l| l.key() == "sink")
                    .map(|l| l.value().to_owned());
                *seen
                    .entry((k.key().name().to_owned(), label.unwrap_or_default()))
                    .or_default() += c;
            }
        }
        seen.get(&(name.to_owned(), sink.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

fn recorder() -> (Counts, metrics::LocalRecorderGuard<'static>) {
    let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
    let counts = Counts {
        snapshotter: recorder.snapshotter(),
        seen: Mutex::default(),
    };
    (counts, metrics::set_default_local_recorder(recorder))
}

async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(f(), "condition not met within 5 s");
}

fn pin(nonce: &str, region: &str) -> OverrideRequest {
    OverrideRequest {
        nonce: nonce.into(),
        pin: [(region.to_owned(), Some(Pin::Down))].into(),
        reason: Some("kernel upgrade".into()),
        ..OverrideRequest::default()
    }
}

fn caller() -> Caller<'static> {
    Caller {
        key_id: "ops-alice",
        peer: "127.0.0.1:1".parse().unwrap(),
    }
}

#[tokio::test]
async fn a_webhook_gets_signed_events_that_match_the_schema_filtered_and_once_per_id() {
    let (addr, rx) = receiver(Mode::Ok).await;
    std::env::set_var("VANTAGE_TEST_NOTIFY_SECRET", SECRET);
    let fleet = fleet(&format!(
        "[notifications]\nstatus_url = \"https://status.example.com/\"\n\n\
         [[notify]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook?token=s3cret\"\n\
         secret_env = \"VANTAGE_TEST_NOTIFY_SECRET\"\nevents = [\"override\", \"region_out\"]\n"
    ));
    let notifier = Arc::new(Notifier::from_config(&fleet, fast()).await.unwrap());
    let config = AggregatorConfig::from_fleet(fleet).unwrap();
    let aggregator = Aggregator::new(config, DryRun::new(), None)
        .unwrap()
        .with_notifier(notifier.clone());

    aggregator
        .set_overrides(
            caller(),
            pin("nonce-0000000000001", "eu-west-1"),
            SystemTime::now(),
        )
        .unwrap();
    // Filtered out: region_in is not in `events`.
    let d = notifier.notify(notifier.event(
        EventKind::RegionIn,
        5,
        Some("orders-api"),
        Some("eu-west-1"),
        "back".into(),
    ));
    assert!(d.queued.is_empty() && !d.duplicate);
    // The same happening twice: sent once.
    let out = notifier.event(
        EventKind::RegionOut,
        7,
        Some("orders-api"),
        Some("us-east-1"),
        "quorum down".into(),
    );
    assert_eq!(
        notifier.notify(out.clone()).queued,
        vec!["oncall".to_owned()]
    );
    assert!(notifier.notify(out).duplicate);

    eventually(|| rx.got.lock().unwrap().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        2,
        "one override, one region_out; nothing filtered or repeated"
    );
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/notify-event.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for (headers, body) in &got {
        let ts: u64 = headers[auth::HEADER_TIMESTAMP]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            headers[auth::HEADER_SIGNATURE].to_str().unwrap(),
            auth::sign(SECRET.as_bytes(), ts, body),
            "signed with the configured secret over the exact body"
        );
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert!(validator.is_valid(&json), "{json}");
        assert_eq!(
            headers["x-vantage-event-id"].to_str().unwrap(),
            json["id"].as_str().unwrap()
        );
    }
    let first: NotifyEvent = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(first.kind, EventKind::Override);
    assert_eq!(first.by.as_deref(), Some("ops-alice"));
    assert!(
        first
            .reason
            .contains("eu-west-1 pinned down: kernel upgrade"),
        "{}",
        first.reason
    );
    let second: NotifyEvent = serde_json::from_slice(&got[1].1).unwrap();
    assert_eq!(
        second.link.as_deref(),
        Some("https://status.example.com/?service=orders-api&region=us-east-1")
    );
}

#[tokio::test]
async fn a_sink_that_answers_500_is_retried_then_dead_lettered_and_both_are_counted() {
    let (snap, _guard) = recorder();
    let (addr, rx) = receiver(Mode::Fail).await;
    let fleet = fleet(&format!(
        "[[notify]]\nname = \"failing\"\nkind = \"slack\"\nurl = \"http://{addr}/hook\"\nmax_attempts = 3\n"
    ));
    let notifier = Notifier::from_config(&fleet, fast()).await.unwrap();
    notifier.notify(notifier.event(
        EventKind::FailOpen,
        1,
        Some("orders-api"),
        None,
        "all down".into(),
    ));
    eventually(|| snap.get(names::DEAD_LETTER_TOTAL, "failing") == 1).await;
    assert_eq!(
        rx.got.lock().unwrap().len(),
        3,
        "max_attempts attempts, no more"
    );
    assert_eq!(snap.get(names::RETRIES_TOTAL, "failing"), 2);
    assert_eq!(snap.get(names::SENT_TOTAL, "failing"), 0);
    // Slack gets the text rendering.
    let body: serde_json::Value = serde_json::from_slice(&rx.got.lock().unwrap()[0].1).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("[critical] fail_open orders-api (orders-api): all down"),
        "{text}"
    );
}

#[tokio::test]
async fn a_sink_that_never_answers_does_not_slow_decisions() {
    let (snap, _guard) = recorder();
    let (addr, rx) = receiver(Mode::Hang).await;
    let fleet = fleet(&format!(
        "[[notify]]\nname = \"hanging\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\n\
         timeout = \"300ms\"\nmax_attempts = 2\nqueue = 2\n"
    ));
    let notifier = Arc::new(Notifier::from_config(&fleet, fast()).await.unwrap());
    let config = AggregatorConfig::from_fleet(fleet).unwrap();
    let aggregator = Aggregator::new(config, DryRun::new(), None)
        .unwrap()
        .with_notifier(notifier);
    let mut decisions = 0;
    for i in 0..40u32 {
        let mut request = pin(&format!("nonce-hang-{i:08}"), "eu-west-1");
        request
            .pin
            .insert("eu-west-1".to_owned(), (i % 2 == 0).then_some(Pin::Down));
        aggregator
            .set_overrides(caller(), request, SystemTime::now())
            .unwrap();
        aggregator.decide(SystemTime::now());
        decisions += 1;
    }
    // 40 events behind a sink whose every attempt takes 300 ms. Had a decision waited for the
    // sink, the queue (2) would never have been full; at least 30 dropped events prove the
    // decisions went on without it, whatever the machine's speed.
    assert_eq!(decisions, 40);
    assert!(snap.get(names::DROPPED_TOTAL, "hanging") >= 30);
    eventually(|| snap.get(names::DEAD_LETTER_TOTAL, "hanging") >= 1).await;
    assert!(snap.get(names::RETRIES_TOTAL, "hanging") >= 1);
    assert!(!rx.got.lock().unwrap().is_empty());
}

#[tokio::test]
async fn sns_events_arrive_through_an_sqs_subscription() {
    let moto = vantage_testkit::moto::Moto::shared();
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let sdk =
        vantage_aggregator::backend::route53::sdk_loader(Some(&moto.endpoint()), Some("us-east-1"))
            .credentials_provider(vantage_testkit::moto::credentials())
            .load()
            .await;
    let sns = aws_sdk_sns::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let tag = std::process::id();
    let topic = sns
        .create_topic()
        .name(format!("vantage-notify-{tag}"))
        .send()
        .await
        .unwrap();
    let topic_arn = topic.topic_arn().unwrap().to_owned();
    let queue = sqs
        .create_queue()
        .queue_name(format!("vantage-notify-{tag}"))
        .send()
        .await
        .unwrap();
    let queue_url = queue.queue_url().unwrap().to_owned();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let queue_arn =
        attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .send()
        .await
        .unwrap();

    let fleet = fleet(&format!(
        "[[notify]]\nname = \"sns\"\nkind = \"sns\"\ntopic_arn = \"{topic_arn}\"\nendpoint_url = \"{}\"\n\
         min_severity = \"critical\"\n",
        moto.endpoint()
    ));
    let notifier = Notifier::from_config(&fleet, fast()).await.unwrap();
    // Below min_severity: not sent.
    let d = notifier.notify(notifier.event(
        EventKind::RegionIn,
        1,
        Some("orders-api"),
        Some("eu-west-1"),
        "back".into(),
    ));
    assert!(d.queued.is_empty());
    let event = notifier.event(
        EventKind::RegionOut,
        2,
        Some("orders-api"),
        Some("eu-west-1"),
        "quorum down".into(),
    );
    assert_eq!(notifier.notify(event.clone()).queued.len(), 1);

    let mut bodies = Vec::new();
    for _ in 0..50 {
        let got = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        bodies.extend(
            got.messages()
                .iter()
                .filter_map(|m| m.body().map(str::to_owned)),
        );
        if !bodies.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let envelope: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    let message: NotifyEvent = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert_eq!(message, event);
    assert_eq!(envelope["Subject"], "vantage region_out orders-api");
}

#[test]
fn the_fleet_file_refuses_bad_sinks_with_the_line_and_key() {
    let bad = [
        ("[[notify]]\nname = \"x\"\nkind = \"pager\"\nurl = \"https://a.example\"\n", "notify[0].kind"),
        ("[[notify]]\nname = \"x\"\nkind = \"sns\"\n", "notify[0].topic_arn"),
        ("[[notify]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"https://a.example\"\nevents = [\"boom\"]\n", "notify[0].events"),
        ("[[notify]]\nname = \"x\"\nkind = \"slack\"\nurl = \"https://a.example\"\nsecret_env = \"S\"\n", "notify[0].secret_env"),
        ("[[notify]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"https://a.example\"\nservices = [\"nope\"]\n", "notify[0].services"),
    ];
    for (extra, key) in bad {
        let text = FleetToml::new("orders-api")
            .region_with_vantage("eu-west-1")
            .extra(extra)
            .build();
        let e = FleetConfig::parse(&text, "fleet.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains("fleet.toml:"), "{key}: {e}");
    }
    let text = FleetToml::new("orders-api")
        .region_with_vantage("eu-west-1")
        .extra("[[notify]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"https://hooks.example/p?token=SECRET-TOKEN\"\nevents = [\"boom\"]\n")
        .build();
    let e = FleetConfig::parse(&text, "fleet.toml")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("SECRET-TOKEN"), "{e}");
}

#[tokio::test]
async fn a_vantage_without_reports_for_k_intervals_is_told_once_as_agent_silent() {
    let (addr, rx) = receiver(Mode::Ok).await;
    let fleet = fleet(&format!(
        "[notifications]\nagent_silent_after = 2\n\n\
         [[notify]]\nname = \"silence\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\nevents = [\"agent_silent\"]\n"
    ));
    let interval = fleet.report_interval();
    let notifier = Arc::new(Notifier::from_config(&fleet, fast()).await.unwrap());
    let config = AggregatorConfig::from_fleet(fleet).unwrap();
    let aggregator = Aggregator::new(config, DryRun::new(), None)
        .unwrap()
        .with_notifier(notifier);
    let t0 = SystemTime::now();
    aggregator.decide(t0);
    aggregator.decide(t0 + interval);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        rx.got.lock().unwrap().is_empty(),
        "one interval is not silence"
    );
    for k in 2..6 {
        aggregator.decide(t0 + interval * k);
    }
    eventually(|| !rx.got.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "told once per silence, not per evaluation");
    let event: NotifyEvent = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(event.kind, EventKind::AgentSilent);
    assert_eq!(event.region.as_deref(), Some("eu-west-1"));
    assert!(
        event.reason.contains("has not reported"),
        "{}",
        event.reason
    );
}

#[tokio::test]
async fn with_replicas_only_the_lease_holder_notifies() {
    use vantage_aggregator::lease::{Lease, LeaseSettings, MemoryLeaseStore};
    let (addr, rx) = receiver(Mode::Ok).await;
    let extra =
        format!("[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\n");
    let store = Arc::new(MemoryLeaseStore::new());
    let replica = |holder: &str| {
        let fleet = fleet(&extra);
        let lease = Lease::new(
            store.clone(),
            LeaseSettings {
                holder: holder.into(),
                duration: Duration::from_secs(30),
                max_clock_skew: Duration::from_secs(2),
            },
        );
        (fleet, lease)
    };
    let mut replicas = Vec::new();
    for holder in ["use1", "euw1"] {
        let (fleet, lease) = replica(holder);
        let notifier = Arc::new(Notifier::from_config(&fleet, fast()).await.unwrap());
        let config = AggregatorConfig::from_fleet(fleet).unwrap();
        replicas.push(
            Aggregator::new(config, DryRun::new(), None)
                .unwrap()
                .with_lease(lease)
                .with_notifier(notifier),
        );
    }
    assert!(replicas[0].lease_step().await.unwrap().held);
    assert!(!replicas[1].lease_step().await.unwrap().held);
    for (i, r) in replicas.iter().enumerate() {
        r.set_overrides(
            caller(),
            pin(&format!("nonce-lease-{i:08}"), "eu-west-1"),
            SystemTime::now(),
        )
        .unwrap();
    }
    eventually(|| !rx.got.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only the holder's override was told");
    let event: NotifyEvent = serde_json::from_slice(&got[0].1).unwrap();
    assert!(event.id.ends_with("nonce-lease-00000000"), "{}", event.id);
}
