//! The weights lease on DynamoDB's wire protocol (moto's server, one per test binary, each
//! test in a table of its own): the table is created then adopted, conditional writes take,
//! renew, fence and release the lease as the in-memory store does, a stale holder's weight
//! batch is refused by the fence while the new holder's goes through, and the failover time
//! from a holder's death to the next holder is measured on real time; the binary's lease is
//! built from the fleet file and reaches the configured endpoint.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use vantage_aggregator::backend::route53::sdk_loader;
use vantage_aggregator::backend::{Change, DryRun};
use vantage_aggregator::config::{AggregatorConfig, BackendKind};
use vantage_aggregator::lease::{
    ensure_lease_table, lease_from_config, DynamoLeaseStore, Lease, LeaseClock, LeaseError,
    LeaseEvent, LeaseRecord, LeaseSettings, LeaseStore,
};
use vantage_aggregator::reconcile::PlaneKind;
use vantage_aggregator::service::Aggregator;
use vantage_testkit::moto::{credentials, Moto};

async fn dynamodb() -> aws_sdk_dynamodb::Client {
    let moto = Moto::shared();
    let sdk = sdk_loader(Some(&moto.endpoint()), Some("us-east-1"))
        .credentials_provider(credentials())
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&sdk)
}

/// A table name no other test of this binary uses (they share one moto).
fn table(tag: &str) -> String {
    format!("vantage-lease-{tag}-{}", std::process::id())
}

/// The lease table, created for the test, and a store on its item `fleet`.
async fn store(tag: &str) -> (aws_sdk_dynamodb::Client, String, DynamoLeaseStore) {
    let client = dynamodb().await;
    let name = table(tag);
    assert!(ensure_lease_table(&client, &name).await.unwrap());
    let store = DynamoLeaseStore::new(client.clone(), &name, "orders-api");
    (client, name, store)
}

fn rec(holder: &str, token: u64, expires_ms: u64) -> LeaseRecord {
    LeaseRecord {
        holder: holder.into(),
        token,
        expires_ms,
    }
}

#[tokio::test]
async fn ensure_lease_table_creates_then_adopts_and_refuses_another_key() {
    let client = dynamodb().await;
    let name = table("ensure");
    assert!(ensure_lease_table(&client, &name).await.unwrap(), "created");
    assert!(
        !ensure_lease_table(&client, &name).await.unwrap(),
        "adopted"
    );
    let described = client
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .unwrap();
    let t = described.table().unwrap();
    assert_eq!(t.key_schema()[0].attribute_name(), "lease_id");
    assert_eq!(
        t.billing_mode_summary().and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );

    // A table of the same name with another key is never taken for the lease's.
    let other = table("other-key");
    client
        .create_table()
        .table_name(&other)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let err = ensure_lease_table(&client, &other).await.unwrap_err();
    assert!(matches!(err, LeaseError::TableShape { .. }), "{err}");
}

#[tokio::test]
async fn conditional_writes_take_renew_fence_and_release() {
    let (_, _, store) = store("writes").await;
    let store: Arc<dyn LeaseStore> = Arc::new(store);
    assert_eq!(store.read().await.unwrap(), None);
    assert!(store.acquire(&rec("a", 1, 10_000), 0).await.unwrap());
    assert_eq!(store.read().await.unwrap(), Some(rec("a", 1, 10_000)));
    // Not expired before the bound: refused by DynamoDB's condition.
    assert!(!store.acquire(&rec("b", 2, 20_000), 9_000).await.unwrap());
    assert!(store.renew(&rec("a", 1, 30_000)).await.unwrap());
    assert!(!store.renew(&rec("b", 1, 30_000)).await.unwrap());
    assert!(!store.renew(&rec("a", 2, 30_000)).await.unwrap());
    assert!(store.fence("a", 1).await.unwrap());
    assert!(!store.fence("b", 1).await.unwrap());
    // Expired: b takes over with the next token; a is fenced out and cannot renew.
    assert!(store.acquire(&rec("b", 2, 60_000), 30_001).await.unwrap());
    assert!(!store.fence("a", 1).await.unwrap());
    assert!(!store.renew(&rec("a", 1, 70_000)).await.unwrap());
    assert!(store.fence("b", 2).await.unwrap());
    assert_eq!(store.read().await.unwrap(), Some(rec("b", 2, 60_000)));
    // Released: free at once, never with a token already used.
    assert!(!store.release("a", 1).await.unwrap());
    assert!(store.release("b", 2).await.unwrap());
    assert_eq!(store.read().await.unwrap(), Some(rec("b", 2, 0)));
    assert!(!store.acquire(&rec("a", 2, 90_000), 1).await.unwrap());
    assert!(store.acquire(&rec("a", 3, 90_000), 1).await.unwrap());
}

