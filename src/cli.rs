//! Command-line surface: argument definitions and the glue from parsed flags to library calls.
//! Exit codes: 0 success, 1 the command ran and found failures, 2 bad input.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use http::{HeaderName, HeaderValue, Method};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vantage_agent::fleet::{build_targets, check_control_targets, render_plan};
use vantage_agent::oneshot::{self, OneshotOptions};
use vantage_probe::assertion::{HeaderAssertion, JsonPointerAssertion, StatusSet};
use vantage_probe::spec::{
    HttpVersionPref, IpPreference, ProbeSpec, ResolveOverride, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_REGION_HEADER,
};
use vantage_probe::tls::TlsConfigCache;
use vantage_probe::Prober;
use vantage_protocol::config::FleetConfig;
use vantage_protocol::duration::parse_duration;

mod agent;
mod aggregator;
mod arc;
mod demo;
mod deploy;
mod notify_cmd;
mod override_cmd;

/// Exit code for bad input: flags, URLs, files.
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "vantage",
    version,
    about = "Synthetic monitoring with automated failover for multi-Region APIs",
    long_about = "vantage probes a multi-Region API from several vantage points, times every \
                  phase of every request, and moves Route 53 traffic away from a failing Region."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Probe one URL and print per-phase latency and outcome counts.
    #[command(after_help = PROBE_EXAMPLES)]
    Probe(ProbeArgs),
    /// Validate a fleet file and print the probe plan.
    #[command(after_help = CHECK_CONFIG_HELP)]
    CheckConfig(CheckConfigArgs),
    /// Run the agent of one vantage Region: probe the fleet, report to the aggregator.
    #[command(after_help = AGENT_HELP)]
    Agent(AgentArgs),
    /// Run the aggregator: ingest reports, decide Region health and weights, drive Route 53.
    #[command(after_help = aggregator::AGGREGATOR_HELP)]
    Aggregator(aggregator::AggregatorCommand),
    /// Print what the aggregator's reconciler would change right now.
    Plan(aggregator::PlanArgs),
    /// Pin Regions up or down, or freeze automation: a request signed with an admin key.
    #[command(after_help = override_cmd::OVERRIDE_HELP)]
    Override(override_cmd::OverrideArgs),
    /// The whole fleet on this machine: simulated Regions, agents, the aggregator (dry-run) and
    /// faults you schedule; watch a failover from detection to traffic moving.
    #[command(after_help = DEMO_HELP)]
    Demo(DemoArgs),
    /// Serve a Region's /status (liveness) and /status/deep (Aurora and Lambda readiness).
    StatusEndpoint(vantage_status_endpoint::cli::StatusEndpointArgs),
    /// CloudFormation for the whole fleet from the fleet file (synth), and the ids its
    /// stacks made back into fleet-file TOML (outputs).
    #[command(after_help = deploy::DEPLOY_HELP)]
    Deploy(deploy::DeployCommand),
    /// Notification sinks (`[[notify]]`): send a test event to each and report the result.
    #[command(subcommand)]
    Notify(notify_cmd::NotifyCommand),
}

const CHECK_CONFIG_HELP: &str = "\
Prints which vantage probes what, how often, and the probes per second in total; with
aggregator.replicas or a [route53] section, also the AWS layout the health votes need
(alarms, health checks, records; `vantage aggregator bootstrap` creates it).
Exit status: 0 valid, 2 invalid (the message names the key, the line and the fix).";

const AGENT_HELP: &str = "\
Every flag can also come from the environment (ECS task definitions, Lambda configuration);
the fleet file itself can be given inline in VANTAGE_CONFIG_TOML.
The HMAC key comes from the variable named by agents.auth.key_env in the fleet file
(default VANTAGE_AGENT_KEY) or from agents.auth.key_file; it must be at least 16 bytes.
Under AWS Lambda (AWS_LAMBDA_RUNTIME_API set) each invocation probes for --run-for (default
agents.lambda_run_for, 50s), reports, flushes and returns; schedule it with EventBridge.
SIGTERM or Ctrl-C: finish the current interval, report, flush, exit 0 (twice: stop now).";

