//! `vantage aggregator`, `vantage aggregator bootstrap` and `vantage plan`: the fleet file and
//! flags into an [`Aggregator`] with the configured backend, then serve and evaluate, or print
//! one plan; or the AWS layout the fleet's health votes need, created (bootstrap) or compared
//! with AWS (plan) or only shown (check-config).

use super::{duration_arg, EXIT_BAD_INPUT};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;
use vantage_aggregator::backend::route53::layout::{layout, Layout};
use vantage_aggregator::backend::route53::sdk_loader;
use vantage_aggregator::backend::{AnyBackend, Backend};
use vantage_aggregator::bootstrap::{self, BootstrapError, Clients, Mode};
use vantage_aggregator::config::{AggregatorConfig, BackendKind};
use vantage_aggregator::reload::ConfigReload;
use vantage_aggregator::service::{self, Aggregator, ServeOptions};
use vantage_protocol::config::FleetConfig;
use vantage_runtime::http_server::Limits;
use vantage_runtime::reload::{hangup_count, ReloadTrigger};
use vantage_runtime::tls_server::{ServerTls, TlsFiles, RELOAD_POLL};

/// `--watch-config`: how often the fleet file's modification time is looked at.
const WATCH_CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) const AGGREGATOR_HELP: &str = "\
API: POST /v1/reports (agents, signed with an agent key), GET /v1/state (a bearer token when
aggregator.state_token_env is set), POST /v1/overrides (from any address, only requests signed
with a key in [aggregator.admin_keys], each with a fresh nonce; send them with
`vantage override`; without admin keys overrides are refused).
The decision log (one JSON line per transition, applied change, override with the key that
made it, and alert) goes to stdout unless --decision-log names a file. Backend dry-run (the
default) plans and logs only.
TLS: with --tls-cert and --tls-key the API is HTTPS only (rustls); the certificate and key are
reloaded on SIGHUP and when the files change (a failed reload keeps the old pair and logs why);
SIGHUP (and with --watch-config a change of the file) also rereads the fleet file: Regions,
agent and admin keys, [policy] and [weights] apply live; a bad file or a change to a key that
needs a restart (backend, [route53], replicas, lease, window, periods) keeps the file in use.
--tls-client-ca makes agents present a client certificate from that CA (mTLS). Without them
the API is plain HTTP, meant for a TLS-terminating load balancer or a private network.
Limits: a stalled request head is cut after --header-read-timeout, an idle connection after
--idle-timeout; beyond --max-connections clients wait in the accept backlog.";

pub(super) const BOOTSTRAP_HELP: &str = "\
What it builds, from the fleet file alone (`vantage check-config FILE` prints the same layout):
  per Region and per voter (each of aggregator.replicas, or the one aggregator), a CloudWatch
  alarm vantage-<fleet>-<region>[-<replica>] in the voter's own AWS Region on RegionHealthy
  {Region[, Replica]} (Minimum < 1 over 60 s; missing data leaves it INSUFFICIENT_DATA), and a
  CLOUDWATCH_METRIC health check on it (insufficient data: last known status), so a silent
  voter keeps its last vote;
  with replicas, per Region a CALCULATED health check healthy while a majority of those are;
  each Region's weighted record ([route53.regions.<r>] set_identifier) then uses the
  CALCULATED check (replicas) or the one check (one aggregator): an UPSERT that keeps its
  values, TTL and weight;
  the [aggregator.lease] DynamoDB table (partition key lease_id, on demand) when set.
