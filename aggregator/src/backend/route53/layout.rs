//! The objects a fleet needs in Route 53, CloudWatch and DynamoDB, computed from the fleet file
//! alone (no AWS call, no clock), so `check-config` can print it offline, `plan` can compare it
//! with AWS and `vantage aggregator bootstrap` can create what is missing. Per unit (a Region
//! of a single-API fleet, or one service in one Region with `[[services]]`) and per voter
//! (each replica, or the one aggregator): a CloudWatch alarm in the voter's own AWS Region on
//! its `RegionHealthy` metric, and a CLOUDWATCH_METRIC health check on that alarm. With
//! replicas, a CALCULATED check per unit counts their votes (majority) and guards the unit's
//! weighted record; with one aggregator its one check guards the record directly. A named
//! service's objects carry its name (alarm `vantage-<fleet>-<service>-<region>`, the metric's
//! `Service` dimension, CallerReferences `vantage:<fleet>:<service>:<region>:...`); a
//! single-API fleet's are named as they always were. Health checks are found again by a
//! deterministic CallerReference, alarms by name, so creating the layout twice finds the first
//! copy instead of making a second.

use super::config::{HealthMode, Route53Config};
use super::data_plane::{REGION_DIMENSION, REPLICA_DIMENSION, SERVICE_DIMENSION};
use crate::backend::BackendError;
use std::fmt;
use vantage_protocol::config::{FleetConfig, Route53Health, Route53Section};

/// The alarm's period: CLOUDWATCH_METRIC checks need standard resolution, so 60 s at least.
pub const ALARM_PERIOD_SECS: i32 = 60;
/// One period below 1 is enough: the aggregator already applied its hysteresis.
pub const ALARM_EVALUATION_PERIODS: i32 = 1;
/// The metric is 1 in service, 0 out: "Minimum < 1" means out at least once in the minute.
pub const ALARM_THRESHOLD: f64 = 1.0;
/// A silent voter makes its alarm INSUFFICIENT_DATA (not ALARM), and its health check
/// (`InsufficientDataHealthStatus = LastKnownStatus`) keeps its last vote.
pub const ALARM_TREAT_MISSING_DATA: &str = "missing";
/// Route 53 caps CallerReference at 64 characters.
const MAX_CALLER_REFERENCE: usize = 64;
/// Where the single aggregator's CloudWatch lives when `[route53] aws_region` is not set.
const DEFAULT_AWS_REGION: &str = "us-east-1";

/// One CloudWatch alarm on a voter's health metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmSpec {
    /// `vantage-<fleet>-<region>-<replica>`, or `vantage-<fleet>-<region>` for one aggregator;
    /// a named service's name comes after the fleet's.
    pub name: String,
    /// The AWS Region whose CloudWatch holds the metric and the alarm.
    pub aws_region: String,
    pub namespace: String,
    pub metric_name: String,
    /// (name, value): `Region`, `Service` for a named service, and `Replica` for a replica.
    pub dimensions: Vec<(String, String)>,
}

/// One voter's say on one Region: its alarm and the CLOUDWATCH_METRIC health check on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The replica id; `None` for the single aggregator.
    pub replica: Option<String>,
    pub alarm: AlarmSpec,
    /// The health check's CallerReference.
    pub caller_reference: String,
}

/// The CALCULATED check that counts a Region's replica votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MajorityCheck {
    pub caller_reference: String,
    /// `count / 2 + 1` of the replicas' checks must be healthy.
    pub health_threshold: i32,
}

/// One unit's objects: a Region's, or one service's in one Region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionLayout {
    /// The named service (`None` in a single-API fleet).
    pub service: Option<String>,
    pub region: String,
    /// The unit's weighted record set (None without Route 53 records).
    pub records: Option<RecordSet>,
    /// Its weighted record's SetIdentifier (None without a `[route53]` section).
    pub set_identifier: Option<String>,
    /// Data plane: one per voter. Control plane: none.
    pub votes: Vec<Vote>,
    /// Replicas: the check the record uses. One aggregator: None (the vote's check is).
    pub majority: Option<MajorityCheck>,
    /// Control plane: the configured CALCULATED check the aggregator forces.
    pub forced_check_id: Option<String>,
}