const DEMO_HELP: &str = "\
Without fault flags it runs the embedded default: us-east-1 fails at 10 s and recovers at
25 s, for 50 s. Examples:
  vantage demo --fail eu-west-1@5 --recover eu-west-1@20 --duration 40
  vantage demo --flaky ap-southeast-1@3:0.5 --duration 30     (one vantage's own network drops half)
  vantage demo --slow eu-west-1@5:+300 --duration 30          (slower, stays in, weight drops)
  vantage demo --degrade eu-west-1@5:0.3 --duration 30        (30 % 5xx: stays in, weight drops)
  vantage demo --aggregators 3 --fail eu-west-1@5 --kill-aggregator 1@8 --duration 30
                                   (three replicas; out by majority; the lease moves on)
  vantage demo --services orders,payments,rates --fail payments:eu-west-1@10 --duration 25
                                   (a [[services]] fleet; only payments leaves eu-west-1)
With --services, each service has its own endpoints in every Region; SERVICE:REGION in
--fail, --recover, --slow and --degrade (SERVICE:VANTAGE in --flaky) limits a fault to one service, a
bare Region (or vantage) means every service.
Round-trip times between vantages and Regions follow public inter-Region medians
(demo/src/rtt.rs). Events: fault, region_out, region_in, region_wide, weights, plan_applied,
alert, traffic_moved, replica_down, replica_up, lease_acquired, lease_lost, summary; --events
writes them as JSON lines with t (seconds since start) and, with --services, service.";

#[derive(Args, Debug)]
struct DemoArgs {
    /// Simulated Regions, comma-separated.
    #[arg(long, value_name = "LIST")]
    regions: Option<String>,
    /// Vantage Regions the agents run in (default: the same as --regions).
    #[arg(long, value_name = "LIST")]
    vantages: Option<String>,
    /// Stop after this many seconds (default: 50 with the embedded scenario, else Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Run a [[services]] fleet of these services (comma-separated, 1 to 50), each served by
    /// every Region with endpoints of its own (default: one API).
    #[arg(long, value_name = "LIST")]
    services: Option<String>,
    /// Make a Region fail (5xx and reset connections) at SECS: one service's endpoint there
    /// with SERVICE:, every service's without. Repeatable.
    #[arg(long, value_name = "[SERVICE:]REGION@SECS")]
    fail: Vec<String>,
    /// Undo --fail / --slow / --degrade at SECS. Repeatable.
    #[arg(long, value_name = "[SERVICE:]REGION@SECS")]
    recover: Vec<String>,
    /// Add latency to a Region's answers from SECS. Repeatable.
    #[arg(long, value_name = "[SERVICE:]REGION@SECS:+MS")]
    slow: Vec<String>,
    /// Make a Region answer 503 to RATIO (0..1) of requests from SECS, spread evenly over each
    /// vantage's requests: a gray failure that keeps it in service below
    /// policy.max_failure_ratio, with less weight. Repeatable.
    #[arg(long, value_name = "[SERVICE:]REGION@SECS:RATIO")]
    degrade: Vec<String>,
    /// Make one vantage's own network drop a share of its connections (to one service's
    /// endpoints with SERVICE:). Repeatable.
    #[arg(long, value_name = "[SERVICE:]VANTAGE@SECS:RATIO")]
    flaky: Vec<String>,
    /// Aggregator replicas, each deciding on its own; the global endpoint combines their
    /// votes as Route 53 would (majority), and a lease picks the one that writes weights.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    aggregators: u8,
    /// Stop aggregator replica ID (1..N) at SECS: its API and decisions; its votes freeze.
    /// Repeatable.
    #[arg(long, value_name = "ID@SECS")]
    kill_aggregator: Vec<String>,
    /// Start a killed replica again at SECS, from its state file. Repeatable.
    #[arg(long, value_name = "ID@SECS")]
    revive_aggregator: Vec<String>,
    /// Run without the embedded fault scenario when no fault flag is given.
    #[arg(long)]
    no_faults: bool,
    /// Write events as JSON lines to FILE.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Serve the status page here.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Print events as lines instead of redrawing the live table.
    #[arg(long)]
    no_live: bool,
}

#[derive(Args, Debug)]
struct CheckConfigArgs {
    /// Fleet file (TOML).
    #[arg(value_name = "FILE", env = "VANTAGE_CONFIG")]
    file: PathBuf,
}

#[derive(Args, Debug)]
struct AgentArgs {
    /// Fleet file (TOML); or set VANTAGE_CONFIG_TOML to the file's contents.
    #[arg(long, value_name = "FILE", env = "VANTAGE_CONFIG")]
    config: Option<PathBuf>,

    /// The Region this agent probes from (one of the fleet's [[vantages]]); defaults to
    /// AWS_REGION, which Lambda and ECS set.
    #[arg(long, value_name = "REGION", env = "VANTAGE_VANTAGE")]
    vantage: Option<String>,

    /// Agent id in reports (default: the fleet file's, or vantage-<region>); letters, digits,
    /// '.', '_' and '-', since it names the default spool directory.
    #[arg(long, env = "VANTAGE_AGENT_ID", value_parser = agent_id_arg)]
    agent_id: Option<String>,

    /// Aggregator base URL (default: aggregator.url from the fleet file). Refused when the
    /// fleet file lists aggregator.replicas: the agent delivers every report to every replica,
    /// so change their URLs in the fleet file.
    #[arg(long, value_name = "URL", env = "VANTAGE_AGGREGATOR_URL")]
    aggregator_url: Option<String>,

    /// Extra CA certificates (PEM) for the aggregator's TLS.
    #[arg(long, value_name = "FILE", env = "VANTAGE_AGGREGATOR_CA_FILE")]
    aggregator_ca_file: Option<PathBuf>,

    /// Client certificate chain (PEM) to present when the aggregator requires one
    /// (`vantage aggregator --tls-client-ca`); needs --aggregator-client-key.
    #[arg(
        long,
        value_name = "FILE",
        env = "VANTAGE_AGGREGATOR_CLIENT_CERT",
        requires = "aggregator_client_key"
    )]
    aggregator_client_cert: Option<PathBuf>,

    /// Private key (PEM) of --aggregator-client-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "VANTAGE_AGGREGATOR_CLIENT_KEY",
        requires = "aggregator_client_cert"
    )]
    aggregator_client_key: Option<PathBuf>,

    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9108).
    #[arg(long, value_name = "ADDR", env = "VANTAGE_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,

    /// Spool directory for undelivered reports (default: agents.spool.dir, or
    /// <tmp>/vantage-spool-<agent id>).
    #[arg(long, value_name = "DIR", env = "VANTAGE_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,

    /// Keep undelivered reports in memory only.
    #[arg(long, env = "VANTAGE_NO_SPOOL")]
    no_spool: bool,

    /// Stop after this long (the default under Lambda: agents.lambda_run_for or 50s).
    #[arg(long, value_name = "DUR", env = "VANTAGE_RUN_FOR", value_parser = duration_arg)]
    run_for: Option<Duration>,
    /// Reload the fleet file also when its modification time changes (looked at every 2s),
    /// not only on SIGHUP. Needs --config FILE.
    #[arg(long, env = "VANTAGE_WATCH_CONFIG")]
    watch_config: bool,
}

