//! Checks of the fleet file that serde's types cannot express: names, URLs, limits, references
//! between sections, the `[route53]` section. They run once, when the file loads, and stop at
//! the first problem with its key and line, so what `vantage check-config` accepts is what
//! agents and the aggregator start with.

use super::{redact_userinfo, ConfigError, ConfigText, FleetConfig, Located, Problem};
use std::collections::BTreeSet;
use std::time::Duration;

impl FleetConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
                // A duration keeps no span; the key's line is the place.
                return Err(self.place(Problem::key(
                    "fleet.report_interval",
                    "must be between 1s and 5m",
                )));
            }
        }
        self.validate_replicas()?;
        self.validate_export()?;
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
        self.validate_keys()?;
        self.validate_control_path()?;
        Ok(())
    }

    /// The checks of one API's own sections (its global endpoint, Regions, DNS target,
    /// Route 53 records, routing controls, floor): the whole file's for a single-API file,
    /// each service's view with `[[services]]`.
    pub(super) fn validate_service_parts(&self) -> Result<(), ConfigError> {
        let Some(global) = &self.global else {
            return Err(self.section_error(
                "global",
                "add [global] with url = \"https://api.example.com/...\"",
            ));
        };
        check_url(self, &global.url, "global.url")?;
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
            check_target_url(self, &r.status_url, &format!("regions[{i}].status_url"))?;
            if let Some(d) = &r.deep_url {
                check_target_url(self, d, &format!("regions[{i}].deep_url"))?;
            }
        }
        self.validate_dns()?;
        for t in self.service_targets("") {
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
        if self.policy.min_healthy == Some(0) {
            return Err(self.place(Problem::key(
                "policy.min_healthy",
                "0 would let automation or pins take every Region out; use 1 or more (the \
                 default is 1)",
            )));
        }
        if let Some(route53) = &self.route53 {
            route53.settings().map_err(|p| self.place(p))?;
        }
        self.metrics.settings().map_err(|p| self.place(p))?;
        if let Some(arc) = &self.arc {
            let settings = arc.settings().map_err(|p| self.place(p))?;
            for r in &self.regions {
                if !settings.regions.contains_key(r.name.get_ref()) {
                    return Err(self.invalid(
                        &r.name,
                        "arc.regions",
                        format!(
                            "Region {0:?} has no [arc.regions.{0}] entry: give its routing_control_arn",
                            r.name.get_ref()
                        ),
                    ));
                }
            }
            if let Some(extra) = settings
                .regions
                .keys()
                .find(|name| !self.regions.iter().any(|r| r.name.get_ref() == *name))
            {
                return Err(self.place(Problem::key(
                    format!("arc.regions.{extra}"),
                    "is not a fleet Region ([[regions]] name); remove it or fix the name",
                )));
            }
        }
        Ok(())
    }

    /// The control path: admin keys apart from agent keys, the state token's variable, the
    /// floor. An agent key must never be able to move traffic, so an id may not be both.
    fn validate_control_path(&self) -> Result<(), ConfigError> {
        let a = &self.aggregator;
        if let Some(old) = &a.override_key_ids {
            return Err(self.invalid(
                old,
                "aggregator.override_key_ids",
                "was removed: agent keys no longer authorise overrides; give each operator a key \
                 of their own as [aggregator.admin_keys.<id>] with env = \"VARIABLE\" or \
                 file = \"path\", and delete override_key_ids",
            ));
        }
        let agent_id = self.agents.auth.key_id.get_ref();
        for (id, source) in &a.admin_keys {
            let key = format!("aggregator.admin_keys.{id}");
            if !valid_name(id) {
                return Err(self.place(Problem::key(
                    key,
                    "use letters, digits, '-', '_' and '.', 1 to 64 characters",
                )));
            }
            if a.keys.contains_key(id) || id == agent_id {
                return Err(self.place(Problem::key(
                    key,
                    format!(
                        "{id:?} is also an agent key id; admin keys need ids (and keys) of \
                         their own, e.g. \"ops-{id}\""
                    ),
                )));
            }
            if source.env.is_none() && source.file.is_none() {
                return Err(self.place(Problem::key(
                    key,
                    "give env = \"VARIABLE\" or file = \"path\" holding the key",
                )));
            }
        }
        if let Some(var) = &a.state_token_env {
            if var.get_ref().trim().is_empty() {
                return Err(self.invalid(
                    var,
                    "aggregator.state_token_env",
                    "name the environment variable that holds the token, or remove the key",
                ));
            }
        }
        Ok(())
    }

    /// A section's problem, on its value's line or else its key's.
    pub(super) fn place(&self, problem: Problem) -> ConfigError {
        ConfigText::new(&self.source, &self.origin).place(problem)
    }

    pub(super) fn section_error(&self, key: &str, message: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            line: 1,
            key: key.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// A name that may also become a file name (agent ids and replica ids name spool directories):
/// letters, digits, '-', '_' and '.', 1 to 64 of them, and never only dots ("." and ".." are
/// directories already).
pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !s.chars().all(|c| c == '.')
}

/// Schemes a Region's `status_url`/`deep_url` may use beside http(s): TCP and gRPC health
/// probes (see `vantage_probe::spec::ProbeKind`).
pub const PROBE_SCHEMES: [&str; 4] = ["tcp", "tcps", "grpc", "grpcs"];

/// A Region's probe URL: http(s) as [`check_url`], or `tcp(s)://host:port`, or
/// `grpc(s)://host:port[/service.Name]`. The agent checks the rest when it compiles probes.
pub(super) fn check_target_url(
    config: &FleetConfig,
    url: &Located<String>,
    key: &str,
) -> Result<(), ConfigError> {
    let text = url.get_ref();
    let Some((scheme, rest)) = text
        .split_once("://")
        .filter(|(s, _)| PROBE_SCHEMES.contains(s))
    else {
        return check_url(config, url, key);
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let port = authority
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !host.ends_with('['))
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    if port.is_none() || authority.contains('@') || text.chars().any(char::is_whitespace) {
        return Err(config.invalid(
            url,
            key,
            format!(
                "{:?}: a {scheme} URL needs a host and a port, like {scheme}://db.example.com:5432",
                redact_userinfo(text)
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_url(
    config: &FleetConfig,
    url: &Located<String>,
    key: &str,
) -> Result<(), ConfigError> {
    let text = url.get_ref();
    let (scheme, rest) = text.split_once("://").ok_or_else(|| {
        config.invalid(
            url,
            key,
            format!(
                "{:?} is not an absolute URL; write it like https://api.example.com/status",
                redact_userinfo(text)
            ),
        )
    })?;
    if scheme != "http" && scheme != "https" {
        return Err(config.invalid(
            url,
            key,
            format!(
                "scheme {scheme:?} is not supported; use https:// (or http://){}",
                if key.starts_with("regions[") {
                    ", or tcp://, tcps://, grpc://, grpcs:// for TCP and gRPC health probes"
                } else {
                    ""
                }
            ),
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || text.chars().any(char::is_whitespace) {
        return Err(config.invalid(
            url,
            key,
            format!("{:?} has no host or contains spaces", redact_userinfo(text)),
        ));
    }
    Ok(())
}
