//! The aggregator's view of the fleet file: policy and weight settings checked and turned into
//! [`Policy`] / [`WeightPolicy`], agent keys loaded, defaults applied. Problems are reported
//! with the key (and the line where the file records one).

//!
//! Layout: this module holds [`AggregatorConfig`] and its checks; `secrets` loads agent keys,
//! admin keys and the state token; `services` turns each service's policy and weights into its
//! [`ServiceConfig`].

mod secrets;
mod services;

pub use secrets::Secret;
pub use services::{ServiceConfig, TargetInfo};

use crate::model::{Policy, WeightPolicy};
use secrets::{load_admin_keys, load_key, load_state_token};
use services::decision_settings;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;
use vantage_protocol::auth::check_key;
use vantage_protocol::config::{qualified, ConfigError, ConfigText, FleetConfig, KeySource};
use vantage_protocol::sparse::Shape;

/// Default evaluation period (or the report interval, if shorter). The default window is three
/// report intervals.
pub const DEFAULT_EVALUATE_EVERY: Duration = Duration::from_secs(5);
/// Default cap on a report body.
pub const DEFAULT_MAX_REPORT_BYTES: u64 = 4 << 20;
/// Default period of the health heartbeat when nothing changes. A CLOUDWATCH_METRIC health
/// check's alarm (standard resolution, 60 s periods) needs a data point every period; six keep
/// one missed publication from leaving a period empty.
pub const DEFAULT_HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// The longest heartbeat period: one data point per 60 s alarm period at least.
pub const MAX_HEARTBEAT_EVERY: Duration = Duration::from_secs(60);
/// Default period of the control plane's re-read of Route 53 when it wrote nothing.
pub const DEFAULT_OBSERVE_EVERY: Duration = Duration::from_secs(300);
/// Default minimum interval between two weight batches.
pub const DEFAULT_WEIGHT_MIN_INTERVAL: Duration = Duration::from_secs(60);

/// How the two planes are paced (see [`crate::planes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneTiming {
    /// Health published at least this often, and at once when it changes.
    pub heartbeat_every: Duration,
    /// Route 53 re-read this often when nothing was written.
    pub observe_every: Duration,
    /// At most one weight batch per this interval.
    pub weight_min_interval: Duration,
}

impl Default for PlaneTiming {
    fn default() -> Self {
        PlaneTiming {
            heartbeat_every: DEFAULT_HEARTBEAT_EVERY,
            observe_every: DEFAULT_OBSERVE_EVERY,
            weight_min_interval: DEFAULT_WEIGHT_MIN_INTERVAL,
        }
    }
}

impl PlaneTiming {
    /// The fleet file's periods with their defaults, unchecked (`from_fleet` checks them).
    pub fn from_fleet(fleet: &FleetConfig) -> Self {
        let a = &fleet.aggregator;
        PlaneTiming {
            heartbeat_every: a.heartbeat_every.map_or(DEFAULT_HEARTBEAT_EVERY, |d| d.0),
            observe_every: a.observe_every.map_or(DEFAULT_OBSERVE_EVERY, |d| d.0),
            weight_min_interval: fleet
                .weights
                .min_interval
                .map_or(DEFAULT_WEIGHT_MIN_INTERVAL, |d| d.0),
        }
    }
}

/// Which reconciler backend to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    DryRun,
    Route53,
    /// ARC routing controls for health, `[route53]` weighted records for weights.
    Arc,
}

impl BackendKind {
    /// As `aggregator.backend` spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            BackendKind::DryRun => "dry-run",
            BackendKind::Route53 => "route53",
            BackendKind::Arc => "arc",
        }
    }
}

