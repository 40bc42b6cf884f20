//! From the fleet file to probes: overlays each target's settings, compiles them into
//! [`ProbeSpec`]s (assertions, timeouts, TLS), and reports problems with the key and line they
//! come from. Also renders the probe plan that `vantage check-config` prints. The DNS target
//! (`[dns]`) is not an HTTP exchange: it keeps its checked [`DnsPlan`] and is probed by a
//! [`DnsProber`]; [`TargetProber`] lets the scheduler run both kinds alike.
//!
//! With `[[services]]` every service's targets are built here, each from its own service's
//! view of the file ([`vantage_protocol::config::Service::fleet`]): its DNS target resolves its
//! own global name and maps answers to its own Regions. One agent probes them all.

use crate::metrics::TargetLabels;
use http::{HeaderName, HeaderValue, Method};
use std::sync::Arc;
use std::time::Duration;
use vantage_probe::assertion::{HeaderAssertion, JsonPointerAssertion, StatusSet};
use vantage_probe::dns::{DnsProber, DnsSetupError};
use vantage_probe::spec::{
    HttpVersionPref, IpPreference, ProbeKind, ProbeSpec, ResolveOverride, SpecError,
};
use vantage_probe::tls::TlsConfigCache;
use vantage_probe::{ProbeResult, Prober};
use vantage_protocol::config::{
    ConfigError, DnsPlan, FleetConfig, Located, TargetKind, TargetPlan, DEFAULT_PROBE_INTERVAL,
};

pub use crate::plan::render_plan;

/// How a target is probed.
#[derive(Debug, Clone)]
pub enum TargetProbe {
    /// One HTTP(S) exchange (global, status and deep targets).
    Http(Box<ProbeSpec>),
    /// One resolution of the global name (the `dns` target).
    Dns(DnsPlan),
}

/// A target ready to schedule.
#[derive(Debug, Clone)]
pub struct AgentTarget {
    pub plan: TargetPlan,
    pub probe: TargetProbe,
    pub interval: Duration,
}

