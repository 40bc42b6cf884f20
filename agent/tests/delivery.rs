//! Report delivery against a real stand-in aggregator on loopback: outages, slow and lost
//! answers, rejections, spool bounds, restarts, an unwritable spool, bad keys and TLS. Every
//! test counts what the aggregator stored: each report exactly once, oldest first.

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use vantage_agent::metrics::{
    REPORTS_DROPPED_TOTAL, REPORT_DELIVERIES_TOTAL, REPORT_DELIVERY_SECONDS, SPOOL_BYTES,
    SPOOL_REPORTS, SPOOL_WRITE_ERRORS_TOTAL,
};
use vantage_agent::push::{run_pusher, OutgoingReport, PushConfig, PushSummary};
use vantage_agent::spool::{Spool, SpoolConfig};
use vantage_testkit::aggregator::{report_body, Mode, StandIn, KEY, KEY_ID};
use vantage_testkit::dirs::temp_dir;

/// Every wait in these tests ends by this, so a bug fails a test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

async fn wait_for(what: &str, done: impl FnMut() -> bool) {
    vantage_testkit::eventually::wait_for(what, PATIENCE, done).await
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    vantage_testkit::eventually::within(what, PATIENCE, f).await
}

/// Seqs of the report files in a spool directory, sorted.
fn spooled_seqs(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut seqs: Vec<u64> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    seqs.sort_unstable();
    seqs
}

/// Short backoffs keep each test to a few seconds.
fn config(stand_in: &StandIn) -> PushConfig {
    PushConfig {
        aggregator: stand_in.url().parse().unwrap(),
        key_id: KEY_ID.into(),
        key: KEY.to_vec(),
        request_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..PushConfig::default()
    }
}

fn spool_config(dir: &Path, max_bytes: u64, max_age: Duration) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        max_bytes,
        max_age,
    }
}

fn open_spool(dir: &Path) -> Spool {
    Spool::open(spool_config(dir, 1 << 20, Duration::from_secs(3600))).unwrap()
}

fn seqs(range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    range.collect()
}

/// A running pusher and its controls.
struct Pusher {
    reports: mpsc::Sender<OutgoingReport>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<PushSummary>,
}

impl Pusher {
    fn start(config: PushConfig, spool: Option<Spool>, flush_deadline: Duration) -> Pusher {
        let (reports, rx) = mpsc::channel(64);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(run_pusher(config, spool, rx, shutdown_rx, flush_deadline));
        Pusher {
            reports,
            shutdown,
            task,
        }
    }

    async fn send(&self, seqs: impl IntoIterator<Item = u64>) {
        for seq in seqs {
            let report = OutgoingReport {
                seq,
                body: report_body(seq),
            };
            within("the pusher to take a report", self.reports.send(report))
                .await
                .expect("pusher is running");
        }
    }

    async fn stop(self) -> PushSummary {
        self.shutdown.send(true).unwrap();
        within("the pusher to stop", self.task).await.unwrap()
    }
}

/// Metrics recorded on this thread (tests run on a current-thread runtime, so the pusher's
/// task records here). Counters and histogram counts accumulate across reads; the debugging
/// recorder resets them on every snapshot.
struct Metrics {
    snapshotter: Snapshotter,
    seen: RefCell<HashMap<String, f64>>,
    _guard: metrics::LocalRecorderGuard<'static>,
}

impl Metrics {
    fn install() -> Metrics {
        let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
        Metrics {
            snapshotter: recorder.snapshotter(),
            seen: RefCell::default(),
            _guard: metrics::set_default_local_recorder(recorder),
        }
    }

