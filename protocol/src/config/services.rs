//! `[[services]]`: several APIs in one fleet, each failing over on its own. A service has its
//! global URL (its own subdomain), its Regions, and optionally its probe, policy and weight
//! overrides, its Route 53 records and its DNS target; the fleet-wide `[probe]`, `[policy]`,
//! `[weights]`, `[route53]` and `[dns]` are the defaults.
//!
//! Every consumer works from [`Service`] views: each is the service as a single-API fleet
//! (`[global]`, `[[regions]]` and the overlaid sections filled in, every shared section as in
//! the file), so the code that plans targets, decides and drives Route 53 for one API does the
//! same for each service. A file without `[[services]]` is one service named after
//! `fleet.name`, with unprefixed target ids and unit keys, exactly as before services existed.
//!
//! Names: a service's target ids are `<service>/<id>` (`payments/status:eu-west-1`), and the
//! unit a decision is about, one service in one Region, is keyed `<service>/<region>`; in the
//! single-API form both stay bare (`status:eu-west-1`, `eu-west-1`).

use super::validate::valid_name;
use super::{
    ConfigError, DnsSection, FleetConfig, GlobalEndpoint, Located, PolicySection, ProbeSettings,
    Region, Route53Region, Route53Section, WeightsSection,
};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// One `[[services]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Names the service in target ids, metrics, reports and decisions: letters, digits, '-',
    /// '_' and '.'.
    pub name: Located<String>,
    /// The service's global name (its subdomain), probed like `[global]`.
    pub global: GlobalEndpoint,
    /// The Regions serving it, each with its status (and deep) URL.
    pub regions: Vec<Region>,
    /// Probe settings for this service's targets, over the fleet's `[probe]`.
    #[serde(default)]
    pub probe: ProbeSettings,
    /// Policy keys that differ from the fleet's `[policy]`.
    #[serde(default)]
    pub policy: PolicySection,
    /// Weight keys that differ from the fleet's `[weights]`.
    #[serde(default)]
    pub weights: WeightsSection,
    /// The service's weighted records and health checks; the zone, health mode and endpoint
    /// come from the fleet's `[route53]`.
    pub route53: Option<ServiceRoute53>,
    /// The service's DNS target, over the fleet's `[dns]` (which, with services, applies to
    /// every service and may not name the record).
    pub dns: Option<DnsSection>,
}

/// `[services.route53]`: what is the service's own in Route 53.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRoute53 {
    /// Only when the service's records live in another zone than `[route53]`'s.
    pub hosted_zone_id: Option<Located<String>>,
    /// The service's weighted record set, e.g. `payments-origin.example.com.`.
    pub record_name: Located<String>,
    pub record_type: Option<Located<String>>,
    /// Per Region: its record's set identifier and, for control-plane health, its check.
    #[serde(default)]
    pub regions: BTreeMap<String, Route53Region>,
}

/// One service as agents and the aggregator work with it.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    /// Declared in `[[services]]`: its target ids and unit keys carry its name.
    pub named: bool,
    /// The service as a single-API fleet file (its `services()` is empty).
    pub fleet: FleetConfig,
}

impl Service {
    /// The fleet-wide id of the service's target `local` (`status:eu-west-1`).
    pub fn target_id(&self, local: &str) -> String {
        qualified(self.named, &self.name, local)
    }

    /// The key of this service in `region`: the name decisions, overrides and backends use.
    pub fn unit(&self, region: &str) -> String {
        qualified(self.named, &self.name, region)
    }

    /// The service's Regions, in file order.
    pub fn region_names(&self) -> Vec<String> {
        self.fleet
            .regions
            .iter()
            .map(|r| r.name.get_ref().clone())
            .collect()
    }
}

/// `local` (a target id or a Region) as the fleet names it: `<service>/<local>` for a named
/// service, bare for a single-API file. The one place that spelling is made.
pub fn qualified(named: bool, service: &str, local: &str) -> String {
    if named {
        format!("{service}/{local}")
    } else {
        local.to_owned()
    }
}

/// A unit key's service (when it names one) and Region.
pub fn split_unit(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((service, region)) => (Some(service), region),
        None => (None, key),
    }
}

macro_rules! overlay_options {
    ($ty:ident, $base:expr, $over:expr, $($f:ident),* $(,)?) => {
        $ty { $($f: $over.$f.clone().or_else(|| $base.$f.clone()),)* }
    };
}

impl PolicySection {
    /// `over`'s keys where it sets them, `self`'s otherwise.
    pub fn overlay(&self, over: &PolicySection) -> PolicySection {
        overlay_options!(
            PolicySection,
            self,
            over,
            min_attempts,
            max_failure_ratio,
            latency_quantile,
            max_latency,
            quorum,
            fail_after,
            recover_after,
            flap_penalty,
            flap_half_life,
            flap_suppress,
            min_healthy,
            max_changes,
            change_window,
            correlated_fraction,
        )
    }
}

impl WeightsSection {
    /// `over`'s keys where it sets them, `self`'s otherwise.
    pub fn overlay(&self, over: &WeightsSection) -> WeightsSection {
        overlay_options!(
            WeightsSection,
            self,
            over,
            quantile,
            ewma_alpha,
            floor,
            dead_band,
            dead_band_ratio,
            latency_tolerance,
            min_interval,
        )
    }
}

impl FleetConfig {
    /// Every service, in file order; one (named after `fleet.name`) for a single-API file.
    /// Empty for a service's own view.
    pub fn services(&self) -> &[Service] {
        &self.views
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.views.iter().find(|s| s.name == name)
    }

    /// True when the file declares `[[services]]` (ids and unit keys carry service names).
    pub fn has_named_services(&self) -> bool {
        !self.services.is_empty()
    }

