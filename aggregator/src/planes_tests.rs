//! The planes against a scripted backend on a paused clock: a Route 53 outage of five minutes,
//! a 30 s INSYNC wait, and latency noise in steady state. The backend only plays AWS's part
//! (fail, be slow, remember); what is tested is the planes' scheduling.

use super::*;
use crate::backend::{Change, DesiredRegion};
use crate::config::AggregatorConfig;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use vantage_protocol::config::FleetConfig;

/// Route 53 (observe and apply) can be made to fail or to take long; the heartbeat stands for
/// CloudWatch's PutMetricData and always works.
#[derive(Default)]
struct Scripted {
    route53_down: AtomicBool,
    /// How long a weight batch takes to reach INSYNC.
    insync: Mutex<Duration>,
    state: Mutex<ObservedState>,
    heartbeats: Mutex<Vec<(Instant, BTreeMap<String, bool>)>>,
    applied: Mutex<Vec<(Instant, Change)>>,
    observes: AtomicUsize,
}

impl Backend for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    async fn observe(&self) -> Result<ObservedState, BackendError> {
        self.observes.fetch_add(1, Ordering::Relaxed);
        if self.route53_down.load(Ordering::Relaxed) {
            return Err(BackendError::Observe(
                "ListResourceRecordSets: Throttling".into(),
            ));
        }
        Ok(lock(&self.state).clone())
    }

    async fn apply(&self, changes: &[Change], _: &DesiredState) -> Result<(), BackendError> {
        if self.route53_down.load(Ordering::Relaxed) {
            return Err(BackendError::Apply {
                change: changes[0].to_string(),
                message: "AccessDenied".into(),
            });
        }
        let mut state = lock(&self.state).clone();
        reconcile::after_applying(&mut state, changes);
        *lock(&self.state) = state;
        let now = Instant::now();
        lock(&self.applied).extend(changes.iter().map(|c| (now, c.clone())));
        if changes.iter().any(|c| matches!(c, Change::Weight { .. })) {
            let insync = *lock(&self.insync);
            tokio::time::sleep(insync).await;
        }
        Ok(())
    }

    async fn heartbeat(&self, desired: &DesiredState) -> Result<(), BackendError> {
        lock(&self.heartbeats).push((Instant::now(), health_of(desired)));
        Ok(())
    }
}

fn aggregator() -> Arc<Aggregator<Scripted>> {
    std::env::set_var("VANTAGE_PLANES_TEST_KEY", "planes-test-key-0123456789");
    let text = r#"
[fleet]
name = "planes"
report_interval = "1s"
[global]
url = "https://api.example.com/status"
[aggregator]
url = "http://127.0.0.1:1"
evaluate_every = "1s"
[agents.auth]
key_id = "k1"
key_env = "VANTAGE_PLANES_TEST_KEY"
[[regions]]
name = "a"
status_url = "https://a.example.com/status"
[[regions]]
name = "b"
status_url = "https://b.example.com/status"
[[vantages]]
region = "a"
"#;
    let config =
        AggregatorConfig::from_fleet(FleetConfig::parse(text, "planes test").unwrap()).unwrap();
    assert_eq!(config.timing.heartbeat_every, Duration::from_secs(10));
    assert_eq!(config.timing.weight_min_interval, Duration::from_secs(60));
    Arc::new(Aggregator::new(config, Scripted::default(), None).unwrap())
}

fn desired(a: (bool, u8), b: (bool, u8)) -> DesiredState {
    [("a", a), ("b", b)]
        .into_iter()
        .map(|(r, (in_service, weight))| (r.to_owned(), DesiredRegion { in_service, weight }))
        .collect()
}

/// Starts the heartbeat and both planes; dropping the sender stops them.
fn start(agg: &Arc<Aggregator<Scripted>>) -> watch::Sender<bool> {
    let (stop, rx) = watch::channel(false);
    tokio::spawn(agg.clone().run_heartbeat(rx.clone()));
    tokio::spawn(agg.clone().run_plane(PlaneKind::Health, rx.clone()));
    tokio::spawn(agg.clone().run_plane(PlaneKind::Weights, rx));
    stop
}

fn health_published(agg: &Aggregator<Scripted>, region: &str, in_service: bool) -> Option<Instant> {
    lock(&agg.backend().heartbeats)
        .iter()
        .find(|(_, h)| h.get(region) == Some(&in_service))
        .map(|(at, _)| *at)
}

fn weight_written(agg: &Aggregator<Scripted>, region: &str, to: u8) -> Option<Instant> {
    lock(&agg.backend().applied)
        .iter()
        .find(|(_, c)| matches!(c, Change::Weight { region: r, to: t, .. } if r == region && *t == to))
        .map(|(at, _)| *at)
}