    fn read(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let mut seen = self.seen.borrow_mut();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut id = key.name().to_owned();
            for l in key.labels() {
                id.push_str(&format!(" {}={}", l.key(), l.value()));
            }
            let slot = seen.entry(id).or_default();
            match value {
                DebugValue::Counter(n) => *slot += n as f64,
                DebugValue::Gauge(g) => *slot = g.into_inner(),
                DebugValue::Histogram(xs) => *slot += xs.len() as f64,
            }
        }
        let id = match label {
            Some((k, v)) => format!("{name} {k}={v}"),
            None => name.to_owned(),
        };
        seen.get(&id).copied().unwrap_or_default()
    }

    fn counter(&self, name: &str, label: Option<(&str, &str)>) -> u64 {
        self.read(name, label) as u64
    }

    fn retries(&self) -> u64 {
        self.counter(REPORT_DELIVERIES_TOTAL, Some(("result", "retry")))
    }
}

#[tokio::test]
async fn down_then_recovering_delivers_every_report_once_in_order() {
    let metrics = Metrics::install();
    let tmp = temp_dir("recover");
    let stand_in = StandIn::start(Mode::Failing).await;
    let pusher = Pusher::start(
        config(&stand_in),
        Some(open_spool(tmp.path())),
        Duration::from_secs(5),
    );

    // First the aggregator answers 503...
    pusher.send(1..=10).await;
    wait_for("retries against a 503", || metrics.retries() >= 3).await;
    // ...then it is gone altogether.
    stand_in.refuse();
    let before = metrics.retries();
    pusher.send(11..=20).await;
    wait_for("all 20 reports spooled", || {
        spooled_seqs(tmp.path()) == seqs(1..=20)
    })
    .await;
    wait_for("retries against a closed port", || {
        metrics.retries() >= before + 3
    })
    .await;
    assert!(stand_in.stored().is_empty());

    stand_in.recover(Mode::Healthy).await;
    wait_for("all 20 stored", || stand_in.stored().len() >= 20).await;
    let summary = pusher.stop().await;

    assert_eq!(stand_in.stored(), seqs(1..=20), "each once, oldest first");
    assert_eq!(summary.delivered + summary.duplicates, 20, "{summary:?}");
    assert!(summary.retries >= 6, "{summary:?}");
    assert_eq!(summary.left_in_spool, 0);
    assert_eq!(
        summary.dropped_spool_full + summary.expired + summary.rejected,
        0
    );
    assert!(spooled_seqs(tmp.path()).is_empty());
    assert_eq!(metrics.retries(), summary.retries);
    assert_eq!(
        metrics.counter(REPORT_DELIVERIES_TOTAL, Some(("result", "delivered"))),
        summary.delivered
    );
    assert!(metrics.read(REPORT_DELIVERY_SECONDS, None) >= 20.0);
    assert_eq!(metrics.read(SPOOL_REPORTS, None), 0.0);
    assert_eq!(metrics.read(SPOOL_BYTES, None), 0.0);
    assert_eq!(stand_in.bad_auth() + stand_in.malformed(), 0);
}

#[tokio::test]
async fn slow_answers_are_retried_and_stored_once() {
    let stand_in = StandIn::start(Mode::Slow(Duration::from_millis(800))).await;
    let tmp = temp_dir("slow");
    let mut config = config(&stand_in);
    config.request_timeout = Duration::from_millis(200);
    let pusher = Pusher::start(config, Some(open_spool(tmp.path())), Duration::from_secs(5));
    pusher.send(1..=5).await;
    wait_for("a retry after a timeout", || stand_in.requests() >= 2).await;
    stand_in.set_mode(Mode::Healthy);
    wait_for("all 5 stored", || stand_in.stored().len() >= 5).await;
    let summary = pusher.stop().await;

    assert_eq!(stand_in.stored(), seqs(1..=5));
    assert!(summary.retries >= 1, "{summary:?}");
    assert_eq!(summary.delivered + summary.duplicates, 5, "{summary:?}");
    assert_eq!(summary.left_in_spool, 0);
}

