//! The `[route53]` section: the Route 53 (and CloudWatch) objects the aggregator's `route53`
//! backend drives. It is checked when the fleet file loads, like every other section, so that
//! `vantage check-config` reports a bad health mode or a missing health check id with its line
//! instead of the aggregator failing at start. [`Route53Section::settings`] is that check and
//! also yields the typed, normalised values the backend uses, so the two cannot disagree.

use super::{Located, Problem};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Route 53 (and CloudWatch) objects the `route53` backend drives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53Section {
    pub hosted_zone_id: Located<String>,
    /// The weighted record set, e.g. `api-origin.example.com.`; required for one API, and
    /// given per service (`[services.route53]`) with `[[services]]`.
    pub record_name: Option<Located<String>>,
    /// `A`, `AAAA` or `CNAME` (default `CNAME`).
    pub record_type: Option<Located<String>>,
    /// `data-plane` (default: publish a CloudWatch metric per Region for a CLOUDWATCH_METRIC
    /// health check) or `control-plane` (force a CALCULATED health check per Region).
    pub health: Option<Located<String>>,
    /// CloudWatch namespace of the published health metric (default `Vantage`).
    pub metric_namespace: Option<Located<String>>,
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

/// How a Region's health reaches Route 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Route53Health {
    /// A CloudWatch metric per Region that a CLOUDWATCH_METRIC health check follows.
    #[default]
    DataPlane,
    /// A CALCULATED health check per Region, forced through the Route 53 control plane.
    ControlPlane,
}

impl Route53Health {
    pub const fn as_str(self) -> &'static str {
        match self {
            Route53Health::DataPlane => "data-plane",
            Route53Health::ControlPlane => "control-plane",
        }
    }
}

impl FromStr for Route53Health {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "data-plane" => Ok(Route53Health::DataPlane),
            "control-plane" => Ok(Route53Health::ControlPlane),
            other => Err(format!(
                "{other:?} is not a health mode; use \"data-plane\" or \"control-plane\""
            )),
        }
    }
}

impl fmt::Display for Route53Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The weighted records' type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordType {
    A,
    Aaaa,
    #[default]
    Cname,
}

impl RecordType {
    /// As Route 53 spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
        }
    }
}

impl FromStr for RecordType {
    type Err = String;

    /// Case-insensitive, surrounding blanks ignored.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "A" => Ok(RecordType::A),
            "AAAA" => Ok(RecordType::Aaaa),
            "CNAME" => Ok(RecordType::Cname),
            _ => Err(format!(
                "{s:?} is not a record type; use \"A\", \"AAAA\" or \"CNAME\""
            )),
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A checked `[route53]` section, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route53Settings {
    /// Bare zone id (a `/hostedzone/` prefix is removed).
    pub hosted_zone_id: String,
    /// FQDN of the weighted records, lower case, with the trailing dot.
    pub record_name: String,
    pub record_type: RecordType,
    pub health: Route53Health,
    /// Set and not blank, or `None` for the backend's default.
    pub metric_namespace: Option<String>,
    /// Per Region name.
    pub regions: BTreeMap<String, Route53RegionSettings>,
}

/// One Region's objects in Route 53, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route53RegionSettings {
    /// SetIdentifier of the Region's weighted record (trimmed, not empty).
    pub set_identifier: String,
    /// The CALCULATED health check to force; always set for control-plane health.
    pub health_check_id: Option<String>,
}

impl Route53Section {
    /// Checks every value and normalises it. The first problem is returned, keyed by its
    /// fleet-file key (`route53.regions.<name>.set_identifier`) and located by the value's span.
    pub fn settings(&self) -> Result<Route53Settings, Problem> {
        let health = match &self.health {
            None => Route53Health::default(),
            Some(h) => h
                .get_ref()
                .parse()
                .map_err(|m| Problem::at(h, "route53.health", m))?,
        };
        let metric_namespace = self.metric_namespace.as_ref().map(|n| n.get_ref().clone());
        if let (Route53Health::DataPlane, Some(n)) = (health, &self.metric_namespace) {
            if n.get_ref().trim().is_empty() {
                return Err(Problem::at(
                    n,
                    "route53.metric_namespace",
                    "empty; set a CloudWatch namespace such as \"Vantage\"",
                ));
            }
        }
        let record_type = match &self.record_type {
            None => RecordType::default(),
            Some(t) => t
                .get_ref()
                .parse()
                .map_err(|m| Problem::at(t, "route53.record_type", m))?,
        };
        let Some(record_at) = &self.record_name else {
            return Err(Problem::key(
                "route53.record_name",
                "missing; set the weighted records' name, e.g. \"api-origin.example.com.\"",
            ));
        };
        let mut record_name = record_at.get_ref().trim().to_ascii_lowercase();
        if record_name.trim_end_matches('.').is_empty() {
            return Err(Problem::at(
                record_at,
                "route53.record_name",
                "empty; set the weighted records' name, e.g. \"api-origin.example.com.\"",
            ));
        }
        if !record_name.ends_with('.') {
            record_name.push('.');
        }
        let hosted_zone_id = self
            .hosted_zone_id
            .get_ref()
            .trim()
            .trim_start_matches("/hostedzone/")
            .to_owned();
        if hosted_zone_id.is_empty() {
            return Err(Problem::at(
                &self.hosted_zone_id,
                "route53.hosted_zone_id",
                "empty; set the zone's id, e.g. \"Z0123456789ABCDEFGHIJ\"",
            ));
        }
        if self.regions.is_empty() {
            return Err(Problem::key(
                "route53.regions",
                "empty; add [route53.regions.<region>] with the set_identifier of each Region's record",
            ));
        }
        let mut regions = BTreeMap::new();
        let mut owners: BTreeMap<String, &str> = BTreeMap::new();
        for (name, r) in &self.regions {
            let key = |leaf: &str| format!("route53.regions.{name}.{leaf}");
            let set_identifier = r.set_identifier.get_ref().trim().to_owned();
            if set_identifier.is_empty() {
                return Err(Problem::at(
                    &r.set_identifier,
                    key("set_identifier"),
                    format!("empty; set the SetIdentifier of {name}'s weighted record"),
                ));
            }
            if let Some(other) = owners.insert(set_identifier.clone(), name) {
                return Err(Problem::at(
                    &r.set_identifier,
                    key("set_identifier"),
                    format!(
                        "{set_identifier:?} is also {other}'s; give each Region its own record"
                    ),
                ));
            }
            let health_check_id = r
                .health_check_id
                .as_ref()
                .map(|h| h.get_ref().trim().to_owned())
                .filter(|h| !h.is_empty());
            if health == Route53Health::ControlPlane && health_check_id.is_none() {
                // No value to point at: the Region's table (its set_identifier) is the place.
                return Err(Problem::at(
                    r.health_check_id.as_ref().unwrap_or(&r.set_identifier),
                    key("health_check_id"),
                    "missing: control-plane health forces a CALCULATED health check per Region; \
                     set its id, or use health = \"data-plane\"",
                ));
            }
            regions.insert(
                name.clone(),
                Route53RegionSettings {
                    set_identifier,
                    health_check_id,
                },
            );
        }
        Ok(Route53Settings {
            hosted_zone_id,
            record_name,
            record_type,
            health,
            metric_namespace,
            regions,
        })
    }
}