#[tokio::test(start_paused = true)]
async fn a_route53_outage_never_stops_the_heartbeat_and_weights_catch_up() {
    let agg = aggregator();
    let _stop = start(&agg);
    agg.planes.publish(desired((true, 128), (true, 128)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(weight_written(&agg, "a", 128).is_some());

    // Route 53 answers Throttling / AccessDenied for five minutes.
    agg.backend().route53_down.store(true, Ordering::Relaxed);
    let outage = Instant::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    // Region a fails during the outage: its health is published at once.
    agg.planes.publish(desired((false, 0), (true, 255)));
    let decided = Instant::now();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let published = health_published(&agg, "a", false).expect("a published unhealthy");
    assert!(
        published - decided < Duration::from_millis(10),
        "{:?}",
        published - decided
    );
    tokio::time::sleep(Duration::from_secs(240)).await;

    // Every period of the outage had its heartbeat.
    let beats: Vec<Instant> = lock(&agg.backend().heartbeats)
        .iter()
        .map(|(at, _)| *at)
        .filter(|at| *at >= outage)
        .collect();
    assert!(beats.len() >= 30, "{} heartbeats in 5 min", beats.len());
    for pair in beats.windows(2) {
        assert!(
            pair[1] - pair[0] <= Duration::from_secs(10),
            "gap {:?}",
            pair[1] - pair[0]
        );
    }
    assert!(
        weight_written(&agg, "b", 255).is_none(),
        "nothing written while Route 53 is down"
    );
    let failing = agg.planes.last_result();
    assert!(!failing.ok && failing.error.is_some());

    // Route 53 is back: the weights follow within one backoff (at most 60 s).
    agg.backend().route53_down.store(false, Ordering::Relaxed);
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(65)).await;
    let caught_up = weight_written(&agg, "b", 255).expect("weights caught up");
    assert!(
        caught_up - back <= Duration::from_secs(61),
        "{:?}",
        caught_up - back
    );
    assert!(weight_written(&agg, "a", 0).is_some());
    assert!(agg.planes.last_result().ok);
}

#[tokio::test(start_paused = true)]
async fn a_take_out_never_waits_behind_an_insync_wait() {
    let agg = aggregator();
    *lock(&agg.backend().insync) = Duration::from_secs(30);
    let _stop = start(&agg);
    agg.planes.publish(desired((true, 128), (true, 128)));
    // The first weight batch is now waiting 30 s for INSYNC.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(weight_written(&agg, "a", 128).is_some());
    agg.planes.publish(desired((false, 0), (true, 255)));
    let decided = Instant::now();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let published = health_published(&agg, "a", false).expect("health published");
    assert!(published - decided < Duration::from_millis(10));
    let health_written = lock(&agg.backend().applied)
        .iter()
        .find(|(_, c)| matches!(c, Change::Health { region, in_service: false } if region == "a"))
        .map(|(at, _)| *at)
        .expect("health plane took a out");
    assert!(health_written - decided < Duration::from_millis(10));
    // The weight for a follows once the first batch is in sync and min_interval has passed.
    tokio::time::sleep(Duration::from_secs(70)).await;
    assert!(weight_written(&agg, "a", 0).is_some());
}

#[tokio::test(start_paused = true)]
async fn latency_noise_makes_at_most_one_weight_batch_a_minute_and_few_reads() {
    let agg = aggregator();
    let _stop = start(&agg);
    // Ten minutes of decisions whose weights wobble every second.
    for second in 0..600u32 {
        let w = 120 + (second % 7) as u8 * 3;
        agg.planes.publish(desired((true, w), (true, 255 - w)));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let batches: std::collections::BTreeSet<Instant> = lock(&agg.backend().applied)
        .iter()
        .filter(|(_, c)| matches!(c, Change::Weight { .. }))
        .map(|(at, _)| *at)
        .collect();
    assert!(
        batches.len() <= 11,
        "{} weight batches in 10 min",
        batches.len()
    );
    for pair in batches.iter().collect::<Vec<_>>().windows(2) {
        assert!(*pair[1] - *pair[0] >= Duration::from_secs(60));
    }
    let health_writes = lock(&agg.backend().applied)
        .iter()
        .filter(|(_, c)| matches!(c, Change::Health { .. }))
        .count();
    assert_eq!(health_writes, 2, "health set once, never rewritten");
    let reads = agg.backend().observes.load(Ordering::Relaxed);
    assert!(
        reads <= 3,
        "{reads} observes in 10 min (every 5 min at most)"
    );
    // Heartbeats: one per 10 s, not one per decision.
    let beats = lock(&agg.backend().heartbeats).len();
    assert!((55..=65).contains(&beats), "{beats} heartbeats in 10 min");
}