Everything is read first; health checks are found by a deterministic CallerReference, alarms
by name, so a second run creates nothing; what differs from the layout is corrected. The
records themselves must exist (their values are yours). One line per object: created,
updated, exists; with --dry-run would create / would update, and nothing is written.
Credentials: the AWS default chain (environment, profile, instance role). Route 53 in
route53.aws_region (default us-east-1), CloudWatch in each voter's Region, both through
route53.endpoint_url when set; DynamoDB in aggregator.lease.region through its endpoint_url
(else route53.endpoint_url).
With aggregator.backend = \"arc\" it creates nothing: it asks the ARC control-config API
(DescribeRoutingControl, us-west-2, [arc] control_config_endpoint_url when set) whether each
[arc.regions.<r>] routing control exists in arc.control_panel_arn, one line each: exists or
MISSING; exit 1 when one is missing. The records' RECOVERY_CONTROL health checks are yours.
Exit status: 0 done, 1 an AWS call failed (the line names the object and the AWS error code),
2 a bad fleet file.
Example:
  vantage aggregator bootstrap --config fleet.toml --dry-run
  vantage aggregator bootstrap --config fleet.toml";

/// `vantage aggregator`: serve, unless a subcommand is named.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(super) struct AggregatorCommand {
    #[command(subcommand)]
    command: Option<AggregatorSubcommand>,
    #[command(flatten)]
    run: AggregatorArgs,
}

#[derive(Subcommand, Debug)]
enum AggregatorSubcommand {
    /// Create or adopt the AWS objects the fleet's health votes need (alarms, health checks,
    /// the records' health checks, the lease table); idempotent.
    #[command(after_help = BOOTSTRAP_HELP)]
    Bootstrap(BootstrapArgs),
}

#[derive(Args, Debug)]
pub(super) struct BootstrapArgs {
    /// Fleet file (TOML).
    #[arg(long, value_name = "FILE", env = "VANTAGE_CONFIG")]
    config: PathBuf,
    /// Read AWS and print what would be created; write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
pub(super) struct AggregatorArgs {
    /// Fleet file (TOML).
    #[arg(long, value_name = "FILE", env = "VANTAGE_CONFIG", required = true)]
    config: Option<PathBuf>,
    /// Address for the API (reports, state, overrides).
    #[arg(
        long,
        value_name = "ADDR",
        env = "VANTAGE_LISTEN",
        default_value = "127.0.0.1:8700"
    )]
    listen: std::net::SocketAddr,
    /// Serve Prometheus metrics on this address.
    #[arg(long, value_name = "ADDR", env = "VANTAGE_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// dry-run, route53 or arc (default: aggregator.backend from the fleet file, else dry-run).
    #[arg(long, env = "VANTAGE_BACKEND")]
    backend: Option<String>,
    /// Which of aggregator.replicas this process is (required when the fleet file lists
    /// replicas): its health votes carry this id and go to its Region's CloudWatch.
    #[arg(long, value_name = "ID", env = "VANTAGE_REPLICA")]
    replica: Option<String>,
    /// Persist decision state here (default: aggregator.state_file).
    #[arg(long, value_name = "FILE", env = "VANTAGE_STATE_FILE")]
    state_file: Option<PathBuf>,
    /// JSON-lines decision log: a file, or - for stdout.
    #[arg(
        long,
        value_name = "FILE",
        env = "VANTAGE_DECISION_LOG",
        default_value = "-"
    )]
    decision_log: String,
    /// Serve the API over HTTPS with this certificate chain (PEM); without it the API is plain
    /// HTTP, for a TLS-terminating load balancer in front.
    #[arg(
        long,
        value_name = "FILE",
        env = "VANTAGE_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "VANTAGE_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Require agents to present a client certificate signed by this CA (PEM): mTLS.
    #[arg(
        long,
        value_name = "FILE",
        env = "VANTAGE_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    tls_client_ca: Option<PathBuf>,
    /// API connections served at once; more wait in the accept backlog.
    #[arg(long, value_name = "N", env = "VANTAGE_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// A client must send its request head (TLS handshake included) within this long.
    #[arg(long, value_name = "DUR", env = "VANTAGE_HEADER_READ_TIMEOUT", default_value = "10s",
          value_parser = duration_arg)]
    header_read_timeout: std::time::Duration,
    /// A connection with no request and no bytes this long is closed.
    #[arg(long, value_name = "DUR", env = "VANTAGE_IDLE_TIMEOUT", default_value = "60s",
          value_parser = duration_arg)]
    idle_timeout: std::time::Duration,
    /// Reload the fleet file also when its modification time changes (looked at every 2s),
    /// not only on SIGHUP.
    #[arg(long, env = "VANTAGE_WATCH_CONFIG")]
    watch_config: bool,
}