const PROBE_EXAMPLES: &str = "\
Examples:
  vantage probe https://api.example.com/status
  vantage probe https://api.example.com/status --count 20 --interval 500ms
  vantage probe https://api.example.com/status --resolve api.example.com:443:192.0.2.10
  vantage probe https://127.0.0.1:8443/status --cacert ca.pem --expect-json /status=pass --json
  vantage probe tcp://db.example.com:5432
  vantage probe tcp://mail.example.com:25 --expect-body ESMTP
  vantage probe tcp://cache.example.com:6379 --data $'PING\r\n' --expect-body +PONG
  vantage probe grpcs://api.example.com:443/orders.v1.Orders

Phases: dns, connect (TCP), tls, ttfb (request sent to first response byte), transfer (body),
total. Every probe opens a fresh connection unless --reuse-connection is given.
tcp:// and tcps:// connect (and handshake); with --expect-body/--expect-body-regex they read
the banner (after sending --data, if given). grpc:// and grpcs:// call
grpc.health.v1.Health/Check for the service named by the path (none: the whole server).
Outcome codes: ok, dns, connect, tls, timeout, reset, protocol, http_status, body_mismatch,
header_mismatch, redirect_limit, grpc_status, not_serving.
Exit status: 0 every probe ok, 1 at least one probe failed, 2 bad input.";