#[tokio::test]
async fn a_missing_table_is_an_error_not_a_free_lease() {
    let client = dynamodb().await;
    let store = DynamoLeaseStore::new(client, &table("missing"), "orders-api");
    let err = store.read().await.unwrap_err();
    assert!(
        matches!(err, LeaseError::Read(ref m) if m.contains("ResourceNotFound")),
        "{err}"
    );
    let err = store.acquire(&rec("a", 1, 1), 0).await.unwrap_err();
    assert!(matches!(err, LeaseError::Acquire(_)), "{err}");
}

/// The decision log, kept in memory.
#[derive(Clone, Default)]
struct SharedLog(Arc<Mutex<Vec<u8>>>);

impl Write for SharedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedLog {
    fn events(&self, event: &str) -> Vec<serde_json::Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["event"] == event)
            .collect()
    }
}

/// A replica on a recording (dry-run) backend, holding `lease`.
fn replica(lease: Lease) -> (Aggregator<DryRun>, SharedLog) {
    std::env::set_var("VANTAGE_LEASE_MOTO_KEY", "lease-moto-key-0123456789abcdef");
    let text = r#"
[fleet]
name = "orders-api"
[global]
url = "https://api.example.com/status"
[aggregator]
url = "http://127.0.0.1:1"
[agents.auth]
key_id = "k1"
key_env = "VANTAGE_LEASE_MOTO_KEY"
[[regions]]
name = "eu-west-1"
status_url = "https://eu-west-1.example.com/status"
[[regions]]
name = "us-east-1"
status_url = "https://us-east-1.example.com/status"
[[vantages]]
region = "eu-west-1"
"#;
    let fleet = vantage_protocol::config::FleetConfig::parse(text, "lease moto").unwrap();
    let config = AggregatorConfig::from_fleet(fleet).unwrap();
    let log = SharedLog::default();
    let agg = Aggregator::new(config, DryRun::new(), Some(Box::new(log.clone())))
        .unwrap()
        .with_lease(lease);
    (agg, log)
}

fn weights_written(agg: &Aggregator<DryRun>) -> usize {
    agg.backend()
        .applied()
        .iter()
        .filter(|c| matches!(c, Change::Weight { .. }))
        .count()
}

#[tokio::test]
async fn split_brain_the_stale_writers_batch_is_refused_and_the_new_one_goes_through() {
    let (_, _, dynamo) = store("split").await;
    let store: Arc<dyn LeaseStore> = Arc::new(dynamo);
    let settings = |holder: &str| LeaseSettings {
        holder: holder.into(),
        duration: Duration::from_secs(3),
        max_clock_skew: Duration::from_millis(500),
    };
    // Within the bound (a 500 ms behind, b 500 ms ahead) b cannot take a's lease.
    let a_clock = LeaseClock::system().skewed(-500);
    let (a, log_a) = replica(Lease::new(store.clone(), settings("a")).with_clock(a_clock));
    let within =
        Lease::new(store.clone(), settings("b")).with_clock(LeaseClock::system().skewed(500));
    assert!(a.lease_step().await.unwrap().held);
    assert_eq!(within.step().await, None);

    // b's clock broke the bound (2.5 s ahead): 0.5 s after a took the lease, b takes it too
    // while a, for another 1.5 s, still believes it holds it.
    let (b, log_b) = replica(
        Lease::new(store.clone(), settings("b")).with_clock(LeaseClock::system().skewed(2_500)),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(b.lease_step().await.unwrap().held);
    let both = (a.lease_status().unwrap(), b.lease_status().unwrap());
    assert!(both.0.held && both.1.held, "{both:?}");
    assert_eq!((both.0.token, both.1.token), (Some(1), Some(2)));

    // Both decide the same weights; the stale writer's batch is refused by the fence.
    for r in [&a, &b] {
        r.decide(SystemTime::now());
    }
    let stale = a.reconcile_plane(PlaneKind::Weights).await;
    assert_eq!(stale.error.as_deref(), Some("lease_lost"), "{stale:?}");
    assert_eq!(weights_written(&a), 0);
    let lost = log_a.events("lease_lost");
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0]["reason"], "fenced");
    assert_eq!(lost[0]["token"], 1);

    let fresh = b.reconcile_plane(PlaneKind::Weights).await;
    assert!(fresh.ok, "{fresh:?}");
    assert_eq!(weights_written(&b), 2);
    let applied = log_b.events("plan_applied");
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0]["fencing_token"], 2);
    assert_eq!(applied[0]["changes"].as_array().unwrap().len(), 2);
}

