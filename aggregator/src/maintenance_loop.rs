//! The evaluation loop's side of maintenance (the rules are pure, in [`crate::maintenance`]):
//! before each decision, expired pins are removed and the units of windows that ended or pins
//! `down` that expired are released (their up streak starts again, so they earn their way
//! back by `recover_after`); after it, `maintenance_started` / `maintenance_ended` go to the
//! decision log and to the notification sinks.

use crate::backend::Backend;
use crate::maintenance::{self, Overlay, Window};
use crate::model::Pin;
use crate::service::{lock, Aggregator};
use std::collections::BTreeSet;
use vantage_protocol::config::{split_unit, EventKind};

/// What changed before a decision, to tell after it.
#[derive(Debug, Default)]
pub(crate) struct Released {
    /// Windows that became active since the last decision.
    started: Vec<Window>,
    /// Windows that ended.
    ended: Vec<Window>,
    /// Expired pins: unit, pin, who set it.
    expired: Vec<(String, Pin, String)>,
}

impl<B: Backend> Aggregator<B> {
    /// Before a decision at `now_ms`: expire pins, find windows that started or ended, and
    /// release the units that are no longer held.
    pub(crate) fn maintenance_before(&self, now_ms: u64) -> Released {
        let config = self.config();
        let expired = maintenance::expire_pins(&mut lock(&self.overrides), now_ms);
        let windows = maintenance::windows(&config);
        let active: BTreeSet<usize> = windows
            .iter()
            .filter(|w| w.active_at(now_ms))
            .map(|w| w.index)
            .collect();
        let previous = std::mem::replace(&mut *lock(&self.maintenance_active), active.clone());
        let started: Vec<Window> = windows
            .iter()
            .filter(|w| active.contains(&w.index) && !previous.contains(&w.index))
            .cloned()
            .collect();
        let ended: Vec<Window> = windows
            .iter()
            .filter(|w| previous.contains(&w.index) && !active.contains(&w.index))
            .cloned()
            .collect();
        // Still held: pinned down by an operator, or in a window active now.
        let pinned = lock(&self.overrides).pinned.clone();
        let still_held = |unit: &String| {
            pinned.get(unit) == Some(&Pin::Down)
                || windows
                    .iter()
                    .any(|w| active.contains(&w.index) && w.units.contains(unit))
        };
        let released: Vec<String> = ended
            .iter()
            .flat_map(|w| w.units.iter().cloned())
            .chain(
                expired
                    .iter()
                    .filter(|(_, pin, _)| *pin == Pin::Down)
                    .map(|(u, ..)| u.clone()),
            )
            .filter(|u| !still_held(u))
            .collect();
        {
            let mut model = lock(&self.model);
            for unit in &released {
                if let Some(state) = model.regions.get_mut(unit) {
                    state.up_streak = 0;
                }
            }
        }
        Released {
            started,
            ended,
            expired: expired
                .into_iter()
                .map(|(u, p, by)| (u, p, by.by))
                .collect(),
        }
    }

    /// After the decision: one decision-log line and one event per change.
    pub(crate) fn maintenance_after(&self, now_ms: u64, released: Released, overlay: &Overlay) {
        let config = self.config();
        let place = |unit: &str| {
            let (service, region) = split_unit(unit);
            (
                service
                    .unwrap_or(config.fleet.fleet.name.get_ref())
                    .to_owned(),
                region.to_owned(),
            )
        };
        for w in &released.started {
            let held = overlay.held.get(&w.index).cloned().unwrap_or_default();
            let not_held = overlay.refused.get(&w.index).cloned().unwrap_or_default();
            let mut reason = format!(
                "maintenance window {} ({} to {}) holds out {held:?}{}",
                w.index,
                w.start,
                w.end,
                w.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            if !not_held.is_empty() {
                reason.push_str(&format!(
                    "; {not_held:?} left to the normal rules: holding them would leave fewer than \
                     min_healthy in service (a window is an unforced pin; pin with force to do it anyway)"
                ));
            }
            self.log_event(serde_json::json!({
                "event": "maintenance_started", "at_ms": now_ms, "window": w.index,
                "start": w.start, "end": w.end, "held": held, "not_held": not_held,
                "reason": reason,
            }));
            for unit in &held {
                let (service, region) = place(unit);
                self.notify_with(
                    EventKind::MaintenanceStarted,
                    now_ms,
                    Some(&service),
                    Some(&region),
                    reason.clone(),
                    None,
                );
            }
        }
        for w in &released.ended {
            let reason = format!(
                "maintenance window {} ended at {}: {:?} released to the normal rules (back after recover_after up evaluations)",
                w.index, w.end, w.units
            );
            self.log_event(serde_json::json!({
                "event": "maintenance_ended", "at_ms": now_ms, "window": w.index,
                "units": w.units, "reason": reason,
            }));
            for unit in &w.units {
                let (service, region) = place(unit);
                self.notify_with(
                    EventKind::MaintenanceEnded,
                    now_ms,
                    Some(&service),
                    Some(&region),
                    reason.clone(),
                    None,
                );
            }
        }
        for (unit, pin, by) in &released.expired {
            let reason = format!(
                "pin {} on {unit} set by {by} expired: released to the normal rules",
                if *pin == Pin::Down { "down" } else { "up" }
            );
            self.log_event(serde_json::json!({
                "event": "maintenance_ended", "at_ms": now_ms, "pin": unit, "by": by,
                "reason": reason,
            }));
            let (service, region) = place(unit);
            self.notify_with(
                EventKind::MaintenanceEnded,
                now_ms,
                Some(&service),
                Some(&region),
                reason,
                Some(by),
            );
        }
    }
}