    /// Every Region any service runs in, sorted.
    pub fn all_regions(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.views.iter().flat_map(Service::region_names).collect();
        set.into_iter().collect()
    }

    /// Builds [`Self::services`] and checks each service, its errors keyed
    /// `services[i].<key>`.
    pub(super) fn build_services(&mut self) -> Result<(), ConfigError> {
        if self.services.is_empty() {
            if self.global.is_none() {
                return Err(self.place(super::Problem::key(
                    "global",
                    "missing: add [global] with url = \"https://api.example.com/...\" (one \
                     API), or describe each API as a [[services]] entry",
                )));
            }
            self.validate_service_parts()?;
            let mut view = self.clone();
            view.views = Vec::new();
            self.views = vec![Service {
                name: self.fleet.name.get_ref().clone(),
                named: false,
                fleet: view,
            }];
            return Ok(());
        }
        self.refuse_single_api_sections()?;
        let mut names = BTreeSet::new();
        let mut views = Vec::with_capacity(self.services.len());
        for (i, s) in self.services.iter().enumerate() {
            let name = s.name.get_ref();
            let key = format!("services[{i}].name");
            if !valid_name(name) {
                return Err(self.invalid(
                    &s.name,
                    &key,
                    "use letters, digits, '-', '_' and '.', 1 to 64 characters",
                ));
            }
            if !names.insert(name.clone()) {
                return Err(self.invalid(
                    &s.name,
                    &key,
                    format!("service {name:?} is listed twice"),
                ));
            }
            if s.weights.min_interval.is_some() {
                return Err(self.place(super::Problem::key(
                    format!("services[{i}].weights.min_interval"),
                    "is fleet-wide (one weight batch covers every service): set it in \
                     [weights]",
                )));
            }
            let view = self.service_view(s)?;
            view.validate_service_parts()
                .map_err(|e| e.with_key_prefix(&format!("services[{i}].")))?;
            views.push(Service {
                name: name.clone(),
                named: true,
                fleet: view,
            });
        }
        self.views = views;
        Ok(())
    }

    /// With `[[services]]`, the single-API sections would be ambiguous: say where they go.
    fn refuse_single_api_sections(&self) -> Result<(), ConfigError> {
        let misplaced = |key: &str, fix: &str| {
            Err(self.place(super::Problem::key(
                key,
                format!("cannot be used with [[services]]: {fix}"),
            )))
        };
        if self.global.is_some() {
            return misplaced("global", "give each service its own [services.global]");
        }
        if !self.regions.is_empty() {
            return misplaced(
                "regions",
                "list each service's Regions as [[services.regions]]",
            );
        }
        if let Some(r) = &self.route53 {
            if r.record_name.is_some() {
                return misplaced(
                    "route53.record_name",
                    "each service names its records in [services.route53]",
                );
            }
            if !r.regions.is_empty() {
                return misplaced(
                    "route53.regions",
                    "each service maps its Regions in [services.route53.regions]",
                );
            }
        }
        if let Some(name) = self.dns.as_ref().and_then(|d| d.name.as_ref()) {
            return Err(self.invalid(
                name,
                "dns.name",
                "cannot be used with [[services]]: each service resolves its own global name \
                 (or [services.dns] name)",
            ));
        }
        if self.arc.is_some() {
            return misplaced(
                "arc",
                "ARC routing controls are per Region of one API; with [[services]] use \
                 aggregator.backend = \"route53\" (per-service routing controls are not \
                 supported yet)",
            );
        }
        Ok(())
    }

    /// `s` as a single-API fleet: its own global endpoint and Regions, the fleet's sections
    /// overlaid with its own.
    fn service_view(&self, s: &ServiceSection) -> Result<FleetConfig, ConfigError> {
        let mut view = self.clone();
        view.services = Vec::new();
        view.views = Vec::new();
        view.global = Some(s.global.clone());
        view.regions = s.regions.clone();
        view.probe = self.probe.overlay(&s.probe);
        view.policy = self.policy.overlay(&s.policy);
        view.weights = self.weights.overlay(&s.weights);
        view.dns = s.dns.clone().or_else(|| self.dns.clone());
        view.route53 = match (&s.route53, &self.route53) {
            (None, _) => None,
            (Some(own), shared) => Some(merge_route53(own, shared.as_ref())),
        };
        if let (Some(own), None, None) = (&s.route53, &self.route53, zone_of(s)) {
            return Err(self.invalid(
                &own.record_name,
                "route53",
                "a service's [services.route53] needs the fleet's [route53] (hosted_zone_id, \
                 health mode) or its own hosted_zone_id",
            ));
        }
        Ok(view)
    }
}

/// The service's own hosted zone, when it names one.
fn zone_of(s: &ServiceSection) -> Option<&Located<String>> {
    s.route53.as_ref().and_then(|r| r.hosted_zone_id.as_ref())
}

/// The fleet's `[route53]` with the service's records.
fn merge_route53(own: &ServiceRoute53, shared: Option<&Route53Section>) -> Route53Section {
    let zone = own
        .hosted_zone_id
        .clone()
        .or_else(|| shared.map(|s| s.hosted_zone_id.clone()))
        .unwrap_or_else(|| Located::new(0..0, String::new()));
    Route53Section {
        hosted_zone_id: zone,
        record_name: Some(own.record_name.clone()),
        record_type: own
            .record_type
            .clone()
            .or_else(|| shared.and_then(|s| s.record_type.clone())),
        health: shared.and_then(|s| s.health.clone()),
        metric_namespace: shared.and_then(|s| s.metric_namespace.clone()),
        endpoint_url: shared.and_then(|s| s.endpoint_url.clone()),
        aws_region: shared.and_then(|s| s.aws_region.clone()),
        regions: own.regions.clone(),
    }
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
