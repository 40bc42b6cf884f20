//! Control-plane health: each unit's (service's Region's) record is guarded by an aggregator-owned CALCULATED
//! health check, forced healthy with HealthThreshold 0 and unhealthy with a threshold above its
//! child count. Every write starts from a fresh GetHealthCheck and carries its
//! HealthCheckVersion, so a concurrent edit is detected (and re-read) instead of overwritten.

use super::retry::describe;
use super::units::Unit;
use super::{Inner, Route53Backend, RETRIES_METRIC};
use crate::backend::{BackendError, Change};
use aws_sdk_route53::error::ProvideErrorMetadata;
use aws_sdk_route53::types::{HealthCheckConfig, HealthCheckType};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Extra rounds after a HealthCheckVersionMismatch (someone else updated the check between our
/// read and our write).
const VERSION_MISMATCH_ROUNDS: u32 = 2;
/// A CALCULATED check has at most 256 children and a threshold of at most 256.
const MAX_HEALTH_THRESHOLD: usize = 256;

/// What the backend needs from a CALCULATED health check.
#[derive(Debug, Clone)]
struct CheckSnapshot {
    version: i64,
    threshold: Option<i32>,
    children: Vec<String>,
    inverted: Option<bool>,
    disabled: Option<bool>,
}

/// The state a CALCULATED check is forced into: threshold 0 is always healthy, a threshold
/// above the child count always unhealthy; anything else follows the children, which vantage
/// does not decide (None). Disabled checks are always healthy.
fn forced_state(check: &CheckSnapshot) -> Option<bool> {
    if check.inverted == Some(true) {
        return None;
    }
    if check.disabled == Some(true) {
        return Some(true);
    }
    match check.threshold {
        Some(0) => Some(true),
        Some(t) if usize::try_from(t).is_ok_and(|t| t > check.children.len()) => Some(false),
        _ => None,
    }
}

/// How errors name one unit's health check, so an operator can find it in the console.
fn health_check_label(unit: &Unit, id: &str) -> String {
    format!("CALCULATED health check {id} ({})", unit.label())
}

/// GetHealthCheck reads in flight at once: Route 53 takes five requests a second per account,
/// so a fleet of many services reads in waves instead of one burst that throttles.
const CONCURRENT_READS: usize = 5;

impl Route53Backend {
    /// GetHealthCheck for every unit, [`CONCURRENT_READS`] at a time: one task per unit (each
    /// holding the shared state), so a pass waits for the slowest reads rather than the sum
    /// of them.
    pub(super) async fn observe_calculated(
        &self,
    ) -> Result<BTreeMap<String, Option<bool>>, BackendError> {
        let mut reads = tokio::task::JoinSet::new();
        let mut health = BTreeMap::new();
        let mut keys = self.inner.units.keys();
        loop {
            while reads.len() < CONCURRENT_READS {
                let Some(key) = keys.next() else { break };
                let inner = Arc::clone(&self.inner);
                let key = key.clone();
                reads.spawn(async move {
                    let unit = &inner.units[&key];
                    let id = unit.record.health_check_id.clone().unwrap_or_default();
                    let check = inner.calculated_check(unit, &id).await?;
                    Ok::<_, BackendError>((key, forced_state(&check)))
                });
            }
            let Some(joined) = reads.join_next().await else {
                break;
            };
            let (key, state) = joined
                .map_err(|e| BackendError::Observe(format!("GetHealthCheck task: {e}")))??;
            health.insert(key, state);
        }
        Ok(health)
    }
}

impl Inner {
    /// Every unit's CALCULATED check exists, is CALCULATED, has room for a threshold above
    /// its children, and is not Inverted (which would turn forcing around).
    pub(super) async fn verify_calculated_checks(&self) -> Result<(), BackendError> {
        for unit in self.units.values() {
            let id = unit.record.health_check_id.as_deref().unwrap_or_default();
            let check = self.calculated_check(unit, id).await?;
            if check.inverted == Some(true) {
                return Err(BackendError::Shape(
                    health_check_label(unit, id),
                    "it is Inverted: forcing its threshold would have the opposite effect".into(),
                ));
            }
        }
        Ok(())
    }

    /// GetHealthCheck, checked to be a CALCULATED check.
    async fn calculated_check(&self, unit: &Unit, id: &str) -> Result<CheckSnapshot, BackendError> {
        let request = self.route53.get_health_check().health_check_id(id);
        let out = self
            .config
            .retry
            .run("GetHealthCheck", || request.clone().send())
            .await
            .map_err(|e| {
                if e.code() == Some("NoSuchHealthCheck") {
                    BackendError::Shape(health_check_label(unit, id), describe(&e))
                } else {
                    BackendError::Observe(format!(
                        "GetHealthCheck {id} ({}): {}",
                        unit.label(),
                        describe(&e)
                    ))
                }
            })?;
        let check = out.health_check.ok_or_else(|| {
            BackendError::Observe(format!("GetHealthCheck {id}: no HealthCheck in the answer"))
        })?;
        let config: HealthCheckConfig = check.health_check_config.ok_or_else(|| {
            BackendError::Observe(format!("GetHealthCheck {id}: no HealthCheckConfig"))
        })?;
        if config.r#type != HealthCheckType::Calculated {
            return Err(BackendError::Shape(
                health_check_label(unit, id),
                format!("it is {}, not CALCULATED", config.r#type.as_str()),
            ));
        }
        let children = config.child_health_checks.unwrap_or_default();
        if children.len() >= MAX_HEALTH_THRESHOLD {
            return Err(BackendError::Shape(
                health_check_label(unit, id),
                format!(
                    "it has {} children: a threshold above that is over Route 53's limit of {MAX_HEALTH_THRESHOLD}",
                    children.len()
                ),
            ));
        }
        Ok(CheckSnapshot {
            version: check.health_check_version,
            threshold: config.health_threshold,
            children,
            inverted: config.inverted,
            disabled: config.disabled,
        })
    }

    /// Forces the CALCULATED check of unit `key` healthy (threshold 0) or unhealthy (one above
    /// its children), from a fresh read so the threshold matches the current children and the
    /// write carries the version it was computed from.
    pub(super) async fn force_health(
        &self,
        key: &str,
        in_service: bool,
    ) -> Result<(), BackendError> {
        let unit = &self.units[key];
        // Logs name the unit by its key: the Region, or `<service>/<region>`.
        let region = key;
        let id = unit.record.health_check_id.clone().unwrap_or_default();
        let change = Change::Health {
            region: key.to_owned(),
            in_service,
        }
        .to_string();
        let mut round = 0;
        loop {
            let check = self.calculated_check(unit, &id).await?;
            let target = if in_service {
                0
            } else {
                check.children.len() as i32 + 1
            };
            let disabled = check.disabled == Some(true);
            if check.threshold == Some(target) && (in_service || !disabled) {
                return Ok(());
            }
            // ChildHealthChecks is re-sent as read: unchanged on AWS (the version guards it),
            // and moto would otherwise clear the children on every update.
            let mut request = self
                .route53
                .update_health_check()
                .health_check_id(&id)
                .health_check_version(check.version)
                .health_threshold(target)
                .set_child_health_checks(Some(check.children.clone()));
            if !in_service && disabled {
                // A disabled check is always healthy: it must be enabled to take the Region out.
                tracing::warn!(region, health_check = %id, "enabling disabled health check to take the Region out");
                request = request.disabled(false);
            }
            let result = self
                .config
                .retry
                .run("UpdateHealthCheck", || {
                    self.count_write();
                    request.clone().send()
                })
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(backend = "route53", health_check = %id, threshold = target, "applied: {change}");
                    return Ok(());
                }
                Err(e)
                    if e.code() == Some("HealthCheckVersionMismatch")
                        && round < VERSION_MISMATCH_ROUNDS =>
                {
                    metrics::counter!(RETRIES_METRIC, "operation" => "UpdateHealthCheck")
                        .increment(1);
                    tracing::warn!(region, health_check = %id, "health check changed under us; re-reading");
                    round += 1;
                }
                Err(e) => {
                    return Err(BackendError::Apply {
                        change,
                        message: format!("UpdateHealthCheck {id}: {}", describe(&e)),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_state_reads_thresholds() {
        let check = |threshold, children: usize| CheckSnapshot {
            version: 1,
            threshold,
            children: vec!["c".into(); children],
            inverted: None,
            disabled: None,
        };
        assert_eq!(forced_state(&check(Some(0), 2)), Some(true));
        assert_eq!(forced_state(&check(Some(3), 2)), Some(false));
        assert_eq!(forced_state(&check(Some(2), 2)), None);
        assert_eq!(forced_state(&check(None, 2)), None);
        let mut disabled = check(Some(3), 2);
        disabled.disabled = Some(true);
        assert_eq!(forced_state(&disabled), Some(true));
    }
}