#[tokio::test]
async fn lost_answers_make_duplicates_that_the_aggregator_drops() {
    let metrics = Metrics::install();
    let stand_in = StandIn::start(Mode::LoseFirstAnswer).await;
    let tmp = temp_dir("dup");
    let pusher = Pusher::start(
        config(&stand_in),
        Some(open_spool(tmp.path())),
        Duration::from_secs(5),
    );
    pusher.send(1..=10).await;
    wait_for("every report sent twice", || {
        stand_in.received().len() >= 20
    })
    .await;
    wait_for("the pusher to hear of every duplicate", || {
        metrics.counter(REPORT_DELIVERIES_TOTAL, Some(("result", "duplicate"))) >= 10
    })
    .await;
    let summary = pusher.stop().await;

    assert_eq!(stand_in.stored(), seqs(1..=10));
    let received = stand_in.received();
    for seq in 1..=10 {
        assert_eq!(
            received.iter().filter(|s| **s == seq).count(),
            2,
            "{received:?}"
        );
    }
    assert_eq!(summary.duplicates, 10, "{summary:?}");
    assert_eq!(summary.delivered, 0, "{summary:?}");
    assert_eq!(summary.retries, 10, "{summary:?}");
    assert_eq!(summary.left_in_spool, 0);
}

#[tokio::test]
async fn a_bad_request_is_dropped_once_and_the_rest_flow() {
    let metrics = Metrics::install();
    let stand_in = StandIn::start(Mode::Healthy).await;
    stand_in.poison(3);
    let tmp = temp_dir("poison");
    let pusher = Pusher::start(
        config(&stand_in),
        Some(open_spool(tmp.path())),
        Duration::from_secs(5),
    );
    pusher.send(1..=6).await;
    wait_for("the other five stored", || stand_in.stored().len() >= 5).await;
    let summary = pusher.stop().await;

    assert_eq!(stand_in.stored(), vec![1, 2, 4, 5, 6]);
    assert_eq!(stand_in.rejected(), vec![3], "sent once, never retried");
    assert_eq!(summary.rejected, 1, "{summary:?}");
    assert_eq!(summary.delivered, 5, "{summary:?}");
    assert_eq!(summary.retries, 0, "{summary:?}");
    assert_eq!(summary.left_in_spool, 0);
    assert!(spooled_seqs(tmp.path()).is_empty());
    assert_eq!(
        metrics.counter(REPORTS_DROPPED_TOTAL, Some(("reason", "rejected"))),
        1
    );
    assert_eq!(
        metrics.counter(REPORT_DELIVERIES_TOTAL, Some(("result", "rejected"))),
        1
    );
}

#[tokio::test]
async fn a_full_spool_drops_the_oldest_and_delivers_the_newest() {
    let metrics = Metrics::install();
    let stand_in = StandIn::start(Mode::Failing).await;
    let tmp = temp_dir("bound");
    // Seqs 1..=8 give bodies of one length: room for exactly three.
    let size = report_body(1).len() as u64;
    let spool = Spool::open(spool_config(
        tmp.path(),
        3 * size,
        Duration::from_secs(3600),
    ))
    .unwrap();
    let pusher = Pusher::start(config(&stand_in), Some(spool), Duration::from_secs(5));
    pusher.send(1..=8).await;
    wait_for("the spool to keep only the newest three", || {
        spooled_seqs(tmp.path()) == vec![6, 7, 8]
    })
    .await;
    // A report dropped while in flight counts once its attempt has failed.
    wait_for("five drops counted", || {
        metrics.counter(REPORTS_DROPPED_TOTAL, Some(("reason", "spool_full"))) >= 5
    })
    .await;
    stand_in.set_mode(Mode::Healthy);
    wait_for("the newest three stored", || stand_in.stored().len() >= 3).await;
    let summary = pusher.stop().await;

    assert_eq!(stand_in.stored(), vec![6, 7, 8]);
    assert_eq!(summary.dropped_spool_full, 5, "{summary:?}");
    assert_eq!(summary.delivered, 3, "{summary:?}");
    assert_eq!(
        metrics.counter(REPORTS_DROPPED_TOTAL, Some(("reason", "spool_full"))),
        5
    );
}

