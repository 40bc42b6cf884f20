//! Signed interval reports for the tests that drive a whole aggregator at chosen instants (no
//! sockets, no clock): probe results recorded as the agent records them, one vantage's report
//! built by the agent's own builder, signed as the agent signs it and ingested.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_agent::recorder::IntervalStats;
use vantage_agent::report::{build, ReportIdentity, TargetInterval};
use vantage_aggregator::backend::Backend;
use vantage_aggregator::ingest::{IngestError, Ingested};
use vantage_aggregator::service::Aggregator;
use vantage_probe::{PhaseTimings, ProbeResult};
use vantage_protocol::auth;
use vantage_protocol::{Outcome, Phase};

/// Ten probes of 20 ms, all failed (timeouts) or all answered 200.
pub fn stats(failed: bool) -> IntervalStats {
    let mut s = IntervalStats::new(3);
    for _ in 0..10 {
        let mut t = PhaseTimings::default();
        t.set(Phase::Total, Duration::from_millis(20));
        let outcome = if failed {
            Outcome::Timeout
        } else {
            Outcome::Ok
        };
        let mut r = ProbeResult::synthetic(outcome, t);
        if !failed {
            r.status = Some(200);
        }
        s.record(&r, Duration::ZERO);
    }
    s
}

/// Who sends a report and with which key.
pub struct Sender<'a> {
    pub fleet: &'a str,
    pub vantage: &'a str,
    pub key_id: &'a str,
    pub key: &'a [u8],
}

/// `sender`'s report `seq` of the 1 s interval starting at `interval_start_ms` about
/// `targets`, signed at `now` and ingested at `now`.
pub fn ingest<B: Backend>(
    agg: &Aggregator<B>,
    sender: &Sender<'_>,
    seq: u64,
    interval_start_ms: u64,
    targets: &[TargetInterval<'_>],
    now: SystemTime,
) -> Result<Ingested, IngestError> {
    let identity = ReportIdentity {
        fleet: sender.fleet.into(),
        agent_id: format!("vantage-{}", sender.vantage),
        vantage: sender.vantage.into(),
    };
    let report = build(
        &identity,
        seq,
        interval_start_ms,
        Duration::from_secs(1),
        targets,
    );
    ingest_report(agg, sender, &report, now)
}

/// `report` as `sender` signs it at `now`, ingested at `now`.
pub fn ingest_report<B: Backend>(
    agg: &Aggregator<B>,
    sender: &Sender<'_>,
    report: &vantage_protocol::report::IntervalReport,
    now: SystemTime,
) -> Result<Ingested, IngestError> {
    let body = serde_json::to_vec(report).expect("a report serialises");
    ingest_body(agg, sender, &body, now)
}

/// Signs `body` as `sender` at `now` and ingests it (a body no serialiser of ours would write).
pub fn ingest_body<B: Backend>(
    agg: &Aggregator<B>,
    sender: &Sender<'_>,
    body: &[u8],
    now: SystemTime,
) -> Result<Ingested, IngestError> {
    let ts = now
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let signature = auth::sign(sender.key, ts, body);
    agg.ingest(
        |name| match name {
            auth::HEADER_KEY_ID => Some(sender.key_id.to_owned()),
            auth::HEADER_TIMESTAMP => Some(ts.to_string()),
            auth::HEADER_SIGNATURE => Some(signature.clone()),
            _ => None,
        },
        body,
        now,
    )
}
