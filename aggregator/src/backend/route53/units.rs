//! The units the backend drives: one service in one Region, keyed as decisions are
//! (`payments/eu-west-1`, or the bare Region for a single-API fleet), each with its weighted
//! record set (zone, name, type), its record's set identifier and its health check. Built once
//! from every service's [`Route53Config`], so observe, apply and the heartbeat work over one
//! flat map whatever the number of services, and AWS calls are grouped by record set and zone
//! rather than made once per service.

use super::config::{RegionRecord, Route53Config};
use crate::backend::BackendError;
use std::collections::BTreeMap;
use vantage_protocol::config::FleetConfig;

/// One named service's records, as `[[services]]` gives them (each service's
/// `[services.route53]` merged with the fleet's `[route53]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecords {
    /// The service's name: unit keys `<service>/<region>` and the health metric's `Service`
    /// dimension.
    pub service: String,
    pub config: Route53Config,
}

impl ServiceRecords {
    /// Every named service's records in `fleet` (its `[services.route53]` over the fleet's
    /// `[route53]`). A service without `[services.route53]` would have no record to move and
    /// its decisions would go nowhere: refused, naming the service.
    pub fn of_fleet(fleet: &FleetConfig) -> Result<Vec<ServiceRecords>, BackendError> {
        fleet
            .services()
            .iter()
            .map(|service| {
                let section = service.fleet.route53.as_ref().ok_or_else(|| {
                    BackendError::Config(format!(
                        "service {} has no [services.route53]: the Route 53 backend moves each \
                         service's own weighted records; give it record_name and a \
                         [services.route53.regions.<region>] set_identifier per Region",
                        service.name
                    ))
                })?;
                Ok(ServiceRecords {
                    service: service.name.clone(),
                    config: Route53Config::from_section(section)?,
                })
            })
            .collect()
    }
}

/// One weighted record set: every Region's record of one service (same name and type).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RecordSetKey {
    /// Bare hosted zone id.
    pub zone: String,
    /// FQDN, lower case, with the trailing dot.
    pub name: String,
    /// `A`, `AAAA` or `CNAME`.
    pub rr_type: String,
}

/// One service in one Region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unit {
    /// The named service; `None` in a single-API fleet (no `Service` dimension, bare keys).
    pub service: Option<String>,
    pub region: String,
    pub set: RecordSetKey,
    pub record: RegionRecord,
}

impl Unit {
    /// How messages name the unit: `Region eu-west-1`, or `service payments, Region
    /// eu-west-1`.
    pub fn label(&self) -> String {
        match &self.service {
            Some(s) => format!("service {s}, Region {}", self.region),
            None => format!("Region {}", self.region),
        }
    }
}

/// The key decisions and backends use for `service` in `region` (see
/// `vantage_protocol::config::Service::unit`).
pub(super) fn unit_key(service: Option<&str>, region: &str) -> String {
    match service {
        Some(s) => format!("{s}/{region}"),
        None => region.to_owned(),
    }
}

/// The units of a single-API fleet: one per Region of `config`, keyed by the bare Region.
pub(super) fn single(config: &Route53Config) -> BTreeMap<String, Unit> {
    let set = record_set(config);
    config
        .regions
        .iter()
        .map(|(region, record)| {
            let unit = Unit {
                service: None,
                region: region.clone(),
                set: set.clone(),
                record: record.clone(),
            };
            (region.clone(), unit)
        })
        .collect()
}

fn record_set(config: &Route53Config) -> RecordSetKey {
    RecordSetKey {
        zone: config.hosted_zone_id.clone(),
        name: super::list::normalise(&config.record_name),
        rr_type: config.record_type.clone(),
    }
}

/// Every unit of named `services` by unit key. Two units on one record (same set, same set
/// identifier) would fight over its weight, so that is refused, as are services whose shared
/// settings (health mode, replica) differ: they come from the one `[route53]` section.
pub(super) fn units(services: &[ServiceRecords]) -> Result<BTreeMap<String, Unit>, BackendError> {
    let mut units = BTreeMap::new();
    let mut owners: BTreeMap<(RecordSetKey, String), String> = BTreeMap::new();
    let first = services.first().map(|s| &s.config);
    for ServiceRecords { service, config } in services {
        if first.is_some_and(|f| f.health != config.health || f.replica != config.replica) {
            return Err(BackendError::Config(format!(
                "service {service} drives health differently from the others: the health mode, \
                 namespace and replica are the fleet's [route53] settings"
            )));
        }
        let set = record_set(config);
        for (region, record) in &config.regions {
            let unit = Unit {
                service: Some(service.clone()),
                region: region.clone(),
                set: set.clone(),
                record: record.clone(),
            };
            let owner = (set.clone(), record.set_identifier.clone());
            if let Some(other) = owners.insert(owner, unit.label()) {
                return Err(BackendError::Config(format!(
                    "record {} {} {:?} is both {other}'s and {}'s: give each its own record",
                    set.name,
                    set.rr_type,
                    record.set_identifier,
                    unit.label()
                )));
            }
            units.insert(unit_key(Some(service), region), unit);
        }
    }
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::route53::{HealthMode, RetryPolicy};
    use std::time::Duration;

    fn config(record_name: &str, regions: &[(&str, &str)]) -> Route53Config {
        Route53Config {
            hosted_zone_id: "Z1".into(),
            record_name: record_name.into(),
            record_type: "CNAME".into(),
            regions: regions
                .iter()
                .map(|(r, set)| {
                    let record = RegionRecord {
                        set_identifier: (*set).to_owned(),
                        health_check_id: None,
                    };
                    (r.to_string(), record)
                })
                .collect(),
            health: HealthMode::DataPlane {
                namespace: "Vantage".into(),
                metric_name: "RegionHealthy".into(),
            },
            insync_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            replica: None,
        }
    }

    fn named(service: &str, config: Route53Config) -> ServiceRecords {
        ServiceRecords {
            service: service.into(),
            config,
        }
    }

    #[test]
    fn units_are_keyed_like_decisions_and_never_share_a_record() {
        let single = single(&config("api.example.com", &[("eu-west-1", "e")]));
        assert_eq!(single["eu-west-1"].set.name, "api.example.com.");
        assert_eq!(single.keys().collect::<Vec<_>>(), ["eu-west-1"]);
        assert_eq!(single["eu-west-1"].label(), "Region eu-west-1");
        let two = units(&[
            named(
                "orders",
                config("orders.example.com.", &[("eu-west-1", "e")]),
            ),
            named(
                "payments",
                config("payments.example.com.", &[("eu-west-1", "e")]),
            ),
        ])
        .unwrap();
        assert_eq!(
            two.keys().collect::<Vec<_>>(),
            ["orders/eu-west-1", "payments/eu-west-1"]
        );
        assert_eq!(
            two["payments/eu-west-1"].label(),
            "service payments, Region eu-west-1"
        );
        // Same record name: one record set, so the set identifiers must differ.
        let err = units(&[
            named("a", config("x.example.com.", &[("eu-west-1", "e")])),
            named("b", config("x.example.com.", &[("us-east-1", "e")])),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("both service a, Region eu-west-1's"),
            "{err}"
        );
        let mut other = config("b.example.com.", &[("eu-west-1", "e")]);
        other.health = HealthMode::ControlPlane;
        let err = units(&[
            named("a", config("a.example.com.", &[("eu-west-1", "e")])),
            named("b", other),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("service b"), "{err}");
    }
}
