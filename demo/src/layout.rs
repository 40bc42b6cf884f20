//! What the demo's fleet is made of: each service in each Region is a unit with its own
//! status endpoint and links in the simulated network, keyed as the fleet file keys it
//! (`payments/eu-west-1` with `--services`, the bare Region for the single-API demo), and the
//! fleet file the agents and replicas read, written from those units (`[[services]]` with
//! `--services`, `[global]` and `[[regions]]` without). A fault addressed to a Region alone
//! covers every service's unit there; `SERVICE:REGION` covers one.

use crate::scenario::{DemoOptions, Fault};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// At most this many services (`--services`).
pub const MAX_SERVICES: usize = 50;

/// The single-API demo's one service, and its fleet's name.
pub const SINGLE_API: &str = "demo-api";

/// `payments/eu-west-1` in a `[[services]]` fleet (`named`), the bare Region otherwise: the
/// unit keys of `vantage_protocol::config::Service::unit`.
pub(crate) fn unit_key(named: bool, service: &str, region: &str) -> String {
    vantage_protocol::config::qualified(named, service, region)
}

/// One service in one Region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// `payments/eu-west-1`, or `eu-west-1` for the single-API demo.
    pub key: String,
    /// `None` for the single-API demo.
    pub service: Option<String>,
    pub region: String,
}

/// `--services orders,payments,rates`: 1 to [`MAX_SERVICES`] distinct service names.
pub fn parse_services(text: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = text.split(',').map(|s| s.trim().to_owned()).collect();
    if names.iter().all(String::is_empty) {
        return Err(format!(
            "--services {text:?}: give 1 to {MAX_SERVICES} comma-separated service names, e.g. \
             --services orders,payments"
        ));
    }
    if names.iter().any(String::is_empty) {
        return Err(format!(
            "--services {text:?}: an empty name between commas; give names like orders,payments"
        ));
    }
    check_services(&names)?;
    Ok(names)
}