#[derive(Args, Debug)]
pub(super) struct PlanArgs {
    /// Fleet file (TOML).
    #[arg(long, value_name = "FILE", env = "VANTAGE_CONFIG")]
    config: PathBuf,
    /// dry-run, route53 or arc (default: aggregator.backend from the fleet file, else dry-run).
    #[arg(long, env = "VANTAGE_BACKEND")]
    backend: Option<String>,
    /// Plan as this replica of aggregator.replicas (default: the first listed).
    #[arg(long, value_name = "ID", env = "VANTAGE_REPLICA")]
    replica: Option<String>,
    /// Decision state to plan from (default: aggregator.state_file).
    #[arg(long, value_name = "FILE", env = "VANTAGE_STATE_FILE")]
    state_file: Option<PathBuf>,
}

/// Which replica a command speaks for.
#[derive(Clone, Copy)]
enum Replica<'a> {
    /// Exactly the one named (required when the fleet file lists replicas).
    Named(Option<&'a str>),
    /// The one named, else the first listed.
    FirstByDefault(Option<&'a str>),
}

fn load(
    config: &std::path::Path,
    backend: Option<&str>,
    replica: Replica<'_>,
    state_file: Option<&std::path::Path>,
) -> anyhow::Result<AggregatorConfig> {
    let fleet = FleetConfig::load(config)?;
    let id = match replica {
        Replica::Named(id) => id.map(str::to_owned),
        // `plan` speaks for the first replica unless told otherwise.
        Replica::FirstByDefault(id) => id.map(str::to_owned).or_else(|| {
            fleet
                .aggregator
                .replicas
                .first()
                .map(|r| r.id.get_ref().clone())
        }),
    };
    let mut c = AggregatorConfig::from_fleet(fleet)?.for_replica(id.as_deref())?;
    match backend {
        None => {}
        Some("dry-run") => c.backend = BackendKind::DryRun,
        Some("route53") if c.fleet.route53.is_some() => c.backend = BackendKind::Route53,
        Some("route53") => {
            anyhow::bail!("--backend route53 needs a [route53] section in the fleet file")
        }
        Some("arc") if c.fleet.arc.is_some() && c.fleet.route53.is_some() => {
            c.backend = BackendKind::Arc
        }
        Some("arc") => {
            anyhow::bail!("--backend arc needs [arc] and [route53] sections in the fleet file")
        }
        Some(other) => anyhow::bail!("--backend {other:?}: use dry-run, route53 or arc"),
    }
    if let Some(p) = state_file {
        c.state_file = Some(p.to_owned());
    }
    Ok(c)
}

fn decision_log(path: &str) -> anyhow::Result<Box<dyn std::io::Write + Send>> {
    if path == "-" {
        return Ok(Box::new(std::io::stdout()));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("decision log {path}: {e}"))?;
    Ok(Box::new(file))
}

/// Loads the configuration, builds the configured backend and hands both to `then`: the one
/// path `vantage aggregator` and `vantage plan` share. Exit 2 for a bad fleet file or flag,
/// 1 when the backend or `then` fails.
async fn with_backend<F, Fut>(
    config: &std::path::Path,
    backend: Option<&str>,
    replica: Replica<'_>,
    state_file: Option<&std::path::Path>,
    long_running: bool,
    then: F,
) -> ExitCode
where
    F: FnOnce(AggregatorConfig, AnyBackend) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = match load(config, backend, replica, state_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vantage: {e:#}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    // The aggregator keeps deciding when AWS is unreachable at start; `plan` is one answer now.
    let backend = if long_running {
        AnyBackend::from_config_tolerant(&config).await
    } else {
        AnyBackend::from_config(&config).await
    };
    let result = match backend {
        Ok(backend) => then(config, backend).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `vantage aggregator [bootstrap]`.
pub async fn command(args: AggregatorCommand) -> ExitCode {
    match args.command {
        Some(AggregatorSubcommand::Bootstrap(b)) => run_bootstrap(b).await,
        None => run(args.run).await,
    }
}

async fn run(args: AggregatorArgs) -> ExitCode {
    let Some(path) = args.config.clone() else {
        // clap requires --config (or VANTAGE_CONFIG) when no subcommand is named.
        eprintln!("vantage: --config FILE is required");
        return ExitCode::from(EXIT_BAD_INPUT);
    };
    with_backend(
        &path,
        args.backend.as_deref(),
        Replica::Named(args.replica.as_deref()),
        args.state_file.as_deref(),
        true,
        |config, backend| serve(config, backend, &args, &path),
    )
    .await
}

async fn serve<B: Backend>(
    config: AggregatorConfig,
    backend: B,
    args: &AggregatorArgs,
    config_path: &std::path::Path,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    if let Some(addr) = args.metrics_listen {
        let metrics_listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = vantage_runtime::metrics_http::serve(
                metrics_listener,
                handle,
                std::future::pending(),
            )
            .await
            {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    // SIGTERM (ECS, systemd) or Ctrl-C: stop accepting, finish the requests in flight, exit 0.
    // Handlers are installed before the readiness line, so a signal right after it counts.
    let rx = vantage_runtime::shutdown::stop_flag();
    // SIGHUP is counted from here on (and no longer kills the process): the TLS pair and the
    // fleet file both reload on it.
    let hangups = hangup_count();
    // TLS files are read before anything says the API is listening.
    let options = serve_options(args, &rx, &hangups)?;
    let log = decision_log(&args.decision_log)?;
    let backend_name = backend.name();
    let aggregator = Aggregator::new(config, backend, Some(log))?;
    // Route 53 with several replicas: only the holder of the DynamoDB lease writes weights.
    let aggregator =
        match vantage_aggregator::lease::lease_from_config(&aggregator.config()).await? {
            Some(lease) => aggregator.with_lease(lease),
            None => aggregator,
        };
    // `[[notify]]` sinks: secrets read and clients built now, so a missing secret stops the
    // start instead of the first page.
    let aggregator = if aggregator.config().fleet.notify.is_empty() {
        aggregator
    } else {
        let notifier = vantage_aggregator::notify::Notifier::from_config(
            &aggregator.config().fleet,
            vantage_aggregator::notify::Tuning::default(),
        )
        .await?;
        aggregator.with_notifier(Arc::new(notifier))
    };
    let aggregator = Arc::new(aggregator);
    let trigger = ReloadTrigger::new(hangups);
    let trigger = if args.watch_config {
        trigger.watching(vec![config_path.to_owned()], WATCH_CONFIG_POLL)
    } else {
        trigger
    };
    let reload = ConfigReload {
        path: config_path.to_owned(),
        replica: args.replica.clone(),
        trigger,
    };
    tokio::spawn(aggregator.clone().run_reloads(reload, rx.clone()));
    eprintln!(
        "vantage aggregator: listening on {}{}, backend {backend_name}, evaluating every {:?} over {:?}",
        listener.local_addr()?,
        match (&args.tls_cert, &args.tls_client_ca) {
            (None, _) => " (plain HTTP)",
            (Some(_), None) => " (HTTPS)",
            (Some(_), Some(_)) => " (HTTPS, client certificates required)",
        },
        aggregator.config().evaluate_every,
        aggregator.config().window
    );
    service::run_with(aggregator, listener, options, rx).await;
    Ok(())
}

/// The API's limits from the flags and, with `--tls-cert`, its TLS: loaded now (a bad file
/// stops the start) and watched for changes until `stop`.
fn serve_options(
    args: &AggregatorArgs,
    stop: &watch::Receiver<bool>,
    hangups: &watch::Receiver<u64>,
) -> anyhow::Result<ServeOptions> {
    let limits = Limits {
        max_connections: args.max_connections as usize,
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
        ..Limits::API
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert_file), Some(key_file)) => {
            let tls = ServerTls::load(TlsFiles {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                client_ca_file: args.tls_client_ca.clone(),
            })?;
            let mut stop = stop.clone();
            tokio::spawn(tls.clone().watch(hangups.clone(), RELOAD_POLL, async move {
                let _ = stop.wait_for(|s| *s).await;
            }));
            Some(tls.acceptor())
        }
        _ => None,
    };
    Ok(ServeOptions { limits, tls })
}

pub async fn plan(args: PlanArgs) -> ExitCode {
    with_backend(
        &args.config,
        args.backend.as_deref(),
        Replica::FirstByDefault(args.replica.as_deref()),
        args.state_file.as_deref(),
        false,
        print_plan,
    )
    .await
}

async fn print_plan(config: AggregatorConfig, backend: AnyBackend) -> anyhow::Result<()> {
    let arc = match &backend {
        AnyBackend::Arc(b) => Some(b.clone()),
        _ => None,
    };
    let state = config.state_file.clone();
    let fleet = config.fleet.clone();
    let kind = config.backend;
    let aggregator = Aggregator::new(config, backend, None)?;
    let (desired, changes) = aggregator.plan_now(SystemTime::now()).await?;
    println!(
        "desired state ({}, from {}):",
        aggregator.backend().name(),
        state.map_or(
            "a fresh start: every Region in service".to_owned(),
            |p| format!("the state file {}", p.display())
        )
    );
    let mut heading = None;
    for (unit, d) in &desired {
        // With [[services]] the units are SERVICE/REGION: one heading per service.
        let (service, region) = vantage_protocol::config::split_unit(unit);
        if let Some(service) = service {
            if heading != Some(service) {
                println!(" service {service}:");
                heading = Some(service);
            }
        }
        println!(
            "  {region:<20} {:<15} weight {:>3}",
            if d.in_service {
                "in service"
            } else {
                "OUT of service"
            },
            d.weight
        );
    }
    if changes.is_empty() {
        println!(
            "no changes: {} already matches",
            aggregator.backend().name()
        );
    } else {
        println!("{} change(s):", changes.len());
        for c in &changes {
            println!("  {c}");
        }
    }
    if let Some(arc) = &arc {
        super::arc::print_now(arc).await;
    }
    plan_layout(&fleet, kind).await
}

/// The clients for `layout`: Route 53 and CloudWatch through `[route53]`'s endpoint and Region,
/// DynamoDB through `[aggregator.lease]`'s.
async fn layout_clients(fleet: &FleetConfig, layout: &Layout) -> Clients {
    let section = fleet.route53.as_ref();
    let endpoint = section.and_then(|s| s.endpoint_url.as_ref().map(|e| e.get_ref().as_str()));
    let aws_region = section.and_then(|s| s.aws_region.as_deref());
    let aws = sdk_loader(endpoint, aws_region).load().await;
    let lease = fleet.aggregator.lease.as_ref();
    // The lease's endpoint, else the [route53] one, as the lease keeper reaches it.
    let lease_endpoint = lease
        .and_then(|l| l.endpoint_url.as_ref().map(|e| e.get_ref().as_str()))
        .or(endpoint);
    let lease_region = layout.lease.as_ref().map(|l| l.aws_region.as_str());
    let lease_sdk = sdk_loader(lease_endpoint, lease_region).load().await;
    Clients::new(layout, &aws, &lease_sdk)
}

async fn run_bootstrap(args: BootstrapArgs) -> ExitCode {
    let bad_input = |e: &dyn std::fmt::Display| {
        eprintln!("vantage: {e}");
        ExitCode::from(EXIT_BAD_INPUT)
    };
    let fleet = match FleetConfig::load(&args.config) {
        Ok(f) => f,
        Err(e) => return bad_input(&e),
    };
    // With ARC the records' health checks are the routing controls': the Route 53 health
    // layout must not replace them. Bootstrap verifies the routing controls instead.
    if let Some(settings) = super::arc::settings(&fleet) {
        return super::arc::bootstrap(&fleet, &settings).await;
    }
    let layout = match layout(&fleet) {
        Ok(Some(l)) => l,
        Ok(None) => {
            return bad_input(
                &"nothing to bootstrap: the fleet file has neither \
                aggregator.replicas nor a [route53] section",
            )
        }
        Err(e) => return bad_input(&e),
    };
    let clients = layout_clients(&fleet, &layout).await;
    let mode = if args.dry_run {
        Mode::Inspect
    } else {
        Mode::Apply
    };
    match bootstrap::bootstrap(&layout, &clients, mode, &mut |line| println!("{line}")).await {
        Ok(lines) => {
            let count =
                |f: fn(bootstrap::Status) -> bool| lines.iter().filter(|l| f(l.status)).count();
            let todo = count(|s| !s.is_done());
            let changed =
                count(|s| matches!(s, bootstrap::Status::Created | bootstrap::Status::Updated));
            if args.dry_run {
                eprintln!(
                    "vantage: dry run: {todo} object(s) to create or update, nothing written"
                );
            } else {
                eprintln!(
                    "vantage: {changed} object(s) created or updated, {} already there",
                    lines.len() - changed
                );
            }
            ExitCode::SUCCESS
        }
        Err(e @ BootstrapError::Unsupported(_)) => bad_input(&e),
        Err(e) => {
            eprintln!("vantage: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config`'s section: the AWS layout of a fleet with replicas or `[route53]`, offline.
pub(super) fn print_layout(fleet: &FleetConfig) {
    if let Some(settings) = super::arc::settings(fleet) {
        return super::arc::print_layout(fleet, &settings);
    }
    match layout(fleet) {
        Ok(Some(l)) => print!("\n{l}"),
        Ok(None) => {}
        Err(e) => eprintln!("vantage: warning: the AWS layout cannot be computed: {e}"),
    }
}

/// `plan`'s section: the layout, and with the route53 backend what AWS lacks of it.
async fn plan_layout(fleet: &FleetConfig, backend: BackendKind) -> anyhow::Result<()> {
    if let Some(settings) = super::arc::settings(fleet) {
        super::arc::print_layout(fleet, &settings);
        return Ok(());
    }
    let Some(layout) = layout(fleet)? else {
        return Ok(());
    };
    if backend != BackendKind::Route53 || !layout.data_plane {
        print!("\n{layout}");
        return Ok(());
    }
    println!("\nAWS layout of fleet {} against AWS now:", layout.fleet);
    let clients = layout_clients(fleet, &layout).await;
    let found = bootstrap::bootstrap(&layout, &clients, Mode::Inspect, &mut |line| {
        println!("  {:<8} {}", line.status.plan_verb(), line.object);
    })
    .await;
    // The plan above stands on its own: a layout AWS will not show us (no DescribeAlarms
    // permission, say) is a warning, not a failed plan.
    let lines = match found {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("vantage: warning: cannot compare the layout with AWS: {e}");
            return Ok(());
        }
    };
    let todo = lines.iter().filter(|l| !l.status.is_done()).count();
    if todo > 0 {
        println!("{todo} object(s) missing or different: `vantage aggregator bootstrap --config FILE` creates them");
    }
    Ok(())
}
