//! The fault timeline of a run: the scenario's faults in time order, each applied to the
//! simulated network when its moment comes (a Region fault to every unit it reaches: one
//! service's, or every service's in the Region) or handed back to the run when it stops or
//! starts an aggregator replica, and announced as a `fault` event.

use crate::events::Events;
use crate::net::Network;
use crate::scenario::{DemoOptions, Fault, Scheduled};
use tokio::time::Instant;

/// The faults still to come.
pub(crate) struct FaultSchedule {
    /// Every fault, sorted by time, with the units it reaches.
    faults: Vec<(Scheduled, Vec<String>)>,
    /// The first not yet applied.
    next: usize,
}

impl FaultSchedule {
    pub(crate) fn new(options: &DemoOptions) -> FaultSchedule {
        let mut faults: Vec<(Scheduled, Vec<String>)> = options
            .faults
            .iter()
            .map(|s| (s.clone(), options.fault_units(&s.fault)))
            .collect();
        faults.sort_by_key(|(f, _)| f.at);
        FaultSchedule { faults, next: 0 }
    }

    /// When the next fault is due, for a run that started at `start`.
    pub(crate) fn next_at(&self, start: Instant) -> Option<Instant> {
        self.faults.get(self.next).map(|(f, _)| start + f.at)
    }

    /// Applies the next fault to the network and emits its event. A fault on an aggregator
    /// replica is returned for the run to carry out (it stops or starts a replica).
    pub(crate) fn apply_next(&mut self, net: &Network, events: &mut Events) -> Option<Fault> {
        let (s, units) = self.faults.get(self.next)?.clone();
        self.next += 1;
        for unit in &units {
            match &s.fault {
                Fault::Fail { .. } => net.faults.fail(unit),
                Fault::Recover { .. } => net.faults.recover(unit),
                Fault::Slow { extra, .. } => net.faults.slow(unit, *extra),
                Fault::Degrade { ratio, .. } => net.faults.degrade(unit, *ratio),
                _ => {}
            }
        }
        if let Fault::Flaky {
            vantage,
            service,
            ratio,
        } = &s.fault
        {
            net.faults.flaky(vantage, service.as_deref(), *ratio);
        }
        let (region, vantage, detail) = match &s.fault {
            Fault::Flaky { vantage, .. } => (None, Some(vantage.as_str()), serde_json::Value::Null),
            Fault::KillAggregator { id } | Fault::ReviveAggregator { id } => {
                (None, None, serde_json::json!({"replica": id}))
            }
            // With services, which units the fault reached (one service's, or every one's).
            other if units.iter().any(|u| u != other.subject()) => (
                Some(other.subject()),
                None,
                serde_json::json!({ "units": units }),
            ),
            other => (Some(other.subject()), None, serde_json::Value::Null),
        };
        let service = s.fault.service();
        events.emit_for(
            "fault",
            service,
            region,
            vantage,
            s.fault.describe(),
            detail,
        );
        s.fault.replica().is_some().then_some(s.fault)
    }
}
