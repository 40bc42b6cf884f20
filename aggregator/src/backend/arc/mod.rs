//! The ARC backend: Region health through Amazon Route 53 Application Recovery Controller
//! routing controls, weights through the Route 53 backend. Taking a Region out turns its
//! routing control Off, bringing it in turns it On, all of a pass's health changes in one
//! UpdateRoutingControlStates batch; the weighted records (whose health checks are the routing
//! controls' RECOVERY_CONTROL checks) keep their weights, written by [`Route53Backend`]'s own
//! weights path. Every ARC call goes through [`endpoints`] (the cluster's regional endpoints in a
//! random order, each briefly, within a budget); the control-config API is only for
//! `bootstrap`'s checks ([`verify`]), never here.
//!
//! A ConflictException is an ARC safety rule (such as "at least one On") refusing the batch:
//! ARC's safety net agreeing with `min_healthy`. It becomes [`BackendError::SafetyRule`], which
//! the planes log with an alert; the same batch is then not sent again until the desired state
//! changes, so a refused change is never retried in a loop.

pub mod endpoints;
pub mod verify;

pub use endpoints::{ArcCallError, Endpoint, Endpoints, ATTEMPTS_METRIC};

use super::route53::Route53Backend;
use super::{Backend, BackendError, Change, DesiredState, ObservedRegion, ObservedState};
use aws_sdk_route53recoverycluster as cluster;
use cluster::types::{RoutingControlState, UpdateRoutingControlStateEntry};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use vantage_protocol::config::ArcSettings;
use vantage_runtime::sync::lock;

/// Counter of batches a safety rule refused.
pub const SAFETY_RULE_METRIC: &str = "vantage_arc_safety_rule_refusals_total";

/// The ARC + Route 53 weights backend. Cheap to clone.
#[derive(Clone)]
pub struct ArcBackend {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Endpoints,
    /// Routing control ARN per Region.
    controls: BTreeMap<String, String>,
    weights: Route53Backend,
    /// The last batch a safety rule refused, `(arn, on)` in Region order: not sent again.
    refused: Mutex<Option<Vec<(String, bool)>>>,
}

impl std::fmt::Debug for ArcBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArcBackend")
            .field("controls", &self.inner.controls)
            .field("endpoints", &self.inner.endpoints.len())
            .finish_non_exhaustive()
    }
}

impl ArcBackend {
    /// The routing controls of `settings` through clients built from `sdk` (credentials and
    /// HTTP client), and `weights` for the weighted records.
    pub fn connect(
        sdk: &aws_config::SdkConfig,
        settings: &ArcSettings,
        weights: Route53Backend,
    ) -> Self {
        let endpoints = Endpoints::connect(
            sdk,
            &settings.cluster_endpoints,
            settings.timeout_per_endpoint,
            settings.budget,
        );
        Self::new(endpoints, settings.regions.clone(), weights)
    }

    /// From ready endpoints (tests: mocked clients, or the loopback stand-in).
    pub fn new(
        endpoints: Endpoints,
        controls: BTreeMap<String, String>,
        weights: Route53Backend,
    ) -> Self {
        ArcBackend {
            inner: Arc::new(Inner {
                endpoints,
                controls,
                weights,
                refused: Mutex::new(None),
            }),
        }
    }

    /// Each Region's routing control: `Some(true)` On, `Some(false)` Off, through the cluster.
    pub async fn control_states(&self) -> Result<BTreeMap<String, bool>, ArcCallError> {
        let mut states = BTreeMap::new();
        for (region, arn) in &self.inner.controls {
            let output = self
                .inner
                .endpoints
                .call("GetRoutingControlState", |client| {
                    let arn = arn.clone();
                    async move {
                        client
                            .get_routing_control_state()
                            .routing_control_arn(arn)
                            .send()
                            .await
                    }
                })
                .await?;
            let on = matches!(output.routing_control_state(), RoutingControlState::On);
            states.insert(region.clone(), on);
        }
        Ok(states)
    }

