//! The `routing` stack (global; deployed in us-east-1, where Route 53's control plane lives):
//! per service and Region the objects `layout::layout` names (one CLOUDWATCH_METRIC health
//! check per voter on the alarm the control stack made, and with replicas the CALCULATED
//! majority over them; RECOVERY_CONTROL checks for the ARC backend), the weighted record that
//! check guards, and the aggregator's Route 53 policy: record changes only for these record
//! names and types (the `route53:ChangeResourceRecordSets*` condition keys), health checks
//! only by their ARNs. Its outputs carry every health check id and set identifier back to the
//! fleet file (`vantage deploy outputs`).

use crate::cfn::{self, r#ref, sub, Template};
use crate::control::{aggregator_regions, aggregator_role_name};
use crate::{iam, stack_name, Stack, StackKind, SynthError};
use serde_json::{json, Value};
use vantage_aggregator::backend::route53::layout::{Layout, RecordSet, RegionLayout};
use vantage_protocol::config::FleetConfig;

/// The weight a record starts with: every Region equal and in service until the aggregator
/// has measured them (its first pass with data writes the measured weights).
pub const INITIAL_WEIGHT: u8 = 255;
pub const RECORD_TTL_SECS: u32 = 60;
/// Separates the fields of a unit's output value (no name or id contains it).
pub const OUTPUT_SEPARATOR: &str = "|";
/// Output keys of units start with this.
pub const UNIT_OUTPUT_PREFIX: &str = "Unit";

/// A unit's record set: its service's records (`[services.route53]`, or the one `[route53]`).
fn unit_records<'a>(layout: &'a Layout, unit: &'a RegionLayout) -> Option<&'a RecordSet> {
    unit.records.as_ref().or(layout.records.as_ref())
}

/// The unit's named service (none in a single-API fleet).
fn unit_service(unit: &RegionLayout) -> Option<&str> {
    unit.service.as_deref()
}

pub fn stack(fleet: &FleetConfig, layout: Option<&Layout>) -> Result<Option<Stack>, SynthError> {
    let Some(layout) = layout else {
        return Ok(None);
    };
    if layout
        .regions
        .iter()
        .all(|u| unit_records(layout, u).is_none())
    {
        return Ok(None);
    }
    Ok(Some(Stack {
        name: stack_name(fleet, StackKind::Routing, None),
        kind: StackKind::Routing,
        aws_region: "us-east-1".to_owned(),
        template: template(fleet, layout)?,
    }))
}

/// The ARC routing control of `region`, when the fleet's backend is `arc`.
fn routing_control(fleet: &FleetConfig, region: &str) -> Option<String> {
    let arc = fleet
        .aggregator
        .backend
        .as_ref()
        .is_some_and(|b| b.get_ref() == "arc");
    if !arc {
        return None;
    }
    fleet
        .arc
        .as_ref()
        .and_then(|a| a.regions.get(region))
        .map(|r| r.routing_control_arn.get_ref().clone())
}

/// The host of `region`'s status URL in `service` (the record's default target).
fn origin(fleet: &FleetConfig, service: Option<&str>, region: &str) -> String {
    let view = match service {
        Some(name) => fleet.service(name).map(|s| &s.fleet),
        None => fleet.services().first().map(|s| &s.fleet),
    };
    view.and_then(|f| f.regions.iter().find(|r| r.name.get_ref() == region))
        .and_then(|r| url::Url::parse(r.status_url.get_ref()).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

fn template(fleet: &FleetConfig, layout: &Layout) -> Result<Value, SynthError> {
    let fleet_name = fleet.fleet.name.get_ref();
    let mut t = Template::new(format!(
        "vantage fleet {fleet_name}: health checks, weighted records and the aggregator's Route 53 policy"
    ));
    let mut checks: Vec<Value> = Vec::new();
    let mut zones: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut types: Vec<String> = Vec::new();
    for unit in &layout.regions {
        let Some(records) = unit_records(layout, unit) else {
            continue;
        };
        let Some(set_identifier) = &unit.set_identifier else {
            continue;
        };
        let service = unit_service(unit);
        let id = cfn::logical_id(&[service.unwrap_or(""), &unit.region]);
        let record_check = if let Some(arn) = routing_control(fleet, &unit.region) {
            let check = format!("Control{id}");
            t.resource(
                &check,
                "AWS::Route53::HealthCheck",
                json!({"HealthCheckConfig": {"Type": "RECOVERY_CONTROL", "RoutingControlArn": arn},
                       "HealthCheckTags": [{"Key": "Name", "Value": format!("vantage {fleet_name} {}", unit.region)}]}),
            );
            Some(check)
        } else if let Some(forced) = &unit.forced_check_id {
            // Control-plane health: the fleet file names the CALCULATED check the aggregator
            // forces; it is the operator's, referenced as it is.
            checks.push(json!(format!(
                "arn:${{AWS::Partition}}:route53:::healthcheck/{forced}"
            )));
            None
        } else {
            let mut vote_checks = Vec::new();
            for vote in &unit.votes {
                let check = cfn::logical_id(&["Vote", &id, vote.replica.as_deref().unwrap_or("")]);
                t.resource(
                    &check,
                    "AWS::Route53::HealthCheck",
                    json!({
                        "HealthCheckConfig": {
                            "Type": "CLOUDWATCH_METRIC",
                            "AlarmIdentifier": {"Name": vote.alarm.name, "Region": vote.alarm.aws_region},
                            "InsufficientDataHealthStatus": "LastKnownStatus",
                        },
                        // CloudFormation picks CallerReferences itself: the layout's is a tag.
                        "HealthCheckTags": [{"Key": "Name", "Value": vote.caller_reference}],
                    }),
                );
                vote_checks.push(check);
            }
            match &unit.majority {
                Some(m) => {
                    let check = format!("Majority{id}");
                    t.resource(
                        &check,
                        "AWS::Route53::HealthCheck",
                        json!({
                            "HealthCheckConfig": {
                                "Type": "CALCULATED",
                                "ChildHealthChecks": vote_checks.iter().map(|c| r#ref(c)).collect::<Vec<_>>(),
                                "HealthThreshold": m.health_threshold,
                            },
                            "HealthCheckTags": [{"Key": "Name", "Value": m.caller_reference}],
                        }),
                    );
                    Some(check)
                }
                None => vote_checks.into_iter().next(),
            }
        };
        let origin_param = format!("Origin{id}");
        t.parameter(
            &origin_param,
            "String",
            &format!(
                "What {} answers for {} (default: the host of its status_url)",
                records.record_name, unit.region
            ),
            Some(&origin(fleet, service, &unit.region)),
        );
        let mut record = json!({
            "HostedZoneId": records.hosted_zone_id,
            "Name": records.record_name,
            "Type": records.record_type,
            "SetIdentifier": set_identifier,
            "Weight": INITIAL_WEIGHT,
            "TTL": RECORD_TTL_SECS.to_string(),
            "ResourceRecords": [r#ref(&origin_param)],
        });
        let check_value = match (&record_check, &unit.forced_check_id) {
            (Some(c), _) => {
                checks.push(sub(&format!(
                    "arn:${{AWS::Partition}}:route53:::healthcheck/${{{c}}}"
                )));
                r#ref(c)
            }
            (None, Some(forced)) => json!(forced),
            (None, None) => Value::Null,
        };
        if !check_value.is_null() {
            record["HealthCheckId"] = check_value.clone();
        }
        t.resource(&format!("Record{id}"), "AWS::Route53::RecordSet", record);
        let fields = json!([
            service.unwrap_or(""),
            unit.region,
            set_identifier,
            check_value.clone()
        ]);
        t.output(
            &format!("{UNIT_OUTPUT_PREFIX}{id}"),
            &format!("service{OUTPUT_SEPARATOR}region{OUTPUT_SEPARATOR}set_identifier{OUTPUT_SEPARATOR}health_check_id"),
            if check_value.is_null() {
                json!(format!("{}{OUTPUT_SEPARATOR}{}{OUTPUT_SEPARATOR}{set_identifier}{OUTPUT_SEPARATOR}", service.unwrap_or(""), unit.region))
            } else {
                json!({"Fn::Join": [OUTPUT_SEPARATOR, fields]})
            },
        );
        zones.push(records.hosted_zone_id.clone());
        names.push(records.record_name.trim_end_matches('.').to_lowercase());
        types.push(records.record_type.clone());
    }
    for list in [&mut zones, &mut names, &mut types] {
        list.sort();
        list.dedup();
    }
    let zone_arns: Vec<Value> = zones
        .iter()
        .map(|z| sub(&format!("arn:${{AWS::Partition}}:route53:::hostedzone/{z}")))
        .collect();
    let mut statements = vec![
        iam::allow(&["route53:ListResourceRecordSets"], json!(zone_arns)),
        json!({
            "Effect": "Allow",
            "Action": ["route53:ChangeResourceRecordSets"],
            "Resource": zone_arns,
            "Condition": {"ForAllValues:StringEquals": {
                "route53:ChangeResourceRecordSetsNormalizedRecordNames": names,
                "route53:ChangeResourceRecordSetsRecordTypes": types,
                "route53:ChangeResourceRecordSetsActions": ["UPSERT"],
            }},
        }),
        iam::allow(
            &["route53:GetChange"],
            json!([sub("arn:${AWS::Partition}:route53:::change/*")]),
        ),
    ];
    if !checks.is_empty() {
        let actions: &[&str] = if layout.data_plane {
            &["route53:GetHealthCheck", "route53:GetHealthCheckStatus"]
        } else {
            // Control-plane health forces its checks with UpdateHealthCheck (Inverted).
            &[
                "route53:GetHealthCheck",
                "route53:GetHealthCheckStatus",
                "route53:UpdateHealthCheck",
            ]
        };
        statements.push(iam::allow(actions, json!(checks)));
    }
    let roles: Vec<String> = aggregator_regions(fleet, Some(layout))
        .iter()
        .map(|(_, region)| aggregator_role_name(fleet, region))
        .collect();
    t.resource(
        "AggregatorRoute53Policy",
        "AWS::IAM::Policy",
        json!({
            "PolicyName": format!("vantage-{}-route53", crate::dns_safe(fleet_name)),
            "Roles": roles,
            "PolicyDocument": iam::document(statements),
        }),
    );
    Ok(t.finish())
}
