//! `vantage deploy`: `synth` writes the CloudFormation templates of a fleet (one file per
//! stack, plus `stacks.json` listing them in deployment order with their Regions), and
//! `outputs` reads a deployed routing stack (DescribeStacks) and prints the fleet-file tables
//! its health check ids and set identifiers belong in.

use super::EXIT_BAD_INPUT;
use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use vantage_deploy::{AgentRuntime, SynthOptions};
use vantage_protocol::config::FleetConfig;

pub const DEPLOY_HELP: &str = "\
Deploy the stacks in the order stacks.json lists them (regional, agent, control, routing);
deploy/README.md has the aws cloudformation deploy commands, parameters and rollback.";

#[derive(Args, Debug)]
pub struct DeployCommand {
    #[command(subcommand)]
    command: DeploySub,
}

#[derive(Subcommand, Debug)]
enum DeploySub {
    /// Write every stack's CloudFormation template for the fleet file into DIR.
    Synth(SynthArgs),
    /// Print the [route53.regions.*] tables a deployed routing stack's outputs fill in.
    Outputs(OutputsArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Agents {
    Lambda,
    Ecs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    Json,
    Yaml,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Yaml => "yaml",
        }
    }
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// Fleet file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Directory the templates are written to (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// How agents run: a Lambda function every minute, or an ECS Fargate service.
    #[arg(long, value_enum, default_value = "lambda")]
    agents: Agents,
    /// Template format: JSON, or block-style YAML (the same template; strings quoted, intrinsic
    /// functions by their full names). stacks.json, the manifest, is JSON either way.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
}

#[derive(Args, Debug)]
struct OutputsArgs {
    /// The routing stack's name (stacks.json lists it).
    #[arg(long, value_name = "NAME")]
    stack: String,
    /// The stack's Region.
    #[arg(long, value_name = "REGION", default_value = "us-east-1")]
    region: String,
    /// Another CloudFormation endpoint (tests: moto_server).
    #[arg(long, value_name = "URL", env = "VANTAGE_AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
}

pub async fn run(args: DeployCommand) -> ExitCode {
    let result = match args.command {
        DeploySub::Synth(a) => synth(a),
        DeploySub::Outputs(a) => outputs(a).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage: {}", vantage_runtime::errors::chain(e.as_ref()));
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn synth(args: SynthArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let fleet = FleetConfig::parse(&text, &args.config.display().to_string())?;
    let options = SynthOptions {
        agents: match args.agents {
            Agents::Lambda => AgentRuntime::Lambda,
            Agents::Ecs => AgentRuntime::Ecs,
        },
        fleet_text: text,
    };
    let stacks = vantage_deploy::synth(&fleet, &options)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut manifest = Vec::new();
    for stack in &stacks {
        let file = format!("{}.{}", stack.name, args.format.extension());
        let body = match args.format {
            Format::Json => serde_json::to_string_pretty(&stack.template)? + "\n",
            Format::Yaml => vantage_deploy::yaml::to_yaml(&stack.template),
        };
        std::fs::write(args.out.join(&file), body).with_context(|| format!("writing {file}"))?;
        manifest.push(serde_json::json!({
            "name": stack.name, "kind": stack.kind.label(), "region": stack.aws_region, "file": file,
        }));
        println!(
            "{:<9} {:<16} {}",
            stack.kind.label(),
            stack.aws_region,
            args.out.join(&file).display()
        );
    }
    let body = serde_json::to_string_pretty(&serde_json::json!({ "stacks": manifest }))? + "\n";
    std::fs::write(args.out.join("stacks.json"), body).context("writing stacks.json")?;
    Ok(())
}

async fn outputs(args: OutputsArgs) -> anyhow::Result<()> {
    let sdk = vantage_aggregator::backend::route53::sdk_loader(
        args.endpoint_url.as_deref(),
        Some(&args.region),
    )
    .load()
    .await;
    let client = aws_sdk_cloudformation::Client::new(&sdk);
    let out = client
        .describe_stacks()
        .stack_name(&args.stack)
        .send()
        .await
        .with_context(|| format!("DescribeStacks {}", args.stack))?;
    let stack = out
        .stacks()
        .first()
        .with_context(|| format!("no stack {}", args.stack))?;
    let pairs: Vec<(String, String)> = stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
        .collect();
    let units = vantage_deploy::outputs::units(&pairs);
    anyhow::ensure!(
        !units.is_empty(),
        "stack {} has no unit outputs: is it the routing stack?",
        args.stack
    );
    print!("{}", vantage_deploy::outputs::render(&units));
    Ok(())
}
