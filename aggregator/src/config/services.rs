//! Each service's decision settings: its Regions, unit keys and the policy and weights it is
//! decided by (the fleet's `[policy]` and `[weights]` overlaid by the service's own), checked
//! with the key and line of any bad value; and what each report target counts for.

use super::invalid;
use crate::model::{Policy, Quorum, WeightPolicy};
use vantage_protocol::config::{qualified, ConfigError, FleetConfig, TargetKind};

/// What a report's target is: its kind, its Region as reports name it, and the unit (service
/// in Region) its observations count for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    pub kind: TargetKind,
    pub region: Option<String>,
    /// `service.unit(region)`; `None` for targets of no Region (global, dns).
    pub unit: Option<String>,
}

/// One service's decision settings: its Regions and the policy and weights it is decided by.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    /// Declared in `[[services]]`: unit keys and target ids carry the name.
    pub named: bool,
    /// The service's Regions, in file order.
    pub regions: Vec<String>,
    pub policy: Policy,
    pub latency_quantile: f64,
    pub weights: WeightPolicy,
    pub weight_quantile: f64,
}

impl ServiceConfig {
    /// The unit key of this service in `region` (see `vantage_protocol::config::services`).
    pub fn unit(&self, region: &str) -> String {
        qualified(self.named, &self.name, region)
    }

    /// The unit keys of every Region of the service, in file order.
    pub fn units(&self) -> Vec<String> {
        self.regions.iter().map(|r| self.unit(r)).collect()
    }
}

/// The policy and weights of one API (the whole file, or one service's view) with their
/// defaults: (policy, its latency quantile, weights, their quantile).
pub(super) fn decision_settings(
    fleet: &FleetConfig,
) -> Result<(Policy, f64, WeightPolicy, f64), ConfigError> {
    let p = &fleet.policy;
    let d = Policy::default();
    let quorum = match p.quorum.as_ref() {
            None => Quorum::Majority,
            Some(q) if q.get_ref() == "majority" => Quorum::Majority,
            Some(q) => match q.get_ref().parse::<usize>() {
                Ok(n) if n >= 2 => Quorum::AtLeast(n),
                _ => {
                    return Err(fleet.invalid(
                        q,
                        "policy.quorum",
                        "use \"majority\" or a number of vantages, at least 2 (one vantage must never fail a Region alone)",
                    ))
                }
            },
        };
    let policy = Policy {
        min_attempts: p.min_attempts.unwrap_or(d.min_attempts).max(1),
        max_failure_ratio: fraction(
            fleet,
            "policy.max_failure_ratio",
            p.max_failure_ratio,
            d.max_failure_ratio,
        )?,
        max_latency: p.max_latency.map(|l| l.0),
        quorum,
        fail_after: p.fail_after.unwrap_or(d.fail_after).max(1),
        recover_after: p.recover_after.unwrap_or(d.recover_after).max(1),
        flap_penalty: p.flap_penalty.unwrap_or(d.flap_penalty).max(0.0),
        flap_half_life: p.flap_half_life.map_or(d.flap_half_life, |h| h.0),
        flap_suppress: p.flap_suppress.unwrap_or(d.flap_suppress).max(0.0),
        min_healthy: p.min_healthy.unwrap_or(d.min_healthy),
        max_changes: p.max_changes.unwrap_or(d.max_changes).max(1),
        change_window: p.change_window.map_or(d.change_window, |w| w.0),
        correlated_fraction: match p.correlated_fraction {
            None => d.correlated_fraction,
            // Off: a share no count of Regions reaches.
            Some(0.0) => f64::INFINITY,
            Some(x) if x > 0.0 && x <= 1.0 => x,
            Some(x) => {
                return Err(invalid(
                    fleet,
                    "policy.correlated_fraction",
                    format!("{x} is not in (0, 1]; 0.5 is the default, 0 turns the rule off"),
                ))
            }
        },
        // The aggregator's window, set by `from_fleet`.
        correlated_window: d.correlated_window,
    };
    if policy.recover_after < policy.fail_after {
        tracing::warn!("policy.recover_after is shorter than fail_after: Regions will come back faster than they leave");
    }
    if policy.flap_half_life.is_zero() {
        return Err(invalid(fleet, "policy.flap_half_life", "must be positive"));
    }
    let w = &fleet.weights;
    let dw = WeightPolicy::default();
    let weights = WeightPolicy {
        ewma_alpha: fraction(fleet, "weights.ewma_alpha", w.ewma_alpha, dw.ewma_alpha)?,
        floor: w.floor.unwrap_or(dw.floor).max(1),
        dead_band: w.dead_band.unwrap_or(dw.dead_band),
        dead_band_ratio: match w.dead_band_ratio {
            None => dw.dead_band_ratio,
            Some(r) if (0.0..1.0).contains(&r) => r,
            Some(r) => {
                return Err(invalid(
                    fleet,
                    "weights.dead_band_ratio",
                    format!("{r} is not in [0, 1): 0.1 keeps changes under 10 % unwritten"),
                ))
            }
        },
        latency_tolerance: w
            .latency_tolerance
            .map_or(dw.latency_tolerance, |d| d.0.as_secs_f64()),
    };
    Ok((
        policy,
        fraction(fleet, "policy.latency_quantile", p.latency_quantile, 0.99)?,
        weights,
        fraction(fleet, "weights.quantile", w.quantile, 0.5)?,
    ))
}

fn fraction(
    fleet: &FleetConfig,
    key: &str,
    v: Option<f64>,
    default: f64,
) -> Result<f64, ConfigError> {
    match v {
        None => Ok(default),
        Some(x) if x > 0.0 && x <= 1.0 => Ok(x),
        Some(x) => Err(invalid(fleet, key, format!("{x} is not in (0, 1]"))),
    }
}
