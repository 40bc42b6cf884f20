//! `bench-aggregator`: the aggregator at fleet scale — how many target-intervals one core
//! ingests (verify, parse, validate, decode, merge) and how long one evaluation of every
//! service takes over a full window, for a single-API fleet (1,000 endpoints × 30 vantages)
//! and a `[[services]]` fleet (200 services × 3 Regions × 10 vantages, 1 s reports). Prints a
//! table per fleet and the two side by side with the goals. See `bench-aggregator --help`.

// Measures wall time around synchronous code with no tokio clock involved: std's Instant is
// the right clock here; the ban exists for paused-clock tests.
#![allow(clippy::disallowed_types)]

mod clock;
mod fleet;
mod fmt;
mod run;
mod services;
mod stages;

use anyhow::{bail, Context as _};
use clap::Parser;
use fmt::{cpu_quantile, mib, ms, thousands, verdict, wall_quantile};
use run::{Figures, Scenario, DECISION_GOAL, INGEST_GOAL};
use std::fmt::Write as _;
use std::process::ExitCode;

const LONG_ABOUT: &str = "\
The aggregator at fleet scale, in one process, single-threaded where it is timed. Two fleets, \
one after the other, then a summary with both side by side and the goals:

- services: a fleet file of --services [[services]] (svc-000, ...), each with a global URL and \
the same --service-regions Regions (us-east-1, eu-west-1, ap-southeast-1, ...), each Region \
with a status and a deep URL; --service-vantages vantages; report_interval and probe interval \
1s (window 3 s). Every report carries every service's targets: global plus status and deep per \
Region (1,400 for 200 × 3). One unit (service in Region) in a hundred fails most probes; a \
service's global target is answered by its first Region that is up.
- single API: a fleet file with --endpoints Regions (r0000, ...; each Region's status target is \
one endpoint) and --vantages vantages, report_interval 10s, window 30s. One endpoint in a \
hundred fails most probes.

Each fleet is parsed with FleetConfig::parse and AggregatorConfig::from_fleet. Before anything \
is timed, every vantage's report for each of the window's three intervals is built as an agent \
builds it: per target, IntervalStats recorded from synthetic probes (dns absent; connect \
0.3-3 ms, tls 1-5 ms, ttfb 5-200 ms with a long tail, transfer ~0.1 ms, total), report::build, \
JSON, auth::sign. About one healthy target-interval in twenty has a failure or two.

Timed, per fleet:
1. Ingest: Aggregator::ingest (what POST /v1/reports calls: HMAC verify, JSON parse, validate, \
histogram decode, merge into the window) for every report, single-threaded, on a fresh \
aggregator per repeat. Throughput per core = target-intervals / process CPU seconds \
(clock_gettime, CLOCK_PROCESS_CPUTIME_ID). Then each stage alone over the same reports, by this \
thread's CPU time, and the sparse decoder ingest uses beside hdrhistogram's dense one (checked, \
untimed, to give the same pairs on every histogram).
2. Decision, each after one warm-up: Window::observations for every unit (read off the \
per-(unit, vantage) tallies; again with the range moved by one interval every call, so every \
tally slides; and Window::observations_rescan, the full rescan before the tallies, checked \
equal); \
every service's traffic evidence (Window::layer_traffic_by_service for the global and the DNS layer, \
as Aggregator::decide gathers it); decide::evaluate_services alone on pre-built observations \
(every service's own decide::evaluate); Aggregator::decide (one tick of the evaluation loop: observations, traffic \
evidence, every service decided, logged, handed to the planes); Aggregator::plan_now (decision \
+ dry-run observe + reconcile plan) and Aggregator::evaluate (plus applying to the dry-run \
backend). p50/p99 are nearest-rank over --iterations.

Peak RSS is VmHWM from /proc/self/status, reset (clear_refs 5) between the fleets.