#[derive(Args, Debug)]
struct ProbeArgs {
    /// URL to probe: http(s)://, tcp(s)://HOST:PORT or grpc(s)://HOST:PORT[/SERVICE].
    url: String,

    /// Number of probes.
    #[arg(short = 'n', long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,

    /// Time between probe starts (e.g. 1s, 250ms); 0 runs them back to back.
    #[arg(short, long, default_value = "1s", value_parser = duration_arg)]
    interval: Duration,

    /// Probes allowed in flight at once.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,

    /// Overall deadline of one probe (at most 60s).
    #[arg(short, long, default_value = "10s", value_parser = duration_arg)]
    timeout: Duration,

    /// Limit for the TCP connect (Route 53 allows 4s).
    #[arg(long, default_value = "4s", value_parser = duration_arg)]
    connect_timeout: Duration,

    /// Limit from request sent to first response byte (Route 53 allows 2s).
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    first_byte_timeout: Duration,

    /// Limit for name resolution.
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    dns_timeout: Duration,

    /// Limit for the TLS handshake.
    #[arg(long, default_value = "4s", value_parser = duration_arg)]
    tls_timeout: Duration,

    /// Do not verify the server certificate (the handshake is still completed and timed).
    #[arg(short = 'k', long)]
    insecure: bool,

    /// Extra trusted CA certificates (PEM), in addition to the built-in web PKI roots.
    #[arg(long, visible_alias = "ca-file", value_name = "FILE")]
    cacert: Option<PathBuf>,

    /// Connect to ADDR for HOST:PORT without DNS; SNI and Host keep the name. Repeatable.
    #[arg(long, value_name = "HOST:PORT:ADDR", value_parser = resolve_arg)]
    resolve: Vec<ResolveOverride>,

    /// Request header, 'Name: value'. Repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = header_arg)]
    headers: Vec<(HeaderName, HeaderValue)>,

    /// HTTP method.
    #[arg(short = 'X', long, default_value = "GET", value_parser = method_arg)]
    method: Method,

    /// Request body; @FILE reads it from a file.
    #[arg(short = 'd', long, value_name = "BODY")]
    data: Option<String>,

    /// Accepted status codes: codes, ranges and classes, e.g. 200,204 or 200-299 or 2xx,3xx.
    #[arg(long, value_name = "LIST", default_value = "200-399", value_parser = status_arg)]
    expect_status: StatusSet,

    /// The body must contain this text.
    #[arg(long, value_name = "TEXT")]
    expect_body: Option<String>,

    /// The body must match this regular expression.
    #[arg(long, value_name = "REGEX", value_parser = regex_arg)]
    expect_body_regex: Option<regex::Regex>,

    /// A JSON pointer in the body must equal a value, e.g. /status=pass. Repeatable.
    #[arg(long, value_name = "/POINTER=VALUE", value_parser = json_arg)]
    expect_json: Vec<JsonPointerAssertion>,

    /// A response header must be present ('Name') or equal a value ('Name: value'). Repeatable.
    #[arg(long, value_name = "NAME[: VALUE]", value_parser = expect_header_arg)]
    expect_header: Vec<HeaderAssertion>,