#[tokio::test]
async fn reports_older_than_max_age_are_dropped() {
    let metrics = Metrics::install();
    let stand_in = StandIn::start(Mode::Failing).await;

    // Reports spooled two hours ago by an earlier run, against a one-hour max_age.
    let tmp = temp_dir("age-old");
    let hour = Duration::from_secs(3600);
    let mut spool = Spool::open(spool_config(tmp.path(), 1 << 20, hour)).unwrap();
    let now = SystemTime::now();
    spool.put(1, &report_body(1), now - 2 * hour).unwrap();
    spool.put(2, &report_body(2), now - 2 * hour).unwrap();
    spool.put(3, &report_body(3), now).unwrap();
    stand_in.set_mode(Mode::Healthy);
    let pusher = Pusher::start(config(&stand_in), Some(spool), Duration::from_secs(5));
    wait_for("the fresh report stored", || !stand_in.stored().is_empty()).await;
    let summary = pusher.stop().await;
    assert_eq!(stand_in.stored(), vec![3]);
    assert_eq!((summary.expired, summary.delivered), (2, 1), "{summary:?}");

    // Reports that age out while the aggregator is down.
    stand_in.set_mode(Mode::Failing);
    let tmp = temp_dir("age-live");
    let spool = Spool::open(spool_config(tmp.path(), 1 << 20, Duration::from_secs(1))).unwrap();
    let pusher = Pusher::start(config(&stand_in), Some(spool), Duration::from_secs(5));
    pusher.send(10..=11).await;
    wait_for("both reports to expire", || {
        metrics.counter(REPORTS_DROPPED_TOTAL, Some(("reason", "expired"))) >= 4
    })
    .await;
    assert!(spooled_seqs(tmp.path()).is_empty());
    stand_in.set_mode(Mode::Healthy);
    pusher.send([12]).await;
    wait_for("the fresh report stored", || stand_in.stored().len() >= 2).await;
    let summary = pusher.stop().await;
    assert_eq!(stand_in.stored(), vec![3, 12]);
    assert_eq!((summary.expired, summary.delivered), (2, 1), "{summary:?}");
}

#[tokio::test]
async fn a_restart_resumes_from_the_spool_oldest_first() {
    let metrics = Metrics::install();
    let stand_in = StandIn::start(Mode::Healthy).await;
    stand_in.refuse();
    let tmp = temp_dir("restart");

    let first = Pusher::start(
        config(&stand_in),
        Some(open_spool(tmp.path())),
        Duration::from_millis(100),
    );
    first.send(1..=5).await;
    wait_for("all spooled", || spooled_seqs(tmp.path()) == seqs(1..=5)).await;
    wait_for("a failed attempt", || metrics.retries() >= 2).await;
    let summary = first.stop().await;
    assert_eq!(summary.delivered, 0, "{summary:?}");
    assert_eq!(summary.left_in_spool, 5, "{summary:?}");

    let spool = open_spool(tmp.path());
    assert_eq!(
        (spool.len(), spool.oldest(), spool.max_seq()),
        (5, Some(1), Some(5))
    );
    stand_in.recover(Mode::Healthy).await;
    let second = Pusher::start(config(&stand_in), Some(spool), Duration::from_secs(5));
    second.send(6..=8).await;
    wait_for("all 8 stored", || stand_in.stored().len() >= 8).await;
    let summary = second.stop().await;

    assert_eq!(stand_in.stored(), seqs(1..=8));
    assert_eq!(summary.delivered, 8, "{summary:?}");
    assert_eq!(summary.left_in_spool, 0);
    assert!(spooled_seqs(tmp.path()).is_empty());
}

