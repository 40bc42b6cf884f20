//! The lease on a paused clock with the in-memory store: a dead holder is replaced after its
//! expiry plus the skew bound and not before, renewals keep the lease, a store outage ends a
//! tenure exactly when it stops being locally valid, and the weights plane writes only at the
//! holder, fences every batch and logs its token.

use super::*;
use crate::backend::{
    Backend, BackendError, Change, DesiredRegion, DesiredState, DryRun, ObservedState,
};
use crate::reconcile::PlaneKind;
use crate::service::{lock, names, Aggregator};
use std::io::Write;
use std::sync::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

const BASE_MS: u64 = 1_800_000_000_000;
const DURATION: Duration = Duration::from_secs(30);
const SKEW: Duration = Duration::from_secs(2);

fn lease(store: &MemoryLeaseStore, holder: &str, offset_ms: i64) -> Lease {
    let settings = LeaseSettings {
        holder: holder.into(),
        duration: DURATION,
        max_clock_skew: SKEW,
    };
    Lease::new(Arc::new(store.clone()), settings)
        .with_clock(LeaseClock::tokio_from(BASE_MS).skewed(offset_ms))
}

/// Keeps `lease` as the aggregator's keeper task does, until aborted (the replica dies).
fn keep(lease: Lease) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            lease.step().await;
            sleep(lease.next_wake()).await;
        }
    })
}

fn acquired(holder: &str, token: u64) -> Option<LeaseEvent> {
    Some(LeaseEvent::Acquired {
        holder: holder.into(),
        token,
    })
}

#[tokio::test(start_paused = true)]
async fn a_dead_holder_is_replaced_after_expiry_plus_skew_and_not_before() {
    let store = MemoryLeaseStore::new();
    let (a, b) = (lease(&store, "a", 0), lease(&store, "b", 0));
    assert_eq!(a.step().await, acquired("a", 1));
    let keeper_a = keep(a.clone());
    let _keeper_b = keep(b.clone());

    // Five minutes of renewals: a keeps it with the same token, b never takes it.
    sleep(Duration::from_secs(300)).await;
    assert_eq!(a.valid_token(), Some(1));
    let seen_by_b = b.status();
    assert!(!seen_by_b.held);
    assert_eq!(seen_by_b.holder.as_deref(), Some("a"));

    keeper_a.abort();
    let died = Instant::now();
    let expires_ms = store.peek().unwrap().expires_ms;
    let mut status = b.subscribe();
    tokio::time::timeout(Duration::from_secs(120), status.wait_for(|s| s.held))
        .await
        .expect("b takes the lease")
        .unwrap();
    let took_ms = b.now_ms();
    let skew_ms = SKEW.as_millis() as u64;
    assert!(
        took_ms > expires_ms + skew_ms,
        "{took_ms} <= {expires_ms} + skew"
    );
    // b looks every third of the duration.
    assert!(
        took_ms <= expires_ms + skew_ms + 10_001,
        "{took_ms} vs {expires_ms}"
    );
    assert_eq!(b.valid_token(), Some(2));
    let failover = died.elapsed();
    // Holder death to takeover: at most duration + skew + one round (42 s with defaults).
    assert!(failover <= DURATION + SKEW + DURATION / 3, "{failover:?}");
    eprintln!("lease failover (paused clock, 30 s lease, 2 s skew): {failover:?}");
}

#[tokio::test(start_paused = true)]
async fn a_store_outage_ends_the_tenure_when_it_stops_being_locally_valid() {
    let store = MemoryLeaseStore::new();
    let (a, b) = (lease(&store, "a", 0), lease(&store, "b", 0));
    assert_eq!(a.step().await, acquired("a", 1));
    let _keepers = (keep(a.clone()), keep(b.clone()));
    sleep(Duration::from_secs(45)).await;
    store.set_unavailable(true);
    let valid_until = store.peek().unwrap().expires_ms - SKEW.as_millis() as u64;

    sleep(Duration::from_millis(valid_until - 1 - a.now_ms())).await;
    assert_eq!(
        a.valid_token(),
        Some(1),
        "held through the outage while valid"
    );
    assert!(a.status().held);
    let mut status = a.subscribe();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(a.valid_token(), None, "never past expires - skew");
    tokio::time::timeout(Duration::from_millis(5), status.wait_for(|s| !s.held))
        .await
        .expect("the keeper counts it lost at once")
        .unwrap();

    // The store comes back: exactly one of them takes it, with the next token.
    sleep(Duration::from_secs(10)).await;
    store.set_unavailable(false);
    sleep(Duration::from_secs(15)).await;
    let holders: Vec<u64> = [&a, &b].iter().filter_map(|l| l.valid_token()).collect();
    assert_eq!(holders, vec![2]);
}

