//! The aggregator's view of the fleet file: policy and weight settings checked and turned into
//! [`Policy`] / [`WeightPolicy`], agent keys loaded, defaults applied. Problems are reported
//! with the key (and the line where the file records one).

use crate::model::{Policy, Quorum, WeightPolicy};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;
use vantage_protocol::auth::{check_key, MIN_KEY_BYTES};
use vantage_protocol::config::{ConfigError, ConfigText, FleetConfig, KeySource, TargetKind};
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
        if self.named {
            format!("{}/{region}", self.name)
        } else {
            region.to_owned()
        }
    }

    /// The unit keys of every Region of the service, in file order.
    pub fn units(&self) -> Vec<String> {
        self.regions.iter().map(|r| self.unit(r)).collect()
    }
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

fn invalid(fleet: &FleetConfig, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigText::new(&fleet.source, &fleet.origin).invalid_key(key, message)
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

/// Loads one agent key; `None` when its variable is unset and it has no file.
fn load_key(id: &str, source: &KeySource) -> Result<Vec<u8>, String> {
    if let Some(var) = &source.env {
        if let Ok(v) = std::env::var(var) {
            return Ok(v.into_bytes());
        }
    }
    if let Some(path) = &source.file {
        let mut k = std::fs::read(path)
            .map_err(|e| format!("key {id}: reading {}: {e}", path.display()))?;
        while k.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            k.pop();
        }
        return Ok(k);
    }
    Err(match &source.env {
        Some(var) => format!("key {id}: environment variable {var} is not set"),
        None => format!("key {id}: give env = \"VARIABLE\" or file = \"path\""),
    })
}

/// Key material or a token: compared and used, never printed (`Debug` shows its length only).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Admin keys: each loaded, long enough, and none equal to an agent key (an agent holding that
/// key could otherwise sign overrides under the admin id).
fn load_admin_keys(
    fleet: &FleetConfig,
    agent_keys: &HashMap<String, Vec<u8>>,
) -> Result<HashMap<String, Secret>, ConfigError> {
    let mut admin = HashMap::new();
    for (id, source) in &fleet.aggregator.admin_keys {
        let key_name = format!("aggregator.admin_keys.{id}");
        let key = load_key(id, source).map_err(|m| invalid(fleet, &key_name, m))?;
        check_key(&key).map_err(|e| invalid(fleet, &key_name, e.to_string()))?;
        if let Some((agent, _)) = agent_keys.iter().find(|(_, k)| **k == key) {
            return Err(invalid(
                fleet,
                &key_name,
                format!(
                    "holds the same key as agent key {agent:?}; give operators a key of their own"
                ),
            ));
        }
        admin.insert(id.clone(), Secret(key));
    }
    Ok(admin)
}

/// The state endpoint's token: the named variable must be set, to at least 16 bytes; a
/// misspelt variable must not leave the state open while the file says it is closed.
fn load_state_token(fleet: &FleetConfig, var: &str) -> Result<Secret, ConfigError> {
    let key = "aggregator.state_token_env";
    match std::env::var(var) {
        Ok(token) if token.len() >= MIN_KEY_BYTES => Ok(Secret(token.into_bytes())),
        Ok(token) => Err(invalid(
            fleet,
            key,
            format!(
                "the token in {var} is {} bytes; use at least {MIN_KEY_BYTES}",
                token.len()
            ),
        )),
        Err(_) => Err(invalid(
            fleet,
            key,
            format!("environment variable {var} is not set; set it to the token, or remove state_token_env"),
        )),
    }
}

/// The policy and weights of one API (the whole file, or one service's view) with their
/// defaults: (policy, its latency quantile, weights, their quantile).
fn decision_settings(fleet: &FleetConfig) -> Result<(Policy, f64, WeightPolicy, f64), ConfigError> {
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
        let targets = fleet
            .targets()
            .into_iter()
            .map(|t| {
                let named = fleet.service(&t.service).is_some_and(|s| s.named);
                let unit = t.region.as_ref().map(|r| {
                    if named {
                        format!("{}/{r}", t.service)
                    } else {
                        r.clone()
                    }
                });
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
        if self.fleet.has_named_services() {
            format!("{service}/{region}")
        } else {
            region.to_owned()
        }
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
