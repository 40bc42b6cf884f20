//! Reconciler backends: where the desired state goes. The reconciler reads the observed state,
//! [`plan`]s the difference and applies only that, so a pass with nothing to change writes
//! nothing.
//!
//! - [`DryRun`]: the embedded default. Keeps the "applied" state in memory and logs the plan.
//! - `route53` ([`route53`]): weighted records and health (CloudWatch metric for a
//!   CLOUDWATCH_METRIC health check, or a forced CALCULATED health check) through the AWS SDK.
//! - `arc` ([`arc`]): health through ARC routing controls (the cluster's data plane), weights
//!   through the Route 53 backend's weighted records.
//! - [`AnyBackend`]: whichever of them the configuration names, as one type.

mod any;
pub mod arc;
pub mod route53;

pub use any::AnyBackend;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use vantage_runtime::sync::lock;

/// What one Region should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredRegion {
    pub in_service: bool,
    /// Route 53 weight, 0..=255; 0 for Regions out of service.
    pub weight: u8,
}

pub type DesiredState = BTreeMap<String, DesiredRegion>;

/// What one Region looks like now; `None` where the backend cannot tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedRegion {
    pub in_service: Option<bool>,
    pub weight: Option<u8>,
}

pub type ObservedState = BTreeMap<String, ObservedRegion>;

/// One write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Health {
        region: String,
        in_service: bool,
    },
    Weight {
        region: String,
        from: Option<u8>,
        to: u8,
    },
}

impl Change {
    pub fn region(&self) -> &str {
        match self {
            Change::Health { region, .. } | Change::Weight { region, .. } => region,
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Health { region, in_service } => write!(
                f,
                "{region}: health -> {}",
                if *in_service {
                    "in service"
                } else {
                    "OUT of service"
                }
            ),
            Change::Weight { region, from, to } => match from {
                Some(from) => write!(f, "{region}: weight {from} -> {to}"),
                None => write!(f, "{region}: weight ? -> {to}"),
            },
        }
    }
}

/// The writes that make `observed` match `desired`: health first (taking a Region out must not
/// wait for a weight batch), then weights, each in Region order.
pub fn plan(desired: &DesiredState, observed: &ObservedState) -> Vec<Change> {
    let mut health = Vec::new();
    let mut weights = Vec::new();
    for (region, want) in desired {
        let have = observed.get(region).copied().unwrap_or_default();
        if have.in_service != Some(want.in_service) {
            health.push(Change::Health {
                region: region.clone(),
                in_service: want.in_service,
            });
        }
        if have.weight != Some(want.weight) {
            weights.push(Change::Weight {
                region: region.clone(),
                from: have.weight,
                to: want.weight,
            });
        }
    }
    health.extend(weights);
    health
}

/// A backend failure, by what was being done.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("reading the current state: {0}")]
    Observe(String),
    #[error("applying {change}: {message}")]
    Apply { change: String, message: String },
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0} does not exist or is not shaped as configured: {1}")]
    Shape(String, String),
    /// An ARC safety rule refused the change: not retried until the desired state changes.
    #[error("ARC safety rule refused {0}")]
    SafetyRule(String),
}

/// [`BackendError::code`] of a safety-rule refusal; the planes raise an alert on it.
pub const SAFETY_RULE_CODE: &str = "arc_safety_rule";

/// AWS API operations the backends call: names that open an error's text, never its code.
const OPERATIONS: &[&str] = &[
    "ChangeResourceRecordSets",
    "GetChange",
    "GetHealthCheck",
    "GetMetricData",
    "GetMetricStatistics",
    "GetRoutingControlState",
    "ListResourceRecordSets",
    "PutMetricData",
    "UpdateHealthCheck",
    "UpdateRoutingControlStates",
];

impl BackendError {
    /// A short code for places that must not show AWS's message text (`GET /v1/state`): the
    /// AWS error code when the text carries one (`AccessDenied`, `Throttling`, ...), else what
    /// was being done (`observe_failed`, `apply_failed`, `config`, `shape`).
    pub fn code(&self) -> String {
        let (fallback, text) = match self {
            BackendError::Observe(m) => ("observe_failed", m.as_str()),
            BackendError::Apply { message, .. } => ("apply_failed", message.as_str()),
            BackendError::Config(_) => return "config".to_owned(),
            BackendError::Shape(..) => return "shape".to_owned(),
            BackendError::SafetyRule(_) => return SAFETY_RULE_CODE.to_owned(),
        };
        aws_code(text).unwrap_or(fallback).to_owned()
    }
}