#[tokio::test(start_paused = true)]
async fn release_lets_another_replica_take_over_at_once() {
    let store = MemoryLeaseStore::new();
    let (a, b) = (lease(&store, "a", 0), lease(&store, "b", 0));
    assert_eq!(a.step().await, acquired("a", 1));
    assert_eq!(b.step().await, None);
    assert!(matches!(
        a.release().await,
        Some(LeaseEvent::Lost {
            reason: LostReason::Released,
            token: 1,
            ..
        })
    ));
    assert_eq!(a.valid_token(), None);
    assert_eq!(b.step().await, acquired("b", 2));
}

/// The decision log, kept in memory.
#[derive(Clone, Default)]
struct SharedLog(Arc<Mutex<Vec<u8>>>);

impl Write for SharedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedLog {
    fn events(&self, event: &str) -> Vec<serde_json::Value> {
        String::from_utf8(lock(&self.0).clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["event"] == event)
            .collect()
    }
}

/// A replica: an aggregator on a dry-run backend holding `lease`, with its decision log.
fn replica(lease: Lease) -> (Arc<Aggregator<DryRun>>, SharedLog) {
    replica_on(lease, DryRun::new())
}

/// A replica on `backend`.
fn replica_on<B: Backend>(lease: Lease, backend: B) -> (Arc<Aggregator<B>>, SharedLog) {
    std::env::set_var("VANTAGE_LEASE_TEST_KEY", "lease-test-key-0123456789abcdef");
    let text = r#"
[fleet]
name = "lease"
report_interval = "1s"
[global]
url = "https://api.example.com/status"
[aggregator]
url = "http://127.0.0.1:1"
evaluate_every = "1s"
[agents.auth]
key_id = "k1"
key_env = "VANTAGE_LEASE_TEST_KEY"
[[regions]]
name = "a"
status_url = "https://a.example.com/status"
[[regions]]
name = "b"
status_url = "https://b.example.com/status"
[[vantages]]
region = "a"
"#;
    let fleet = vantage_protocol::config::FleetConfig::parse(text, "lease test").unwrap();
    let config = crate::config::AggregatorConfig::from_fleet(fleet).unwrap();
    let log = SharedLog::default();
    let agg = Aggregator::new(config, backend, Some(Box::new(log.clone())))
        .unwrap()
        .with_lease(lease);
    (Arc::new(agg), log)
}

fn desired(a: u8, b: u8) -> DesiredState {
    [("a", a), ("b", b)]
        .into_iter()
        .map(|(r, weight)| {
            let want = DesiredRegion {
                in_service: true,
                weight,
            };
            (r.to_owned(), want)
        })
        .collect()
}

fn weights_written(agg: &Aggregator<DryRun>) -> Vec<Change> {
    agg.backend()
        .applied()
        .into_iter()
        .filter(|c| matches!(c, Change::Weight { .. }))
        .collect()
}

/// The keeper, both control planes and the heartbeat, as `run_loop` starts them (without
/// the decision loop: the tests publish desired states themselves).
fn start(agg: &Arc<Aggregator<DryRun>>) -> (watch::Sender<bool>, Vec<JoinHandle<()>>) {
    let (stop, rx) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(agg.clone().run_lease(rx.clone())),
        tokio::spawn(agg.clone().run_heartbeat(rx.clone())),
        tokio::spawn(agg.clone().run_plane(PlaneKind::Health, rx.clone())),
        tokio::spawn(agg.clone().run_plane(PlaneKind::Weights, rx)),
    ];
    (stop, tasks)
}

