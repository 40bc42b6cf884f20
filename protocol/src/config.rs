//! The fleet configuration: one TOML file that describes the whole fleet — the Regions and
//! their status URLs, the global endpoint, the vantage points, probe settings, where agents
//! report and how they authenticate — shared by agents and the aggregator.
//!
//! Parsing is strict (`deny_unknown_fields`): a misspelt key is an error that names the key and
//! its line, never a silently ignored setting. Values that can be checked without I/O (URLs,
//! durations, names, references between sections) are checked here; probe assertions are
//! checked where they are compiled, in the agent, with the same [`ConfigError`] and line
//! numbers from the spans kept in [`Located`] fields.

use crate::duration::parse_duration;
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use toml::Spanned as Located;

/// A configuration problem, with where it is and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a value of the wrong type (the message holds the line).
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}:{line}: {key}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{name}: {message}")]
    Environment { name: String, message: String },
}

/// A duration written as text (`"10s"`, `"250ms"`) or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => parse_duration(&t)
                .map(DurationText)
                .map_err(serde::de::Error::custom),
            Raw::Seconds(s) if s.is_finite() && s >= 0.0 => {
                Ok(DurationText(Duration::from_secs_f64(s)))
            }
            Raw::Seconds(s) => Err(serde::de::Error::custom(format!(
                "bad duration {s}: must be a non-negative number of seconds"
            ))),
        }
    }
}

/// A byte size written as a number or with a unit (`"64MiB"`, `"512KiB"`, `"1GB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("bad size {text:?}: use e.g. 65536, 512KiB, 64MiB, 1GiB"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => {
                return Err(format!(
                    "bad size {text:?}: units are B, KiB, MiB, GiB, KB, MB, GB"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Bytes(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
            Raw::Bytes(b) => Ok(ByteSize(b)),
        }
    }
}

/// Probe settings. Every field is optional: a target's settings are the fleet's `[probe]`
/// defaults, overlaid by its Region's `probe`, overlaid by the target's own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    /// Time between probe starts (default 10 s).
    pub interval: Option<DurationText>,
    /// Overall deadline of one probe (default 10 s, at most 60 s).
    pub timeout: Option<DurationText>,
    pub dns_timeout: Option<DurationText>,
    pub connect_timeout: Option<DurationText>,
    pub tls_timeout: Option<DurationText>,
    pub first_byte_timeout: Option<DurationText>,
    pub method: Option<Located<String>>,
    pub headers: Option<BTreeMap<String, Located<String>>>,
    pub body: Option<String>,
    /// Accepted status codes, e.g. `"200-299"`, `"200,204"`, `"2xx,3xx"`.
    pub expect_status: Option<Located<String>>,
    pub expect_body: Option<String>,
    pub expect_body_regex: Option<Located<String>>,
    /// JSON pointer assertions, e.g. `["/status=pass"]`.
    pub expect_json: Option<Vec<Located<String>>>,
    /// Required response headers: name to exact value, or `""` for present with any value.
    pub expect_headers: Option<BTreeMap<String, Located<String>>>,
    pub max_body_bytes: Option<ByteSize>,
    /// `auto`, `1.1` or `2`.
    pub http_version: Option<Located<String>>,
    /// `any`, `4`, `6`, `prefer-4` or `prefer-6`.
    pub ip: Option<Located<String>>,
    pub insecure: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub max_redirects: Option<u8>,
    pub reuse_connection: Option<bool>,
    /// Response header naming the Region that answered (default `x-vantage-region`).
    pub region_header: Option<Located<String>>,
    /// `host:port:addr` overrides, as `--resolve`.
    pub resolve: Option<Vec<Located<String>>>,
}

macro_rules! overlay_fields {
    ($base:expr, $over:expr, $($f:ident),* $(,)?) => {
        ProbeSettings { $($f: $over.$f.clone().or_else(|| $base.$f.clone()),)* }
    };
}

impl ProbeSettings {
    /// `over`'s settings where it has them, `self`'s otherwise.
    pub fn overlay(&self, over: &ProbeSettings) -> ProbeSettings {
        overlay_fields!(
            self,
            over,
            interval,
            timeout,
            dns_timeout,
            connect_timeout,
            tls_timeout,
            first_byte_timeout,
            method,
            headers,
            body,
            expect_status,
            expect_body,
            expect_body_regex,
            expect_json,
            expect_headers,
            max_body_bytes,
            http_version,
            ip,
            insecure,
            ca_file,
            max_redirects,
            reuse_connection,
            region_header,
            resolve,
        )
    }
}