/// Everything the aggregator needs, validated.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    pub fleet: FleetConfig,
    /// Configured Regions, in file order.
    pub regions: Vec<String>,
    pub window: Duration,
    pub evaluate_every: Duration,
    pub backend: BackendKind,
    pub state_file: Option<PathBuf>,
    /// Agent keys by key id.
    pub keys: HashMap<String, Vec<u8>>,
    /// The vantages each key id may report for (`[aggregator.keys.<id>] vantages`).
    pub key_vantages: HashMap<String, BTreeSet<String>>,
    /// Every target a report may carry, by id.
    pub targets: HashMap<String, TargetInfo>,
    /// Every service, in file order, with its decision settings (one for a single-API fleet).
    pub services: Vec<ServiceConfig>,
    /// Bounds and precision of every histogram in a report.
    pub histogram_shape: Shape,
    pub max_report_bytes: u64,
    /// Operators' keys by key id: the only keys that authorise `POST /v1/overrides`.
    pub admin_keys: HashMap<String, Secret>,
    /// Bearer token `GET /v1/state` requires, when `aggregator.state_token_env` is set.
    pub state_token: Option<Secret>,
    /// The fleet-wide `[policy]` (a single-API fleet's only one; with `[[services]]` the
    /// defaults each service overlays: decisions use [`ServiceConfig::policy`]).
    pub policy: Policy,
    /// Quantile of total latency compared with `policy.max_latency`.
    pub latency_quantile: f64,
    pub weights: WeightPolicy,
    /// Quantile of total latency the weights follow.
    pub weight_quantile: f64,
    /// Heartbeat, observation and weight pacing.
    pub timing: PlaneTiming,
    /// How often an alert that holds is told again (`aggregator.alert_repeat`).
    pub alert_repeat: Duration,
    /// Which of `aggregator.replicas` this process is (`vantage aggregator --replica ID`);
    /// `None` for the single-aggregator form.
    pub replica: Option<ReplicaIdentity>,
}

/// This process's place among the replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaIdentity {
    pub id: String,
    /// The AWS Region it runs in: its health votes go to this Region's CloudWatch.
    pub region: String,
    /// How many replicas vote (the CALCULATED check's majority is `count / 2 + 1`).
    pub count: usize,
}

/// An error at `key` of `fleet`, on the key's line.
pub(crate) fn invalid(fleet: &FleetConfig, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigText::new(&fleet.source, &fleet.origin).invalid_key(key, message)
}