#[tokio::test(start_paused = true)]
async fn weights_are_written_by_the_holder_only_and_resume_at_the_next_one() {
    let store = MemoryLeaseStore::new();
    let (a, log_a) = replica(lease(&store, "a", 0));
    let (b, log_b) = replica(lease(&store, "b", 0));
    assert!(a.lease_step().await.unwrap().held);
    let (_stop_a, tasks_a) = start(&a);
    let (_stop_b, _tasks_b) = start(&b);
    for r in [&a, &b] {
        r.planes.publish(desired(200, 55));
    }
    sleep(Duration::from_secs(5)).await;
    assert_eq!(weights_written(&a).len(), 2);
    assert!(weights_written(&b).is_empty(), "b does not hold the lease");
    assert_eq!(b.planes.last_result().deferred.len(), 2);
    // The health vote is never gated: b publishes it and takes Regions in on its own.
    assert!(b.planes.heartbeat_status().ok);
    assert_eq!(b.backend().applied().len(), 2, "b's health changes");
    let applied = log_a.events("plan_applied");
    let weights_line = applied.iter().find(|l| l["plane"] == "weights").unwrap();
    assert_eq!(weights_line["fencing_token"], 1);
    assert!(applied
        .iter()
        .filter(|l| l["plane"] == "health")
        .all(|l| l.get("fencing_token").is_none()));
    assert_eq!(log_a.events("lease_acquired")[0]["token"], 1);
    assert_eq!(a.lease_status().unwrap().token, Some(1));

    // a dies; the decision moves on.
    for t in tasks_a {
        t.abort();
    }
    b.planes.publish(desired(100, 155));
    let mut status = b.lease().unwrap().subscribe();
    tokio::time::timeout(Duration::from_secs(60), status.wait_for(|s| s.held))
        .await
        .expect("b takes the lease")
        .unwrap();
    sleep(Duration::from_secs(2)).await;
    assert_eq!(
        weights_written(&b).len(),
        2,
        "b writes once it holds the lease"
    );
    // In b's log the takeover comes first, then the batch with the new token.
    let lines: Vec<serde_json::Value> = String::from_utf8(lock(&log_b.0).clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["event"] == "lease_acquired" || l["plane"] == "weights")
        .collect();
    assert_eq!(lines[0]["event"], "lease_acquired");
    assert_eq!(lines[0]["token"], 2);
    assert_eq!(lines[1]["event"], "plan_applied");
    assert_eq!(lines[1]["fencing_token"], 2);
}

#[tokio::test(start_paused = true)]
async fn split_brain_the_stale_holders_batch_is_refused_by_the_fence() {
    let store = MemoryLeaseStore::new();
    // The rules tolerate clocks up to 2 x max_clock_skew apart (a holder stops `skew` before
    // its expiry, a taker waits `skew` after it). These two are 2 ms further apart, a clock
    // that broke its bound: for a moment both believe they hold the lease.
    let skew_ms = SKEW.as_millis() as i64;
    let (a, log_a) = replica(lease(&store, "a", -skew_ms));
    let (b, log_b) = replica(lease(&store, "b", skew_ms + 2));
    assert!(a.lease_step().await.unwrap().held);
    assert!(
        !b.lease_step().await.unwrap().held,
        "within the bound: not taken"
    );
    sleep(DURATION - SKEW - Duration::from_millis(1)).await;
    assert!(b.lease_step().await.unwrap().held);
    assert!(
        a.lease_status().unwrap().held,
        "a still believes it holds the lease"
    );
    assert_eq!(
        (
            a.lease_status().unwrap().token,
            b.lease_status().unwrap().token
        ),
        (Some(1), Some(2))
    );
    for r in [&a, &b] {
        r.planes.publish(desired(200, 55));
    }

    let stale = a.reconcile_plane(PlaneKind::Weights).await;
    assert!(!stale.ok);
    assert_eq!(stale.error.as_deref(), Some("lease_lost"));
    assert!(weights_written(&a).is_empty(), "the stale batch is refused");
    let lost = log_a.events("lease_lost");
    assert_eq!(lost.len(), 1);
    assert_eq!(
        (lost[0]["token"].clone(), lost[0]["reason"].clone()),
        (1.into(), "fenced".into())
    );
    assert!(!a.lease_status().unwrap().held);

    let fresh = b.reconcile_plane(PlaneKind::Weights).await;
    assert!(fresh.ok && fresh.changes.len() == 2, "{fresh:?}");
    assert_eq!(weights_written(&b).len(), 2);
    let line = &log_b.events("plan_applied")[0];
    assert_eq!(line["fencing_token"], 2);

    // The next pass at a is held back quietly: the lease is b's.
    let next = a.reconcile_plane(PlaneKind::Weights).await;
    assert!(next.ok && next.deferred.len() == 2 && next.changes.is_empty());
    assert_eq!(log_a.events("lease_lost").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn metrics_and_the_state_follow_the_lease() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(recorder);
    // A snapshot drains what it reads, so each check point reads all it needs at once.
    let metrics = || {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(k, .., v)| {
                let event = k.key().labels().map(|l| l.value().to_owned()).next();
                ((k.key().name().to_owned(), event), v)
            })
            .collect::<std::collections::HashMap<_, _>>()
    };
    let key = |name: &str, event: Option<&str>| (name.to_owned(), event.map(str::to_owned));
    let store = MemoryLeaseStore::new();
    let (a, _) = replica(lease(&store, "a", 0));
    let state = |agg: &Aggregator<DryRun>| {
        serde_json::to_value(agg.decide(std::time::SystemTime::now())).unwrap()["lease"].clone()
    };
    assert_eq!(state(&a)["held"], false);
    a.lease_step().await;
    let json = state(&a);
    assert_eq!(
        (
            json["held"].clone(),
            json["holder"].clone(),
            json["token"].clone()
        ),
        (true.into(), "a".into(), 1.into())
    );
    let m = metrics();
    assert_eq!(
        m[&key(names::LEASE_HELD, None)],
        DebugValue::Gauge(1.0.into())
    );
    assert_eq!(
        m[&key(names::LEASE_TRANSITIONS_TOTAL, Some("acquired"))],
        DebugValue::Counter(1)
    );

    // b (a clock far ahead) takes it; a's next renewal is refused.
    let b = lease(&store, "b", 60_000);
    assert_eq!(b.step().await, acquired("b", 2));
    a.lease_step().await;
    let json = state(&a);
    assert_eq!(
        (
            json["held"].clone(),
            json["holder"].clone(),
            json["token"].clone()
        ),
        (false.into(), "b".into(), 2.into())
    );
    let m = metrics();
    assert_eq!(
        m[&key(names::LEASE_HELD, None)],
        DebugValue::Gauge(0.0.into())
    );
    assert_eq!(
        m[&key(names::LEASE_TRANSITIONS_TOTAL, Some("lost"))],
        DebugValue::Counter(1)
    );

    // Without a lease, the state says null.
    let single = Aggregator::new((*a.config()).clone(), DryRun::new(), None).unwrap();
    assert!(state(&single).is_null());
}

