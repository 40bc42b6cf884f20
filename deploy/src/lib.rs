//! `vantage deploy synth`: CloudFormation for a whole fleet, derived from the fleet file alone
//! so nothing is typed twice. Four kinds of stack ([`StackKind`]): `regional` (one per serving
//! Region: the status endpoint behind API Gateway, [`regional`]), `agent` (one per vantage
//! Region, Lambda on a schedule or ECS Fargate, [`agent`]), `control` (one per aggregator
//! Region: the replica's Fargate service behind a TLS listener, its health alarms, and the
//! lease table in the lease's Region, [`control`]) and `routing` (global: per service and
//! Region the health checks and weighted records the aggregator's layout names, and the
//! aggregator's Route 53 policy, [`routing`]). Names and dimensions come from
//! `vantage_aggregator::backend::route53::layout`, the function `vantage aggregator bootstrap`
//! uses, so synth and bootstrap cannot disagree. Every template passes [`iam::check`] before
//! it is returned; [`outputs`] turns the routing stack's outputs back into fleet-file TOML.

pub mod agent;
pub mod cfn;
pub mod control;
pub mod iam;
pub mod outputs;
pub mod regional;
pub mod routing;
pub mod yaml;

use serde_json::Value;
use vantage_protocol::config::FleetConfig;

/// How the agents run in their Regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentRuntime {
    /// A Lambda function invoked every minute by EventBridge.
    #[default]
    Lambda,
    /// One ECS Fargate task per Region, running continuously.
    Ecs,
}

/// What `synth` needs besides the fleet file.
#[derive(Debug, Clone, Default)]
pub struct SynthOptions {
    pub agents: AgentRuntime,
    /// The fleet file's text, passed to the agents as `VANTAGE_CONFIG_TOML`.
    pub fleet_text: String,
}

/// The kinds of stack, in the order they are deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StackKind {
    Regional,
    Agent,
    Control,
    Routing,
}

impl StackKind {
    pub fn label(self) -> &'static str {
        match self {
            StackKind::Regional => "regional",
            StackKind::Agent => "agent",
            StackKind::Control => "control",
            StackKind::Routing => "routing",
        }
    }
}

/// One stack to deploy: its name, the AWS Region it goes to and its template.
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    pub kind: StackKind,
    pub aws_region: String,
    pub template: Value,
}

/// Why a fleet file cannot become templates.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("the AWS layout of the fleet: {0}")]
    Layout(#[from] vantage_aggregator::backend::BackendError),
    #[error("{0}")]
    Unsupported(String),
    #[error("template {stack} grants too much: {findings}")]
    Policy { stack: String, findings: String },
}

/// Every stack the fleet needs, in deployment order (regional, agent, control, routing).
pub fn synth(fleet: &FleetConfig, options: &SynthOptions) -> Result<Vec<Stack>, SynthError> {
    let mut stacks = regional::stacks(fleet);
    stacks.extend(agent::stacks(fleet, &options.fleet_text, options.agents)?);
    let layout = vantage_aggregator::backend::route53::layout::layout(fleet)?;
    stacks.extend(control::stacks(fleet, layout.as_ref()));
    if let Some(routing) = routing::stack(fleet, layout.as_ref())? {
        stacks.push(routing);
    }
    for stack in &stacks {
        let findings = iam::check(&stack.template);
        if !findings.is_empty() {
            return Err(SynthError::Policy {
                stack: stack.name.clone(),
                findings: findings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
    }
    Ok(stacks)
}

/// A name CloudFormation, IAM and Lambda all accept: letters, digits and '-'.
pub fn dns_safe(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// `vantage-<fleet>-<kind>[-<region>]`: the stack's name.
pub fn stack_name(fleet: &FleetConfig, kind: StackKind, region: Option<&str>) -> String {
    let base = format!(
        "vantage-{}-{}",
        dns_safe(fleet.fleet.name.get_ref()),
        kind.label()
    );
    match region {
        Some(r) => format!("{base}-{r}"),
        None => base,
    }
}

/// The fleet file as the processes read it from `VANTAGE_CONFIG_TOML`: the same tables and
/// values, comments and blank lines dropped (Lambda's environment holds 4 KB in all).
pub fn compact_fleet_text(text: &str) -> Result<String, SynthError> {
    let value: toml::Table = toml::from_str(text)
        .map_err(|e| SynthError::Unsupported(format!("the fleet file as TOML: {e}")))?;
    toml::to_string(&value)
        .map_err(|e| SynthError::Unsupported(format!("the fleet file as TOML: {e}")))
}
