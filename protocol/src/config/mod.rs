//! The fleet configuration: one TOML file that describes the whole fleet — the Regions and
//! their status URLs, the global endpoint, the vantage points, probe settings, where agents
//! report and how they authenticate, the Route 53 objects failover drives — shared by agents
//! and the aggregator.
//!
//! Parsing is strict (`deny_unknown_fields`): a misspelt key is an error that names the key and
//! its line, never a silently ignored setting. Values that can be checked without I/O (URLs,
//! durations, names, references between sections, `[route53]`) are checked here; probe
//! assertions are checked where they are compiled, in the agent, with the same [`ConfigError`]
//! and line numbers from the spans kept in [`Located`] fields. The modules follow the file:
//! [`error`] is the `file:line: key: problem; fix` style (shared with the status endpoint's
//! file), [`units`] the duration and size values, [`probe`] the probe settings and target plan,
//! [`sections`] the other plain sections, `keys` which key may report for which vantage,
//! [`route53`] the `[route53]` section and its checks, [`arc`] the `[arc]` section (ARC routing
//! controls), [`replicas`] where the aggregator runs (one process or replicas, and their
//! lease), [`dns`] the DNS target and its answer → Region map, [`metrics`] what the agent's
//! `/metrics` exports, [`export`] the agent's CloudWatch and X-Ray exports, and `validate` the
//! checks across the whole file.

pub mod arc;
mod diff;
pub mod dns;
pub mod error;
pub mod export;
mod keys;
pub mod maintenance;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod redact;
pub mod replicas;
pub mod route53;
pub mod sections;
pub mod services;
pub mod units;
mod validate;

pub use arc::{ArcEndpoint, ArcRegion, ArcSection, ArcSettings};
pub use dns::{normalize_answer, DnsPlan, DnsRecordType, DnsSection};
pub use error::{
    line_of_key, parse_toml, redact_userinfo, ConfigError, ConfigText, Located, Problem,
};
pub use export::{CloudWatchExport, CloudWatchMode, ExportSection, XRayExport};
pub use maintenance::{format_rfc3339_ms, parse_rfc3339_ms, MaintenanceSection};
pub use metrics::{MetricsSection, MetricsSettings, DEFAULT_PHASE_HISTOGRAMS};
pub use notify::{EventKind, NotificationsSection, NotifySection, Severity, SinkKind};
pub use probe::{ProbeSettings, TargetKind, TargetPlan, DEFAULT_PROBE_INTERVAL};
pub use redact::{is_secret_key, redact_message, redact_url};
pub use replicas::{LeaseSection, ReplicaEndpoint, ReplicaSection, MAX_REPLICAS};
pub use route53::{
    RecordType, Route53Health, Route53Region, Route53RegionSettings, Route53Section,
    Route53Settings,
};
pub use sections::{
    AgentsSection, AggregatorSection, AuthSection, FleetSection, GlobalEndpoint, KeySource,
    PolicySection, Region, SpoolSection, Vantage, WeightsSection,
};
pub use services::{qualified, split_unit, Service, ServiceRoute53, ServiceSection};
pub use units::{ByteSize, DurationText};

use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Default report interval.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// The id of a vantage's control target in its reports (`vantages[].control_url`).
pub const CONTROL_TARGET: &str = "control";

/// The whole fleet file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    pub fleet: FleetSection,
    /// Defaults for every target.
    #[serde(default)]
    pub probe: ProbeSettings,
    /// The one API's global endpoint; absent when the file lists `[[services]]`.
    pub global: Option<GlobalEndpoint>,
    /// The one API's Regions; empty when the file lists `[[services]]`.
    #[serde(default)]
    pub regions: Vec<Region>,
    /// Several APIs, each failing over on its own (see [`services`]).
    #[serde(default)]
    pub services: Vec<ServiceSection>,
    pub vantages: Vec<Vantage>,
    pub aggregator: AggregatorSection,
    pub agents: AgentsSection,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub weights: WeightsSection,
    pub route53: Option<Route53Section>,
    /// The DNS target: resolve the global name and map its answers to Regions.
    pub dns: Option<DnsSection>,
    /// ARC routing controls, for `aggregator.backend = "arc"`.
    pub arc: Option<ArcSection>,
    /// Where notifications go (`[[notify]]`, see [`notify`]).
    #[serde(default)]
    pub notify: Vec<NotifySection>,
    /// What every notification sink shares.
    #[serde(default)]
    pub notifications: NotificationsSection,
    /// Scheduled maintenance windows (see [`maintenance`]).
    #[serde(default)]
    pub maintenance: Vec<MaintenanceSection>,
    /// What the agent's `/metrics` exports (see [`metrics`]).
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Optional exports of the agent's measurements (`[export.cloudwatch]`).
    pub export: Option<ExportSection>,
    /// Where the text came from and the text itself, for error lines.
    #[serde(skip)]
    pub origin: String,
    #[serde(skip)]
    pub source: std::sync::Arc<str>,
    /// Every service as a single-API fleet, built when the file loads.
    #[serde(skip)]
    views: Vec<Service>,
}