/// One Route 53 that several replicas write to.
#[derive(Clone)]
struct Shared(Arc<DryRun>);

impl Backend for Shared {
    fn name(&self) -> &'static str {
        "shared"
    }
    async fn observe(&self) -> Result<ObservedState, BackendError> {
        self.0.observe().await
    }
    async fn apply(&self, changes: &[Change], desired: &DesiredState) -> Result<(), BackendError> {
        self.0.apply(changes, desired).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_holder_reads_route53_again_rather_than_trust_its_old_view() {
    let store = MemoryLeaseStore::new();
    let route53 = Shared(Arc::new(DryRun::new()));
    let (a, _) = replica_on(lease(&store, "a", 0), route53.clone());
    let (b, _) = replica_on(lease(&store, "b", 0), route53.clone());
    assert!(a.lease_step().await.unwrap().held);
    for r in [&a, &b] {
        r.planes.publish(desired(200, 55));
    }
    assert_eq!(a.reconcile_plane(PlaneKind::Weights).await.changes.len(), 2);
    // b finds nothing to change, and caches that view of Route 53 (200/55).
    assert_eq!(
        b.reconcile_plane(PlaneKind::Weights).await.deferred.len(),
        0
    );

    // a moves on to 100/155 a minute later (b's decision has not), then dies.
    a.planes.publish(desired(100, 155));
    for _ in 0..3 {
        sleep(Duration::from_secs(20)).await;
        assert!(a.lease_step().await.unwrap().held);
    }
    assert_eq!(a.reconcile_plane(PlaneKind::Weights).await.changes.len(), 2);
    sleep(DURATION + SKEW + Duration::from_secs(1)).await;
    assert!(b.lease_step().await.unwrap().held);

    // b's cached view (under observe_every old) says 200/55 is in place; Route 53 says
    // 100/155. b reads it again and puts its own decision back.
    let pass = b.reconcile_plane(PlaneKind::Weights).await;
    assert_eq!(pass.changes.len(), 2, "{pass:?}");
    let now = route53.observe().await.unwrap();
    assert_eq!((now["a"].weight, now["b"].weight), (Some(200), Some(55)));
}
