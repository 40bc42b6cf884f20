//! The fault timeline of a run: the scenario's faults in time order, each applied to the
//! simulated network when its moment comes (or handed back to the run when it stops or starts
//! an aggregator replica) and announced as a `fault` event.

use crate::events::Events;
use crate::net::Network;
use crate::scenario::{Fault, Scheduled};
use tokio::time::Instant;

/// The faults still to come.
pub(crate) struct FaultSchedule {
    /// Every fault, sorted by time.
    faults: Vec<Scheduled>,
    /// The first not yet applied.
    next: usize,
}

impl FaultSchedule {
    pub(crate) fn new(faults: &[Scheduled]) -> FaultSchedule {
        let mut faults = faults.to_vec();
        faults.sort_by_key(|f| f.at);
        FaultSchedule { faults, next: 0 }
    }

    /// When the next fault is due, for a run that started at `start`.
    pub(crate) fn next_at(&self, start: Instant) -> Option<Instant> {
        self.faults.get(self.next).map(|f| start + f.at)
    }

    /// Applies the next fault to the network and emits its event. A fault on an aggregator
    /// replica is returned for the run to carry out (it stops or starts a replica).
    pub(crate) fn apply_next(&mut self, net: &Network, events: &mut Events) -> Option<Fault> {
        let s = self.faults.get(self.next)?.clone();
        self.next += 1;
        match &s.fault {
            Fault::Fail { region } => net.faults.fail(region),
            Fault::Recover { region } => net.faults.recover(region),
            Fault::Slow { region, extra } => net.faults.slow(region, *extra),
            Fault::Flaky { vantage, ratio } => net.faults.flaky(vantage, *ratio),
            Fault::KillAggregator { .. } | Fault::ReviveAggregator { .. } => {}
        }
        let (region, vantage, detail) = match &s.fault {
            Fault::Flaky { vantage, .. } => (None, Some(vantage.as_str()), serde_json::Value::Null),
            Fault::KillAggregator { id } | Fault::ReviveAggregator { id } => {
                (None, None, serde_json::json!({"replica": id}))
            }
            other => (Some(other.subject()), None, serde_json::Value::Null),
        };
        events.emit("fault", region, vantage, s.fault.describe(), detail);
        s.fault.replica().is_some().then_some(s.fault)
    }
}