impl FleetConfig {
    pub fn load(path: &Path) -> Result<FleetConfig, ConfigError> {
        let file = ConfigText::read(path)?;
        Self::parse(&file.text, &file.origin)
    }

    /// Parses and validates; `origin` names the text in errors (a path, or an env variable).
    pub fn parse(text: &str, origin: &str) -> Result<FleetConfig, ConfigError> {
        let mut config: FleetConfig = parse_toml(text, origin)?;
        config.origin = origin.to_owned();
        config.source = text.into();
        config.validate()?;
        config.build_services()?;
        config.validate_notify()?;
        config.validate_maintenance()?;
        Ok(config)
    }

    /// 1-based line of a byte offset in the source.
    pub fn line_of(&self, offset: usize) -> usize {
        error::line_of(&self.source, offset)
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

    /// The checked `[metrics]` section (checked when the file loaded, so this cannot fail).
    pub fn metrics_settings(&self) -> MetricsSettings {
        self.metrics.settings().unwrap_or_default()
    }

    pub fn vantage(&self, region: &str) -> Option<&Vantage> {
        self.vantages.iter().find(|v| v.region.get_ref() == region)
    }

    /// Every target an agent probes, with its fully overlaid settings, service by service in
    /// file order: the global endpoint first, then each Region's status (and deep) URL, in
    /// file order, then the DNS target (`dns`) when the service has one. Ids and URL keys of
    /// `[[services]]` carry the service (`payments/status:eu-west-1`, `services[1].global.url`).
    pub fn targets(&self) -> Vec<TargetPlan> {
        let mut out = Vec::new();
        for (i, service) in self.views.iter().enumerate() {
            for mut t in service.fleet.service_targets(&service.name) {
                if service.named {
                    t.id = service.target_id(&t.id);
                    t.url_key = format!("services[{i}].{}", t.url_key);
                }
                out.push(t);
            }
        }
        out
    }

    /// The control target of the vantage in `region` (`vantages[].control_url`), probed by its
    /// agent only, with the fleet's `[probe]` settings. Its id is [`CONTROL_TARGET`] in every
    /// file; its service is `fleet.name`.
    pub fn control_target(&self, region: &str) -> Option<TargetPlan> {
        let (i, vantage) = self
            .vantages
            .iter()
            .enumerate()
            .find(|(_, v)| v.region.get_ref() == region)?;
        let url = vantage.control_url.clone()?;
        Some(TargetPlan {
            id: CONTROL_TARGET.to_owned(),
            service: self.fleet.name.get_ref().clone(),
            kind: TargetKind::Control,
            region: None,
            url,
            url_key: format!("vantages[{i}].control_url"),
            settings: self.probe.clone(),
        })
    }

    /// True when any vantage has a control target.
    pub fn has_control_targets(&self) -> bool {
        self.vantages.iter().any(|v| v.control_url.is_some())
    }

    /// The targets of this file read as one API called `service`, with local ids.
    fn service_targets(&self, service: &str) -> Vec<TargetPlan> {
        let mut out = Vec::new();
        let Some(global) = &self.global else {
            return out;
        };
        out.push(TargetPlan {
            id: "global".to_owned(),
            service: service.to_owned(),
            kind: TargetKind::Global,
            region: None,
            url: global.url.clone(),
            url_key: "global.url".to_owned(),
            settings: self.probe.overlay(&global.probe),
        });
        for (i, r) in self.regions.iter().enumerate() {
            let settings = self.probe.overlay(&r.probe);
            let name = r.name.get_ref();
            out.push(TargetPlan {
                id: format!("status:{name}"),
                service: service.to_owned(),
                kind: TargetKind::Status,
                region: Some(name.clone()),
                url: r.status_url.clone(),
                url_key: format!("regions[{i}].status_url"),
                settings: settings.clone(),
            });
            if let Some(deep) = &r.deep_url {
                out.push(TargetPlan {
                    id: format!("deep:{name}"),
                    service: service.to_owned(),
                    kind: TargetKind::Deep,
                    region: Some(name.clone()),
                    url: deep.clone(),
                    url_key: format!("regions[{i}].deep_url"),
                    settings,
                });
            }
        }
        if let Some(dns) = &self.dns {
            let (url, url_key) = match &dns.name {
                Some(name) => (name.clone(), "dns.name"),
                None => (global.url.clone(), "global.url"),
            };
            let settings = ProbeSettings {
                interval: dns.interval,
                timeout: dns.timeout,
                ..ProbeSettings::default()
            };
            out.push(TargetPlan {
                id: "dns".to_owned(),
                service: service.to_owned(),
                kind: TargetKind::Dns,
                region: None,
                url,
                url_key: url_key.to_owned(),
                settings,
            });
        }
        out
    }
}

#[cfg(test)]
mod targets_tests;
#[cfg(test)]
mod tests;
