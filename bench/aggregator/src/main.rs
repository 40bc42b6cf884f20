//! `bench-aggregator`: the aggregator at fleet scale — how many target-intervals one core
//! ingests (verify, parse, validate, decode, merge) and how long the decision and reconcile
//! plan take over a full window. Prints a table. See `bench-aggregator --help`.

// Measures wall time around synchronous code with no tokio clock involved: std's Instant is
// the right clock here; the ban exists for paused-clock tests.
#![allow(clippy::disallowed_types)]

mod clock;
mod fleet;
mod stages;

use stages::stages;

use anyhow::{bail, Context as _};
use clap::Parser;
use clock::{measure, Span};
use std::fmt::Write as _;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::decide;
use vantage_aggregator::model::{ModelState, Overrides};
use vantage_aggregator::service::{Aggregator, Ingested};

const LONG_ABOUT: &str = "\
The aggregator at fleet scale, in one process, single-threaded where it is timed.

A fleet file with N Regions (r0000, r0001, ...; each Region's status target is one endpoint to \
the aggregator) and M vantages, report_interval 10s, window 30s, is parsed with \
FleetConfig::parse and AggregatorConfig::from_fleet. Before anything is timed, every vantage's \
report for each of the window's three intervals is built as an agent builds it: per target, \
IntervalStats recorded from synthetic probes (dns absent; connect 0.3-3 ms, tls 1-5 ms, ttfb \
5-200 ms with a long tail, transfer ~0.1 ms, total), report::build, JSON, auth::sign. One \
endpoint in a hundred fails most probes from every vantage; about one target-interval in twenty \
has a failure or two.

Timed:
1. Ingest: Aggregator::ingest (what POST /v1/reports calls: HMAC verify, JSON parse, validate, \
histogram decode, merge into the window) for every report, single-threaded, on a fresh \
aggregator per repeat. Throughput per core = target-intervals / process CPU seconds \
(clock_gettime, CLOCK_PROCESS_CPUTIME_ID). Then each stage alone over the same reports, by this \
thread's CPU time, to show which dominates. Peak RSS is VmHWM from /proc/self/status.
2. Decision: Window::observations, decide::evaluate alone on pre-built observations, \
Aggregator::plan_now (observations + decide + dry-run observe + plan) and Aggregator::evaluate \
(plus applying to the dry-run backend), each after one warm-up.
3. The decoder ingest uses (vantage_protocol::sparse: V2 / V2-deflate straight to the sparse \
pairs the window keeps, reusing one inflate state), beside hdrhistogram's dense decoder, which \
the stage split times as 'decode' (the ingest path before protocol::sparse; since then the \
stage split's 'merge' share, ingest minus that decode, is not meaningful). The sparse decoder is \
checked (untimed) to give exactly hdrhistogram's pairs for every histogram of the run, and timed \
again on the same histograms re-encoded as uncompressed V2.

Targets (from the issue): ingest >= 50,000 target-intervals/s per core; decision + reconcile \
plan < 100 ms for 1,000 endpoints x 30 vantages. Use --release for figures.";

