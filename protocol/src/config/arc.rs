//! The `[arc]` section: the Amazon Route 53 Application Recovery Controller (ARC) routing
//! controls the aggregator's `arc` backend turns On and Off, the cluster's regional endpoints it
//! sends them through, and how long it may spend doing so. It is checked when the fleet file
//! loads (every fleet Region mapped to a routing control of the configured control panel, at
//! least one endpoint, the timeouts consistent) so `vantage check-config` names the key and line;
//! [`ArcSection::settings`] is that check and yields the normalised values the backend uses.

use super::units::DurationText;
use super::{Located, Problem};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Default time one cluster endpoint gets before the next is tried.
pub const DEFAULT_TIMEOUT_PER_ENDPOINT: Duration = Duration::from_secs(2);
/// Default time a whole call (every endpoint in turn) may take.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(10);

/// ARC routing controls the `arc` backend drives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArcSection {
    /// The cluster's regional endpoints (DescribeCluster's ClusterEndpoints), five for a real
    /// cluster; tried in a random order on every call.
    #[serde(default)]
    pub cluster_endpoints: Vec<ArcEndpoint>,
    /// The control panel every routing control belongs to (checked by bootstrap).
    pub control_panel_arn: Located<String>,
    /// Time one endpoint gets before the next is tried (default 2s).
    pub timeout_per_endpoint: Option<DurationText>,
    /// Time one call may take across all endpoints (default 10s).
    pub budget: Option<DurationText>,
    /// Endpoint override of the control-config API (bootstrap only; tests).
    pub control_config_endpoint_url: Option<Located<String>>,
    /// Per fleet Region: its routing control.
    #[serde(default)]
    pub regions: BTreeMap<String, ArcRegion>,
}

/// One cluster endpoint: its URL and the AWS Region requests to it are signed for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArcEndpoint {
    pub url: Located<String>,
    pub region: Located<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArcRegion {
    pub routing_control_arn: Located<String>,
}

/// A checked `[arc]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcSettings {
    /// `(url, signing Region)`, in file order (the backend shuffles them per call).
    pub cluster_endpoints: Vec<(String, String)>,
    pub control_panel_arn: String,
    pub timeout_per_endpoint: Duration,
    pub budget: Duration,
    /// Routing control ARN per fleet Region name.
    pub regions: BTreeMap<String, String>,
}

impl ArcSection {
    /// Checks every value; the first problem is returned keyed by its fleet-file key
    /// (`arc.regions.<name>.routing_control_arn`) and located by the value's span. Whether every
    /// fleet Region is mapped is checked by the caller, which knows the Regions.
    pub fn settings(&self) -> Result<ArcSettings, Problem> {
        let panel = self.control_panel_arn.get_ref().trim().to_owned();
        if let Err(m) = check_arn(&panel, false) {
            return Err(Problem::at(
                &self.control_panel_arn,
                "arc.control_panel_arn",
                m,
            ));
        }
        if self.cluster_endpoints.is_empty() {
            return Err(Problem::key(
                "arc.cluster_endpoints",
                "empty; list the cluster's endpoints (aws route53-recovery-control-config \
                 describe-cluster --cluster-arn ARN) as { url = \"https://...\", region = \"...\" }",
            ));
        }
        let mut endpoints = Vec::new();
        for (i, e) in self.cluster_endpoints.iter().enumerate() {
            let url = e.url.get_ref().trim().trim_end_matches('/').to_owned();
            if !(url.starts_with("https://") || is_loopback_http(&url)) || url.len() <= 8 {
                return Err(Problem::at(
                    &e.url,
                    format!("arc.cluster_endpoints[{i}].url"),
                    format!(
                        "{url:?} is not an https:// URL (plain http only on loopback, for tests)"
                    ),
                ));
            }
            let region = e.region.get_ref().trim().to_owned();
            if region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(Problem::at(
                    &e.region,
                    format!("arc.cluster_endpoints[{i}].region"),
                    "set the AWS Region of the endpoint, e.g. \"us-west-2\"",
                ));
            }
            if endpoints.iter().any(|(u, _)| *u == url) {
                return Err(Problem::at(
                    &e.url,
                    format!("arc.cluster_endpoints[{i}].url"),
                    "listed twice; each endpoint once",
                ));
            }
            endpoints.push((url, region));
        }
        let timeout_per_endpoint = self
            .timeout_per_endpoint
            .map_or(DEFAULT_TIMEOUT_PER_ENDPOINT, |d| d.0);
        let budget = self.budget.map_or(DEFAULT_BUDGET, |d| d.0);
        if timeout_per_endpoint < Duration::from_millis(50) {
            return Err(Problem::key(
                "arc.timeout_per_endpoint",
                "must be at least 50ms (the default is 2s)",
            ));
        }
        if budget < timeout_per_endpoint || budget > Duration::from_secs(120) {
            return Err(Problem::key(
                "arc.budget",
                format!(
                    "must be between timeout_per_endpoint ({timeout_per_endpoint:?}) and 2m \
                     (the default is 10s)"
                ),
            ));
        }
        if self.regions.is_empty() {
            return Err(Problem::key(
                "arc.regions",
                "empty; add [arc.regions.<region>] routing_control_arn = \"...\" for each Region",
            ));
        }
        let mut regions = BTreeMap::new();
        let mut owners: BTreeMap<String, &str> = BTreeMap::new();
        for (name, r) in &self.regions {
            let key = format!("arc.regions.{name}.routing_control_arn");
            let arn = r.routing_control_arn.get_ref().trim().to_owned();
            check_arn(&arn, true).map_err(|m| Problem::at(&r.routing_control_arn, &key, m))?;
            if !arn.starts_with(&format!("{panel}/routingcontrol/")) {
                return Err(Problem::at(
                    &r.routing_control_arn,
                    key,
                    format!("is not in control panel {panel} (arc.control_panel_arn)"),
                ));
            }
            if let Some(other) = owners.insert(arn.clone(), name) {
                return Err(Problem::at(
                    &r.routing_control_arn,
                    key,
                    format!("is also {other}'s; give each Region its own routing control"),
                ));
            }
            regions.insert(name.clone(), arn);
        }
        Ok(ArcSettings {
            cluster_endpoints: endpoints,
            control_panel_arn: panel,
            timeout_per_endpoint,
            budget,
            regions,
        })
    }
}

