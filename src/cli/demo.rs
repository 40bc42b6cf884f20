//! `vantage demo`: flags into [`DemoOptions`], then run, print the summary.

use super::{DemoArgs, EXIT_BAD_INPUT};
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vantage_demo::layout::parse_services;
use vantage_demo::scenario::{
    parse_aggregator_at, parse_degrade, parse_flaky, parse_region_at, parse_slow, DEFAULT_REGIONS,
};
use vantage_demo::{DemoOptions, Outputs};

fn options(args: &DemoArgs) -> Result<DemoOptions, String> {
    let list = |s: &Option<String>, default: &[&str]| -> Vec<String> {
        match s {
            Some(s) => s
                .split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect(),
            None => default.iter().map(|x| x.to_string()).collect(),
        }
    };
    let regions = list(&args.regions, &DEFAULT_REGIONS);
    let services = match &args.services {
        Some(text) => parse_services(text)?,
        None => Vec::new(),
    };
    let vantages = match &args.vantages {
        Some(_) => list(&args.vantages, &[]),
        None => regions.clone(),
    };
    let mut faults = Vec::new();
    for f in &args.fail {
        faults.push(parse_region_at("--fail", f, false).map_err(|e| e.to_string())?);
    }
    for f in &args.recover {
        faults.push(parse_region_at("--recover", f, true).map_err(|e| e.to_string())?);
    }
    for f in &args.slow {
        faults.push(parse_slow(f).map_err(|e| e.to_string())?);
    }
    for f in &args.flaky {
        faults.push(parse_flaky(f).map_err(|e| e.to_string())?);
    }
    for f in &args.degrade {
        faults.push(parse_degrade(f).map_err(|e| e.to_string())?);
    }
    let mut replica_faults = Vec::new();
    for f in &args.kill_aggregator {
        replica_faults
            .push(parse_aggregator_at("--kill-aggregator", f, false).map_err(|e| e.to_string())?);
    }
    for f in &args.revive_aggregator {
        replica_faults
            .push(parse_aggregator_at("--revive-aggregator", f, true).map_err(|e| e.to_string())?);
    }
    let mut duration = args.duration.map(Duration::from_secs_f64);
    // Killing a replica alone is not a scenario: without a Region fault the embedded one runs.
    if faults.is_empty() && !args.no_faults {
        // The embedded default: watch a Region fail and come back.
        let default = DemoOptions::embedded_default();
        if regions.iter().any(|r| r == "us-east-1") {
            faults = default.faults;
            duration = duration.or(default.duration);
        }
    }
    faults.extend(replica_faults);
    let o = DemoOptions {
        regions,
        vantages,
        duration,
        faults,
        probe_interval: Duration::from_secs(1),
        aggregators: usize::from(args.aggregators),
        services,
    };
    o.validate()?;
    Ok(o)
}

pub async fn run(args: DemoArgs) -> ExitCode {
    let options = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vantage: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let page = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vantage: cannot listen on {} for the status page: {e} (choose another with --listen)", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let render: Option<Arc<dyn Fn() -> String + Send + Sync>> =
        match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(Arc::new(move || handle.render())),
            Err(_) => None,
        };
    // Ctrl-C or SIGTERM ends the demo early, with its summary. Handlers go in before the
    // readiness line below, so a signal right after it counts.
    let stop_rx = vantage_runtime::shutdown::stop_flag();
    let live = !args.no_live && std::io::stdout().is_terminal();
    eprintln!(
        "vantage demo: status page on http://{}/ ; {}{} Regions, {} vantages{}{}",
        page.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        if options.named() {
            format!("services {} in each of ", options.services.join(", "))
        } else {
            String::new()
        },
        options.regions.len(),
        options.vantages.len(),
        if options.aggregators > 1 {
            format!(", {} aggregator replicas", options.aggregators)
        } else {
            String::new()
        },
        options
            .duration
            .map_or(", until Ctrl-C".to_owned(), |d| format!(
                ", {} s",
                d.as_secs()
            ))
    );
    let outputs = Outputs {
        page: Some(page),
        events_file: args.events.clone(),
        live,
        print_events: true,
        metrics: render,
    };
    match vantage_demo::run(options, outputs, stop_rx).await {
        Ok(summary) => {
            print!("{}", summary.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vantage: {e}");
            ExitCode::FAILURE
        }
    }
}