/// Why a target's prober could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProberSetupError {
    #[error(transparent)]
    Http(#[from] SpecError),
    #[error(transparent)]
    Dns(#[from] DnsSetupError),
}

/// The prober of either kind of target.
pub enum TargetProber {
    Http(Prober),
    Dns(Box<DnsProber>),
}

impl TargetProber {
    pub fn new(probe: &TargetProbe, tls: Arc<TlsConfigCache>) -> Result<Self, ProberSetupError> {
        Ok(match probe {
            TargetProbe::Http(spec) => TargetProber::Http(Prober::new((**spec).clone(), tls)?),
            TargetProbe::Dns(plan) => TargetProber::Dns(Box::new(DnsProber::new(plan)?)),
        })
    }

    pub async fn probe(&self) -> ProbeResult {
        match self {
            TargetProber::Http(p) => p.probe().await,
            TargetProber::Dns(p) => p.probe().await,
        }
    }
}

impl AgentTarget {
    /// The HTTP probe's spec; `None` for the DNS target.
    pub fn http(&self) -> Option<&ProbeSpec> {
        match &self.probe {
            TargetProbe::Http(spec) => Some(spec),
            TargetProbe::Dns(_) => None,
        }
    }

    /// The `region` label: the target's Region, or `global`.
    pub fn region_label(&self) -> &str {
        self.plan
            .region
            .as_deref()
            .unwrap_or(crate::metrics::GLOBAL_REGION)
    }

    /// The labels of the target's metrics: its service, id and Region.
    pub fn labels(&self) -> TargetLabels {
        TargetLabels::new(
            self.plan.service.clone(),
            self.plan.id.clone(),
            self.plan.region.as_deref(),
        )
    }
}

/// Compiles every target of the fleet, every service's, failing on the first bad setting.
pub fn build_targets(config: &FleetConfig) -> Result<Vec<AgentTarget>, ConfigError> {
    compile_plans(config, config.targets())
}

/// What the agent in `vantage` probes: every target of the fleet, then its own control
/// target (`vantages[].control_url`) when it has one.
pub fn build_vantage_targets(
    config: &FleetConfig,
    vantage: &str,
) -> Result<Vec<AgentTarget>, ConfigError> {
    let mut plans = config.targets();
    plans.extend(config.control_target(vantage));
    compile_plans(config, plans)
}

/// Every control target of the file, compiled: `check-config` finds a bad `control_url`
/// before any agent starts.
pub fn check_control_targets(config: &FleetConfig) -> Result<(), ConfigError> {
    let plans = config
        .vantages
        .iter()
        .filter_map(|v| config.control_target(v.region.get_ref()))
        .collect();
    compile_plans(config, plans).map(drop)
}

fn compile_plans(
    config: &FleetConfig,
    plans: Vec<TargetPlan>,
) -> Result<Vec<AgentTarget>, ConfigError> {
    plans
        .into_iter()
        .map(|plan| {
            // The DNS target is its service's: its name and its answer → Region map. With
            // `[[services]]` the file as a whole has neither a global name nor Regions.
            let service = config.service(&plan.service).map_or(config, |s| &s.fleet);
            let probe = match (plan.kind, service.dns_plan()) {
                (TargetKind::Dns, Some(dns)) => TargetProbe::Dns(dns),
                _ => TargetProbe::Http(Box::new(compile(service, &plan)?)),
            };
            let interval = plan
                .settings
                .interval
                .map_or(DEFAULT_PROBE_INTERVAL, |d| d.0);
            Ok(AgentTarget {
                plan,
                probe,
                interval,
            })
        })
        .collect()
}

fn compile(config: &FleetConfig, plan: &TargetPlan) -> Result<ProbeSpec, ConfigError> {
    let s = &plan.settings;
    let bad = |at: &Located<String>, key: &str, message: String| config.invalid(at, key, message);
    let mut spec = ProbeSpec::get(plan.url.get_ref())
        .map_err(|e| bad(&plan.url, &plan.url_key, e.to_string()))?;
    if let Some(m) = &s.method {
        spec.method =
            Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()).map_err(|_| {
                bad(
                    m,
                    "probe.method",
                    format!("{:?} is not an HTTP method", m.get_ref()),
                )
            })?;
    }
    for (name, value) in s.headers.iter().flatten() {
        let key = format!("probe.headers.{name}");
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(value, &key, format!("{name:?} is not a header name")))?;
        let v = HeaderValue::from_str(value.get_ref()).map_err(|_| {
            bad(
                value,
                &key,
                "the value has characters a header cannot carry".into(),
            )
        })?;
        spec.headers.append(n, v);
    }
    if let Some(body) = &s.body {
        spec.body = body.clone().into_bytes().into();
    }
    let t = &mut spec.timeouts;
    for (field, value) in [
        (&mut t.overall, s.timeout),
        (&mut t.dns, s.dns_timeout),
        (&mut t.connect, s.connect_timeout),
        (&mut t.tls, s.tls_timeout),
        (&mut t.first_byte, s.first_byte_timeout),
    ] {
        if let Some(d) = value {
            *field = d.0;
        }
    }
    if let Some(st) = &s.expect_status {
        spec.assertions.status = st
            .get_ref()
            .parse::<StatusSet>()
            .map_err(|e| bad(st, "probe.expect_status", e.to_string()))?;
    }
    spec.assertions.body_contains = s.expect_body.clone();
    if let Some(re) = &s.expect_body_regex {
        spec.assertions.body_regex = Some(
            regex::Regex::new(re.get_ref())
                .map_err(|e| bad(re, "probe.expect_body_regex", format!("bad regex: {e}")))?,
        );
    }
    for j in s.expect_json.iter().flatten() {
        spec.assertions.json_pointer.push(
            j.get_ref()
                .parse::<JsonPointerAssertion>()
                .map_err(|e| bad(j, "probe.expect_json", e))?,
        );
    }
    for (name, value) in s.expect_headers.iter().flatten() {
        let key = format!("probe.expect_headers.{name}");
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(value, &key, format!("{name:?} is not a header name")))?;
        let v = if value.get_ref().is_empty() {
            None
        } else {
            Some(HeaderValue::from_str(value.get_ref()).map_err(|_| {
                bad(
                    value,
                    &key,
                    "the value has characters a header cannot carry".into(),
                )
            })?)
        };
        spec.assertions
            .headers
            .push(HeaderAssertion { name: n, value: v });
    }
    if let Some(b) = s.max_body_bytes {
        spec.max_body_bytes = usize::try_from(b.0).unwrap_or(usize::MAX);
    }
    if let Some(v) = &s.http_version {
        spec.http_version = match v.get_ref().as_str() {
            "auto" => HttpVersionPref::Auto,
            "1.1" => HttpVersionPref::Http1,
            "2" => HttpVersionPref::Http2,
            other => {
                return Err(bad(
                    v,
                    "probe.http_version",
                    format!("{other:?}: use \"auto\", \"1.1\" or \"2\""),
                ))
            }
        };
    }
    if let Some(ip) = &s.ip {
        spec.ip_preference = match ip.get_ref().as_str() {
            "any" => IpPreference::Any,
            "4" => IpPreference::V4Only,
            "6" => IpPreference::V6Only,
            "prefer-4" => IpPreference::PreferV4,
            "prefer-6" => IpPreference::PreferV6,
            other => {
                return Err(bad(
                    ip,
                    "probe.ip",
                    format!("{other:?}: use any, 4, 6, prefer-4 or prefer-6"),
                ))
            }
        };
    }
    if let Some(i) = s.insecure {
        spec.tls.insecure = i;
    }
    spec.tls.ca_file = s.ca_file.clone();
    if let Some(r) = s.max_redirects {
        spec.max_redirects = r;
    }
    if let Some(r) = s.reuse_connection {
        spec.reuse_connection = r;
    }
    if let Some(h) = &s.region_header {
        spec.region_header = HeaderName::from_bytes(h.get_ref().as_bytes()).map_err(|_| {
            bad(
                h,
                "probe.region_header",
                format!("{:?} is not a header name", h.get_ref()),
            )
        })?;
    }
    for r in s.resolve.iter().flatten() {
        spec.resolve.push(
            r.get_ref()
                .parse::<ResolveOverride>()
                .map_err(|e| bad(r, "probe.resolve", e.to_string()))?,
        );
    }
    if spec.kind() != ProbeKind::Http {
        // JSON and header assertions mean nothing to a TCP banner or a gRPC health answer;
        // dropped here so that fleet-wide `[probe]` defaults for HTTP targets do not fail them.
        spec.assertions.json_pointer.clear();
        spec.assertions.headers.clear();
    }
    let interval = s.interval.map_or(DEFAULT_PROBE_INTERVAL, |d| d.0);
    spec.validate()
        .map_err(|e| bad(&plan.url, &plan.url_key, format!("{}: {e}", plan.id)))?;
    if spec.timeouts.overall > interval.max(Duration::from_secs(1)) * 6 {
        // Not an error: one probe in flight per target, so a long deadline only means missed
        // slots while the target hangs. Worth knowing, not worth refusing.
        tracing::info!(target_id = %plan.id, "probe timeout is much longer than its interval");
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = r#"
[fleet]
name = "orders-api"

[probe]
interval = "2s"
expect_status = "200"
expect_json = ["/status=pass"]
headers = { "x-api-key" = "k" }

[global]
url = "https://api.example.com/status"
probe = { expect_headers = { "x-vantage-region" = "" } }

[[regions]]
name = "us-east-1"
status_url = "https://use1.example.com/status"
probe = { interval = "1s", timeout = "3s", http_version = "2" }

[[vantages]]
region = "us-east-1"

[aggregator]
url = "https://aggregator.example.com"

[agents.auth]
key_id = "k1"
"#;

    #[test]
    fn settings_compile_into_specs() {
        let c = FleetConfig::parse(FLEET, "fleet.toml").unwrap();
        let t = build_targets(&c).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].interval, Duration::from_secs(2));
        assert_eq!(t[0].http().unwrap().assertions.headers.len(), 1);
        assert_eq!(t[0].http().unwrap().headers["x-api-key"], "k");
        assert_eq!(t[1].interval, Duration::from_secs(1));
        assert_eq!(
            t[1].http().unwrap().timeouts.overall,
            Duration::from_secs(3)
        );
        assert_eq!(t[1].http().unwrap().http_version, HttpVersionPref::Http2);
        assert!(
            t[1].http().unwrap().assertions.status.contains(200)
                && !t[1].http().unwrap().assertions.status.contains(204)
        );
        assert_eq!(t[1].region_label(), "us-east-1");
        assert_eq!(t[0].region_label(), "global");
        let plan = render_plan(&c, &t);
        assert!(plan.contains("1.50 probes/s"), "{plan}");
    }

    #[test]
    fn the_dns_target_keeps_its_plan_and_shows_in_the_plan() {
        let text = FLEET.replace(
            "[[vantages]]",
            "dns_answers = [\"192.0.2.7\"]\n\n[[vantages]]",
        ) + "\n[dns]\nresolvers = [\"127.0.0.1:5353\"]\ninterval = \"5s\"\n";
        let c = FleetConfig::parse(&text, "fleet.toml").unwrap();
        let t = build_targets(&c).unwrap();
        let dns = t.last().unwrap();
        assert_eq!(dns.plan.id, "dns");
        assert_eq!(dns.interval, Duration::from_secs(5));
        assert!(dns.http().is_none());
        let TargetProbe::Dns(plan) = &dns.probe else {
            panic!("not a DNS probe");
        };
        assert_eq!(plan.answers["192.0.2.7"], "us-east-1");
        let text = render_plan(&c, &t);
        assert!(
            text.contains("api.example.com via 127.0.0.1:5353; 192.0.2.7 → us-east-1"),
            "{text}"
        );
    }

    #[test]
    fn bad_settings_name_key_and_line() {
        let cases = [
            (
                "expect_status = \"200\"",
                "expect_status = \"2000\"",
                "probe.expect_status",
                7,
            ),
            (
                "expect_json = [\"/status=pass\"]",
                "expect_json = [\"status\"]",
                "probe.expect_json",
                8,
            ),
            (
                "http_version = \"2\"",
                "http_version = \"3\"",
                "probe.http_version",
                18,
            ),
            (
                "timeout = \"3s\"",
                "timeout = \"90s\"",
                "regions[0].status_url",
                17,
            ),
        ];
        for (from, to, key, line) in cases {
            let text = FLEET.replace(from, to);
            let c = FleetConfig::parse(&text, "fleet.toml").unwrap();
            let e = build_targets(&c).unwrap_err().to_string();
            assert!(
                e.contains(&format!("fleet.toml:{line}: {key}")),
                "{to}: {e}"
            );
        }
    }
}