#[derive(Parser, Debug)]
#[command(
    name = "bench-aggregator",
    about = "aggregator ingest throughput and decision time at fleet scale",
    long_about = LONG_ABOUT
)]
struct Args {
    /// Endpoints (Regions in the fleet file); each report carries one target per endpoint.
    #[arg(long, default_value_t = 1000)]
    endpoints: usize,
    /// Vantages, each sending one report per interval.
    #[arg(long, default_value_t = 30)]
    vantages: usize,
    /// Probes per target per interval.
    #[arg(long, default_value_t = 10)]
    probes: u64,
    /// Ingest repeats, each on a fresh aggregator.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Timed iterations of each decision measurement (after one warm-up).
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Seed of the synthetic timings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads building the reports (not timed); default: every core.
    #[arg(long)]
    build_threads: Option<usize>,
    /// A quick run: 100 endpoints, 5 vantages, 1 repeat, 5 iterations.
    #[arg(long)]
    quick: bool,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.endpoints = 100;
        args.vantages = 5;
        args.repeats = 1;
        args.iterations = 5;
    }
    match run(&args) {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-aggregator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<String> {
    if args.endpoints == 0 || args.vantages == 0 || args.repeats == 0 || args.iterations == 0 {
        bail!("--endpoints, --vantages, --repeats and --iterations must be positive");
    }
    let config = fleet::config(args.endpoints, args.vantages).context("fleet file")?;
    let threads = args.build_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);

    eprintln!(
        "building {} reports of {} targets on {threads} threads (not timed)...",
        args.vantages as u64 * fleet::INTERVALS,
        args.endpoints
    );
    let started = Instant::now();
    let built = fleet::reports(&config, args.vantages, args.probes, args.seed, threads);
    let build_time = started.elapsed();
    let reports = &built.reports;
    let target_intervals: u64 = reports.iter().map(|r| r.targets as u64).sum();
    let body_bytes: u64 = reports.iter().map(|r| r.body.len() as u64).sum();
    let per_target = body_bytes as f64 / target_intervals as f64;
    let per_report = body_bytes as f64 / reports.len() as f64;
    let rss_before = clock::status_bytes("VmRSS:");

    // 1. Ingest, end to end.
    eprintln!("ingest: {} repeats...", args.repeats);
    let now = fleet::now();
    let mut runs: Vec<Span> = Vec::new();
    let mut aggregator = None;
    for _ in 0..args.repeats {
        // Dropping the previous aggregator's window is not part of the next run.
        drop(aggregator.take());
        let agg = Aggregator::new(config.clone(), DryRun::new(), None)?;
        let (result, span) = measure(|| {
            for r in reports {
                match agg.ingest(|n| r.header(n), &r.body, now) {
                    Ok(Ingested::Accepted { targets }) if targets == r.targets as u64 => {}
                    other => return Err((r.vantage, r.interval, format!("{other:?}"))),
                }
            }
            Ok(())
        });
        if let Err((v, i, what)) = result {
            bail!("report of vantage {v}, interval {i} was not accepted: {what}");
        }
        runs.push(span);
        aggregator = Some(agg);
    }
    let aggregator = aggregator.expect("at least one repeat");
    let rss_after_ingest = clock::status_bytes("VmRSS:");
    let mut per_core: Vec<f64> = runs
        .iter()
        .map(|s| target_intervals as f64 / s.process_cpu.as_secs_f64().max(1e-9))
        .collect();
    per_core.sort_by(f64::total_cmp);
    let mut per_wall: Vec<f64> = runs
        .iter()
        .map(|s| target_intervals as f64 / s.wall.as_secs_f64())
        .collect();
    per_wall.sort_by(f64::total_cmp);
    let mut ingest_cpu: Vec<Duration> = runs.iter().map(|s| s.cpu).collect();
    ingest_cpu.sort();
    let ingest_median_cpu = ingest_cpu[ingest_cpu.len() / 2];

    // Each stage alone.
    eprintln!("ingest stages...");
    let (stages, window) = stages(&config, reports, threads)?;

    // 2. Decision and reconcile plan over the full window.
    eprintln!("decision: {} iterations each...", args.iterations);
    let now_ms = fleet::now_ms();
    let from_ms = now_ms - config.window.as_millis() as u64;
    let observe = || {
        window.observations(
            &config.regions,
            from_ms,
            now_ms,
            config.latency_quantile,
            config.weight_quantile,
        )
    };
    let observations = observe();
    let observed_vantages: usize = observations.iter().map(|o| o.vantages.len()).sum();
    if observed_vantages != args.endpoints * args.vantages {
        bail!(
            "the window shows {observed_vantages} (Region, vantage) samples, expected {}",
            args.endpoints * args.vantages
        );
    }
    let observe_times = repeat(args.iterations, || {
        black_box(observe());
    });
    let decide_at = |previous: &ModelState| {
        decide::evaluate(
            &config.policy,
            &config.weights,
            &config.regions,
            previous,
            &observations,
            &Overrides::default(),
            Duration::from_millis(now_ms),
        )
    };
    // Steady state: every Region already known, as after the first evaluation.
    let (previous, _) = decide_at(&ModelState::default());
    let decide_times = repeat(args.iterations, || {
        black_box(decide_at(&previous));
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    // The first evaluation writes every Region's health and weight to the empty dry-run state.
    let (first, first_span) = measure(|| rt.block_on(aggregator.evaluate(now)));
    if !first.reconcile.ok {
        bail!("first evaluation failed: {:?}", first.reconcile.detail);
    }
    let first_changes = first.reconcile.changes.len();
    let mut planned = 0;
    let plan_times = repeat(args.iterations, || {
        let (_, changes) = rt
            .block_on(aggregator.plan_now(now))
            .expect("dry-run plans");
        planned = changes.len();
    });
    let mut applied = 0;
    let mut transitions = 0;
    let evaluate_times = repeat(args.iterations, || {
        let s = rt.block_on(aggregator.evaluate(now));
        applied = s.reconcile.changes.len();
        transitions += s.decision.transitions.len();
    });
    let out_of_service = aggregator.snapshot().map_or(0, |s| {
        s.decision.regions.iter().filter(|r| !r.in_service).count()
    });
    let peak = clock::status_bytes("VmHWM:");

    // The table.
    let mut t = String::new();
    let profile = if cfg!(debug_assertions) {
        "DEBUG build: figures mean nothing"
    } else {
        "release"
    };
    writeln!(
        t,
        "vantage bench/aggregator — {} endpoints × {} vantages, 10 s intervals, 30 s window ({profile}, {cores} cores)",
        thousands(args.endpoints as f64),
        args.vantages
    )?;
    writeln!(
        t,
        "input: {} reports, {} target-intervals, {} probes each, {:.1} histograms per target (dns absent); built in {:.1} s on {threads} threads, not timed",
        reports.len(),
        thousands(target_intervals as f64),
        args.probes,
        built.histograms as f64 / target_intervals as f64,
        build_time.as_secs_f64()
    )?;
    writeln!(t)?;
    let row = |t: &mut String, what: &str, result: String, target: &str| {
        let _ = writeln!(
            t,
            "{}",
            format!("{what:<44} {result:<66} {target}").trim_end()
        );
    };
    row(
        &mut t,
        "report size",
        format!(
            "{:.0} bytes/target-interval, {:.0} KiB per 1,000-target report",
            per_target,
            per_report / 1024.0 * 1000.0 / args.endpoints as f64
        ),
        "",
    );
    let median = per_core[per_core.len() / 2];
    row(
        &mut t,
        "ingest (verify+parse+decode+merge)",
        format!(
            "{} target-intervals/s per core (min {}; wall {})",
            thousands(median),
            thousands(per_core[0]),
            thousands(per_wall[per_wall.len() / 2])
        ),
        &verdict(median >= 50_000.0, "target ≥ 50,000"),
    );
    let per_ti = |d: Duration| d.as_secs_f64() * 1e6 / target_intervals as f64;
    let stage_sum = stages.verify + stages.parse + stages.validate + stages.decode + stages.merge;
    let other = ingest_median_cpu.saturating_sub(stage_sum);
    // Stages measured alone can add up to a little more than ingest: shares are of their sum.
    let whole = stage_sum + other;
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / whole.as_secs_f64();
    row(
        &mut t,
        "  stage split (dense decode, as before)",
        format!(
            "decode {:.0}%, parse {:.0}%, merge {:.0}%, verify {:.0}%, validate {:.0}%, other {:.0}%",
            pct(stages.decode),
            pct(stages.parse),
            pct(stages.merge),
            pct(stages.verify),
            pct(stages.validate),
            pct(other)
        ),
        "",
    );
    row(
        &mut t,
        "  per target-interval (CPU)",
        format!(
            "decode {:.2} µs, parse {:.2} µs, merge {:.2} µs, verify {:.2} µs, validate {:.2} µs; all {:.2} µs",
            per_ti(stages.decode),
            per_ti(stages.parse),
            per_ti(stages.merge),
            per_ti(stages.verify),
            per_ti(stages.validate),
            per_ti(ingest_median_cpu)
        ),
        "",
    );
    // Ingest without its decoding: the other stages plus whatever ingest spent beyond them.
    let rest = stage_sum - stages.decode + other;
    let projected = target_intervals as f64 / (rest + stages.sparse).as_secs_f64();
    row(
        &mut t,
        "  decode: protocol::sparse (ingest path)",
        format!(
            "{:.2} µs vs {:.2} µs per target-interval; same pairs on all {} histograms",
            per_ti(stages.sparse),
            per_ti(stages.decode),
            thousands(stages.agreed as f64)
        ),
        "",
    );
    row(
        &mut t,
        "  projected from the stages",
        format!("{} target-intervals/s per core", thousands(projected)),
        &verdict(projected >= 50_000.0, "target ≥ 50,000"),
    );
    let projected_v2 = target_intervals as f64 / (rest + stages.sparse_v2).as_secs_f64();
    row(
        &mut t,
        "  … and uncompressed V2 on the wire",
        format!(
            "decode {:.2} µs, ingest {} /s per core; {:.0} vs {:.0} base64 chars per histogram",
            per_ti(stages.sparse_v2),
            thousands(projected_v2),
            stages.v2_chars,
            stages.deflate_chars
        ),
        "",
    );
    row(
        &mut t,
        "window observations (Window::observations)",
        p50_max(&observe_times),
        "",
    );
    row(
        &mut t,
        "decision (decide::evaluate)",
        p50_max(&decide_times),
        "",
    );
    row(
        &mut t,
        "decision + reconcile plan (plan_now)",
        p50_max(&plan_times),
        &verdict(
            p50(&plan_times) < Duration::from_millis(100),
            "target < 100 ms",
        ),
    );
    row(
        &mut t,
        "full evaluation (evaluate, dry-run apply)",
        p50_max(&evaluate_times),
        "",
    );
    row(
        &mut t,
        "  first evaluation (empty dry-run state)",
        format!(
            "{:.1} ms wall, {:.1} ms CPU, {first_changes} changes applied",
            ms(first_span.wall),
            ms(first_span.cpu)
        ),
        "",
    );
    row(
        &mut t,
        "  steady state",
        format!(
            "{planned} changes planned, {applied} applied in the last pass, {transitions} transitions, {out_of_service} Regions out"
        ),
        "",
    );
    row(
        &mut t,
        "peak RSS (VmHWM)",
        format!(
            "{} (report bodies {}; RSS {} before ingest, {} after)",
            mib(peak),
            mib(Some(body_bytes)),
            mib(rss_before),
            mib(rss_after_ingest)
        ),
        "",
    );
    writeln!(t)?;
    writeln!(
        t,
        "ingest: {} repeats, each on a fresh aggregator, single thread; per core = target-intervals / process CPU s (clock_gettime); stages: each alone over the same reports, thread CPU; decode = every histogram through hdrhistogram + total to sparse pairs; merge = Window::merge − decode; projected = ingest − decode + the prototype's decode",
        args.repeats
    )?;
    writeln!(
        t,
        "decision rows: wall time over {} iterations after one warm-up (CPU p50 in brackets); decide::evaluate from the steady state (every Region known)",
        args.iterations
    )?;
    Ok(t)
}

/// One warm-up, then `n` timed runs.
fn repeat(n: usize, mut f: impl FnMut()) -> Vec<Span> {
    f();
    (0..n).map(|_| measure(&mut f).1).collect()
}

fn p50(spans: &[Span]) -> Duration {
    let mut w: Vec<Duration> = spans.iter().map(|s| s.wall).collect();
    w.sort();
    w[w.len() / 2]
}

fn p50_max(spans: &[Span]) -> String {
    let mut w: Vec<Duration> = spans.iter().map(|s| s.wall).collect();
    w.sort();
    let mut c: Vec<Duration> = spans.iter().map(|s| s.cpu).collect();
    c.sort();
    format!(
        "p50 {:.1} ms, max {:.1} ms [CPU p50 {:.1} ms]",
        ms(w[w.len() / 2]),
        ms(w[w.len() - 1]),
        ms(c[c.len() / 2])
    )
}

fn verdict(met: bool, target: &str) -> String {
    format!("{target}: {}", if met { "met" } else { "MISSED" })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
    })
}

/// `1234567.8` → `1,234,568`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
