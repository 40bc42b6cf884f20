//! One run of the bench over one fleet: its reports built (untimed), ingest timed end to end
//! and stage by stage, then the decision over the full window timed several ways. The same
//! code measures the single-API fleet and the `[[services]]` fleet, so their figures compare.

use crate::clock::{self, measure, Span};
use crate::fleet::{self, Layout};
use crate::fmt::{cpu_quantile, mib, ms, p50_p99, thousands, verdict, wall_quantile};
use crate::stages::stages;
use anyhow::bail;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};
use vantage_aggregator::backend::DryRun;
use vantage_aggregator::config::AggregatorConfig;
use vantage_aggregator::decide;
use vantage_aggregator::model::{ModelState, Overrides};
use vantage_aggregator::service::{Aggregator, Ingested};
use vantage_protocol::config::TargetKind;

/// Ingest goal, target-intervals per second per core.
pub const INGEST_GOAL: f64 = 50_000.0;
/// Goal for one evaluation of every service (p50).
pub const DECISION_GOAL: Duration = Duration::from_millis(100);

/// What to run.
pub struct Scenario {
    /// The table's first line.
    pub title: String,
    pub config: AggregatorConfig,
    pub layout: Layout,
    pub vantages: usize,
    pub probes: u64,
    pub repeats: usize,
    pub iterations: usize,
    pub seed: u64,
    pub threads: usize,
}

/// The headline figures, for the side-by-side summary.
pub struct Figures {
    pub targets_per_report: usize,
    pub target_intervals: u64,
    /// Median and lowest of the repeats, target-intervals per second per core.
    pub ingest: f64,
    pub ingest_min: f64,
    /// `decide::evaluate_services` alone, on pre-built observations.
    pub core: Vec<Span>,
    /// `Window::observations` for every unit.
    pub observe: Vec<Span>,
    /// `Window::observations_rescan`: the same by the path before the tallies.
    pub rescan: Vec<Span>,
    /// Every service's traffic evidence from the window (one `layer_traffic_by_service` pass
    /// per layer).
    pub traffic: Vec<Span>,
    /// `Aggregator::decide`: one tick of the evaluation loop (window → decision, logged and
    /// handed to the planes).
    pub decide: Vec<Span>,
    /// `Aggregator::plan_now`: decision + dry-run observe + reconcile plan.
    pub plan: Vec<Span>,
    pub peak: Option<u64>,
    /// Other processes' CPU while this fleet was timed, % of a core.
    pub others: Option<f64>,
}

