//! The backend the configuration names, as one type: `vantage aggregator` and `vantage plan`
//! both build it from the loaded [`AggregatorConfig`], so choosing and connecting a backend is
//! written once and the service stays generic over [`Backend`] without a second code path per
//! backend.

use super::arc::ArcBackend;
use super::route53::{sdk_loader, Route53Backend, Route53Config, ServiceRecords};
use super::{Backend, BackendError, Change, DesiredState, DryRun, ObservedState};
use crate::config::{AggregatorConfig, BackendKind};

/// Either backend, dispatching every [`Backend`] call to the one inside.
#[derive(Debug)]
pub enum AnyBackend {
    DryRun(DryRun),
    Route53(Route53Backend),
    Arc(ArcBackend),
}

impl AnyBackend {
    /// The backend `config.backend` names. Route 53 is connected from the fleet file's
    /// `[route53]` section (endpoint and AWS Region included) and its shape verified, so a
    /// missing record or health check stops start-up rather than the first pass.
    pub async fn from_config(config: &AggregatorConfig) -> Result<Self, BackendError> {
        Self::build(config, false).await
    }

    /// [`Self::from_config`] for the long-running aggregator: an unreachable AWS (no
    /// credentials, no network) is logged and retried instead of stopping start-up, so reports
    /// are still ingested and decisions made ([`Route53Backend::connect_tolerant`]).
    pub async fn from_config_tolerant(config: &AggregatorConfig) -> Result<Self, BackendError> {
        Self::build(config, true).await
    }

    async fn build(config: &AggregatorConfig, tolerant: bool) -> Result<Self, BackendError> {
        match config.backend {
            BackendKind::DryRun => Ok(AnyBackend::DryRun(DryRun::new())),
            BackendKind::Route53 => Ok(AnyBackend::Route53(Self::route53(config, tolerant).await?)),
            BackendKind::Arc => {
                let section = config.fleet.arc.as_ref().ok_or_else(|| {
                    BackendError::Config("backend \"arc\" needs an [arc] section".into())
                })?;
                let settings = section
                    .settings()
                    .map_err(|p| BackendError::Config(p.to_string()))?;
                // The weights' records are verified like the route53 backend's; the cluster
                // itself is not called at start: its state is read on the first pass.
                let weights = Self::route53(config, tolerant).await?;
                let sdk = sdk_loader(None, None).load().await;
                Ok(AnyBackend::Arc(ArcBackend::connect(
                    &sdk, &settings, weights,
                )))
            }
        }
    }

    /// The Route 53 backend of `[route53]`: the route53 backend itself, or the ARC backend's
    /// weights. With `[[services]]`, one backend drives every service's records (its
    /// `[services.route53]` over the fleet's `[route53]`), through one set of clients.
    async fn route53(
        config: &AggregatorConfig,
        tolerant: bool,
    ) -> Result<Route53Backend, BackendError> {
        let section = config.fleet.route53.as_ref().ok_or_else(|| {
            BackendError::Config(format!(
                "backend {:?} needs a [route53] section",
                config.backend.as_str()
            ))
        })?;
        // A replica votes under its own id, in its own Region's CloudWatch.
        let vote = |r53: Route53Config| match &config.replica {
            Some(replica) => r53.with_replica(&replica.id, &replica.region),
            None => r53,
        };
        let endpoint = section.endpoint_url.as_ref().map(|e| e.get_ref().clone());
        let region = section.aws_region.clone();
        if config.fleet.has_named_services() {
            let services = ServiceRecords::of_fleet(&config.fleet)?
                .into_iter()
                .map(|s| ServiceRecords {
                    config: vote(s.config),
                    ..s
                })
                .collect();
            return Route53Backend::connect_services(services, endpoint, region, tolerant).await;
        }
        let r53 = vote(Route53Config::from_section(section)?);
        if tolerant {
            Route53Backend::connect_tolerant(r53, endpoint, region).await
        } else {
            Route53Backend::connect(r53, endpoint, region).await
        }
    }
}

impl Backend for AnyBackend {
    fn name(&self) -> &'static str {
        match self {
            AnyBackend::DryRun(b) => b.name(),
            AnyBackend::Route53(b) => b.name(),
            AnyBackend::Arc(b) => b.name(),
        }
    }

    async fn observe(&self) -> Result<ObservedState, BackendError> {
        match self {
            AnyBackend::DryRun(b) => b.observe().await,
            AnyBackend::Route53(b) => b.observe().await,
            AnyBackend::Arc(b) => b.observe().await,
        }
    }

    async fn apply(&self, changes: &[Change], desired: &DesiredState) -> Result<(), BackendError> {
        match self {
            AnyBackend::DryRun(b) => b.apply(changes, desired).await,
            AnyBackend::Route53(b) => b.apply(changes, desired).await,
            AnyBackend::Arc(b) => b.apply(changes, desired).await,
        }
    }

    async fn heartbeat(&self, desired: &DesiredState) -> Result<(), BackendError> {
        match self {
            AnyBackend::DryRun(b) => b.heartbeat(desired).await,
            AnyBackend::Route53(b) => b.heartbeat(desired).await,
            AnyBackend::Arc(b) => b.heartbeat(desired).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_protocol::config::FleetConfig;

    fn config() -> AggregatorConfig {
        // A key file of our own: the variable named first is never set, and no test shares it.
        let key = std::env::temp_dir().join(format!("vantage-any-{}.key", std::process::id()));
        std::fs::write(&key, "k".repeat(32)).unwrap();
        let text = format!(
            r#"
[fleet]
name = "orders-api"
[global]
url = "https://api.example.com/status"
[aggregator]
url = "http://127.0.0.1:1"
[agents.auth]
key_id = "k1"
key_env = "VANTAGE_TEST_ANY_BACKEND_UNSET"
key_file = {key:?}
[[regions]]
name = "eu-west-1"
status_url = "https://eu-west-1.example.com/status"
[[vantages]]
region = "eu-west-1"
"#
        );
        let fleet = FleetConfig::parse(&text, "test fleet").unwrap();
        let config = AggregatorConfig::from_fleet(fleet).unwrap();
        let _ = std::fs::remove_file(&key);
        config
    }

    #[tokio::test]
    async fn the_configured_backend_is_built() {
        let mut c = config();
        let backend = AnyBackend::from_config(&c).await.unwrap();
        assert!(matches!(backend, AnyBackend::DryRun(_)));
        assert_eq!(backend.name(), "dry-run");
        // Only reachable by building the config by hand: the fleet loader refuses it first.
        c.backend = BackendKind::Route53;
        let err = AnyBackend::from_config(&c).await.unwrap_err();
        assert!(matches!(err, BackendError::Config(_)), "{err}");
    }
}