fn is_loopback_http(url: &str) -> bool {
    ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|p| url.starts_with(p))
}

/// `arn:<partition>:route53-recovery-control::<account>:controlpanel/<id>` and, for a routing
/// control, `.../routingcontrol/<id>`.
fn check_arn(arn: &str, routing_control: bool) -> Result<(), String> {
    let what = if routing_control {
        "a routing control ARN (arn:aws:route53-recovery-control::ACCOUNT:controlpanel/ID/routingcontrol/ID)"
    } else {
        "a control panel ARN (arn:aws:route53-recovery-control::ACCOUNT:controlpanel/ID)"
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let id = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "route53-recovery-control"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && match parts[5].split('/').collect::<Vec<_>>().as_slice() {
            ["controlpanel", p] => !routing_control && id(p),
            ["controlpanel", p, "routingcontrol", r] => routing_control && id(p) && id(r),
            _ => false,
        };
    if ok {
        Ok(())
    } else {
        Err(format!("{arn:?} is not {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(endpoints: usize, timeout: u64, budget: u64) -> ArcSection {
        let located = |s: &str| Located::new(0..0, s.to_owned());
        let panel = "arn:aws:route53-recovery-control::123456789012:controlpanel/p1";
        ArcSection {
            cluster_endpoints: (0..endpoints)
                .map(|i| ArcEndpoint {
                    url: located(&format!("https://host-{i}.example.com/v1/")),
                    region: located("us-west-2"),
                })
                .collect(),
            control_panel_arn: located(panel),
            timeout_per_endpoint: Some(DurationText(Duration::from_millis(timeout))),
            budget: Some(DurationText(Duration::from_millis(budget))),
            control_config_endpoint_url: None,
            regions: [("eu-west-1", "rc1"), ("us-east-1", "rc2")]
                .into_iter()
                .map(|(r, id)| {
                    let arn = located(&format!("{panel}/routingcontrol/{id}"));
                    (
                        r.to_owned(),
                        ArcRegion {
                            routing_control_arn: arn,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn settings_are_checked_and_normalised() {
        let s = section(5, 2000, 10_000).settings().unwrap();
        assert_eq!(s.cluster_endpoints.len(), 5);
        assert_eq!(s.cluster_endpoints[0].0, "https://host-0.example.com/v1");
        assert_eq!(s.budget, Duration::from_secs(10));
        let err = section(0, 2000, 10_000).settings().unwrap_err();
        assert_eq!(err.key, "arc.cluster_endpoints");
        let err = section(5, 2000, 1000).settings().unwrap_err();
        assert_eq!(err.key, "arc.budget");
        let err = section(5, 10, 1000).settings().unwrap_err();
        assert_eq!(err.key, "arc.timeout_per_endpoint");
        let mut twice = section(5, 2000, 10_000);
        let arn = twice.regions["eu-west-1"].routing_control_arn.clone();
        twice
            .regions
            .get_mut("us-east-1")
            .unwrap()
            .routing_control_arn = arn;
        let err = twice.settings().unwrap_err();
        assert!(err.message.contains("also eu-west-1's"), "{err:?}");
        let mut plain = section(1, 2000, 10_000);
        plain.cluster_endpoints[0].url = Located::new(0..0, "http://host.example.com".into());
        let err = plain.settings().unwrap_err();
        assert_eq!(err.key, "arc.cluster_endpoints[0].url");
    }

    #[test]
    fn arns_are_checked_by_shape() {
        let panel = "arn:aws:route53-recovery-control::123456789012:controlpanel/abc123";
        assert!(check_arn(panel, false).is_ok());
        assert!(check_arn(&format!("{panel}/routingcontrol/def456"), true).is_ok());
        assert!(check_arn(&format!("{panel}/routingcontrol/def456"), false).is_err());
        assert!(check_arn(panel, true).is_err());
        assert!(check_arn(
            "arn:aws:route53-recovery-control::12345:controlpanel/a",
            false
        )
        .is_err());
        assert!(check_arn("arn:aws:route53::123456789012:controlpanel/a", false).is_err());
        assert!(check_arn("not an arn", true).is_err());
    }
}