impl RegionLayout {
    /// The CallerReference of the check the Region's record must use (data plane).
    pub fn record_check_reference(&self) -> Option<&str> {
        match (&self.majority, self.votes.as_slice()) {
            (Some(m), _) => Some(&m.caller_reference),
            (None, [one]) => Some(&one.caller_reference),
            _ => None,
        }
    }
}

/// The weighted records the Regions' entries name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordSet {
    pub hosted_zone_id: String,
    pub record_name: String,
    pub record_type: String,
}

/// The replicas' lease table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTable {
    pub table: String,
    pub aws_region: String,
}

/// Everything a fleet needs in AWS for its health votes and failover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub fleet: String,
    /// `[route53] health` is data-plane (votes) rather than control-plane (forced checks).
    pub data_plane: bool,
    /// How many voters per Region: the replicas, or 1.
    pub voters: usize,
    /// A single-API fleet's records (present with a `[route53]` section); with services each
    /// unit's are in [`RegionLayout::records`].
    pub records: Option<RecordSet>,
    /// Every unit, by service then Region.
    pub regions: Vec<RegionLayout>,
    pub lease: Option<LeaseTable>,
}

/// One service as the layout sees it: its name (when named), its records' configuration and
/// its Regions.
struct ServicePart {
    name: Option<String>,
    route53: Option<Route53Config>,
    regions: Vec<String>,
}

