//! The fault timeline of a run: the scenario's faults in time order, each applied to the
//! simulated network when its moment comes and announced as a `fault` event.

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

    /// Applies the next fault to the network and emits its event.
    pub(crate) fn apply_next(&mut self, net: &Network, events: &mut Events) {
        let Some(s) = self.faults.get(self.next) else {
            return;
        };
        match &s.fault {
            Fault::Fail { region } => net.faults.fail(region),
            Fault::Recover { region } => net.faults.recover(region),
            Fault::Slow { region, extra } => net.faults.slow(region, *extra),
            Fault::Flaky { vantage, ratio } => net.faults.flaky(vantage, *ratio),
        }
        let (region, vantage) = match &s.fault {
            Fault::Flaky { vantage, .. } => (None, Some(vantage.as_str())),
            other => (Some(other.subject()), None),
        };
        events.emit(
            "fault",
            region,
            vantage,
            s.fault.describe(),
            serde_json::Value::Null,
        );
        self.next += 1;
    }
}
