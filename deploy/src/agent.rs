//! The `agent` stack, one per vantage Region: the agent as a Lambda function invoked by an
//! EventBridge rule every minute (timeout 70 s: `agents.lambda_run_for`, 50 s by default, of
//! probing, then the report and the flush), or with `--agents ecs` as one Fargate task that
//! runs continuously. The fleet file travels in `VANTAGE_CONFIG_TOML`, so the deployed agents
//! read exactly the file the templates came from; the signing key comes from a Secrets Manager
//! secret (a dynamic reference for Lambda, the task's `Secrets` for ECS).

use crate::cfn::{self, get_att, r#ref, sub, Template};
use crate::regional::{code_parameters, lambda_function, log_group};
use crate::{
    compact_fleet_text, dns_safe, iam, stack_name, AgentRuntime, Stack, StackKind, SynthError,
};
use serde_json::{json, Value};
use vantage_protocol::config::FleetConfig;

/// The namespace an agent may publish CloudWatch metrics to (and no other).
pub const AGENT_METRIC_NAMESPACE: &str = "Vantage/Agent";
/// Lambda allows 4 KB of environment variables in all.
const LAMBDA_ENVIRONMENT_BYTES: usize = 4096;
/// Lambda's deadline: the run plus the report, the flush and a cold start.
pub const LAMBDA_TIMEOUT_SECS: u32 = 70;

pub fn stacks(
    fleet: &FleetConfig,
    fleet_text: &str,
    runtime: AgentRuntime,
) -> Result<Vec<Stack>, SynthError> {
    let compact = compact_fleet_text(fleet_text)?;
    fleet
        .vantages
        .iter()
        .map(|v| {
            let region = v.region.get_ref().clone();
            Ok(Stack {
                name: stack_name(fleet, StackKind::Agent, Some(&region)),
                kind: StackKind::Agent,
                template: template(fleet, &compact, &region, runtime)?,
                aws_region: region,
            })
        })
        .collect()
}

fn template(
    fleet: &FleetConfig,
    compact: &str,
    region: &str,
    runtime: AgentRuntime,
) -> Result<Value, SynthError> {
    let fleet_name = fleet.fleet.name.get_ref();
    let name = format!("vantage-{}-agent", dns_safe(fleet_name));
    let key_env = fleet
        .agents
        .auth
        .key_env
        .clone()
        .unwrap_or_else(|| "VANTAGE_AGENT_KEY".to_owned());
    let mut t = Template::new(format!(
        "vantage fleet {fleet_name}: the agent probing from {region} ({})",
        match runtime {
            AgentRuntime::Lambda => "Lambda, every minute",
            AgentRuntime::Ecs => "ECS Fargate",
        }
    ));
    t.parameter(
        "AgentKeySecretArn",
        "String",
        &format!("Secrets Manager secret holding this vantage's HMAC key (becomes {key_env})"),
        None,
    );
    let mut statements = vec![iam::put_metric_data(AGENT_METRIC_NAMESPACE), iam::xray()];
    match runtime {
        AgentRuntime::Lambda => {
            code_parameters(&mut t);
            statements.push(iam::lambda_logs(&name));
            log_group(&mut t, &name);
            let environment = json!({
                "VANTAGE_CONFIG_TOML": compact,
                "VANTAGE_VANTAGE": region,
                key_env.clone(): sub("{{resolve:secretsmanager:${AgentKeySecretArn}}}"),
            });
            // Lambda counts names and values; the key's resolved value is small.
            let size: usize = environment
                .as_object()
                .map(|m| m.iter().map(|(k, v)| k.len() + v.to_string().len()).sum())
                .unwrap_or(0);
            if size + 128 > LAMBDA_ENVIRONMENT_BYTES {
                return Err(SynthError::Unsupported(format!(
                    "the fleet file is {} bytes without comments, too large for Lambda's 4 KB of \
                     environment; deploy the agents with --agents ecs",
                    compact.len()
                )));
            }
            t.resource(
                "Function",
                "AWS::Lambda::Function",
                lambda_function(
                    &name,
                    "agent",
                    LAMBDA_TIMEOUT_SECS,
                    environment,
                    fleet_name,
                    "agent",
                ),
            )
            .insert("DependsOn".into(), json!(["LogGroup"]));
            t.resource(
                "Schedule",
                "AWS::Events::Rule",
                json!({
                    "Description": format!("vantage {fleet_name}: one agent run a minute"),
                    "ScheduleExpression": "rate(1 minute)",
                    "State": "ENABLED",
                    "Targets": [{"Id": "agent", "Arn": get_att("Function", "Arn")}],
                }),
            );
            t.resource(
                "ScheduleInvoke",
                "AWS::Lambda::Permission",
                json!({
                    "FunctionName": r#ref("Function"),
                    "Action": "lambda:InvokeFunction",
                    "Principal": "events.amazonaws.com",
                    "SourceArn": get_att("Schedule", "Arn"),
                }),
            );
            t.output(
                "FunctionArn",
                "the agent function",
                get_att("Function", "Arn"),
            );
            lambda_role(&mut t, fleet_name, statements);
        }
        AgentRuntime::Ecs => {
            let environment = vec![
                json!({"Name": "VANTAGE_CONFIG_TOML", "Value": compact}),
                json!({"Name": "VANTAGE_VANTAGE", "Value": region}),
                json!({"Name": "VANTAGE_SPOOL_DIR", "Value": "/tmp/vantage-spool"}),
            ];
            let secrets = vec![json!({"Name": key_env, "ValueFrom": r#ref("AgentKeySecretArn")})];
            crate::control::fargate_service(
                &mut t,
                &crate::control::Task {
                    fleet: fleet_name,
                    part: "agent",
                    name: &name,
                    command: vec!["agent".to_owned()],
                    environment,
                    secrets,
                    secret_arns: vec![r#ref("AgentKeySecretArn")],
                    port: None,
                    volume: false,
                },
                statements,
            );
        }
    }
    Ok(t.finish())
}

/// The Lambda agent's role: its log group, X-Ray, and its metric namespace.
fn lambda_role(t: &mut Template, fleet_name: &str, statements: Vec<Value>) {
    {
        t.resource(
            "Role",
            "AWS::IAM::Role",
            json!({
                "AssumeRolePolicyDocument": iam::assume_role("lambda.amazonaws.com"),
                "Policies": [{"PolicyName": "agent", "PolicyDocument": iam::document(statements)}],
                "Tags": cfn::tags(fleet_name, "agent"),
            }),
        );
    }
}