Goals (issue 12): one evaluation of every service (Aggregator::decide) < 100 ms p50; ingest >= \
50,000 target-intervals/s per core. The single-API run's own goal was decision + reconcile plan \
(plan_now) < 100 ms. Use --release for figures.";

#[derive(Parser, Debug)]
#[command(
    name = "bench-aggregator",
    about = "aggregator ingest throughput and decision time at fleet scale, one API and many services",
    long_about = LONG_ABOUT
)]
struct Args {
    /// Services in the multi-service fleet; 0 skips that run.
    #[arg(long, default_value_t = 200)]
    services: usize,
    /// Regions of each service.
    #[arg(long, default_value_t = 3)]
    service_regions: usize,
    /// Vantages of the multi-service fleet.
    #[arg(long, default_value_t = 10)]
    service_vantages: usize,
    /// Probes per target per 1 s interval in the multi-service fleet (probe interval 1 s).
    #[arg(long, default_value_t = 1)]
    service_probes: u64,
    /// Endpoints (Regions in the fleet file) of the single-API fleet; 0 skips that run.
    #[arg(long, default_value_t = 1000)]
    endpoints: usize,
    /// Vantages of the single-API fleet, each sending one report per interval.
    #[arg(long, default_value_t = 30)]
    vantages: usize,
    /// Probes per target per 10 s interval in the single-API fleet.
    #[arg(long, default_value_t = 10)]
    probes: u64,
    /// Ingest repeats, each on a fresh aggregator.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Timed iterations of each decision measurement (after one warm-up).
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// Seed of the synthetic timings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads building the reports (not timed); default: every core.
    #[arg(long)]
    build_threads: Option<usize>,
    /// A quick run: 20 services, 100 endpoints × 5 vantages, 1 repeat, 5 iterations.
    #[arg(long)]
    quick: bool,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.services = args.services.min(20);
        args.endpoints = 100;
        args.vantages = 5;
        args.repeats = 1;
        args.iterations = 5;
    }
    match run_all(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-aggregator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_all(args: &Args) -> anyhow::Result<()> {
    if args.repeats == 0 || args.iterations == 0 {
        bail!("--repeats and --iterations must be positive");
    }
    if args.services > 0 && (args.service_regions == 0 || args.service_vantages == 0) {
        bail!("--service-regions and --service-vantages must be positive");
    }
    if args.endpoints > 0 && args.vantages == 0 {
        bail!("--vantages must be positive");
    }
    let threads = args.build_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let profile = if cfg!(debug_assertions) {
        "DEBUG build: figures mean nothing"
    } else {
        "release"
    };
    let scenario = |title: String, config, layout, vantages, probes| Scenario {
        title: format!("{title} ({profile}, {cores} cores)"),
        config,
        layout,
        vantages,
        probes,
        repeats: args.repeats,
        iterations: args.iterations,
        seed: args.seed,
        threads,
    };
    let mut columns: Vec<(String, Figures)> = Vec::new();
    // The services run first: the single-API run's larger peak then cannot hide in its VmHWM.
    if args.services > 0 {
        let text = services::fleet_toml(args.services, args.service_regions, args.service_vantages);
        let config = fleet::parse(&text).context("the services fleet file")?;
        let s = scenario(
            format!(
                "vantage bench/aggregator — {} services × {} Regions × {} vantages, 1 s reports, 3 s window",
                args.services, args.service_regions, args.service_vantages
            ),
            config,
            services::layout(args.services, args.service_regions),
            args.service_vantages,
            args.service_probes,
        );
        let (table, figures) = run::run(&s)?;
        print!("{table}");
        columns.push((
            format!(
                "{} svc × {} Regions × {} vantages",
                args.services, args.service_regions, args.service_vantages
            ),
            figures,
        ));
    }
    if args.endpoints > 0 {
        // Peak RSS per fleet: reset VmHWM to the current RSS (Linux 4.0+; ignored elsewhere).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let config = fleet::config(args.endpoints, args.vantages).context("fleet file")?;
        let layout = fleet::Layout::single(&config.regions);
        let s = scenario(
            format!(
                "vantage bench/aggregator — 1 API: {} endpoints × {} vantages, 10 s reports, 30 s window",
                thousands(args.endpoints as f64),
                args.vantages
            ),
            config,
            layout,
            args.vantages,
            args.probes,
        );
        let (table, figures) = run::run(&s)?;
        print!("{table}");
        columns.push((
            format!(
                "1 API: {} endpoints × {} vantages",
                thousands(args.endpoints as f64),
                args.vantages
            ),
            figures,
        ));
    }
    print!("{}", summary(&columns));
    println!(
        "\ningest: {} repeats, each on a fresh aggregator, single thread; per core = target-intervals / process CPU s (clock_gettime); stages: each alone over the same reports, thread CPU; prepare = check against the fleet + sparse decode + buckets built; merge = Window::merge alone (series, tallies); dense decode = every histogram through hdrhistogram + total to sparse pairs (before protocol::sparse); projected = the stages' sum",
        args.repeats
    );
    println!(
        "decision rows: wall time over {} iterations after one warm-up, nearest-rank p50/p99 (CPU p50 in brackets); evaluate_services from the steady state (every unit known)",
        args.iterations
    );
    Ok(())
}

/// The fleets side by side: one column each, the goal and PASS/MISS beside every figure.
fn summary(columns: &[(String, Figures)]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "summary (goals: issue 12)");
    let width = 52;
    let mut line = |what: &str, cells: Vec<String>| {
        let mut l = format!("{what:<46}");
        for c in cells {
            l += &format!(" {c:<width$}");
        }
        let _ = writeln!(t, "{}", l.trim_end());
    };
    line("", columns.iter().map(|(name, _)| name.clone()).collect());
    let cells = |f: &dyn Fn(&Figures) -> String| columns.iter().map(|(_, x)| f(x)).collect();
    line(
        "targets per report / target-intervals",
        cells(&|x| {
            format!(
                "{} / {}",
                thousands(x.targets_per_report as f64),
                thousands(x.target_intervals as f64)
            )
        }),
    );
    line(
        "ingest, target-intervals/s per core",
        cells(&|x| {
            format!(
                "{} (min {}) {}",
                thousands(x.ingest),
                thousands(x.ingest_min),
                verdict(x.ingest >= INGEST_GOAL, "≥ 50,000")
            )
        }),
    );
    let p50_p99 = |spans: &[clock::Span]| {
        let p50 = wall_quantile(spans, 0.5);
        format!(
            "{:.1} / {:.1} ms (CPU {:.1}) {}",
            ms(p50),
            ms(wall_quantile(spans, 0.99)),
            ms(cpu_quantile(spans, 0.5)),
            verdict(p50 < DECISION_GOAL, "< 100")
        )
    };
    line(
        "one evaluation (Aggregator::decide) p50/p99",
        cells(&|x| p50_p99(&x.decide)),
    );
    line(
        "decision + reconcile plan (plan_now) p50/p99",
        cells(&|x| p50_p99(&x.plan)),
    );
    let part = |spans: &[clock::Span]| {
        format!(
            "{:.1} / {:.1} ms",
            ms(wall_quantile(spans, 0.5)),
            ms(wall_quantile(spans, 0.99))
        )
    };
    line(
        "  of which window observations p50/p99",
        cells(&|x| part(&x.observe)),
    );
    line(
        "  observations by rescan (before) p50/p99",
        cells(&|x| part(&x.rescan)),
    );
    line(
        "  of which traffic evidence p50/p99",
        cells(&|x| part(&x.traffic)),
    );
    line(
        "  of which evaluate_services p50/p99",
        cells(&|x| part(&x.core)),
    );
    line("peak RSS (VmHWM)", cells(&|x| mib(x.peak)));
    line(
        "other processes meanwhile, % of a core",
        cells(&|x| x.others.map_or("n/a".into(), |o| format!("{o:.0}%"))),
    );
    t
}