/// Keeps `lease` as the aggregator's keeper task does, until aborted (the replica dies).
fn keep(lease: Lease) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            lease.step().await;
            tokio::time::sleep(lease.next_wake()).await;
        }
    })
}

#[tokio::test]
async fn failover_time_from_a_dead_holder_to_the_next() {
    let (_, _, dynamo) = store("failover").await;
    let store: Arc<dyn LeaseStore> = Arc::new(dynamo);
    let duration = Duration::from_secs(3);
    let skew = Duration::from_millis(500);
    let lease = |holder: &str| {
        let settings = LeaseSettings {
            holder: holder.into(),
            duration,
            max_clock_skew: skew,
        };
        Lease::new(store.clone(), settings)
    };
    let (a, b) = (lease("a"), lease("b"));
    assert!(matches!(
        a.step().await,
        Some(LeaseEvent::Acquired { token: 1, .. })
    ));
    let keeper_a = keep(a.clone());
    let _keeper_b = keep(b.clone());
    // Several renewals go by without b taking it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(a.valid_token(), Some(1));
    assert!(!b.status().held);

    // a's tenure as its last renewal wrote it: b may take the lease only after it (and the
    // skew) has passed, on b's own clock.
    let a_expires_ms = a.status().expires_ms.expect("a holds the lease");
    keeper_a.abort();
    let died = Instant::now();
    let mut status = b.subscribe();
    tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.held))
        .await
        .expect("b takes the lease")
        .unwrap();
    let failover = died.elapsed();
    assert_eq!(b.valid_token(), Some(2));
    let taken_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        taken_ms >= a_expires_ms + skew.as_millis() as u64,
        "b took the lease at {taken_ms}, before a's tenure ({a_expires_ms}) and the skew ended"
    );
    eprintln!(
        "lease failover on moto (DynamoDB), {duration:?} lease, {skew:?} skew: {} ms",
        failover.as_millis()
    );
}

#[tokio::test]
async fn the_binarys_lease_comes_from_the_fleet_file() {
    // The binary loads credentials from the default chain, as the Route 53 backend does.
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("VANTAGE_LEASE_MOTO_KEY", "lease-moto-key-0123456789abcdef");
    let name = table("from-config");
    let text = format!(
        r#"
[fleet]
name = "orders-api"
[global]
url = "https://api.example.com/status"
[[regions]]
name = "eu-west-1"
status_url = "https://eu-west-1.example.com/status"
[[vantages]]
region = "eu-west-1"
[aggregator]
replicas = [
  {{ id = "use1", region = "us-east-1", url = "https://agg-use1.example.com" }},
  {{ id = "euw1", region = "eu-west-1", url = "https://agg-euw1.example.com" }},
]
[aggregator.lease]
table = "{name}"
duration = "20s"
max_clock_skew = "1s"
endpoint_url = "{}"
[agents.auth]
key_id = "k1"
key_env = "VANTAGE_LEASE_MOTO_KEY"
"#,
        Moto::shared().endpoint()
    );
    let fleet = vantage_protocol::config::FleetConfig::parse(&text, "fleet.toml").unwrap();
    let config = AggregatorConfig::from_fleet(fleet)
        .unwrap()
        .for_replica(Some("euw1"))
        .unwrap();
    // Dry-run never needs a lease, whatever the replicas.
    assert!(lease_from_config(&config).await.unwrap().is_none());

    let mut config = config;
    config.backend = BackendKind::Route53;
    let lease = lease_from_config(&config).await.unwrap().expect("a lease");
    assert_eq!(
        lease.settings(),
        &LeaseSettings {
            holder: "euw1".into(),
            duration: Duration::from_secs(20),
            max_clock_skew: Duration::from_secs(1),
        }
    );
    // It talks to the configured endpoint, in the first replica's Region (moto keeps tables
    // per Region: a lease in eu-west-1 would not find this us-east-1 table), on the fleet's
    // item in the configured table.
    let client = dynamodb().await;
    ensure_lease_table(&client, &name).await.unwrap();
    assert!(matches!(
        lease.step().await,
        Some(LeaseEvent::Acquired { token: 1, .. })
    ));
    let item = DynamoLeaseStore::new(client, &name, "orders-api");
    let stored = item.read().await.unwrap().unwrap();
    assert_eq!((stored.holder.as_str(), stored.token), ("euw1", 1));

    // A replica must say which it is.
    config.replica = None;
    let err = lease_from_config(&config).await.unwrap_err();
    assert!(err.to_string().contains("--replica"), "{err}");
}
