//! What the Route 53 backend drives: the hosted zone, the weighted records' name and type, each
//! Region's set identifier (and CALCULATED health check), how health reaches Route 53, and the
//! retry policy; built from the fleet file's `[route53]` section with its defaults applied, so
//! the rest of the backend works from one normalised value.

use super::retry::RetryPolicy;
use crate::backend::BackendError;
use std::collections::BTreeMap;
use std::time::Duration;
use vantage_protocol::config::Route53Section;

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
}

impl Route53Config {
    /// Validates the fleet file's `[route53]` section; errors name the key and the fix.
    pub fn from_section(s: &Route53Section) -> Result<Self, BackendError> {
        let config_error = |m: String| BackendError::Config(m);
        let health = match s.health.as_ref().map(|h| h.get_ref().as_str()) {
            None | Some("data-plane") => HealthMode::DataPlane {
                namespace: s
                    .metric_namespace
                    .clone()
                    .unwrap_or_else(|| DEFAULT_METRIC_NAMESPACE.to_owned()),
                metric_name: DEFAULT_METRIC_NAME.to_owned(),
            },
            Some("control-plane") => HealthMode::ControlPlane,
            Some(other) => {
                return Err(config_error(format!(
                    "route53.health = {other:?}: expected \"data-plane\" or \"control-plane\""
                )))
            }
        };
        if let HealthMode::DataPlane { namespace, .. } = &health {
            if namespace.trim().is_empty() {
                return Err(config_error(
                    "route53.metric_namespace is empty: set a CloudWatch namespace such as \"Vantage\""
                        .into(),
                ));
            }
        }
        let record_type = match &s.record_type {
            None => "CNAME".to_owned(),
            Some(t) => {
                let upper = t.get_ref().trim().to_ascii_uppercase();
                if !matches!(upper.as_str(), "A" | "AAAA" | "CNAME") {
                    return Err(config_error(format!(
                        "route53.record_type = {:?}: expected \"A\", \"AAAA\" or \"CNAME\"",
                        t.get_ref()
                    )));
                }
                upper
            }
        };
        let mut record_name = s.record_name.get_ref().trim().to_ascii_lowercase();
        if record_name.trim_end_matches('.').is_empty() {
            return Err(config_error(
                "route53.record_name is empty: set the weighted records' name, e.g. \"api-origin.example.com.\""
                    .into(),
            ));
        }
        if !record_name.ends_with('.') {
            record_name.push('.');
        }
        let hosted_zone_id = s
            .hosted_zone_id
            .get_ref()
            .trim()
            .trim_start_matches("/hostedzone/")
            .to_owned();
        if hosted_zone_id.is_empty() {
            return Err(config_error(
                "route53.hosted_zone_id is empty: set the zone's id, e.g. \"Z0123456789ABCDEFGHIJ\""
                    .into(),
            ));
        }
        if s.regions.is_empty() {
            return Err(config_error(
                "route53.regions is empty: add [route53.regions.<region>] with the set_identifier of each Region's record"
                    .into(),
            ));
        }
        let mut regions = BTreeMap::new();
        let mut owners: BTreeMap<String, &str> = BTreeMap::new();
        for (name, r) in &s.regions {
            let set_identifier = r.set_identifier.get_ref().trim().to_owned();
            if set_identifier.is_empty() {
                return Err(config_error(format!(
                    "route53.regions.{name}.set_identifier is empty: set the SetIdentifier of {name}'s weighted record"
                )));
            }
            if let Some(other) = owners.insert(set_identifier.clone(), name) {
                return Err(config_error(format!(
                    "route53.regions.{name}.set_identifier {set_identifier:?} is also {other}'s: each Region needs its own record"
                )));
            }
            let health_check_id = r
                .health_check_id
                .as_ref()
                .map(|h| h.get_ref().trim().to_owned())
                .filter(|h| !h.is_empty());
            if health == HealthMode::ControlPlane && health_check_id.is_none() {
                return Err(config_error(format!(
                    "route53.regions.{name}.health_check_id is missing: control-plane health forces a CALCULATED health check per Region; set its id, or use health = \"data-plane\""
                )));
            }
            regions.insert(
                name.clone(),
                RegionRecord {
                    set_identifier,
                    health_check_id,
                },
            );
        }
        Ok(Route53Config {
            hosted_zone_id,
            record_name,
            record_type,
            regions,
            health,
            insync_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
        })
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
            record_name: located("API-Origin.example.com"),
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
