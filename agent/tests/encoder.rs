//! The report encoder never holds up the probes (issue 16): with an encode made to block on
//! purpose, the scheduler keeps starting probes on time and the drain returns at once; when the
//! encode is let go, the report carries exactly what was drained.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use vantage_agent::encoder::{encode, EncodeFn, Encoder, SealedInterval, SealedTarget};
use vantage_agent::push::OutgoingReport;
use vantage_agent::recorder::{IntervalClock, TargetRecorder};
use vantage_agent::report::ReportIdentity;
use vantage_agent::scheduler::{run_target, ProbeTarget, ScheduledTarget, SlotGrid};
use vantage_probe::{PhaseTimings, ProbeResult};
use vantage_protocol::config::TargetKind;
use vantage_protocol::report::IntervalReport;
use vantage_protocol::{Outcome, Phase};

/// A probe that takes 5 ms of (paused) Tokio time and notes when it started.
struct Noting {
    starts: Mutex<Vec<Instant>>,
}

impl ProbeTarget for Noting {
    async fn probe(&self) -> ProbeResult {
        let start = Instant::now();
        self.starts.lock().unwrap().push(start);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut t = PhaseTimings::default();
        t.set(Phase::Connect, Duration::from_millis(1));
        t.set(Phase::Total, start.elapsed());
        let mut r = ProbeResult::synthetic(Outcome::Ok, t);
        r.status = Some(200);
        r
    }
}

fn identity() -> ReportIdentity {
    ReportIdentity {
        fleet: "f".into(),
        agent_id: "a".into(),
        vantage: "eu-west-1".into(),
    }
}

/// Advances the paused clock in 10 ms steps, letting every task run at each step.
async fn advance(total: Duration) {
    let step = Duration::from_millis(10);
    for _ in 0..(total.as_millis() / step.as_millis()) {
        tokio::time::advance(step).await;
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn probes_keep_starting_while_a_report_is_encoded() {
    let interval = Duration::from_millis(100);
    let target = Arc::new(ScheduledTarget {
        probe: Noting {
            starts: Mutex::new(Vec::new()),
        },
        grid: SlotGrid::new(Instant::now(), Duration::from_millis(20), interval),
        recorder: Arc::new(Mutex::new(TargetRecorder::new(3))),
    });
    let clock = IntervalClock::new(target.grid.origin, Duration::from_secs(1));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_target(target.clone(), clock, None, stop_rx));

    // The encode blocks its blocking-pool thread until the test lets it go.
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let entered = Arc::new(AtomicBool::new(false));
    let entered_in = entered.clone();
    let slow: EncodeFn = Arc::new(move |identity, sealed| {
        entered_in.store(true, Ordering::SeqCst);
        // Bounded: an encoder that ran on the runtime would block here, then the report
        // would come out too early and the assertions below say so.
        let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(20));
        encode(identity, sealed)
    });
    let (sink, mut reports) = mpsc::unbounded_channel::<OutgoingReport>();
    let encoder = Encoder::with_encode(identity(), sink, slow);

    // Interval 0 = [0, 1 s): ten slots. Seal it a little after it ends.
    advance(Duration::from_millis(1_100)).await;
    let drained = target.recorder.lock().unwrap().take_through(0);
    assert_eq!(drained.len(), 1);
    let (_, stats) = drained.into_iter().next().unwrap();
    assert_eq!(stats.attempts, 10);
    let sealed = SealedInterval {
        seq: 1,
        start_ms: 0,
        length: Duration::from_secs(1),
        targets: vec![SealedTarget {
            id: "status:eu-west-1".into(),
            kind: TargetKind::Status,
            region: Some("eu-west-1".into()),
            stats: Box::new(stats),
        }],
    };
    // Handing the interval over never waits for an encode.
    tokio::select! {
        biased;
        _ = encoder.submit(sealed) => {}
        _ = std::future::ready(()) => panic!("submitting a sealed interval waited"),
    }

    // Wait (bounded) until the encode is running and blocked on its gate.
    for _ in 0..1_000 {
        if entered.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        tokio::task::yield_now().await;
    }
    assert!(entered.load(Ordering::SeqCst), "the encode never started");

    // Two more seconds while the encode is held: every slot still starts on its grid.
    let before = target.probe.starts.lock().unwrap().len();
    advance(Duration::from_secs(2)).await;
    let starts = target.probe.starts.lock().unwrap().clone();
    assert_eq!(
        starts.len() - before,
        20,
        "probes stalled behind the encode"
    );
    for (n, s) in starts.iter().enumerate() {
        assert_eq!(
            *s,
            target.grid.slot_start(n as u64),
            "slot {n} started late"
        );
    }
    assert!(
        reports.try_recv().is_err(),
        "the encode was held, yet a report came out"
    );

    // Let the encode go: the report is exactly what was drained.
    release.send(()).unwrap();
    let (sink, built) = encoder.finish().await;
    drop(sink);
    assert_eq!(built, 1);
    let outgoing = reports.recv().await.expect("one report");
    assert_eq!(outgoing.seq, 1);
    let report: IntervalReport = serde_json::from_slice(&outgoing.body).unwrap();
    report.validate().unwrap();
    assert_eq!(report.targets.len(), 1);
    assert_eq!(report.targets[0].attempts, 10);
    let h = report.targets[0].decode_histograms().unwrap();
    assert_eq!(h[&Phase::Connect].len(), 10);

    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn reports_come_out_in_sequence_order() {
    let (sink, mut reports) = mpsc::unbounded_channel::<OutgoingReport>();
    let encoder = Encoder::start(identity(), sink);
    for seq in 10..20 {
        let mut stats = vantage_agent::recorder::IntervalStats::new(3);
        stats.missed_slots = seq;
        encoder
            .submit(SealedInterval {
                seq,
                start_ms: seq * 1_000,
                length: Duration::from_secs(1),
                targets: vec![SealedTarget {
                    id: "global".into(),
                    kind: TargetKind::Global,
                    region: None,
                    stats: Box::new(stats),
                }],
            })
            .await;
    }
    let (_, built) = encoder.finish().await;
    assert_eq!(built, 10);
    let mut seqs = Vec::new();
    while let Ok(r) = reports.try_recv() {
        let report: IntervalReport = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(report.seq, r.seq);
        assert_eq!(report.targets[0].missed_slots, r.seq);
        seqs.push(r.seq);
    }
    assert_eq!(seqs, (10..20).collect::<Vec<_>>());
}