/// The AWS error code in a backend error's text, which the Route 53 backend writes as
/// `[Operation ...: ]Code: message`: the first of the leading `: `-separated parts that is a
/// bare identifier and not an operation name.
fn aws_code(text: &str) -> Option<&str> {
    let parts: Vec<&str> = text.splitn(5, ": ").collect();
    // The last part is message text whatever it looks like: a code is always followed by one.
    parts[..parts.len() - 1].iter().copied().find(|p| {
        (1..=64).contains(&p.len())
            && p.starts_with(|c: char| c.is_ascii_uppercase())
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
            && !OPERATIONS.iter().any(|op| p.starts_with(op))
    })
}

/// Where desired state is applied.
pub trait Backend: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// The state as it is now.
    fn observe(&self) -> impl Future<Output = Result<ObservedState, BackendError>> + Send;

    /// Applies `changes` (from [`plan`]); `desired` is the whole target state for context.
    fn apply(
        &self,
        changes: &[Change],
        desired: &DesiredState,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Called every period whatever changed: data-plane health signals that must keep flowing
    /// (a CloudWatch alarm needs one value per period). The default does nothing.
    fn heartbeat(
        &self,
        _desired: &DesiredState,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        async { Ok(()) }
    }
}

/// The embedded default: applies to an in-memory copy and logs the plan.
#[derive(Debug, Default)]
pub struct DryRun {
    state: Mutex<ObservedState>,
    applied: Mutex<Vec<Change>>,
}

impl DryRun {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every change applied so far, in order.
    pub fn applied(&self) -> Vec<Change> {
        lock(&self.applied).clone()
    }
}

impl Backend for DryRun {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    async fn observe(&self) -> Result<ObservedState, BackendError> {
        Ok(lock(&self.state).clone())
    }

    async fn apply(&self, changes: &[Change], _desired: &DesiredState) -> Result<(), BackendError> {
        let mut state = lock(&self.state);
        for c in changes {
            tracing::info!(backend = "dry-run", "plan: {c}");
            let entry = state.entry(c.region().to_owned()).or_default();
            match c {
                Change::Health { in_service, .. } => entry.in_service = Some(*in_service),
                Change::Weight { to, .. } => entry.weight = Some(*to),
            }
        }
        lock(&self.applied).extend(changes.iter().cloned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_carry_no_message_text() {
        let apply = |message: &str| BackendError::Apply {
            change: "weight of eu-west-1".into(),
            message: message.into(),
        };
        let e = BackendError::Observe(
            "ListResourceRecordSets: AccessDenied: User: arn:aws:iam::123456789012:user/x is not authorized".into(),
        );
        assert_eq!(e.code(), "AccessDenied");
        assert_eq!(
            apply("UpdateHealthCheck hc-1: Throttling: Rate exceeded").code(),
            "Throttling"
        );
        assert_eq!(apply("Throttling: Rate exceeded").code(), "Throttling");
        assert_eq!(
            apply("GetChange C1: dispatch failure: io error: connection refused").code(),
            "apply_failed"
        );
        assert_eq!(
            BackendError::Observe("GetHealthCheck task: panicked".into()).code(),
            "observe_failed"
        );
        assert_eq!(BackendError::Config("x".into()).code(), "config");
        assert_eq!(BackendError::Shape("a".into(), "b".into()).code(), "shape");
    }

    fn desired(pairs: &[(&str, bool, u8)]) -> DesiredState {
        pairs
            .iter()
            .map(|(r, s, w)| {
                (
                    r.to_string(),
                    DesiredRegion {
                        in_service: *s,
                        weight: *w,
                    },
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn dry_run_is_idempotent_and_health_goes_first() {
        let backend = DryRun::new();
        let want = desired(&[("eu-west-1", true, 100), ("us-east-1", false, 0)]);
        let first = plan(&want, &backend.observe().await.unwrap());
        assert_eq!(first.len(), 4);
        assert!(
            matches!(first[0], Change::Health { .. }) && matches!(first[1], Change::Health { .. })
        );
        backend.apply(&first, &want).await.unwrap();
        assert!(plan(&want, &backend.observe().await.unwrap()).is_empty());
        let next = desired(&[("eu-west-1", true, 120), ("us-east-1", false, 0)]);
        let second = plan(&next, &backend.observe().await.unwrap());
        assert_eq!(
            second,
            vec![Change::Weight {
                region: "eu-west-1".into(),
                from: Some(100),
                to: 120
            }]
        );
    }
}