impl AggregatorConfig {
    /// Checks the aggregator's sections. With no `[aggregator.keys]`, the agents' own key id and
    /// key source (`[agents.auth]`) are accepted; the fleet file allows that for one vantage only.
    pub fn from_fleet(fleet: FleetConfig) -> Result<Self, ConfigError> {
        let a = &fleet.aggregator;
        let backend = match a.backend.as_ref().map(|b| b.get_ref().as_str()) {
            None | Some("dry-run") => BackendKind::DryRun,
            Some("route53") => BackendKind::Route53,
            Some("arc") => BackendKind::Arc,
            Some(other) => {
                return Err(fleet.invalid(
                    a.backend.as_ref().expect("matched Some"),
                    "aggregator.backend",
                    format!("{other:?}: use \"dry-run\", \"route53\" or \"arc\""),
                ))
            }
        };
        // ARC moves health; the weights stay in Route 53's weighted records, whose health
        // checks are the routing controls' RECOVERY_CONTROL checks.
        if backend == BackendKind::Arc && (fleet.arc.is_none() || fleet.route53.is_none()) {
            return Err(invalid(
                &fleet,
                "aggregator.backend",
                "backend \"arc\" needs an [arc] section (the routing controls) and a [route53] \
                 section (the weighted records the weights plane writes)",
            ));
        }
        if backend == BackendKind::Route53
            && fleet.route53.is_none()
            && !fleet.services().iter().any(|s| s.fleet.route53.is_some())
        {
            return Err(invalid(
                &fleet,
                "aggregator.backend",
                "backend \"route53\" needs a [route53] section",
            ));
        }
        for (i, service) in fleet.services().iter().enumerate() {
            let view = &service.fleet;
            let Some(r53) = &view.route53 else {
                if backend != BackendKind::DryRun && service.named {
                    return Err(invalid(
                        &fleet,
                        &format!("services[{i}].route53"),
                        format!(
                            "service {:?} has no [services.route53]: backend {:?} needs its \
                             records",
                            service.name,
                            backend.as_str()
                        ),
                    ));
                }
                continue;
            };
            let prefix = if service.named {
                format!("services[{i}].")
            } else {
                String::new()
            };
            for r in &view.regions {
                if !r53.regions.contains_key(r.name.get_ref()) {
                    return Err(fleet.invalid(
                        &r.name,
                        &format!("{prefix}route53.regions"),
                        format!(
                            "Region {0:?} has no [{prefix}route53.regions.{0}] entry: give its record's set_identifier",
                            r.name.get_ref()
                        ),
                    ));
                }
            }
        }
        // Defaults follow the report interval: three intervals of evidence, evaluated at least
        // once per interval, so a fleet reporting every second decides within seconds.
        let window = a.window.map_or(fleet.report_interval() * 3, |d| d.0);
        let evaluate_every = a
            .evaluate_every
            .map_or(DEFAULT_EVALUATE_EVERY.min(fleet.report_interval()), |d| d.0);
        if window < fleet.report_interval() {
            return Err(invalid(
                &fleet,
                "aggregator.window",
                "must be at least one report_interval",
            ));
        }
        if evaluate_every.is_zero() || evaluate_every > window {
            return Err(invalid(
                &fleet,
                "aggregator.evaluate_every",
                "must be positive and at most the window",
            ));
        }
        let timing = PlaneTiming::from_fleet(&fleet);
        if timing.heartbeat_every.is_zero() || timing.heartbeat_every > MAX_HEARTBEAT_EVERY {
            return Err(invalid(
                &fleet,
                "aggregator.heartbeat_every",
                "must be positive and at most 60s: a CLOUDWATCH_METRIC health check's alarm needs a data point every 60 s period",
            ));
        }
        if timing.observe_every < evaluate_every {
            return Err(invalid(
                &fleet,
                "aggregator.observe_every",
                "must be at least evaluate_every",
            ));
        }
        let mut keys = HashMap::new();
        if a.keys.is_empty() {
            let auth = &fleet.agents.auth;
            let source = KeySource {
                env: Some(
                    auth.key_env
                        .clone()
                        .unwrap_or_else(|| "VANTAGE_AGENT_KEY".into()),
                ),
                file: auth.key_file.clone(),
                ..KeySource::default()
            };
            let id = auth.key_id.get_ref().clone();
            let key = load_key(&id, &source).map_err(|m| invalid(&fleet, "agents.auth", m))?;
            keys.insert(id, key);
        } else {
            for (id, source) in &a.keys {
                let key = load_key(id, source)
                    .map_err(|m| invalid(&fleet, &format!("aggregator.keys.{id}"), m))?;
                keys.insert(id.clone(), key);
            }
        }
        for (id, key) in &keys {
            check_key(key)
                .map_err(|e| invalid(&fleet, &format!("aggregator.keys.{id}"), e.to_string()))?;
        }
        let admin_keys = load_admin_keys(&fleet, &keys)?;
        let state_token = match &a.state_token_env {
            None => None,
            Some(var) => Some(load_state_token(&fleet, var.get_ref())?),
        };

        for warning in fleet.warnings() {
            tracing::warn!("{warning}");
        }
        let key_vantages = fleet.key_vantages().into_iter().collect();
        // Every vantage's control target has the one id `control`; each agent reports its own.
        let targets = fleet
            .targets()
            .into_iter()
            .chain(
                fleet
                    .vantages
                    .iter()
                    .find_map(|v| fleet.control_target(v.region.get_ref())),
            )
            .map(|t| {
                let named = fleet.service(&t.service).is_some_and(|s| s.named);
                let unit = t.region.as_ref().map(|r| qualified(named, &t.service, r));
                let info = TargetInfo {
                    kind: t.kind,
                    region: t.region,
                    unit,
                };
                (t.id, info)
            })
            .collect();

        let (mut policy, latency_quantile, weights, weight_quantile) = decision_settings(&fleet)?;
        // Regions that turn down within one window count as one correlated failure.
        policy.correlated_window = window;
        let mut services = Vec::new();
        for (i, service) in fleet.services().iter().enumerate() {
            let (policy, latency_quantile, weights, weight_quantile) = if service.named {
                decision_settings(&service.fleet)
                    .map_err(|e| e.with_key_prefix(&format!("services[{i}].")))?
            } else {
                (
                    policy.clone(),
                    latency_quantile,
                    weights.clone(),
                    weight_quantile,
                )
            };
            services.push(ServiceConfig {
                name: service.name.clone(),
                named: service.named,
                regions: service.region_names(),
                policy: Policy {
                    correlated_window: window,
                    ..policy
                },
                latency_quantile,
                weights,
                weight_quantile,
            });
        }
        Ok(AggregatorConfig {
            regions: match fleet.services() {
                [one] if !one.named => one.region_names(),
                _ => fleet.all_regions(),
            },
            window,
            evaluate_every,
            backend,
            state_file: a.state_file.clone(),
            keys,
            key_vantages,
            targets,
            histogram_shape: Shape::latency(fleet.histogram_precision()),
            max_report_bytes: a.max_report_bytes.map_or(DEFAULT_MAX_REPORT_BYTES, |b| b.0),
            admin_keys,
            state_token,
            latency_quantile,
            weight_quantile,
            services,
            timing,
            alert_repeat: a
                .alert_repeat
                .map_or(crate::alerts::DEFAULT_ALERT_REPEAT, |d| d.0),
            policy,
            weights,
            replica: None,
            fleet,
        })
    }