/// Runs `s`; returns its table and figures.
pub fn run(s: &Scenario) -> anyhow::Result<(String, Figures)> {
    let config = &s.config;
    let units = config.units();
    let interval = s.layout.interval;
    eprintln!(
        "{}: building {} reports of {} targets on {} threads (not timed)...",
        s.title,
        s.vantages as u64 * fleet::INTERVALS,
        s.layout.targets.len(),
        s.threads
    );
    let started = Instant::now();
    let built = fleet::reports(config, &s.layout, s.vantages, s.probes, s.seed, s.threads);
    let build_time = started.elapsed();
    let reports = &built.reports;
    let target_intervals: u64 = reports.iter().map(|r| r.targets as u64).sum();
    let body_bytes: u64 = reports.iter().map(|r| r.body.len() as u64).sum();
    let rss_before = clock::status_bytes("VmRSS:");
    // Everything timed from here: what else ran on the machine meanwhile.
    let (busy0, own0, timed0) = (clock::machine_busy(), clock::process_cpu(), Instant::now());

    // 1. Ingest, end to end, on a fresh aggregator per repeat.
    eprintln!("ingest: {} repeats...", s.repeats);
    let now = fleet::now(interval);
    let now_ms = fleet::now_ms(interval);
    let (runs, aggregator) = ingest_runs(config, reports, s.repeats, now)?;
    // The same reports as agents sent them before histograms were encoded by size.
    let before_reports = fleet::as_before(reports);
    let before_bytes: u64 = before_reports.iter().map(|r| r.body.len() as u64).sum();
    let (before_runs, _) = ingest_runs(config, &before_reports, s.repeats, now)?;
    drop(before_reports);
    let before_per_core = sorted(
        before_runs
            .iter()
            .map(|s| target_intervals as f64 / s.process_cpu.as_secs_f64().max(1e-9)),
    );
    let rss_after_ingest = clock::status_bytes("VmRSS:");
    let per_core = sorted(
        runs.iter()
            .map(|s| target_intervals as f64 / s.process_cpu.as_secs_f64().max(1e-9)),
    );
    let per_wall = sorted(
        runs.iter()
            .map(|s| target_intervals as f64 / s.wall.as_secs_f64()),
    );
    let mut ingest_cpu: Vec<Duration> = runs.iter().map(|s| s.cpu).collect();
    ingest_cpu.sort();
    let ingest_median_cpu = ingest_cpu[ingest_cpu.len() / 2];

    // Each stage alone.
    eprintln!("ingest stages...");
    let (stages, window) = stages(config, reports, s.threads, now_ms)?;

    // 2. Decisions over the full window.
    eprintln!("decision: {} iterations each...", s.iterations);
    let mut window = window;
    let from_ms = now_ms + 1 - (config.window + interval).as_millis() as u64;
    let (lq, wq) = (config.latency_quantile, config.weight_quantile);
    let observations = window.observations(&units, from_ms, now_ms, lq, wq);
    let observed: usize = observations.iter().map(|o| o.vantages.len()).sum();
    if observed != units.len() * s.vantages {
        bail!(
            "the window shows {observed} (unit, vantage) samples, expected {}",
            units.len() * s.vantages
        );
    }
    if observations != window.observations_rescan(&units, from_ms, now_ms, lq, wq) {
        bail!("the incremental observations differ from the rescan's");
    }
    // The evaluation's range as it stays between interval boundaries: the tallies are read.
    let observe_times = repeat(s.iterations, || {
        black_box(window.observations(&units, from_ms, now_ms, lq, wq));
    });
    // Every call a whole interval later or earlier than the last: every tally slides (what
    // the first evaluation after an interval boundary pays).
    let step = interval.as_millis() as u64;
    let mut back = false;
    let slide_times = repeat(s.iterations, || {
        back = !back;
        let shift = if back { step } else { 0 };
        black_box(window.observations(&units, from_ms - shift, now_ms - shift, lq, wq));
    });
    // The path before the tallies: every series rescanned.
    let rescan_times = repeat(s.iterations, || {
        black_box(window.observations_rescan(&units, from_ms, now_ms, lq, wq));
    });
    let window = window;
    // What the evaluation gathers besides the observations: each service's traffic evidence,
    // the global endpoint's and the DNS target's answers (as `Aggregator::decide` asks for it).
    let traffic_times = repeat(s.iterations, || {
        for kind in [TargetKind::Global, TargetKind::Dns] {
            black_box(window.layer_traffic_by_service(kind, from_ms, now_ms));
        }
    });
    let decide_at = |previous: &ModelState| {
        // As `Aggregator::decide`: every vantage judged first, then every service.
        let vantages =
            decide::assess_vantages(&config.services, &observations, &[], &config.policy);
        decide::evaluate_services(
            &config.services,
            previous,
            &observations,
            &Overrides::default(),
            &vantages,
            Duration::from_millis(now_ms),
        )
    };
    // Steady state: every unit already known, as after the first evaluation.
    let (previous, _) = decide_at(&ModelState::default());
    let core_times = repeat(s.iterations, || {
        black_box(decide_at(&previous));
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    // The first evaluation writes every unit's health and weight to the empty dry-run state.
    let (first, first_span) = measure(|| rt.block_on(aggregator.evaluate(now)));
    if !first.reconcile.ok {
        bail!("first evaluation failed: {:?}", first.reconcile.detail);
    }
    let first_changes = first.reconcile.changes.len();
    let decide_times = repeat(s.iterations, || {
        black_box(aggregator.decide(now));
    });
    let mut planned = 0;
    let plan_times = repeat(s.iterations, || {
        let (_, changes) = rt
            .block_on(aggregator.plan_now(now))
            .expect("dry-run plans");
        planned = changes.len();
    });
    let mut applied = 0;
    let mut transitions = 0;
    let evaluate_times = repeat(s.iterations, || {
        let snapshot = rt.block_on(aggregator.evaluate(now));
        applied = snapshot.reconcile.changes.len();
        transitions += snapshot.decision.transitions.len();
    });
    let (decided, out_of_service) = aggregator.snapshot().map_or((0, 0), |s| {
        let r = &s.decision.regions;
        (r.len(), r.iter().filter(|r| !r.in_service).count())
    });
    if decided != units.len() {
        bail!(
            "the decision names {decided} units, expected {}",
            units.len()
        );
    }
    let peak = clock::status_bytes("VmHWM:");
    let others = clock::machine_busy().zip(busy0).map(|(b1, b0)| {
        let own = clock::process_cpu().saturating_sub(own0);
        100.0 * b1.saturating_sub(b0).saturating_sub(own).as_secs_f64()
            / timed0.elapsed().as_secs_f64()
    });

    // The table.
    let mut t = String::new();
    writeln!(t, "{}", s.title)?;
    writeln!(
        t,
        "input: {} reports of {} targets, {} target-intervals, {} probes each, {:.1} histograms per target (dns absent); built in {:.1} s on {} threads, not timed",
        reports.len(),
        thousands(s.layout.targets.len() as f64),
        thousands(target_intervals as f64),
        s.probes,
        built.histograms as f64 / target_intervals as f64,
        build_time.as_secs_f64(),
        s.threads
    )?;
    writeln!(t)?;
    let row = |t: &mut String, what: &str, result: String, goal: &str| {
        let _ = writeln!(
            t,
            "{}",
            format!("{what:<44} {result:<70} {goal}").trim_end()
        );
    };
    let per_report = body_bytes as f64 / reports.len() as f64;
    row(
        &mut t,
        "report size",
        format!(
            "{:.0} bytes/target-interval, {:.0} KiB per report",
            body_bytes as f64 / target_intervals as f64,
            per_report / 1024.0
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
        &verdict(median >= INGEST_GOAL, "goal ≥ 50,000"),
    );
    let before = before_per_core[before_per_core.len() / 2];
    row(
        &mut t,
        "… the same reports all V2-deflate (before)",
        format!(
            "{} target-intervals/s per core; by size is {:.2}× that; bodies {:.0} → {:.0} bytes/target-interval",
            thousands(before),
            median / before,
            before_bytes as f64 / target_intervals as f64,
            body_bytes as f64 / target_intervals as f64
        ),
        &verdict(median >= 200_000.0, "issue 16 goal ≥ 200,000"),
    );
    for (what, result, goal) in stages.rows(target_intervals, ingest_median_cpu) {
        row(&mut t, what, result, &goal);
    }
    row(
        &mut t,
        "window observations (Window::observations)",
        p50_p99(&observe_times),
        "",
    );
    row(
        &mut t,
        "  … sliding one interval every call",
        p50_p99(&slide_times),
        "",
    );
    row(
        &mut t,
        "  … by rescan (before the tallies)",
        p50_p99(&rescan_times),
        "",
    );
    row(
        &mut t,
        "  tallies vs rescan, p50 CPU",
        format!(
            "{:.2}× (sliding {:.2}×); plan_now with the rescan ≈ {:.1} ms p50 CPU",
            ms(cpu_quantile(&rescan_times, 0.5)) / ms(cpu_quantile(&observe_times, 0.5)).max(1e-6),
            ms(cpu_quantile(&rescan_times, 0.5)) / ms(cpu_quantile(&slide_times, 0.5)).max(1e-6),
            ms(cpu_quantile(&plan_times, 0.5)) - ms(cpu_quantile(&observe_times, 0.5))
                + ms(cpu_quantile(&rescan_times, 0.5))
        ),
        &verdict(
            wall_quantile(&plan_times, 0.5) < Duration::from_millis(20),
            "issue 16: plan_now < 20 ms p50",
        ),
    );
    row(
        &mut t,
        "traffic evidence (2 layers × every service)",
        p50_p99(&traffic_times),
        "",
    );
    row(
        &mut t,
        "decision (decide::evaluate_services)",
        p50_p99(&core_times),
        "",
    );
    row(
        &mut t,
        "one evaluation (Aggregator::decide)",
        p50_p99(&decide_times),
        &verdict(
            wall_quantile(&decide_times, 0.5) < DECISION_GOAL,
            "goal < 100 ms p50",
        ),
    );
    row(
        &mut t,
        "decision + reconcile plan (plan_now)",
        p50_p99(&plan_times),
        &verdict(
            wall_quantile(&plan_times, 0.5) < DECISION_GOAL,
            "goal < 100 ms p50",
        ),
    );
    row(
        &mut t,
        "full evaluation (evaluate, dry-run apply)",
        p50_p99(&evaluate_times),
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
            "{} units ({} services), {planned} changes planned, {applied} applied in the last pass, {transitions} transitions, {out_of_service} units out",
            units.len(),
            config.services.len()
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
    if let Some(others) = others {
        row(
            &mut t,
            "other processes meanwhile",
            format!(
                "{others:.0}% of a core{}",
                if others > 20.0 {
                    ": the machine was busy, wall times are disturbed (CPU times less so)"
                } else {
                    ""
                }
            ),
            "",
        );
    }
    writeln!(t)?;
    let figures = Figures {
        others,
        targets_per_report: s.layout.targets.len(),
        target_intervals,
        ingest: median,
        ingest_min: per_core[0],
        core: core_times,
        traffic: traffic_times,
        observe: observe_times,
        rescan: rescan_times,
        decide: decide_times,
        plan: plan_times,
        peak,
    };
    Ok((t, figures))
}

/// `repeats` ingests of every report, each on a fresh aggregator; the spans and the last one.
fn ingest_runs(
    config: &AggregatorConfig,
    reports: &[fleet::Signed],
    repeats: usize,
    now: std::time::SystemTime,
) -> anyhow::Result<(Vec<Span>, Aggregator<DryRun>)> {
    let mut runs: Vec<Span> = Vec::new();
    let mut aggregator = None;
    for _ in 0..repeats.max(1) {
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
    Ok((runs, aggregator.expect("at least one repeat")))
}

fn sorted(v: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    v
}

/// One warm-up, then `n` timed runs.
fn repeat(n: usize, mut f: impl FnMut()) -> Vec<Span> {
    f();
    (0..n).map(|_| measure(&mut f).1).collect()
}
