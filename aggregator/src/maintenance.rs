//! Maintenance: `[[maintenance]]` windows and pins with an expiry (`until`). Pure: every
//! function takes the time. While a window is active its units (service × Region) are held
//! out as by a pin `down` — an explicit pin on the unit wins — unless that would leave the
//! service fewer than `min_healthy` units not pinned down: a window is an unforced pin, and
//! the API refuses unforced pins below `min_healthy`, so the unit is left to the normal rules
//! and the `maintenance_started` line says so. An expired pin is removed. When a window ends or
//! a pin `down` expires the unit is released to the normal decisions and must earn its way
//! back: its up streak starts again from zero, so it needs `recover_after` up evaluations.

use crate::config::{AggregatorConfig, ServiceConfig};
use crate::model::{Overrides, Pin, SetBy};
use serde::Serialize;
use std::collections::BTreeMap;
use vantage_protocol::config::format_rfc3339_ms;

/// One `[[maintenance]]` window as the aggregator applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Its place in the fleet file (`maintenance[i]`).
    pub index: usize,
    pub start: String,
    pub end: String,
    #[serde(skip)]
    pub start_ms: u64,
    #[serde(skip)]
    pub end_ms: u64,
    /// The units it holds out (`SERVICE/REGION`, or bare Regions for a single-API fleet).
    pub units: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Window {
    pub fn active_at(&self, now_ms: u64) -> bool {
        self.start_ms <= now_ms && now_ms < self.end_ms
    }
}

/// Every window of the configuration, with its units resolved.
pub fn windows(config: &AggregatorConfig) -> Vec<Window> {
    config
        .fleet
        .maintenance
        .iter()
        .enumerate()
        .map(|(index, m)| {
            let services: Vec<&ServiceConfig> = config
                .services
                .iter()
                .filter(|s| {
                    m.services.is_empty() || m.services.iter().any(|n| n.get_ref() == &s.name)
                })
                .collect();
            let units = services
                .iter()
                .flat_map(|s| {
                    m.regions
                        .iter()
                        .filter(|r| s.regions.contains(r.get_ref()))
                        .map(|r| s.unit(r.get_ref()))
                })
                .collect();
            Window {
                index,
                start: format_rfc3339_ms(m.start_ms()),
                end: format_rfc3339_ms(m.end_ms()),
                start_ms: m.start_ms(),
                end_ms: m.end_ms(),
                units,
                reason: m.reason.clone(),
            }
        })
        .collect()
}

/// The overrides a decision honours at one instant: the operators' pins plus the active
/// windows' holds, and what each active window did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    pub overrides: Overrides,
    /// Active window index → the units it holds out.
    pub held: BTreeMap<usize, Vec<String>>,
    /// Active window index → units it leaves in service because of `min_healthy`.
    pub refused: BTreeMap<usize, Vec<String>>,
}

/// Adds the holds of the windows active at `now_ms` to `overrides`.
pub fn overlay(
    overrides: &Overrides,
    windows: &[Window],
    services: &[ServiceConfig],
    now_ms: u64,
) -> Overlay {
    let mut out = Overlay {
        overrides: overrides.clone(),
        ..Overlay::default()
    };
    for w in windows.iter().filter(|w| w.active_at(now_ms)) {
        let held = out.held.entry(w.index).or_default();
        for unit in &w.units {
            if let Some(pin) = overrides.pinned.get(unit) {
                // An operator's pin wins; a pin down already holds it.
                if *pin == Pin::Down {
                    held.push(unit.clone());
                }
                continue;
            }
            if out.overrides.pinned.get(unit) == Some(&Pin::Down) {
                held.push(unit.clone());
                continue;
            }
            let Some(service) = services.iter().find(|s| s.units().contains(unit)) else {
                continue;
            };
            let units = service.units();
            let floor = service.policy.min_healthy.min(units.len());
            let eligible = units
                .iter()
                .filter(|u| out.overrides.pinned.get(*u) != Some(&Pin::Down))
                .count();
            if eligible > floor {
                out.overrides.pinned.insert(unit.clone(), Pin::Down);
                held.push(unit.clone());
            } else {
                out.refused.entry(w.index).or_default().push(unit.clone());
            }
        }
    }
    out
}

/// Removes the pins whose `until` is at or before `now_ms`; returns them with who set them.
pub fn expire_pins(overrides: &mut Overrides, now_ms: u64) -> Vec<(String, Pin, SetBy)> {
    let expired: Vec<String> = overrides
        .pinned_by
        .iter()
        .filter(|(_, s)| s.until_ms.is_some_and(|u| u <= now_ms))
        .map(|(unit, _)| unit.clone())
        .collect();
    expired
        .into_iter()
        .filter_map(|unit| {
            let by = overrides.pinned_by.remove(&unit)?;
            let pin = overrides.pinned.remove(&unit)?;
            Some((unit, pin, by))
        })
        .collect()
}

/// `/v1/state`'s `maintenance`: windows active now (with what they hold and leave in) and
/// windows to come, and pins with an expiry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MaintenanceView {
    pub active: Vec<ActiveWindow>,
    pub upcoming: Vec<Window>,
    /// Unit → when its pin expires (RFC 3339).
    pub pins_until: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActiveWindow {
    #[serde(flatten)]
    pub window: Window,
    pub held: Vec<String>,
    /// Left in service: holding them would break `min_healthy`.
    pub not_held: Vec<String>,
}

impl MaintenanceView {
    pub fn of(windows: &[Window], overlay: &Overlay, overrides: &Overrides, now_ms: u64) -> Self {
        MaintenanceView {
            active: windows
                .iter()
                .filter(|w| w.active_at(now_ms))
                .map(|w| ActiveWindow {
                    window: w.clone(),
                    held: overlay.held.get(&w.index).cloned().unwrap_or_default(),
                    not_held: overlay.refused.get(&w.index).cloned().unwrap_or_default(),
                })
                .collect(),
            upcoming: windows
                .iter()
                .filter(|w| w.start_ms > now_ms)
                .cloned()
                .collect(),
            pins_until: overrides
                .pinned_by
                .iter()
                .filter_map(|(u, s)| s.until_ms.map(|ms| (u.clone(), format_rfc3339_ms(ms))))
                .collect(),
        }
    }
}