/// Service names as a fleet file accepts them (letters, digits, '-', '_', '.'; 1 to 64
/// characters; not only dots), at most [`MAX_SERVICES`], none twice. Empty: single API.
pub(crate) fn check_services(names: &[String]) -> Result<(), String> {
    if names.len() > MAX_SERVICES {
        return Err(format!(
            "--services lists {} services: at most {MAX_SERVICES}",
            names.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for name in names {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !name.chars().all(|c| c == '.');
        if !valid {
            return Err(format!(
                "--services: {name:?} is not a service name (letters, digits, '-', '_' and '.', \
                 1 to 64 characters)"
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(format!("--services: {name:?} is listed twice"));
        }
    }
    Ok(())
}

impl DemoOptions {
    /// A `[[services]]` fleet: unit keys and events name the service.
    pub fn named(&self) -> bool {
        !self.services.is_empty()
    }

    /// The services, or the single API's one.
    pub fn service_names(&self) -> Vec<String> {
        if self.named() {
            self.services.clone()
        } else {
            vec![SINGLE_API.to_owned()]
        }
    }

    /// The key of `service` in `region`, as the fleet file and the aggregator spell it.
    pub fn unit_key(&self, service: &str, region: &str) -> String {
        unit_key(self.named(), service, region)
    }

    /// The service to name in an event about `service` (as a decision spells it): none for the
    /// single-API demo, whose events stay as they were.
    pub(crate) fn event_service<'a>(&self, service: &'a str) -> Option<&'a str> {
        (self.named() && !service.is_empty()).then_some(service)
    }

    /// Every unit, service by service, each service's Regions in `--regions` order.
    pub fn units(&self) -> Vec<Unit> {
        let mut out = Vec::new();
        for service in self.service_names() {
            for region in &self.regions {
                out.push(Unit {
                    key: self.unit_key(&service, region),
                    service: self.named().then(|| service.clone()),
                    region: region.clone(),
                });
            }
        }
        out
    }

    /// The unit with this key.
    pub fn unit(&self, key: &str) -> Option<Unit> {
        self.units().into_iter().find(|u| u.key == key)
    }

    /// Service (the single API's name without `--services`) → its units' keys.
    pub fn units_by_service(&self) -> BTreeMap<String, Vec<String>> {
        self.service_names()
            .into_iter()
            .map(|s| {
                let keys = self.regions.iter().map(|r| self.unit_key(&s, r)).collect();
                (s, keys)
            })
            .collect()
    }

    /// The units a Region fault reaches: the named service's unit in the Region, or every
    /// service's. Empty for vantage and replica faults.
    pub fn fault_units(&self, fault: &Fault) -> Vec<String> {
        match fault {
            Fault::Fail { region, service }
            | Fault::Recover { region, service }
            | Fault::Slow {
                region, service, ..
            }
            | Fault::Degrade {
                region, service, ..
            } => self
                .units()
                .into_iter()
                .filter(|u| &u.region == region)
                .filter(|u| service.is_none() || u.service == *service)
                .map(|u| u.key)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Where one vantage's agent reaches the fleet: a link per unit and a global endpoint per
/// service.
pub(crate) struct Links {
    /// Unit key → status URL through the link.
    pub(crate) per_unit: BTreeMap<String, String>,
    /// Service (or [`SINGLE_API`]) → its global URL through the vantage's global endpoint.
    pub(crate) global: BTreeMap<String, String>,
    /// Every vantage's control target URL (through that vantage's own link), by vantage: the
    /// same map in every vantage's `Links`, since the fleet file lists every vantage.
    pub(crate) controls: BTreeMap<String, String>,
}

/// The demo's control target: a status endpoint outside every Region, reached through each
/// vantage's own link, so a vantage whose network drops connections fails it too.
pub(crate) const CONTROL_UNIT: &str = "vantage-control";

/// The fleet file one vantage sees: its own links as the status URLs and global URLs.
/// `aggregator`: the `[aggregator]` section's `url` or `replicas` entry.
pub(crate) fn fleet_text(
    options: &DemoOptions,
    links: &Links,
    aggregator: &str,
    key_dir: &Path,
) -> String {
    let interval = format!("{}ms", options.probe_interval.as_millis());
    let name = if options.named() { "demo" } else { SINGLE_API };
    let mut t = format!(
        r#"
[fleet]
name = "{name}"
report_interval = "{interval}"
[probe]
interval = "{interval}"
timeout = "3s"
first_byte_timeout = "2s"
[aggregator]
{aggregator}[agents.auth]
key_id = "demo-{first}"
"#,
        first = options.vantages[0],
    );
    if options.named() {
        for service in &options.services {
            t += &format!(
                "[[services]]\nname = \"{service}\"\nglobal = {{ url = \"{}\" }}\n",
                links.global[service]
            );
            for r in &options.regions {
                t += &format!(
                    "[[services.regions]]\nname = \"{r}\"\nstatus_url = \"{}\"\n",
                    links.per_unit[&options.unit_key(service, r)]
                );
            }
        }
    } else {
        t += &format!("[global]\nurl = \"{}\"\n", links.global[SINGLE_API]);
        for r in &options.regions {
            t += &format!(
                "[[regions]]\nname = \"{r}\"\nstatus_url = \"{}\"\n",
                links.per_unit[r]
            );
        }
    }
    // Each vantage signs with its own key, which may report for that vantage only.
    for v in &options.vantages {
        t += &format!("[[vantages]]\nregion = \"{v}\"\nkey_id = \"demo-{v}\"\n");
        if let Some(control) = links.controls.get(v) {
            t += &format!("control_url = \"{control}\"\n");
        }
        t += &format!(
            "[aggregator.keys.\"demo-{v}\"]\nfile = {:?}\nvantages = [\"{v}\"]\n",
            key_dir.join(format!("{v}.key")).display().to_string()
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{parse_flaky, parse_region_at, parse_slow};
    use vantage_protocol::config::FleetConfig;

    fn with_services(services: &[&str]) -> DemoOptions {
        DemoOptions {
            services: services.iter().map(|s| s.to_string()).collect(),
            faults: Vec::new(),
            ..DemoOptions::embedded_default()
        }
    }

    #[test]
    fn services_are_one_to_fifty_distinct_valid_names() {
        assert_eq!(
            parse_services(" orders, payments ,rates").unwrap(),
            ["orders", "payments", "rates"]
        );
        for (bad, says) in [
            ("", "1 to 50"),
            (",", "1 to 50"),
            ("orders,,rates", "empty name"),
            ("orders,payments,orders", "\"orders\" is listed twice"),
            ("orders,pay ments", "\"pay ments\" is not a service name"),
            ("orders,a:b", "\"a:b\" is not a service name"),
            ("orders,a/b", "\"a/b\" is not a service name"),
            ("...", "is not a service name"),
        ] {
            let err = parse_services(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        let fifty: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
        assert_eq!(parse_services(&fifty.join(",")).unwrap().len(), 50);
        let err = parse_services(&format!("{},s50", fifty.join(","))).unwrap_err();
        assert!(
            err.contains("51 services") && err.contains("at most 50"),
            "{err}"
        );
        assert!(parse_services(&"x".repeat(65)).is_err());
        assert!(parse_services(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn each_service_in_each_region_is_a_unit_and_faults_reach_one_or_all() {
        let o = with_services(&["orders", "payments"]);
        let keys: Vec<String> = o.units().into_iter().map(|u| u.key).collect();
        assert_eq!(
            keys,
            [
                "orders/us-east-1",
                "orders/eu-west-1",
                "orders/ap-southeast-1",
                "payments/us-east-1",
                "payments/eu-west-1",
                "payments/ap-southeast-1"
            ]
        );
        let fault = |s: &str| parse_region_at("--fail", s, false).unwrap().fault;
        assert_eq!(
            o.fault_units(&fault("payments:eu-west-1@5")),
            ["payments/eu-west-1"]
        );
        assert_eq!(
            o.fault_units(&fault("eu-west-1@5")),
            ["orders/eu-west-1", "payments/eu-west-1"]
        );
        let slow = parse_slow("orders:us-east-1@5:+300").unwrap().fault;
        assert_eq!(o.fault_units(&slow), ["orders/us-east-1"]);
        assert!(o
            .fault_units(&parse_flaky("payments:eu-west-1@5:0.5").unwrap().fault)
            .is_empty());
        // The single-API demo: units are the bare Regions, as before services.
        let single = DemoOptions::embedded_default();
        assert!(!single.named());
        assert_eq!(single.fault_units(&fault("eu-west-1@5")), ["eu-west-1"]);
        assert_eq!(
            single.units_by_service()[SINGLE_API],
            ["us-east-1", "eu-west-1", "ap-southeast-1"]
        );
    }

    #[test]
    fn faults_name_a_known_service_and_region_or_say_which_exist() {
        let check = |services: &[&str], flag: &str, spec: &str| {
            let mut o = with_services(services);
            o.faults.push(match flag {
                "--slow" => parse_slow(spec).unwrap(),
                "--flaky" => parse_flaky(spec).unwrap(),
                f => parse_region_at(
                    if f == "--fail" { "--fail" } else { "--recover" },
                    spec,
                    f == "--recover",
                )
                .unwrap(),
            });
            o.validate()
        };
        let both = &["orders", "payments"];
        assert!(check(both, "--fail", "payments:eu-west-1@5").is_ok());
        assert!(check(both, "--fail", "eu-west-1@5").is_ok());
        assert!(check(both, "--recover", "orders:eu-west-1@5").is_ok());
        assert!(check(both, "--slow", "orders:us-east-1@5:+200").is_ok());
        assert!(check(both, "--flaky", "payments:us-east-1@5:0.5").is_ok());
        let err = check(both, "--fail", "billing:eu-west-1@5").unwrap_err();
        assert!(
            err.contains("\"billing\"") && err.contains("orders, payments"),
            "{err}"
        );
        let err = check(both, "--slow", "payments:mars-1@5:+100").unwrap_err();
        assert!(
            err.contains("\"mars-1\"") && err.contains("us-east-1, eu-west-1, ap-southeast-1"),
            "{err}"
        );
        let err = check(both, "--flaky", "rates:us-east-1@5:0.5").unwrap_err();
        assert!(err.contains("\"rates\""), "{err}");
        let err = check(&[], "--fail", "payments:eu-west-1@5").unwrap_err();
        assert!(err.contains("--services"), "{err}");
        let mut o = with_services(&["orders", "orders"]);
        assert!(o.validate().unwrap_err().contains("twice"));
        o.services = (0..51).map(|i| format!("s{i}")).collect();
        assert!(o.validate().unwrap_err().contains("at most 50"));
    }

    #[test]
    fn the_fleet_file_is_a_services_fleet_with_a_unit_per_service_and_region() {
        let o = with_services(&["orders", "payments", "rates"]);
        let mut per_unit = BTreeMap::new();
        for (i, u) in o.units().into_iter().enumerate() {
            per_unit.insert(u.key, format!("http://127.0.0.1:{}/status", 20000 + i));
        }
        let global = o
            .service_names()
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, format!("http://127.0.0.1:{}/status", 30000 + i)))
            .collect();
        let links = Links {
            per_unit,
            global,
            controls: BTreeMap::new(),
        };
        let dir = std::env::temp_dir();
        let text = fleet_text(&o, &links, "url = \"http://127.0.0.1:1\"\n", &dir);
        let fleet = FleetConfig::parse(&text, "demo fleet").expect(&text);
        let services: Vec<&str> = fleet.services().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(services, ["orders", "payments", "rates"]);
        let payments = fleet.service("payments").unwrap();
        assert_eq!(payments.unit("eu-west-1"), "payments/eu-west-1");
        assert_eq!(
            payments.region_names(),
            ["us-east-1", "eu-west-1", "ap-southeast-1"]
        );
        let ids: Vec<String> = fleet.targets().into_iter().map(|t| t.id).collect();
        assert!(
            ids.contains(&"payments/status:eu-west-1".to_owned()),
            "{ids:?}"
        );
        assert!(ids.contains(&"orders/global".to_owned()), "{ids:?}");
        // Every unit's status URL is its own link.
        let url = |id: &str| {
            fleet
                .targets()
                .into_iter()
                .find(|t| t.id == id)
                .map(|t| t.url.get_ref().clone())
        };
        assert_ne!(
            url("payments/status:eu-west-1"),
            url("orders/status:eu-west-1")
        );

        // Without --services the file is the single-API form, as before.
        let single = DemoOptions::embedded_default();
        let links = Links {
            per_unit: single
                .regions
                .iter()
                .map(|r| (r.clone(), format!("http://127.0.0.1:1/{r}")))
                .collect(),
            global: BTreeMap::from([(SINGLE_API.to_owned(), "http://127.0.0.1:2/".into())]),
            controls: single
                .vantages
                .iter()
                .map(|v| (v.clone(), format!("http://127.0.0.1:3/{v}")))
                .collect(),
        };
        let text = fleet_text(&single, &links, "url = \"http://127.0.0.1:1\"\n", &dir);
        let fleet = FleetConfig::parse(&text, "demo fleet").expect(&text);
        assert!(!fleet.has_named_services());
        assert_eq!(fleet.services()[0].name, SINGLE_API);
        // Each vantage probes its own control target.
        let control = fleet.control_target("eu-west-1").expect("a control target");
        assert_eq!(control.url.get_ref(), "http://127.0.0.1:3/eu-west-1");
    }
}
