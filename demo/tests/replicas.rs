//! Aggregator replicas in the demo (`--aggregators 3`), in process: real agents deliver to
//! every replica, each replica decides on its own, and the simulated Route 53 combines their
//! votes. Judged by the events, as the scenarios are.

use std::time::Duration;
use tokio::sync::watch;
use vantage_demo::scenario::{parse_aggregator_at, parse_region_at};
use vantage_demo::{DemoOptions, DemoSummary, Event, Outputs, Scheduled};

async fn run(faults: Vec<Scheduled>, secs: u64) -> DemoSummary {
    let mut options = DemoOptions::embedded_default();
    options.aggregators = 3;
    options.faults = faults;
    options.duration = Some(Duration::from_secs(secs));
    let (_stop, rx) = watch::channel(false);
    let outputs = Outputs {
        page: None,
        events_file: None,
        live: false,
        print_events: true,
        metrics: None,
    };
    let summary = vantage_demo::run(options, outputs, rx)
        .await
        .expect("demo runs");
    print!("{}", summary.render());
    summary
}

fn named<'a>(s: &'a DemoSummary, name: &str) -> Vec<&'a Event> {
    s.events.iter().filter(|e| e.event == name).collect()
}

fn kill(spec: &str) -> Scheduled {
    parse_aggregator_at("--kill-aggregator", spec, false).unwrap()
}

fn revive(spec: &str) -> Scheduled {
    parse_aggregator_at("--revive-aggregator", spec, true).unwrap()
}

/// Two of three replicas die mid-incident and come back: each resumes from its state file
/// with the failed Region out, so Route 53 never sees a majority for it coming back. (A
/// replica starting from nothing would vote it in for its first evaluations, and two such
/// votes would put the failed Region back: a false transition.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_restarted_mid_incident_keep_the_failed_region_out() {
    let s = run(
        vec![
            parse_region_at("--fail", "eu-west-1@3", false).unwrap(),
            kill("1@8"),
            kill("2@8"),
            revive("1@11"),
            revive("2@11"),
        ],
        18,
    )
    .await;
    let outs = named(&s, "region_out");
    assert_eq!(outs.len(), 1, "{}", s.render());
    assert!(outs[0].t < 8.0, "out before the kills: {:?}", outs[0]);
    assert!(named(&s, "region_in").is_empty(), "no false transition");
    assert_eq!(named(&s, "replica_down").len(), 2);
    let ups = named(&s, "replica_up");
    assert_eq!(ups.len(), 2);
    assert_eq!((s.false_transitions, s.flaps), (0, 0));
    // The revived replicas decided again (their votes are fresh, not frozen): the weights
    // keep coming from a live lease holder.
    let last_writer = named(&s, "weights")
        .last()
        .and_then(|e| e.detail["writer"].as_str().map(str::to_owned));
    assert!(last_writer.is_some(), "{}", s.render());
}

/// A replica that is down while a Region fails keeps its last vote (healthy): the two live
/// replicas are a majority and take the Region out on their own, and the weights stay with
/// whoever holds the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_cannot_keep_a_failed_region_in() {
    let s = run(
        vec![
            kill("3@2"),
            parse_region_at("--fail", "eu-west-1@4", false).unwrap(),
        ],
        14,
    )
    .await;
    let outs = named(&s, "region_out");
    assert_eq!(outs.len(), 1, "{}", s.render());
    let votes = &outs[0].detail["votes"];
    assert_eq!(votes["3"]["frozen"], true, "{votes}");
    assert_eq!(votes["3"]["healthy"], true, "its last vote: {votes}");
    assert_eq!(votes["1"]["healthy"], false);
    assert_eq!(votes["2"]["healthy"], false);
    assert!(named(&s, "region_in").is_empty());
}