/// Default probe interval.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// Default report interval.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// Name of the API being watched; labels metrics and reports.
    pub name: Located<String>,
    /// How often agents send an interval report (default 10 s).
    pub report_interval: Option<DurationText>,
    /// HDR histogram precision, significant digits 1..=5 (default 3).
    pub histogram_precision: Option<Located<u8>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalEndpoint {
    /// The one global name clients use (CloudFront + Route 53).
    pub url: Located<String>,
    #[serde(default)]
    pub probe: ProbeSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// AWS Region code, e.g. `us-east-1`.
    pub name: Located<String>,
    /// The Region's shallow `/status` URL (API Gateway regional endpoint).
    pub status_url: Located<String>,
    /// The Region's `/status/deep` URL, probed as a separate target when set.
    pub deep_url: Option<Located<String>>,
    #[serde(default)]
    pub probe: ProbeSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vantage {
    /// The AWS Region the agent runs in.
    pub region: Located<String>,
    /// Agent identity in reports (default `vantage-<region>`).
    pub agent_id: Option<Located<String>>,
}

impl Vantage {
    pub fn agent_id(&self) -> String {
        self.agent_id
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_else(|| format!("vantage-{}", self.region.get_ref()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorSection {
    /// Base URL; agents POST to `<url>/v1/reports`.
    pub url: Located<String>,
    /// Sliding window the decisions look at (default 30 s).
    pub window: Option<DurationText>,
    /// How often decisions are made and Route 53 reconciled (default 5 s).
    pub evaluate_every: Option<DurationText>,
    /// `dry-run` (the default: plan only, state in memory) or `route53`.
    pub backend: Option<Located<String>>,
    /// Where the decision state is persisted so a restart does not forget an outage.
    pub state_file: Option<PathBuf>,
    /// Agent keys the aggregator accepts, by key id.
    #[serde(default)]
    pub keys: BTreeMap<String, KeySource>,
    /// Largest report body accepted (default 4 MiB).
    pub max_report_bytes: Option<ByteSize>,
    /// Key ids (of `keys`) allowed to post overrides; without any, only loopback callers may.
    #[serde(default)]
    pub override_key_ids: Vec<String>,
}

/// Where a secret comes from: an environment variable or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// The health policy: how vantage observations become Region decisions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Attempts a vantage needs in the window to have an opinion (default 2).
    pub min_attempts: Option<u64>,
    /// A vantage sees a Region down when failures / attempts exceeds this (default 0.5).
    pub max_failure_ratio: Option<f64>,
    /// Quantile for the optional latency limit (default 0.99).
    pub latency_quantile: Option<f64>,
    /// A vantage sees a Region down when that quantile of total latency exceeds this.
    pub max_latency: Option<DurationText>,
    /// Vantages that must agree for a Region to be down: "majority" (default) or a number;
    /// never fewer than 2.
    pub quorum: Option<Located<String>>,
    /// Consecutive down evaluations before a Region is taken out (default 2).
    pub fail_after: Option<u32>,
    /// Consecutive up evaluations before it is put back (default 6).
    pub recover_after: Option<u32>,
    /// Flap damping: penalty added per transition (default 1000).
    pub flap_penalty: Option<f64>,
    /// Half-life of the penalty (default 5m).
    pub flap_half_life: Option<DurationText>,
    /// A Region whose penalty is above this is held out (default 1500).
    pub flap_suppress: Option<f64>,
    /// Regions in service never fall below this (ARC's ATLEAST rule; default 1).
    pub min_healthy: Option<usize>,
    /// At most this many automated transitions per `change_window` (default 4).
    pub max_changes: Option<u32>,
    pub change_window: Option<DurationText>,
}

/// How measured latency becomes Route 53 weights.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsSection {
    /// Latency quantile weights follow (default 0.5).
    pub quantile: Option<f64>,
    /// EWMA smoothing factor of that latency, 0 < alpha <= 1 (default 0.3).
    pub ewma_alpha: Option<f64>,
    /// Smallest weight of a Region in service (default 10).
    pub floor: Option<u8>,
    /// Weight changes smaller than this are not applied (default 8).
    pub dead_band: Option<u8>,
}

/// Route 53 (and CloudWatch) objects the `route53` backend drives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53Section {
    pub hosted_zone_id: Located<String>,
    /// The weighted record set, e.g. `api-origin.example.com.`.
    pub record_name: Located<String>,
    /// `A`, `AAAA` or `CNAME` (default `CNAME`).
    pub record_type: Option<Located<String>>,
    /// `data-plane` (default: publish a CloudWatch metric per Region for a CLOUDWATCH_METRIC
    /// health check) or `control-plane` (force a CALCULATED health check per Region).
    pub health: Option<Located<String>>,
    /// CloudWatch namespace of the published health metric (default `Vantage`).
    pub metric_namespace: Option<String>,
    /// Endpoint override for the AWS APIs (moto, LocalStack, VPC endpoints).
    pub endpoint_url: Option<Located<String>>,
    /// Region of the control-plane clients (default us-east-1, where Route 53's lives).
    pub aws_region: Option<String>,
    /// Per Region: its record's set identifier and, for control-plane health, its health check.
    #[serde(default)]
    pub regions: BTreeMap<String, Route53Region>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53Region {
    pub set_identifier: Located<String>,
    pub health_check_id: Option<Located<String>>,
}

/// Where an agent's HMAC key comes from. The key itself never sits in the fleet file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Key id sent with every report, so keys can be rotated.
    pub key_id: Located<String>,
    /// Environment variable holding the key (default `VANTAGE_AGENT_KEY`).
    pub key_env: Option<String>,
    /// File holding the key (trailing newline ignored); used when the variable is unset.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SpoolSection {
    /// Directory for unsent reports (default: `vantage-spool` under the system temp dir).
    pub dir: Option<PathBuf>,
    /// Bytes the spool may hold; the oldest reports beyond it are dropped (default 64 MiB).
    pub max_bytes: Option<ByteSize>,
    /// Age after which an unsent report is dropped (default 6 h).
    pub max_age: Option<DurationText>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsSection {
    pub auth: AuthSection,
    #[serde(default)]
    pub spool: SpoolSection,
    /// Lambda mode: how long one invocation probes before flushing (default 50 s, for a
    /// one-minute EventBridge schedule).
    pub lambda_run_for: Option<DurationText>,
}

/// The whole fleet file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    pub fleet: FleetSection,
    /// Defaults for every target.
    #[serde(default)]
    pub probe: ProbeSettings,
    pub global: GlobalEndpoint,
    pub regions: Vec<Region>,
    pub vantages: Vec<Vantage>,
    pub aggregator: AggregatorSection,
    pub agents: AgentsSection,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub weights: WeightsSection,
    pub route53: Option<Route53Section>,
    /// Where the text came from and the text itself, for error lines.
    #[serde(skip)]
    pub origin: String,
    #[serde(skip)]
    pub source: String,
}

impl FleetConfig {
    pub fn load(path: &Path) -> Result<FleetConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates; `origin` names the text in errors (a path, or an env variable).
    pub fn parse(text: &str, origin: &str) -> Result<FleetConfig, ConfigError> {
        let mut config: FleetConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: render_toml_error(&e, text),
        })?;
        config.origin = origin.to_owned();
        config.source = text.to_owned();
        config.validate()?;
        Ok(config)
    }

    /// 1-based line of a byte offset in the source.
    pub fn line_of(&self, offset: usize) -> usize {
        self.source[..offset.min(self.source.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    /// An error at a located value.
    pub fn invalid<T>(
        &self,
        at: &Located<T>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            line: self.line_of(at.span().start),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    pub fn report_interval(&self) -> Duration {
        self.fleet
            .report_interval
            .map_or(DEFAULT_REPORT_INTERVAL, |d| d.0)
    }

    pub fn histogram_precision(&self) -> u8 {
        self.fleet
            .histogram_precision
            .as_ref()
            .map_or(crate::histogram::DEFAULT_SIGNIFICANT_DIGITS, |p| {
                *p.get_ref()
            })
    }

    pub fn vantage(&self, region: &str) -> Option<&Vantage> {
        self.vantages.iter().find(|v| v.region.get_ref() == region)
    }

    /// Every target an agent probes, with its fully overlaid settings: the global endpoint
    /// first, then each Region's status (and deep) URL, in file order.
    pub fn targets(&self) -> Vec<TargetPlan> {
        let mut out = vec![TargetPlan {
            id: "global".to_owned(),
            kind: TargetKind::Global,
            region: None,
            url: self.global.url.clone(),
            url_key: "global.url".to_owned(),
            settings: self.probe.overlay(&self.global.probe),
        }];
        for (i, r) in self.regions.iter().enumerate() {
            let settings = self.probe.overlay(&r.probe);
            let name = r.name.get_ref();
            out.push(TargetPlan {
                id: format!("status:{name}"),
                kind: TargetKind::Status,
                region: Some(name.clone()),
                url: r.status_url.clone(),
                url_key: format!("regions[{i}].status_url"),
                settings: settings.clone(),
            });
            if let Some(deep) = &r.deep_url {
                out.push(TargetPlan {
                    id: format!("deep:{name}"),
                    kind: TargetKind::Deep,
                    region: Some(name.clone()),
                    url: deep.clone(),
                    url_key: format!("regions[{i}].deep_url"),
                    settings,
                });
            }
        }
        out
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let name = self.fleet.name.get_ref();
        if !valid_name(name) {
            return Err(self.invalid(
                &self.fleet.name,
                "fleet.name",
                "use letters, digits, '-', '_' and '.', 1 to 64 characters",
            ));
        }
        if let Some(p) = &self.fleet.histogram_precision {
            if !(1..=5).contains(p.get_ref()) {
                return Err(self.invalid(
                    p,
                    "fleet.histogram_precision",
                    "must be 1..=5 (3 is the usual)",
                ));
            }
        }
        if let Some(d) = self.fleet.report_interval {
            if d.0 < Duration::from_secs(1) || d.0 > Duration::from_secs(300) {
                return Err(ConfigError::Invalid {
                    origin: self.origin.clone(),
                    line: self.line_of(self.source.find("report_interval").unwrap_or(0)),
                    key: "fleet.report_interval".into(),
                    message: "must be between 1s and 5m".into(),
                });
            }
        }
        check_url(self, &self.global.url, "global.url")?;
        check_url(self, &self.aggregator.url, "aggregator.url")?;
        if self.regions.is_empty() {
            return Err(self.section_error(
                "regions",
                "add at least one [[regions]] entry with name and status_url",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, r) in self.regions.iter().enumerate() {
            let key = format!("regions[{i}].name");
            if !valid_name(r.name.get_ref()) {
                return Err(self.invalid(&r.name, &key, "use a Region code like us-east-1"));
            }
            if !seen.insert(r.name.get_ref().clone()) {
                return Err(self.invalid(
                    &r.name,
                    &key,
                    format!("Region {:?} is listed twice", r.name.get_ref()),
                ));
            }
            check_url(self, &r.status_url, &format!("regions[{i}].status_url"))?;
            if let Some(d) = &r.deep_url {
                check_url(self, d, &format!("regions[{i}].deep_url"))?;
            }
        }
        if self.vantages.is_empty() {
            return Err(self.section_error(
                "vantages",
                "add at least one [[vantages]] entry with the region the agent runs in",
            ));
        }
        let mut vantages = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for (i, v) in self.vantages.iter().enumerate() {
            let key = format!("vantages[{i}].region");
            if !valid_name(v.region.get_ref()) {
                return Err(self.invalid(&v.region, &key, "use a Region code like eu-west-1"));
            }
            if !vantages.insert(v.region.get_ref().clone()) {
                return Err(self.invalid(
                    &v.region,
                    &key,
                    format!("vantage {:?} is listed twice", v.region.get_ref()),
                ));
            }
            if let Some(id) = &v.agent_id {
                if !valid_name(id.get_ref()) {
                    return Err(self.invalid(
                        id,
                        &format!("vantages[{i}].agent_id"),
                        "use letters, digits, '-', '_' and '.'",
                    ));
                }
            }
            if !ids.insert(v.agent_id()) {
                return Err(self.invalid(
                    &v.region,
                    &key,
                    format!("agent id {:?} is used twice", v.agent_id()),
                ));
            }
        }
        if self.agents.auth.key_id.get_ref().is_empty() {
            return Err(self.invalid(
                &self.agents.auth.key_id,
                "agents.auth.key_id",
                "must not be empty",
            ));
        }
        for t in self.targets() {
            if let Some(interval) = t.settings.interval {
                if interval.0 < Duration::from_millis(100) {
                    return Err(self.invalid(
                        &t.url,
                        &t.url_key,
                        format!(
                            "probe interval of {} is {:?}; the minimum is 100ms",
                            t.id, interval.0
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn section_error(&self, key: &str, message: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            line: 1,
            key: key.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// What an agent probes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// The global endpoint (CloudFront + Route 53).
    Global,
    /// A Region's shallow `/status`.
    Status,
    /// A Region's `/status/deep`.
    Deep,
}

impl TargetKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            TargetKind::Global => "global",
            TargetKind::Status => "status",
            TargetKind::Deep => "deep",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One target with its settings overlaid.
#[derive(Debug, Clone)]
pub struct TargetPlan {
    /// Stable id: `global`, `status:<region>`, `deep:<region>`.
    pub id: String,
    pub kind: TargetKind,
    pub region: Option<String>,
    pub url: Located<String>,
    /// Config key of the URL, for error messages.
    pub url_key: String,
    pub settings: ProbeSettings,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn check_url(config: &FleetConfig, url: &Located<String>, key: &str) -> Result<(), ConfigError> {
    let text = url.get_ref();
    let (scheme, rest) = text.split_once("://").ok_or_else(|| {
        config.invalid(
            url,
            key,
            format!(
                "{text:?} is not an absolute URL; write it like https://api.example.com/status"
            ),
        )
    })?;
    if scheme != "http" && scheme != "https" {
        return Err(config.invalid(
            url,
            key,
            format!("scheme {scheme:?} is not supported; use https:// (or http://)"),
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || text.chars().any(char::is_whitespace) {
        return Err(config.invalid(url, key, format!("{text:?} has no host or contains spaces")));
    }
    Ok(())
}

fn render_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end().to_owned();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())]
                .bytes()
                .filter(|b| *b == b'\n')
                .count()
                + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const EXAMPLE: &str = r#"
[fleet]
name = "orders-api"
report_interval = "10s"

[probe]
interval = "5s"
expect_status = "200"

[global]
url = "https://api.example.com/status"

[[regions]]
name = "us-east-1"
status_url = "https://use1.example.com/status"
deep_url = "https://use1.example.com/status/deep"
probe = { interval = "2s" }

[[regions]]
name = "eu-west-1"
status_url = "https://euw1.example.com/status"

[[vantages]]
region = "us-east-1"

[[vantages]]
region = "eu-west-1"
agent_id = "probe-euw1"

[aggregator]
url = "https://aggregator.example.com"

[agents.auth]
key_id = "fleet-2026"
"#;

    #[test]
    fn example_parses_and_plans_targets() {
        let c = FleetConfig::parse(EXAMPLE, "fleet.toml").unwrap();
        let t = c.targets();
        let ids: Vec<&str> = t.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "global",
                "status:us-east-1",
                "deep:us-east-1",
                "status:eu-west-1"
            ]
        );
        assert_eq!(
            t[0].settings.interval,
            Some(DurationText(Duration::from_secs(5)))
        );
        assert_eq!(
            t[1].settings.interval,
            Some(DurationText(Duration::from_secs(2)))
        );
        assert_eq!(
            t[1].settings.expect_status.as_ref().unwrap().get_ref(),
            "200"
        );
        assert_eq!(c.vantage("eu-west-1").unwrap().agent_id(), "probe-euw1");
        assert_eq!(
            c.vantage("us-east-1").unwrap().agent_id(),
            "vantage-us-east-1"
        );
        assert_eq!(c.report_interval(), Duration::from_secs(10));
    }

    fn error_of(text: &str) -> String {
        FleetConfig::parse(text, "fleet.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_key_the_line_and_the_fix() {
        let typo = EXAMPLE.replace("status_url = \"https://euw1", "statusurl = \"https://euw1");
        let e = error_of(&typo);
        assert!(e.contains("statusurl") && e.contains("line 21"), "{e}");

        let dup = EXAMPLE.replace("name = \"eu-west-1\"", "name = \"us-east-1\"");
        let e = error_of(&dup);
        assert!(
            e.contains("fleet.toml:20: regions[1].name") && e.contains("twice"),
            "{e}"
        );

        let scheme = EXAMPLE.replace(
            "https://euw1.example.com/status",
            "ftp://euw1.example.com/status",
        );
        let e = error_of(&scheme);
        assert!(
            e.contains("regions[1].status_url") && e.contains("https://"),
            "{e}"
        );

        let duration = EXAMPLE.replace("interval = \"5s\"", "interval = \"5 parsecs\"");
        let e = error_of(&duration);
        assert!(e.contains("line 7") && e.contains("bad duration"), "{e}");

        let fast = EXAMPLE.replace("interval = \"5s\"", "interval = \"10ms\"");
        let e = error_of(&fast);
        assert!(
            e.contains("global.url") && e.contains("minimum is 100ms"),
            "{e}"
        );

        let blocks = "[[vantages]]\nregion = \"us-east-1\"\n\n[[vantages]]\nregion = \"eu-west-1\"\nagent_id = \"probe-euw1\"\n";
        assert!(EXAMPLE.contains(blocks));
        let no_vantage = format!("vantages = []\n{}", EXAMPLE.replace(blocks, ""));
        let e = error_of(&no_vantage);
        assert!(
            e.contains("vantages") && e.contains("add at least one"),
            "{e}"
        );

        let e = error_of("this is not toml");
        assert!(e.starts_with("fleet.toml: line 1"), "{e}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("1000"), Ok(ByteSize(1000)));
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("").is_err());
    }
}