    /// Body bytes read at most; assertions see this prefix.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body: usize,

    /// Follow up to N redirects (default: do not follow).
    #[arg(short = 'L', long, value_name = "N", default_value_t = 0)]
    max_redirects: u8,

    /// HTTP version: auto negotiates h2 or http/1.1 by ALPN over TLS and uses HTTP/1.1 over
    /// plain HTTP; 2 over plain HTTP uses prior knowledge (h2c).
    #[arg(long, value_enum, default_value_t = HttpVersionArg::Auto)]
    http_version: HttpVersionArg,

    /// Address family: any, 4, 6, prefer-4 or prefer-6.
    #[arg(long, value_enum, default_value_t = IpArg::Any)]
    ip: IpArg,

    /// Keep the connection open between probes (no DNS, connect or TLS phases after the first).
    #[arg(long)]
    reuse_connection: bool,

    /// Response header that names the Region that answered.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_REGION_HEADER, value_parser = header_name_arg)]
    region_header: HeaderName,

    /// Histogram precision in significant decimal digits (1-5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
    precision: u8,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum HttpVersionArg {
    Auto,
    #[value(name = "1.1")]
    Http1,
    #[value(name = "2")]
    Http2,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum IpArg {
    Any,
    #[value(name = "4")]
    V4,
    #[value(name = "6")]
    V6,
    #[value(name = "prefer-4")]
    PreferV4,
    #[value(name = "prefer-6")]
    PreferV6,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn agent_id_arg(s: &str) -> Result<String, String> {
    vantage_agent::identity::parse_agent_id(s).map_err(|e| e.to_string())
}

fn resolve_arg(s: &str) -> Result<ResolveOverride, String> {
    s.parse()
        .map_err(|e: vantage_probe::spec::SpecError| e.to_string())
}

fn header_arg(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("bad header {s:?}: expected 'Name: value'"))?;
    let name = header_name_arg(name.trim())?;
    let value =
        HeaderValue::from_str(value.trim()).map_err(|_| format!("bad header value in {s:?}"))?;
    Ok((name, value))
}

fn header_name_arg(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("bad header name {s:?}"))
}

fn expect_header_arg(s: &str) -> Result<HeaderAssertion, String> {
    match s.split_once(':') {
        Some(_) => header_arg(s).map(|(name, value)| HeaderAssertion {
            name,
            value: Some(value),
        }),
        None => header_name_arg(s.trim()).map(|name| HeaderAssertion { name, value: None }),
    }
}

fn method_arg(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.to_ascii_uppercase().as_bytes()).map_err(|_| format!("bad method {s:?}"))
}

fn status_arg(s: &str) -> Result<StatusSet, String> {
    s.parse()
        .map_err(|e: vantage_probe::assertion::BadStatusSet| e.to_string())
}

fn regex_arg(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| format!("bad regex: {e}"))
}

fn json_arg(s: &str) -> Result<JsonPointerAssertion, String> {
    s.parse()
}

/// Help and version go to stdout with status 0; anything else is one line on stderr, status 2.
pub fn exit_for_parse_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as K;
    match e.kind() {
        K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(EXIT_BAD_INPUT)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("error: bad arguments");
            let mut line = first.trim_start_matches("error: ").to_owned();
            // clap lists the missing arguments on the lines after this one; keep them on it.
            if e.kind() == K::MissingRequiredArgument {
                if let Some(clap::error::ContextValue::Strings(missing)) =
                    e.get(clap::error::ContextKind::InvalidArg)
                {
                    line = format!("{} {}", line.trim_end_matches(':'), missing.join(", "))
                        .replace("were not provided", "were not provided:");
                }
            }
            eprintln!("vantage: {line}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

pub async fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Probe(args) => probe(args).await,
        Command::CheckConfig(args) => check_config(args),
        Command::Agent(args) => agent::run(args).await,
        Command::Aggregator(args) => aggregator::command(args).await,
        Command::Plan(args) => aggregator::plan(args).await,
        Command::Override(args) => override_cmd::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::StatusEndpoint(args) => vantage_status_endpoint::cli::run(args).await,
        Command::Deploy(args) => deploy::run(args).await,
        Command::Notify(args) => notify_cmd::run(args).await,
    }
}

