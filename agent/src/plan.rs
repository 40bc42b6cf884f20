//! The probe plan `vantage check-config` prints: per service a heading (its name, global URL,
//! Regions and the policy or weight keys it sets over the fleet's) and the table of its
//! targets, then the totals every vantage probes. A single-API file is one service, named
//! after `fleet.name`, so it prints the same way with one heading.

use crate::fleet::{AgentTarget, TargetProbe};
use std::fmt::Write as _;
use vantage_probe::spec::ProbeKind;
use vantage_protocol::config::{
    DnsPlan, DurationText, FleetConfig, PolicySection, Service, ServiceSection, WeightsSection,
};

/// Width of the target column: the usual ids fit, longer service-prefixed ones widen it.
const MIN_ID_WIDTH: usize = 24;

/// The plan `vantage check-config` prints: what each vantage probes and how often.
pub fn render_plan(config: &FleetConfig, targets: &[AgentTarget]) -> String {
    let mut out = String::new();
    let per_vantage: f64 = targets.iter().map(|t| 1.0 / t.interval.as_secs_f64()).sum();
    let _ = writeln!(
        out,
        "fleet {}: {} Regions, {} vantages, {} targets per vantage, reports every {:?}",
        config.fleet.name.get_ref(),
        config.all_regions().len(),
        config.vantages.len(),
        targets.len(),
        config.report_interval(),
    );
    let width = targets
        .iter()
        .map(|t| t.plan.id.chars().count())
        .max()
        .unwrap_or(0)
        .max(MIN_ID_WIDTH);
    let services = config.services();
    for service in services {
        let own: Vec<&AgentTarget> = targets
            .iter()
            .filter(|t| t.plan.service == service.name)
            .collect();
        let _ = writeln!(out);
        let section = config
            .services
            .iter()
            .find(|s| s.name.get_ref() == &service.name);
        render_heading(&mut out, service, section, &own);
        render_table(&mut out, &own, width);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} {}, {} targets",
        services.len(),
        if services.len() == 1 {
            "service"
        } else {
            "services"
        },
        targets.len()
    );
    let mut total = 0.0;
    for v in &config.vantages {
        // Its control target, when it has one, is probed by this vantage alone.
        let control = config.control_target(v.region.get_ref());
        let own = control.as_ref().map_or(0.0, |c| {
            1.0 / c
                .settings
                .interval
                .map_or(vantage_protocol::config::DEFAULT_PROBE_INTERVAL, |d| d.0)
                .as_secs_f64()
        });
        total += per_vantage + own;
        let _ = writeln!(
            out,
            "vantage {:<16} agent {:<24} probes all {} targets: {:.2} probes/s{}",
            v.region.get_ref(),
            v.agent_id(),
            targets.len(),
            per_vantage + own,
            control
                .map(|c| format!(" (with its control target {})", c.url.get_ref()))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "total: {:.2} probes/s across {} vantages ({:.0} probes/day), reporting to {}",
        total,
        config.vantages.len(),
        total * 86_400.0,
        config
            .aggregator
            .replica_endpoints()
            .iter()
            .map(|e| e.url.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    out
}

/// `service <name>: global <url>; Regions a, b` and, for a `[[services]]` entry, the policy
/// and weight keys it sets over the fleet's.
fn render_heading(
    out: &mut String,
    service: &Service,
    section: Option<&ServiceSection>,
    targets: &[&AgentTarget],
) {
    let global = service
        .fleet
        .global
        .as_ref()
        .map_or("none", |g| g.url.get_ref().as_str());
    let rate: f64 = targets.iter().map(|t| 1.0 / t.interval.as_secs_f64()).sum();
    let _ = writeln!(
        out,
        "service {}: global {global}; Regions {}; {} targets, {rate:.2} probes/s per vantage",
        service.name,
        service.region_names().join(", "),
        targets.len(),
    );
    if let Some(s) = section {
        let policy = policy_keys(&s.policy);
        if !policy.is_empty() {
            let _ = writeln!(out, "  policy over the fleet's: {}", policy.join(", "));
        }
        let weights = weights_keys(&s.weights);
        if !weights.is_empty() {
            let _ = writeln!(out, "  weights over the fleet's: {}", weights.join(", "));
        }
    }
}

fn render_table(out: &mut String, targets: &[&AgentTarget], width: usize) {
    let _ = writeln!(
        out,
        "{:<width$} {:<8} {:>9} {:>9} {:<14} url",
        "target", "kind", "interval", "timeout", "expect"
    );
    for t in targets {
        let (timeout, expect, what) = match &t.probe {
            TargetProbe::Http(spec) => (
                spec.timeouts.overall,
                match spec.kind() {
                    ProbeKind::Http => spec.assertions.status.to_string(),
                    ProbeKind::Tcp if spec.assertions.needs_body() => "banner".to_owned(),
                    ProbeKind::Tcp => "connect".to_owned(),
                    ProbeKind::Grpc => "SERVING".to_owned(),
                },
                match spec.kind() {
                    // http::Uri prints an empty path as `/`; a TCP target has none.
                    ProbeKind::Tcp => spec.url.to_string().trim_end_matches('/').to_owned(),
                    _ => spec.url.to_string(),
                },
            ),
            TargetProbe::Dns(dns) => (
                dns.timeout,
                format!("{} answers", dns.record_type.as_str()),
                dns_description(dns),
            ),
        };
        let _ = writeln!(
            out,
            "{:<width$} {:<8} {:>9} {:>9} {:<14} {}",
            t.plan.id,
            t.plan.kind,
            format!("{:?}", t.interval),
            format!("{timeout:?}"),
            expect,
            what
        );
    }
}

/// `name via resolvers; answer → Region, ...` for the plan.
fn dns_description(dns: &DnsPlan) -> String {
    let via = if dns.resolvers.is_empty() {
        "the system's resolvers".to_owned()
    } else {
        let list: Vec<String> = dns.resolvers.iter().map(ToString::to_string).collect();
        list.join(", ")
    };
    let map: Vec<String> = dns
        .answers
        .iter()
        .map(|(answer, region)| format!("{answer} → {region}"))
        .collect();
    format!("{} via {via}; {}", dns.name, map.join(", "))
}

/// `key = value` of each key present, in the order the section declares them.
macro_rules! set_keys {
    ($section:expr, $($field:ident: $show:expr),* $(,)?) => {{
        let mut keys = Vec::new();
        $(if let Some(v) = &$section.$field {
            keys.push(format!("{} = {}", stringify!($field), $show(v)));
        })*
        keys
    }};
}

fn duration(d: &DurationText) -> String {
    format!("{:?}", d.0)
}

fn shown<T: std::fmt::Display>(v: &T) -> String {
    v.to_string()
}

/// The policy keys a service sets, as written.
fn policy_keys(p: &PolicySection) -> Vec<String> {
    set_keys!(p,
        min_attempts: shown,
        max_failure_ratio: shown,
        latency_quantile: shown,
        max_latency: duration,
        quorum: |q: &vantage_protocol::config::Located<String>| q.get_ref().clone(),
        fail_after: shown,
        recover_after: shown,
        flap_penalty: shown,
        flap_half_life: duration,
        flap_suppress: shown,
        min_healthy: shown,
        max_changes: shown,
        change_window: duration,
    )
}

/// The weight keys a service sets, as written.
fn weights_keys(w: &WeightsSection) -> Vec<String> {
    set_keys!(w,
        quantile: shown,
        ewma_alpha: shown,
        floor: shown,
        dead_band: shown,
        dead_band_ratio: shown,
        latency_tolerance: duration,
        min_interval: duration,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::build_targets;

    const SERVICES: &str = r#"
[fleet]
name = "shop"

[probe]
interval = "10s"

[dns]
resolvers = ["127.0.0.1:5353"]

[[services]]
name = "orders"
global = { url = "https://orders.example.com/status" }

[[services.regions]]
name = "us-east-1"
status_url = "https://o-use1.example.com/status"
dns_answers = ["192.0.2.1"]

[[services]]
name = "payments"
global = { url = "https://payments.example.com/status" }
policy = { fail_after = 1, min_healthy = 2, change_window = "5m" }
weights = { floor = 20 }

[[services.regions]]
name = "us-east-1"
status_url = "https://p-use1.example.com/status"
dns_answers = ["192.0.2.11"]

[[services.regions]]
name = "eu-west-1"
status_url = "https://p-euw1.example.com/status"
probe = { interval = "5s" }
dns_answers = ["192.0.2.12"]

[[vantages]]
region = "us-east-1"

[aggregator]
url = "https://aggregator.example.com"

[agents.auth]
key_id = "k1"
"#;

    #[test]
    fn each_service_has_its_heading_overrides_and_targets() {
        let c = FleetConfig::parse(SERVICES, "fleet.toml").unwrap();
        let t = build_targets(&c).unwrap();
        let plan = render_plan(&c, &t);
        let orders = plan.find("service orders: ").expect(&plan);
        let payments = plan.find("service payments: ").expect(&plan);
        assert!(orders < payments, "{plan}");
        let (orders_part, payments_part) = plan[orders..].split_at(payments - orders);
        assert!(
            orders_part.starts_with(
                "service orders: global https://orders.example.com/status; Regions us-east-1; \
                 3 targets"
            ),
            "{plan}"
        );
        assert!(!orders_part.contains("policy over"), "{plan}");
        assert!(orders_part.contains("orders/dns "), "{plan}");
        assert!(
            orders_part.contains("orders.example.com via 127.0.0.1:5353; 192.0.2.1 → us-east-1"),
            "{plan}"
        );
        assert!(
            payments_part.contains("Regions us-east-1, eu-west-1; 4 targets, 0.50 probes/s"),
            "{plan}"
        );
        assert!(
            payments_part.contains(
                "  policy over the fleet's: fail_after = 1, min_healthy = 2, change_window = 300s"
            ),
            "{plan}"
        );
        assert!(
            payments_part.contains("  weights over the fleet's: floor = 20"),
            "{plan}"
        );
        assert!(
            payments_part.contains("payments/status:eu-west-1 "),
            "{plan}"
        );
        assert!(
            payments_part.contains(
                "payments.example.com via 127.0.0.1:5353; 192.0.2.11 → us-east-1, 192.0.2.12 → \
                 eu-west-1"
            ),
            "{plan}"
        );
        assert!(plan.contains("\n2 services, 7 targets\n"), "{plan}");
        assert!(
            plan.starts_with("fleet shop: 2 Regions, 1 vantages, 7 targets per vantage"),
            "{plan}"
        );
    }

    #[test]
    fn a_single_api_file_is_one_service_named_after_the_fleet() {
        let text = r#"
[fleet]
name = "shop"

[global]
url = "https://api.example.com/status"

[[regions]]
name = "us-east-1"
status_url = "https://use1.example.com/status"

[[vantages]]
region = "us-east-1"

[aggregator]
url = "https://aggregator.example.com"

[agents.auth]
key_id = "k1"
"#;
        let c = FleetConfig::parse(text, "fleet.toml").unwrap();
        let t = build_targets(&c).unwrap();
        let plan = render_plan(&c, &t);
        assert_eq!(plan.matches("\nservice ").count(), 1, "{plan}");
        assert!(
            plan.contains(
                "\nservice shop: global https://api.example.com/status; Regions us-east-1; 2 \
                 targets"
            ),
            "{plan}"
        );
        assert!(!plan.contains("over the fleet's"), "{plan}");
        assert!(plan.contains("\nstatus:us-east-1 "), "{plan}");
        assert!(plan.contains("\n1 service, 2 targets\n"), "{plan}");
    }
}
