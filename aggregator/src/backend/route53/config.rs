//! What the Route 53 backend drives: the hosted zone, the weighted records' name and type, each
//! Region's set identifier (and CALCULATED health check), how health reaches Route 53, and the
//! retry policy; built from the fleet file's `[route53]` section with its defaults applied, so
//! the rest of the backend works from one normalised value.

use super::retry::RetryPolicy;
use crate::backend::BackendError;
use std::collections::BTreeMap;
use std::time::Duration;
use vantage_protocol::config::{Route53Health, Route53Section};

/// Default CloudWatch namespace and metric name of the per-Region health metric.
pub const DEFAULT_METRIC_NAMESPACE: &str = "Vantage";
pub const DEFAULT_METRIC_NAME: &str = "RegionHealthy";

/// How a Region's health reaches Route 53.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthMode {
    /// Publish `metric_name` (dimension `Region`) in `namespace`; a CLOUDWATCH_METRIC health
    /// check on an alarm over it guards the Region's record. Survives a control-plane outage.
    DataPlane {
        namespace: String,
        metric_name: String,
    },
    /// Force each Region's CALCULATED health check through UpdateHealthCheck. Faster, but uses
    /// the Route 53 control plane (us-east-1).
    ControlPlane,
}

/// One Region's objects in Route 53.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionRecord {
    /// SetIdentifier of the Region's weighted record.
    pub set_identifier: String,
    /// The CALCULATED health check forced in control-plane mode (required there).
    pub health_check_id: Option<String>,
}

/// What the backend drives, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route53Config {
    /// Bare zone id (a `/hostedzone/` prefix is removed).
    pub hosted_zone_id: String,
    /// FQDN of the weighted records, lower case, with the trailing dot.
    pub record_name: String,
    /// `A`, `AAAA` or `CNAME`.
    pub record_type: String,
    /// Per vantage Region name.
    pub regions: BTreeMap<String, RegionRecord>,
    pub health: HealthMode,
    /// How long to wait for a record change to reach INSYNC before reporting it.
    pub insync_timeout: Duration,
    pub retry: RetryPolicy,
    /// Set when this process is one of `aggregator.replicas`: its health metric carries a
    /// `Replica` dimension and goes to its own AWS Region's CloudWatch.
    pub replica: Option<ReplicaVote>,
}

/// One replica's vote: who publishes it and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaVote {
    /// The replica id, the `Replica` dimension's value.
    pub id: String,
    /// The AWS Region whose CloudWatch receives the metric (the replica's own).
    pub aws_region: String,
}

impl Route53Config {
    /// The fleet file's `[route53]` section as the backend drives it. The section's values are
    /// checked (with file and line) when the fleet file loads, by the same
    /// [`Route53Section::settings`] used here; this only fails for a section built by hand.
    pub fn from_section(s: &Route53Section) -> Result<Self, BackendError> {
        let s = s
            .settings()
            .map_err(|p| BackendError::Config(p.to_string()))?;
        let health = match s.health {
            Route53Health::DataPlane => HealthMode::DataPlane {
                namespace: s
                    .metric_namespace
                    .unwrap_or_else(|| DEFAULT_METRIC_NAMESPACE.to_owned()),
                metric_name: DEFAULT_METRIC_NAME.to_owned(),
            },
            Route53Health::ControlPlane => HealthMode::ControlPlane,
        };
        let regions = s
            .regions
            .into_iter()
            .map(|(name, r)| {
                let record = RegionRecord {
                    set_identifier: r.set_identifier,
                    health_check_id: r.health_check_id,
                };
                (name, record)
            })
            .collect();
        Ok(Route53Config {
            hosted_zone_id: s.hosted_zone_id,
            record_name: s.record_name,
            record_type: s.record_type.as_str().to_owned(),
            regions,
            health,
            insync_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            replica: None,
        })
    }

    /// The same objects, published as replica `id` running in `aws_region`.
    pub fn with_replica(mut self, id: &str, aws_region: &str) -> Self {
        self.replica = Some(ReplicaVote {
            id: id.to_owned(),
            aws_region: aws_region.to_owned(),
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_protocol::config::{Located, Route53Region};

    fn located(s: &str) -> Located<String> {
        Located::new(0..0, s.to_owned())
    }

    fn section(health: Option<&str>, with_checks: bool) -> Route53Section {
        let regions = ["eu-west-1", "us-east-1"]
            .iter()
            .map(|r| {
                (
                    r.to_string(),
                    Route53Region {
                        set_identifier: located(r),
                        health_check_id: with_checks.then(|| located(&format!("hc-{r}"))),
                    },
                )
            })
            .collect();
        Route53Section {
            hosted_zone_id: located("/hostedzone/Z123"),
            record_name: Some(located("API-Origin.example.com")),
            record_type: None,
            health: health.map(located),
            metric_namespace: None,
            endpoint_url: None,
            aws_region: None,
            regions,
        }
    }

    #[test]
    fn section_defaults_and_normalisation() {
        let c = Route53Config::from_section(&section(None, false)).unwrap();
        assert_eq!(c.hosted_zone_id, "Z123");
        assert_eq!(c.record_name, "api-origin.example.com.");
        assert_eq!(c.record_type, "CNAME");
        assert_eq!(
            c.health,
            HealthMode::DataPlane {
                namespace: "Vantage".into(),
                metric_name: "RegionHealthy".into()
            }
        );
        assert_eq!(c.regions["eu-west-1"].set_identifier, "eu-west-1");
    }

    #[test]
    fn section_validation_names_the_key() {
        let err = Route53Config::from_section(&section(Some("control-plane"), false)).unwrap_err();
        assert!(
            err.to_string()
                .contains("route53.regions.eu-west-1.health_check_id"),
            "{err}"
        );
        assert!(Route53Config::from_section(&section(Some("control-plane"), true)).is_ok());
        let err = Route53Config::from_section(&section(Some("both"), true)).unwrap_err();
        assert!(err.to_string().contains("route53.health"), "{err}");
        let mut s = section(None, false);
        s.record_type = Some(located("MX"));
        let err = Route53Config::from_section(&s).unwrap_err();
        assert!(err.to_string().contains("route53.record_type"), "{err}");
        let mut s = section(None, false);
        s.regions.get_mut("us-east-1").unwrap().set_identifier = located("eu-west-1");
        let err = Route53Config::from_section(&s).unwrap_err();
        assert!(err.to_string().contains("also eu-west-1's"), "{err}");
    }
}
