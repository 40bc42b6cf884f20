//! What synth derives from the example fleets: the routing stack's checks watch exactly the
//! alarms the layout names (and the control stacks create each of them once, in the voter's
//! Region), the Route 53 policy names exactly the fleet's records, the agents run every minute
//! for at most 70 s, and a fleet file too large for Lambda's environment is refused.

use serde_json::Value;
use std::collections::BTreeSet;
use vantage_aggregator::backend::route53::layout::layout;
use vantage_deploy::{synth, AgentRuntime, StackKind, SynthOptions};
use vantage_protocol::config::FleetConfig;

fn example(name: &str) -> (FleetConfig, String) {
    let path = format!("{}/../examples/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    (FleetConfig::parse(&text, &path).unwrap(), text)
}

fn resources<'a>(t: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    t["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(move |r| r["Type"] == kind)
        .map(|r| &r["Properties"])
}

#[test]
fn the_replicas_stacks_hold_the_layouts_objects_once_each() {
    let (fleet, text) = example("fleet-replicas");
    let options = SynthOptions {
        agents: AgentRuntime::Lambda,
        fleet_text: text,
    };
    let stacks = synth(&fleet, &options).unwrap();
    let layout = layout(&fleet).unwrap().unwrap();
    let votes: BTreeSet<(String, String)> = layout
        .regions
        .iter()
        .flat_map(|r| &r.votes)
        .map(|v| (v.alarm.name.clone(), v.alarm.aws_region.clone()))
        .collect();
    assert_eq!(votes.len(), 9);

    let mut alarms = BTreeSet::new();
    for stack in stacks.iter().filter(|s| s.kind == StackKind::Control) {
        for a in resources(&stack.template, "AWS::CloudWatch::Alarm") {
            let name = a["AlarmName"].as_str().unwrap().to_owned();
            assert!(alarms.insert((name, stack.aws_region.clone())), "{a} twice");
            assert_eq!(a["Statistic"], "Minimum");
            assert_eq!(a["ComparisonOperator"], "LessThanThreshold");
        }
    }
    assert_eq!(alarms, votes, "each alarm in its voter's Region");

    let routing = stacks
        .iter()
        .find(|s| s.kind == StackKind::Routing)
        .unwrap();
    let checks = || resources(&routing.template, "AWS::Route53::HealthCheck");
    let watched: BTreeSet<(String, String)> = checks()
        .filter(|c| c["HealthCheckConfig"]["Type"] == "CLOUDWATCH_METRIC")
        .map(|c| {
            let a = &c["HealthCheckConfig"]["AlarmIdentifier"];
            let name = a["Name"].as_str().unwrap().to_owned();
            (name, a["Region"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(watched, votes);
    let majorities: Vec<&Value> = checks()
        .filter(|c| c["HealthCheckConfig"]["Type"] == "CALCULATED")
        .collect();
    assert_eq!(majorities.len(), 3);
    for m in &majorities {
        let config = &m["HealthCheckConfig"];
        assert_eq!(config["HealthThreshold"], 2);
        assert_eq!(config["ChildHealthChecks"].as_array().unwrap().len(), 3);
    }
    let records: Vec<&Value> = resources(&routing.template, "AWS::Route53::RecordSet").collect();
    assert_eq!(records.len(), 3);
    for r in &records {
        let check = r["HealthCheckId"]["Ref"].as_str().unwrap();
        assert!(check.starts_with("Majority"), "{r}");
    }

    let policy = resources(&routing.template, "AWS::IAM::Policy")
        .next()
        .unwrap();
    let change = policy["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"][0] == "route53:ChangeResourceRecordSets")
        .unwrap();
    let condition = &change["Condition"]["ForAllValues:StringEquals"];
    assert_eq!(
        condition["route53:ChangeResourceRecordSetsNormalizedRecordNames"],
        serde_json::json!(["api-origin.example.com"])
    );
    assert_eq!(
        policy["Roles"].as_array().unwrap().len(),
        3,
        "one role per replica Region"
    );

    let lease_tables: usize = stacks
        .iter()
        .map(|s| resources(&s.template, "AWS::DynamoDB::Table").count())
        .sum();
    assert_eq!(
        lease_tables, 1,
        "the lease table once, in the lease's Region"
    );
}

#[test]
fn agents_run_every_minute_for_at_most_70_seconds_or_as_a_fargate_service() {
    let (fleet, text) = example("fleet");
    let options = |agents, fleet_text: &str| SynthOptions {
        agents,
        fleet_text: fleet_text.to_owned(),
    };
    let lambda = synth(&fleet, &options(AgentRuntime::Lambda, &text)).unwrap();
    let agents: Vec<_> = lambda
        .iter()
        .filter(|s| s.kind == StackKind::Agent)
        .collect();
    assert_eq!(agents.len(), fleet.vantages.len());
    for a in &agents {
        let f = resources(&a.template, "AWS::Lambda::Function")
            .next()
            .unwrap();
        assert_eq!(f["Timeout"], 70);
        assert_eq!(f["Handler"], "agent");
        let env = &f["Environment"]["Variables"];
        assert_eq!(env["VANTAGE_VANTAGE"], a.aws_region.as_str());
        // The deployed agent reads the same fleet.
        let compact = env["VANTAGE_CONFIG_TOML"].as_str().unwrap();
        let again = FleetConfig::parse(compact, "VANTAGE_CONFIG_TOML").unwrap();
        assert_eq!(again.vantages.len(), fleet.vantages.len());
        let rule = resources(&a.template, "AWS::Events::Rule").next().unwrap();
        assert_eq!(rule["ScheduleExpression"], "rate(1 minute)");
    }
    let ecs = synth(&fleet, &options(AgentRuntime::Ecs, &text)).unwrap();
    for a in ecs.iter().filter(|s| s.kind == StackKind::Agent) {
        assert_eq!(resources(&a.template, "AWS::ECS::Service").count(), 1);
        assert_eq!(resources(&a.template, "AWS::Lambda::Function").count(), 0);
    }
    // Comments do not count against Lambda's 4 KB; values do.
    let padded = text.replace(
        "[agents.spool]",
        &format!("[agents.spool]\ndir = \"/tmp/{}\"", "x".repeat(5000)),
    );
    let fleet = FleetConfig::parse(&padded, "fleet.toml").unwrap();
    let err = synth(&fleet, &options(AgentRuntime::Lambda, &padded)).unwrap_err();
    assert!(err.to_string().contains("--agents ecs"), "{err}");
}

#[test]
fn each_service_has_its_records_checks_and_outputs_in_the_routing_stack() {
    let (fleet, text) = example("fleet-services");
    let options = SynthOptions {
        agents: AgentRuntime::Lambda,
        fleet_text: text,
    };
    let stacks = synth(&fleet, &options).unwrap();
    let routing = stacks
        .iter()
        .find(|s| s.kind == StackKind::Routing)
        .unwrap();
    let mut records: Vec<(String, String)> =
        resources(&routing.template, "AWS::Route53::RecordSet")
            .map(|r| {
                let name = r["Name"].as_str().unwrap().to_owned();
                (name, r["SetIdentifier"].as_str().unwrap().to_owned())
            })
            .collect();
    records.sort();
    assert_eq!(
        records,
        [
            ("orders-origin.example.com.", "orders-eu-west-1"),
            ("orders-origin.example.com.", "orders-us-east-1"),
            ("payments-origin.example.com.", "payments-ap-southeast-1"),
            ("payments-origin.example.com.", "payments-eu-west-1"),
            ("payments-origin.example.com.", "payments-us-east-1"),
        ]
        .map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    // A named service's alarms carry its name, as the aggregator publishes them.
    let alarms: BTreeSet<String> = resources(&routing.template, "AWS::Route53::HealthCheck")
        .map(|c| {
            let name = &c["HealthCheckConfig"]["AlarmIdentifier"]["Name"];
            name.as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        alarms.contains("vantage-shop-payments-eu-west-1"),
        "{alarms:?}"
    );
    let outputs = routing.template["Outputs"].as_object().unwrap();
    let unit = &outputs["UnitPaymentsEuWest1"]["Value"]["Fn::Join"][1];
    assert_eq!(unit[0], "payments");
    assert_eq!(unit[2], "payments-eu-west-1");
}