fn check_config(args: CheckConfigArgs) -> ExitCode {
    let checked = FleetConfig::load(&args.file)
        .and_then(|fleet| build_targets(&fleet).map(|targets| (fleet, targets)))
        .and_then(|(fleet, targets)| {
            check_control_targets(&fleet)?;
            Ok((fleet, targets))
        });
    match checked {
        Ok((fleet, targets)) => {
            for warning in fleet.warnings() {
                eprintln!("vantage: warning: {warning}");
            }
            print!("{}", render_plan(&fleet, &targets));
            aggregator::print_layout(&fleet);
            print_aws_budget(&fleet);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vantage: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// The AWS calls and monthly cost the aggregator's periods imply, with a warning on stderr for
/// each documented limit they would exceed.
fn print_aws_budget(fleet: &FleetConfig) {
    match vantage_aggregator::budget::estimate(fleet) {
        Some(budget) => {
            for warning in &budget.warnings {
                eprintln!("vantage: warning: {warning}");
            }
            print!("{}", vantage_aggregator::budget::render(&budget));
        }
        None => println!("AWS calls: none (no [route53] section: the dry-run backend plans only)"),
    }
}

fn build_spec(args: &ProbeArgs) -> anyhow::Result<ProbeSpec> {
    let mut spec = ProbeSpec::get(&args.url)?;
    spec.method = args.method.clone();
    for (name, value) in &args.headers {
        spec.headers.append(name, value.clone());
    }
    if let Some(data) = &args.data {
        spec.body = match data.strip_prefix('@') {
            Some(path) => std::fs::read(path)
                .with_context(|| format!("reading --data file {path}"))?
                .into(),
            None => data.clone().into_bytes().into(),
        };
    }
    spec.http_version = match args.http_version {
        HttpVersionArg::Auto => HttpVersionPref::Auto,
        HttpVersionArg::Http1 => HttpVersionPref::Http1,
        HttpVersionArg::Http2 => HttpVersionPref::Http2,
    };
    spec.ip_preference = match args.ip {
        IpArg::Any => IpPreference::Any,
        IpArg::V4 => IpPreference::V4Only,
        IpArg::V6 => IpPreference::V6Only,
        IpArg::PreferV4 => IpPreference::PreferV4,
        IpArg::PreferV6 => IpPreference::PreferV6,
    };
    spec.timeouts.overall = args.timeout;
    spec.timeouts.connect = args.connect_timeout;
    spec.timeouts.first_byte = args.first_byte_timeout;
    spec.timeouts.dns = args.dns_timeout;
    spec.timeouts.tls = args.tls_timeout;
    spec.tls.insecure = args.insecure;
    spec.tls.ca_file = args.cacert.clone();
    spec.resolve = args.resolve.clone();
    spec.assertions.status = args.expect_status.clone();
    spec.assertions.body_contains = args.expect_body.clone();
    spec.assertions.body_regex = args.expect_body_regex.clone();
    spec.assertions.json_pointer = args.expect_json.clone();
    spec.assertions.headers = args.expect_header.clone();
    spec.max_body_bytes = args.max_body;
    spec.max_redirects = args.max_redirects;
    spec.reuse_connection = args.reuse_connection;
    spec.region_header = args.region_header.clone();
    Ok(spec)
}

async fn probe(args: ProbeArgs) -> ExitCode {
    let prober = match build_spec(&args)
        .and_then(|spec| Ok(Prober::new(spec, Arc::new(TlsConfigCache::new()))?))
    {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("vantage: {e:#}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    let options = OneshotOptions {
        count: args.count,
        interval: args.interval,
        concurrency: args.concurrency as usize,
        significant_digits: args.precision,
    };
    let report = oneshot::run(prober, options, stop_rx).await;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render_table());
    }
    if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