#[tokio::test]
async fn an_unwritable_spool_falls_back_to_memory() {
    let metrics = Metrics::install();
    let stand_in = StandIn::start(Mode::Healthy).await;
    let tmp = temp_dir("unwritable");
    let dir = tmp.path().join("spool");
    let spool = open_spool(&dir);
    // Root ignores permissions, so break the spool by putting a file where its directory was.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();

    let pusher = Pusher::start(config(&stand_in), Some(spool), Duration::from_secs(5));
    pusher.send(1..=3).await;
    wait_for("all 3 stored", || stand_in.stored().len() >= 3).await;
    let summary = pusher.stop().await;
    assert_eq!(stand_in.stored(), seqs(1..=3));
    assert_eq!(summary.delivered, 3, "{summary:?}");
    assert_eq!(summary.dropped_spool_full, 0, "{summary:?}");
    assert_eq!(metrics.counter(SPOOL_WRITE_ERRORS_TOTAL, None), 3);

    // With the aggregator down too, what waits in memory is lost at exit, and counted.
    stand_in.set_mode(Mode::Failing);
    let spool = open_spool(&tmp.path().join("spool2"));
    let dir = tmp.path().join("spool2");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let before = metrics.retries();
    let pusher = Pusher::start(config(&stand_in), Some(spool), Duration::from_millis(100));
    pusher.send(4..=5).await;
    wait_for("a retry", || metrics.retries() > before).await;
    let summary = pusher.stop().await;
    assert_eq!(summary.delivered, 0, "{summary:?}");
    assert_eq!(summary.dropped_spool_full, 2, "{summary:?}");
    assert_eq!(summary.left_in_spool, 0, "{summary:?}");
    assert_eq!(metrics.counter(SPOOL_WRITE_ERRORS_TOTAL, None), 5);
}

#[tokio::test]
async fn a_wrong_key_is_retried_and_never_delivered() {
    let stand_in = StandIn::start(Mode::Healthy).await;
    let tmp = temp_dir("key");
    let mut wrong = config(&stand_in);
    wrong.key = b"not-the-key-the-aggregator-knows".to_vec();
    let pusher = Pusher::start(
        wrong,
        Some(open_spool(tmp.path())),
        Duration::from_millis(100),
    );
    pusher.send(1..=3).await;
    wait_for("several refused attempts", || stand_in.bad_auth() >= 4).await;
    let summary = pusher.stop().await;
    assert!(stand_in.stored().is_empty());
    assert_eq!(summary.delivered + summary.rejected, 0, "{summary:?}");
    assert!(summary.retries >= 3, "{summary:?}");
    assert_eq!(summary.left_in_spool, 3, "kept for a fixed key");

    // With the key fixed, everything kept goes through.
    let pusher = Pusher::start(
        config(&stand_in),
        Some(open_spool(tmp.path())),
        Duration::from_secs(5),
    );
    wait_for("all 3 stored", || stand_in.stored().len() >= 3).await;
    let summary = pusher.stop().await;
    assert_eq!(stand_in.stored(), seqs(1..=3));
    assert_eq!(summary.delivered, 3);
}

#[tokio::test]
async fn delivers_over_tls_trusting_a_private_ca() {
    let metrics = Metrics::install();
    let ca = vantage_testkit::TestCa::new();
    let tls = ca
        .valid_leaf()
        .server_config(&[b"h2".to_vec(), b"http/1.1".to_vec()], false);
    let stand_in = StandIn::start_with(Mode::Healthy, Some(tls)).await;
    assert!(stand_in.url().starts_with("https://"));

    // No spool: reports wait in memory.
    let mut trusted = config(&stand_in);
    trusted.ca_file = Some(ca.ca_file().to_owned());
    trusted.check().unwrap();
    let pusher = Pusher::start(trusted, None, Duration::from_secs(5));
    pusher.send(1..=3).await;
    wait_for("all 3 stored", || stand_in.stored().len() >= 3).await;
    let summary = pusher.stop().await;
    assert_eq!(stand_in.stored(), seqs(1..=3));
    assert_eq!(summary.delivered, 3, "{summary:?}");

    // Without the CA the certificate is not trusted: retried, never sent.
    let before = metrics.retries();
    let pusher = Pusher::start(config(&stand_in), None, Duration::from_millis(100));
    pusher.send([4]).await;
    wait_for("a failed handshake", || metrics.retries() >= before + 2).await;
    let summary = pusher.stop().await;
    assert_eq!(summary.delivered, 0, "{summary:?}");
    assert_eq!(
        summary.dropped_spool_full, 1,
        "no spool to keep it: {summary:?}"
    );
    assert_eq!(stand_in.stored(), seqs(1..=3));
}