    /// The unit key of `service` in `region` (bare Region for a single-API fleet).
    pub fn unit(&self, service: &str, region: &str) -> String {
        qualified(self.fleet.has_named_services(), service, region)
    }

    /// Every unit key (service in Region), service by service.
    pub fn units(&self) -> Vec<String> {
        self.services
            .iter()
            .flat_map(ServiceConfig::units)
            .collect()
    }

    /// Names the replica this process is. With `aggregator.replicas` in the fleet file an id
    /// from that list is required; without, none may be given.
    pub fn for_replica(mut self, id: Option<&str>) -> Result<Self, ConfigError> {
        let replicas = &self.fleet.aggregator.replicas;
        let ids = || {
            replicas
                .iter()
                .map(|r| r.id.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.replica = match (id, replicas.is_empty()) {
            (None, true) => None,
            (Some(id), true) => {
                return Err(invalid(
                    &self.fleet,
                    "aggregator.replicas",
                    format!(
                        "replica {id:?} was asked for, but the fleet file lists no replicas \
                         (it names one aggregator with aggregator.url); drop --replica"
                    ),
                ))
            }
            (None, false) => {
                return Err(invalid(
                    &self.fleet,
                    "aggregator.replicas",
                    format!("say which replica this is: --replica ID, one of {}", ids()),
                ))
            }
            (Some(id), false) => {
                let Some(r) = self.fleet.aggregator.replica(id) else {
                    return Err(invalid(
                        &self.fleet,
                        "aggregator.replicas",
                        format!("no replica {id:?}; the fleet file lists {}", ids()),
                    ));
                };
                Some(ReplicaIdentity {
                    id: id.to_owned(),
                    region: r.region.get_ref().clone(),
                    count: replicas.len(),
                })
            }
        };
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLICAS: &str = r#"replicas = [
  { id = "use1", region = "us-east-1", url = "https://agg-use1.example.com" },
  { id = "euw1", region = "eu-west-1", url = "https://agg-euw1.example.com" },
  { id = "apse1", region = "ap-southeast-1", url = "https://agg-apse1.example.com" },
]
"#;

    /// A one-Region fleet whose `[aggregator]` table is `aggregator`.
    fn fleet(aggregator: &str) -> String {
        format!(
            r#"
[fleet]
name = "orders-api"
[global]
url = "https://api.example.com/status"
[[regions]]
name = "eu-west-1"
status_url = "https://euw1.example.com/status"
[[vantages]]
region = "eu-west-1"
[aggregator]
{aggregator}
[agents.auth]
key_id = "k1"
key_env = "VANTAGE_CONFIG_UNIT_TEST_KEY"
"#
        )
    }

    fn config(text: &str) -> AggregatorConfig {
        std::env::set_var(
            "VANTAGE_CONFIG_UNIT_TEST_KEY",
            "config-unit-test-key-0123456789",
        );
        AggregatorConfig::from_fleet(FleetConfig::parse(text, "fleet.toml").unwrap()).unwrap()
    }

    #[test]
    fn a_replica_is_named_from_the_fleet_files_list() {
        let c = config(&fleet(REPLICAS)).for_replica(Some("euw1")).unwrap();
        assert_eq!(
            c.replica,
            Some(ReplicaIdentity {
                id: "euw1".into(),
                region: "eu-west-1".into(),
                count: 3
            })
        );
        let e = config(&fleet(REPLICAS))
            .for_replica(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--replica ID, one of use1, euw1, apse1"), "{e}");
        let e = config(&fleet(REPLICAS))
            .for_replica(Some("usw2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no replica \"usw2\""), "{e}");
        let c = config(&fleet("url = \"https://agg.example.com\""));
        assert_eq!(c.clone().for_replica(None).unwrap().replica, None);
        let e = c.for_replica(Some("use1")).unwrap_err().to_string();
        assert!(e.contains("lists no replicas"), "{e}");
    }
}