    /// Sets the routing controls of `health` (`(Region, in service)`) in one batch.
    async fn set_controls(&self, health: &[(&str, bool)]) -> Result<(), BackendError> {
        let label = || {
            health
                .iter()
                .map(|(r, on)| format!("{r}: {}", if *on { "On" } else { "Off" }))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut batch = Vec::new();
        for (region, on) in health {
            let arn = self.inner.controls.get(*region).ok_or_else(|| {
                BackendError::Config(format!(
                    "Region {region} has no [arc.regions.{region}] routing control"
                ))
            })?;
            batch.push((arn.clone(), *on));
        }
        if lock(&self.inner.refused).as_ref() == Some(&batch) {
            return Err(BackendError::SafetyRule(format!(
                "routing controls {}: refused earlier by an ARC safety rule; not sent again until \
                 the desired state changes",
                label()
            )));
        }
        let entries = batch
            .iter()
            .map(|(arn, on)| {
                UpdateRoutingControlStateEntry::builder()
                    .routing_control_arn(arn)
                    .routing_control_state(if *on {
                        RoutingControlState::On
                    } else {
                        RoutingControlState::Off
                    })
                    .build()
                    .map_err(|e| BackendError::Config(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sent = self
            .inner
            .endpoints
            .call("UpdateRoutingControlStates", |client| {
                let entries = entries.clone();
                async move {
                    client
                        .update_routing_control_states()
                        .set_update_routing_control_state_entries(Some(entries))
                        .send()
                        .await
                }
            })
            .await;
        match sent {
            Ok(_) => {
                *lock(&self.inner.refused) = None;
                Ok(())
            }
            Err(e @ ArcCallError::SafetyRule { .. }) => {
                metrics::counter!(SAFETY_RULE_METRIC).increment(1);
                *lock(&self.inner.refused) = Some(batch);
                Err(BackendError::SafetyRule(format!(
                    "routing controls {}: {e}",
                    label()
                )))
            }
            Err(e) => Err(BackendError::Apply {
                change: format!("routing controls {}", label()),
                message: e.to_string(),
            }),
        }
    }
}

impl Backend for ArcBackend {
    fn name(&self) -> &'static str {
        "arc"
    }

    /// Routing control states (cluster data plane) and weights (Route 53) side by side.
    async fn observe(&self) -> Result<ObservedState, BackendError> {
        let (controls, weights) =
            tokio::join!(self.control_states(), self.inner.weights.observe_weights());
        let controls = controls.map_err(|e| BackendError::Observe(e.to_string()))?;
        let weights = weights?;
        Ok(self
            .inner
            .controls
            .keys()
            .map(|region| {
                let observed = ObservedRegion {
                    in_service: controls.get(region).copied(),
                    weight: weights.get(region).and_then(|w| w.weight),
                };
                (region.clone(), observed)
            })
            .collect())
    }

    /// Health as one routing-control batch, weights through the Route 53 backend; both are
    /// attempted, the first error returned.
    async fn apply(&self, changes: &[Change], desired: &DesiredState) -> Result<(), BackendError> {
        let health: Vec<(&str, bool)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Health { region, in_service } => Some((region.as_str(), *in_service)),
                Change::Weight { .. } => None,
            })
            .collect();
        let weights: Vec<Change> = changes
            .iter()
            .filter(|c| matches!(c, Change::Weight { .. }))
            .cloned()
            .collect();
        let health_result = if health.is_empty() {
            Ok(())
        } else {
            self.set_controls(&health).await
        };
        let weights_result = if weights.is_empty() {
            Ok(())
        } else {
            self.inner.weights.apply(&weights, desired).await
        };
        match (health_result, weights_result) {
            (Err(e), Err(other)) => {
                tracing::error!(backend = "arc", "{other}");
                Err(e)
            }
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
