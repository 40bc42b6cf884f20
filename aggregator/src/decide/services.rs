//! Every service decided on its own: [`evaluate_services`] runs [`super::evaluate`] once per
//! service, with the service's policy, weights and Regions and only its slice of the state, so
//! quorum, hysteresis, flap damping, the change cap and `min_healthy` are per service (a
//! change cap hit by one service never blocks another). Units are keyed `<service>/<region>`
//! (bare Regions for a single-API fleet) in the state, the observations and the pins; the
//! combined [`Decision`] names the service and the bare Region in every entry.
//!
//! [`region_wide`] finds the Regions down for every service that runs there, so a Region-wide
//! failure is reported as one event naming all services, not as N unrelated ones.

use crate::config::ServiceConfig;
use crate::model::{Decision, ModelState, Overrides, RegionObservation, Verdict};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// One evaluation of every service. `observations` are keyed by unit (any order, units of no
/// service are ignored); the state's Regions by unit, its change budget per service;
/// `vantages` says whose verdicts vote ([`super::assess_vantages`], over every service).
pub fn evaluate_services(
    services: &[ServiceConfig],
    previous: &ModelState,
    observations: &[RegionObservation],
    overrides: &Overrides,
    vantages: &super::VantageHealth,
    now: Duration,
) -> (ModelState, Decision) {
    let by_unit: HashMap<&str, &RegionObservation> = observations
        .iter()
        .map(|o| (o.region.as_str(), o))
        .collect();
    let mut next = ModelState::default();
    let mut combined = Decision {
        at: now,
        regions: Vec::new(),
        transitions: Vec::new(),
        alerts: Vec::new(),
    };
    for service in services {
        let units = service.units();
        let slice = ModelState {
            regions: units
                .iter()
                .filter_map(|u| previous.regions.get(u).map(|s| (u.clone(), s.clone())))
                .collect(),
            recent_transitions: if service.named {
                previous
                    .services_recent
                    .get(&service.name)
                    .cloned()
                    .unwrap_or_default()
            } else {
                previous.recent_transitions.clone()
            },
            services_recent: BTreeMap::new(),
        };
        let seen: Vec<RegionObservation> = units
            .iter()
            .filter_map(|u| by_unit.get(u.as_str()).map(|o| (*o).clone()))
            .collect();
        let inputs = super::Inputs {
            policy: &service.policy,
            weights: &service.weights,
            regions: &units,
            previous: &slice,
            observations: &seen,
            overrides,
            vantages,
        };
        let (state, decision) = super::evaluate_with(&inputs, now);
        next.regions.extend(state.regions);
        if service.named {
            next.services_recent
                .insert(service.name.clone(), state.recent_transitions);
        } else {
            next.recent_transitions = state.recent_transitions;
        }
        let bare = |unit: &str| vantage_protocol::config::split_unit(unit).1.to_owned();
        combined
            .regions
            .extend(decision.regions.into_iter().map(|mut r| {
                r.service = service.name.clone();
                r.region = bare(&r.region);
                r
            }));
        combined
            .transitions
            .extend(decision.transitions.into_iter().map(|mut t| {
                t.service = service.name.clone();
                t.region = bare(&t.region);
                t
            }));
        combined
            .alerts
            .extend(decision.alerts.into_iter().map(|mut a| {
                a.service = service.name.clone();
                a.region = a.region.as_deref().map(bare);
                a
            }));
    }
    (next, combined)
}

/// Regions that every service running there (at least two) sees down by quorum in `decision`,
/// with those services in name order.
pub fn region_wide(decision: &Decision) -> BTreeMap<String, Vec<String>> {
    let mut by_region: BTreeMap<&str, (Vec<String>, bool)> = BTreeMap::new();
    for r in &decision.regions {
        let (services, all_down) = by_region
            .entry(r.region.as_str())
            .or_insert((Vec::new(), true));
        services.push(r.service.clone());
        *all_down &= r.verdict == Verdict::Down;
    }
    by_region
        .into_iter()
        .filter(|(_, (services, all_down))| *all_down && services.len() >= 2)
        .map(|(region, (mut services, _))| {
            services.sort();
            (region.to_owned(), services)
        })
        .collect()
}