/// The layout of a fleet file with replicas or Route 53 records (`[route53]`, or a service's
/// `[services.route53]`); `None` for a fleet that has neither (nothing in AWS to lay out).
pub fn layout(fleet: &FleetConfig) -> Result<Option<Layout>, BackendError> {
    let a = &fleet.aggregator;
    let parts = service_parts(fleet)?;
    let any_records = parts.iter().any(|p| p.route53.is_some());
    if !any_records && a.replicas.is_empty() {
        return Ok(None);
    }
    let fleet_name = fleet.fleet.name.get_ref().clone();
    let first = parts.iter().find_map(|p| p.route53.as_ref());
    let health = match first {
        Some(c) => c.health.clone(),
        None => shared_health(fleet.route53.as_ref()),
    };
    let (namespace, metric_name) = match &health {
        HealthMode::ControlPlane => (String::new(), String::new()),
        HealthMode::DataPlane {
            namespace,
            metric_name,
        } => (namespace.clone(), metric_name.clone()),
    };
    let data_plane = !matches!(health, HealthMode::ControlPlane);
    // The single aggregator publishes through the Route 53 clients' Region.
    let single_region = fleet
        .route53
        .as_ref()
        .or_else(|| {
            fleet
                .services()
                .iter()
                .find_map(|s| s.fleet.route53.as_ref())
        })
        .and_then(|s| s.aws_region.clone())
        .unwrap_or_else(|| DEFAULT_AWS_REGION.to_owned());
    let voters: Vec<(Option<String>, String)> = if a.replicas.is_empty() {
        vec![(None, single_region)]
    } else {
        a.replicas
            .iter()
            .map(|r| (Some(r.id.get_ref().clone()), r.region.get_ref().clone()))
            .collect()
    };
    let mut regions = Vec::new();
    for part in &parts {
        let records = part.route53.as_ref().map(|c| RecordSet {
            hosted_zone_id: c.hosted_zone_id.clone(),
            record_name: c.record_name.clone(),
            record_type: c.record_type.clone(),
        });
        for region in &part.regions {
            let record = part.route53.as_ref().and_then(|c| c.regions.get(region));
            let unit = Unit {
                fleet: &fleet_name,
                service: part.name.as_deref(),
                region,
            };
            let votes = if data_plane {
                voters
                    .iter()
                    .map(|(replica, aws_region)| {
                        vote(
                            &unit,
                            replica.as_deref(),
                            aws_region,
                            &namespace,
                            &metric_name,
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let majority = (data_plane && !a.replicas.is_empty()).then(|| MajorityCheck {
                caller_reference: caller_reference(&unit.parts(&["majority"])),
                health_threshold: majority(voters.len()),
            });
            regions.push(RegionLayout {
                service: part.name.clone(),
                set_identifier: record.map(|r| r.set_identifier.clone()),
                records: record.and(records.clone()),
                forced_check_id: if data_plane {
                    None
                } else {
                    record.and_then(|r| r.health_check_id.clone())
                },
                region: region.clone(),
                votes,
                majority,
            });
        }
    }
    // Services in name order, as decisions list them (a single-API fleet keeps its order).
    regions.sort_by(|x, y| x.service.cmp(&y.service));
    let lease = a.lease.as_ref().map(|l| LeaseTable {
        table: l.table.get_ref().clone(),
        aws_region: l
            .region
            .as_ref()
            .map(|r| r.get_ref().clone())
            .or_else(|| a.replicas.first().map(|r| r.region.get_ref().clone()))
            .unwrap_or_else(|| DEFAULT_AWS_REGION.to_owned()),
    });
    let single_records = match parts.as_slice() {
        [ServicePart {
            name: None,
            route53: Some(c),
            ..
        }] => Some(RecordSet {
            hosted_zone_id: c.hosted_zone_id.clone(),
            record_name: c.record_name.clone(),
            record_type: c.record_type.clone(),
        }),
        _ => None,
    };
    Ok(Some(Layout {
        fleet: fleet_name,
        data_plane,
        voters: voters.len(),
        records: single_records,
        regions,
        lease,
    }))
}

/// Each service's part: the single-API fleet as one unnamed part, or every `[[services]]`
/// entry. A part's Regions are those its records map (all its Regions without records).
fn service_parts(fleet: &FleetConfig) -> Result<Vec<ServicePart>, BackendError> {
    let part = |name: Option<String>, view: &FleetConfig| -> Result<ServicePart, BackendError> {
        let route53 = view
            .route53
            .as_ref()
            .map(Route53Config::from_section)
            .transpose()?;
        let regions = match &route53 {
            Some(c) => c.regions.keys().cloned().collect(),
            None => view
                .regions
                .iter()
                .map(|r| r.name.get_ref().clone())
                .collect(),
        };
        Ok(ServicePart {
            name,
            route53,
            regions,
        })
    };
    if !fleet.has_named_services() {
        return Ok(vec![part(None, fleet)?]);
    }
    fleet
        .services()
        .iter()
        .map(|s| part(Some(s.name.clone()), &s.fleet))
        .collect()
}

/// The health mode of the fleet's `[route53]` when no service has records to take it from.
fn shared_health(section: Option<&Route53Section>) -> HealthMode {
    let control = section
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.get_ref().parse::<Route53Health>().ok())
        == Some(Route53Health::ControlPlane);
    if control {
        return HealthMode::ControlPlane;
    }
    HealthMode::DataPlane {
        namespace: section
            .and_then(|s| s.metric_namespace.as_ref())
            .map_or(super::DEFAULT_METRIC_NAMESPACE.to_owned(), |n| {
                n.get_ref().clone()
            }),
        metric_name: super::DEFAULT_METRIC_NAME.to_owned(),
    }
}

/// Whose objects are being named: the fleet, the service (when named) and the Region.
struct Unit<'a> {
    fleet: &'a str,
    service: Option<&'a str>,
    region: &'a str,
}

impl Unit<'_> {
    /// `fleet[:service]:region` followed by `rest`, a CallerReference's parts.
    fn parts<'b>(&'b self, rest: &[&'b str]) -> Vec<&'b str> {
        let mut parts = vec![self.fleet];
        parts.extend(self.service);
        parts.push(self.region);
        parts.extend_from_slice(rest);
        parts
    }

    /// `vantage-fleet[-service]-region`, an alarm name's stem.
    fn alarm_stem(&self) -> String {
        match self.service {
            Some(s) => format!("vantage-{}-{s}-{}", self.fleet, self.region),
            None => format!("vantage-{}-{}", self.fleet, self.region),
        }
    }
}

/// A majority of `count` voters: more than half, so two halves can never both decide.
pub fn majority(count: usize) -> i32 {
    i32::try_from(count / 2 + 1).unwrap_or(i32::MAX)
}

fn vote(
    unit: &Unit,
    replica: Option<&str>,
    aws_region: &str,
    namespace: &str,
    metric_name: &str,
) -> Vote {
    let mut dimensions = vec![(REGION_DIMENSION.to_owned(), unit.region.to_owned())];
    if let Some(service) = unit.service {
        dimensions.push((SERVICE_DIMENSION.to_owned(), service.to_owned()));
    }
    let (name, caller_reference) = match replica {
        Some(id) => {
            dimensions.push((REPLICA_DIMENSION.to_owned(), id.to_owned()));
            (
                format!("{}-{id}", unit.alarm_stem()),
                caller_reference(&unit.parts(&["vote", id])),
            )
        }
        None => (unit.alarm_stem(), caller_reference(&unit.parts(&["vote"]))),
    };
    Vote {
        replica: replica.map(str::to_owned),
        alarm: AlarmSpec {
            name,
            aws_region: aws_region.to_owned(),
            namespace: namespace.to_owned(),
            metric_name: metric_name.to_owned(),
            dimensions,
        },
        caller_reference,
    }
}

/// `vantage:<part>:<part>...`: ':' appears in no fleet, service, Region or replica name, so
/// two different objects never share a reference. Beyond Route 53's 64 characters the tail is
/// replaced by a stable hash of the whole (FNV-1a: the same on every build and platform).
pub fn caller_reference(parts: &[&str]) -> String {
    let full = format!("vantage:{}", parts.join(":"));
    if full.len() <= MAX_CALLER_REFERENCE {
        return full;
    }
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let keep = MAX_CALLER_REFERENCE - 17;
    // Names are ASCII (validated), so any byte index is a character boundary.
    format!("{}~{hash:016x}", &full[..keep])
}

impl Layout {
    /// The AWS Regions whose CloudWatch holds alarms, each once, sorted.
    pub fn alarm_regions(&self) -> Vec<String> {
        let mut regions: Vec<String> = self
            .regions
            .iter()
            .flat_map(|r| r.votes.iter().map(|v| v.alarm.aws_region.clone()))
            .collect();
        regions.sort();
        regions.dedup();
        regions
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let voters = if self.voters > 1 || self.regions.iter().any(|r| r.majority.is_some()) {
            format!(
                "{} replicas, each voting from its own Region; a Region is healthy while {} of {} votes say so",
                self.voters,
                majority(self.voters),
                self.voters
            )
        } else {
            "one aggregator".to_owned()
        };
        writeln!(f, "AWS layout of fleet {} ({voters}):", self.fleet)?;
        let named = self.regions.iter().any(|r| r.service.is_some());
        if let Some(r) = &self.records {
            writeln!(
                f,
                "  records: {} {} in hosted zone {}",
                r.record_name, r.record_type, r.hosted_zone_id
            )?;
        } else if !named {
            writeln!(
                f,
                "  records: none ([route53] is not set; votes are published, nothing moves traffic)"
            )?;
        }
        let mut service = None;
        for region in &self.regions {
            if named && service != Some(&region.service) {
                service = Some(&region.service);
                let name = region.service.as_deref().unwrap_or_default();
                match &region.records {
                    Some(r) => writeln!(
                        f,
                        "  service {name}: records {} {} in hosted zone {}",
                        r.record_name, r.record_type, r.hosted_zone_id
                    )?,
                    None => writeln!(
                        f,
                        "  service {name}: records none (no [services.route53]; votes are published, nothing moves its traffic)"
                    )?,
                }
            }
            let record = region
                .set_identifier
                .as_deref()
                .map_or(String::new(), |s| format!(" (record set {s:?})"));
            let unit = match &region.service {
                Some(s) => format!("{s}/{}", region.region),
                None => region.region.clone(),
            };
            writeln!(f, "  {unit}{record}")?;
            if let Some(id) = &region.forced_check_id {
                writeln!(
                    f,
                    "    CALCULATED health check {id} forced by the aggregator (control-plane health)"
                )?;
            }
            for vote in &region.votes {
                let a = &vote.alarm;
                let dims = a
                    .dimensions
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                writeln!(
                    f,
                    "    alarm {} in {}: {}/{}{{{dims}}} Minimum < 1 over 60 s, missing data INSUFFICIENT_DATA",
                    a.name, a.aws_region, a.namespace, a.metric_name
                )?;
                writeln!(
                    f,
                    "    CLOUDWATCH_METRIC health check {:?} on it, insufficient data: last known status",
                    vote.caller_reference
                )?;
            }
            if let Some(m) = &region.majority {
                writeln!(
                    f,
                    "    CALCULATED health check {:?}: healthy while {} of its {} children are",
                    m.caller_reference,
                    m.health_threshold,
                    region.votes.len()
                )?;
            }
            if let (Some(set), Some(check)) =
                (&region.set_identifier, region.record_check_reference())
            {
                writeln!(f, "    record {set:?} uses health check {check:?}")?;
            }
        }
        if let Some(l) = &self.lease {
            writeln!(
                f,
                "  lease table {} in {} (partition key lease_id, on demand)",
                l.table, l.aws_region
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[fleet]
name = "orders"
[global]
url = "https://api.example.com/status"
[[regions]]
name = "us-east-1"
status_url = "https://use1.example.com/status"
[[regions]]
name = "eu-west-1"
status_url = "https://euw1.example.com/status"
[[vantages]]
region = "us-east-1"
[agents.auth]
key_id = "k1"
"#;

    const ROUTE53: &str = r#"
[route53]
hosted_zone_id = "/hostedzone/Z123"
record_name = "api-origin.example.com"
[route53.regions.us-east-1]
set_identifier = "use1-record"
[route53.regions.eu-west-1]
set_identifier = "euw1-record"
"#;

    fn replicas(n: usize) -> String {
        let all = [
            ("use1", "us-east-1"),
            ("euw1", "eu-west-1"),
            ("apse1", "ap-southeast-1"),
            ("usw2", "us-west-2"),
            ("euc1", "eu-central-1"),
        ];
        let list = all[..n]
            .iter()
            .map(|(id, r)| {
                format!("{{ id = \"{id}\", region = \"{r}\", url = \"https://{id}.example.com\" }}")
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("[aggregator]\nbackend = \"route53\"\nreplicas = [{list}]\n[aggregator.lease]\ntable = \"vantage-lease\"\n")
    }

    fn layout_of(aggregator: &str, route53: &str) -> Option<Layout> {
        let text = format!("{BASE}{aggregator}{route53}");
        layout(&FleetConfig::parse(&text, "fleet.toml").unwrap()).unwrap()
    }

    #[test]
    fn replicas_vote_from_their_own_region_and_a_majority_guards_each_record() {
        let l = layout_of(&replicas(3), ROUTE53).unwrap();
        assert_eq!(l.voters, 3);
        assert!(l.data_plane);
        // [route53.regions] is a sorted map: eu-west-1 first.
        let euw1 = &l.regions[0];
        assert_eq!(euw1.region, "eu-west-1");
        assert_eq!(euw1.set_identifier.as_deref(), Some("euw1-record"));
        let names: Vec<_> = euw1.votes.iter().map(|v| v.alarm.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "vantage-orders-eu-west-1-use1",
                "vantage-orders-eu-west-1-euw1",
                "vantage-orders-eu-west-1-apse1"
            ]
        );
        let apse1 = &euw1.votes[2];
        assert_eq!(apse1.alarm.aws_region, "ap-southeast-1");
        assert_eq!(
            apse1.alarm.dimensions,
            [
                ("Region".to_owned(), "eu-west-1".to_owned()),
                ("Replica".to_owned(), "apse1".to_owned())
            ]
        );
        assert_eq!(
            (
                apse1.alarm.namespace.as_str(),
                apse1.alarm.metric_name.as_str()
            ),
            ("Vantage", "RegionHealthy")
        );
        assert_eq!(
            apse1.caller_reference,
            "vantage:orders:eu-west-1:vote:apse1"
        );
        let majority = euw1.majority.as_ref().unwrap();
        assert_eq!(majority.health_threshold, 2);
        assert_eq!(
            majority.caller_reference,
            "vantage:orders:eu-west-1:majority"
        );
        assert_eq!(
            euw1.record_check_reference(),
            Some("vantage:orders:eu-west-1:majority")
        );
        assert_eq!(
            l.alarm_regions(),
            ["ap-southeast-1", "eu-west-1", "us-east-1"]
        );
        let records = l.records.as_ref().unwrap();
        assert_eq!(records.hosted_zone_id, "Z123");
        assert_eq!(records.record_name, "api-origin.example.com.");
        // The lease table defaults to the first replica's Region.
        assert_eq!(
            l.lease,
            Some(LeaseTable {
                table: "vantage-lease".into(),
                aws_region: "us-east-1".into()
            })
        );
    }

    #[test]
    fn the_majority_is_more_than_half() {
        assert_eq!([1, 2, 3, 4, 5].map(majority), [1, 2, 2, 3, 3]);
        for n in 1..=5 {
            let l = layout_of(&replicas(n), ROUTE53).unwrap();
            for r in &l.regions {
                assert_eq!(r.votes.len(), n);
                assert_eq!(r.majority.as_ref().unwrap().health_threshold, majority(n));
            }
        }
    }

    #[test]
    fn one_aggregator_has_one_vote_per_region_that_guards_the_record() {
        let l = layout_of("[aggregator]\nurl = \"https://agg.example.com\"\n", ROUTE53).unwrap();
        assert_eq!(l.voters, 1);
        for r in &l.regions {
            assert!(r.majority.is_none());
            let [vote] = r.votes.as_slice() else {
                panic!("{r:?}")
            };
            assert_eq!(vote.replica, None);
            assert_eq!(vote.alarm.name, format!("vantage-orders-{}", r.region));
            assert_eq!(
                vote.alarm.aws_region, "us-east-1",
                "the Route 53 clients' Region"
            );
            assert_eq!(vote.alarm.dimensions.len(), 1, "no Replica dimension");
            assert_eq!(
                r.record_check_reference(),
                Some(vote.caller_reference.as_str())
            );
        }
        assert_eq!(l.lease, None);
        // aws_region moves the single aggregator's CloudWatch with its clients.
        let moved = ROUTE53.replace(
            "[route53.regions.us-east-1]",
            "aws_region = \"us-west-2\"\n[route53.regions.us-east-1]",
        );
        let l = layout_of("[aggregator]\nurl = \"https://agg.example.com\"\n", &moved).unwrap();
        assert_eq!(l.alarm_regions(), ["us-west-2"]);
    }

    #[test]
    fn nothing_to_lay_out_without_replicas_or_route53_and_control_plane_forces_its_checks() {
        assert_eq!(
            layout_of("[aggregator]\nurl = \"https://agg.example.com\"\n", ""),
            None
        );
        // Replicas without [route53]: votes over the fleet's Regions, no records.
        let l = layout_of(&replicas(3).replace("backend = \"route53\"\n", ""), "").unwrap();
        assert!(l.records.is_none());
        assert_eq!(l.regions.len(), 2);
        assert!(l
            .regions
            .iter()
            .all(|r| r.votes.len() == 3 && r.set_identifier.is_none()));
        let control = ROUTE53
            .replace("record_name", "health = \"control-plane\"\nrecord_name")
            .replace(
                "set_identifier = \"use1-record\"",
                "set_identifier = \"use1-record\"\nhealth_check_id = \"hc-use1\"",
            )
            .replace(
                "set_identifier = \"euw1-record\"",
                "set_identifier = \"euw1-record\"\nhealth_check_id = \"hc-euw1\"",
            );
        let l = layout_of(
            "[aggregator]\nurl = \"https://agg.example.com\"\n",
            &control,
        )
        .unwrap();
        assert!(!l.data_plane);
        assert!(l
            .regions
            .iter()
            .all(|r| r.votes.is_empty() && r.forced_check_id.is_some()));
        assert!(
            l.to_string()
                .contains("CALCULATED health check hc-use1 forced"),
            "{l}"
        );
    }

    #[test]
    fn caller_references_are_distinct_and_fit_route53s_limit() {
        let long = "f".repeat(64);
        let a = caller_reference(&[&long, "ap-southeast-2", "vote", &"r".repeat(64)]);
        let b = caller_reference(&[&long, "ap-southeast-2", "vote", &"s".repeat(64)]);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b, "same prefix, different objects");
        assert_eq!(
            a,
            caller_reference(&[&long, "ap-southeast-2", "vote", &"r".repeat(64)])
        );
        // ':' separates parts no name can contain: a vote and a majority never collide.
        assert_ne!(
            caller_reference(&["orders", "eu-west-1", "vote", "majority"]),
            caller_reference(&["orders", "eu-west-1", "majority"])
        );
    }

    #[test]
    fn the_rendering_names_every_object() {
        let text = layout_of(&replicas(3), ROUTE53).unwrap().to_string();
        for needle in [
            "3 replicas, each voting from its own Region; a Region is healthy while 2 of 3 votes say so",
            "alarm vantage-orders-us-east-1-apse1 in ap-southeast-1: Vantage/RegionHealthy{Region=us-east-1,Replica=apse1}",
            "CALCULATED health check \"vantage:orders:us-east-1:majority\": healthy while 2 of its 3 children are",
            "record \"use1-record\" uses health check \"vantage:orders:us-east-1:majority\"",
            "lease table vantage-lease in us-east-1",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
    }

    #[test]
    fn named_services_get_objects_of_their_own_per_region() {
        let text = r#"
[fleet]
name = "shop"
[[vantages]]
region = "us-east-1"
[agents.auth]
key_id = "k1"
[aggregator]
backend = "route53"
replicas = [
  { id = "use1", region = "us-east-1", url = "https://a.example.com" },
  { id = "euw1", region = "eu-west-1", url = "https://b.example.com" },
  { id = "apse1", region = "ap-southeast-1", url = "https://c.example.com" },
]
[aggregator.lease]
table = "vantage-lease"
[route53]
hosted_zone_id = "Z1"
[[services]]
name = "payments"
global = { url = "https://payments.example.com/status" }
[[services.regions]]
name = "eu-west-1"
status_url = "https://p-euw1.example.com/status"
[services.route53]
record_name = "payments-origin.example.com"
[services.route53.regions.eu-west-1]
set_identifier = "p-euw1"
[[services]]
name = "orders"
global = { url = "https://orders.example.com/status" }
[[services.regions]]
name = "eu-west-1"
status_url = "https://o-euw1.example.com/status"
[services.route53]
record_name = "orders-origin.example.com"
[services.route53.regions.eu-west-1]
set_identifier = "o-euw1"
"#;
        let l = layout(&FleetConfig::parse(text, "fleet.toml").unwrap())
            .unwrap()
            .unwrap();
        assert!(l.records.is_none(), "records are per service");
        let units: Vec<_> = l
            .regions
            .iter()
            .map(|r| (r.service.as_deref().unwrap(), r.region.as_str()))
            .collect();
        assert_eq!(units, [("orders", "eu-west-1"), ("payments", "eu-west-1")]);
        let payments = &l.regions[1];
        assert_eq!(
            payments.records.as_ref().unwrap().record_name,
            "payments-origin.example.com."
        );
        let vote = &payments.votes[2];
        assert_eq!(vote.alarm.name, "vantage-shop-payments-eu-west-1-apse1");
        assert_eq!(
            vote.alarm.dimensions,
            [
                ("Region".to_owned(), "eu-west-1".to_owned()),
                ("Service".to_owned(), "payments".to_owned()),
                ("Replica".to_owned(), "apse1".to_owned())
            ]
        );
        assert_eq!(
            vote.caller_reference,
            "vantage:shop:payments:eu-west-1:vote:apse1"
        );
        assert_eq!(
            payments.record_check_reference(),
            Some("vantage:shop:payments:eu-west-1:majority")
        );
        let text = l.to_string();
        for needle in [
            "service payments: records payments-origin.example.com. CNAME in hosted zone Z1",
            "  payments/eu-west-1 (record set \"p-euw1\")",
            "Vantage/RegionHealthy{Region=eu-west-1,Service=orders,Replica=use1}",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
    }
}
