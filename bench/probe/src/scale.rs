//! The scale test: many targets on the agent's own scheduler and recorder, in this process,
//! against the local nginx, drained every interval the way the agent does.
//!
//! Two ways to drain, run one after the other in the same invocation (`--scale-drain both`) so
//! the figures compare on the same machine state: `inline`, what the agent did before issue 16
//! (take every recorder's interval, then build the dense histogram of every phase and encode
//! it, all on the runtime, in the drain), and `encoder`, what it does now (the drain only takes
//! the intervals and hands them to `vantage_agent::encoder::Encoder`, which builds and
//! serialises the report on the blocking pool with the sparse V2 writer). Each run also
//! measures the start lag of the probes that started while a report was being encoded, beside
//! that of the others.

use crate::drain::{seal, thread_cpu, Discard, EncodeTotals};
pub use crate::drain::{DrainMode, Lag};
use crate::procs;
use anyhow::Context as _;
use hdrhistogram::Histogram;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use vantage_agent::encoder::{encode, EncodeFn, Encoder};
use vantage_agent::recorder::{IntervalClock, TargetRecorder};
use vantage_agent::report::ReportIdentity;
use vantage_agent::scheduler::{
    run_target, spread_offsets, ProbeTarget, ScheduledTarget, SlotGrid,
};
use vantage_probe::spec::ProbeSpec;
use vantage_probe::tls::TlsConfigCache;
use vantage_probe::{ProbeResult, Prober};
use vantage_protocol::histogram::{clamp_micros, encode_base64, new_latency_histogram};
use vantage_protocol::{Outcome, Phase};

pub struct ScaleOptions {
    pub targets: usize,
    pub interval: Duration,
    pub duration: Duration,
    pub port: u16,
    pub ips: Vec<String>,
    pub ca: PathBuf,
    pub seed: u64,
    pub nginx_pid: u32,
    pub clk_tck: f64,
    /// Box each probe future (an experiment; the agent does not).
    pub boxed: bool,
    pub drain: DrainMode,
}

#[derive(Debug)]
pub struct ScaleReport {
    pub drain: DrainMode,
    /// Start lag of probes that started while a report was being encoded, and of the rest.
    pub lag_encoding: Lag,
    pub lag_other: Lag,
    /// Encoder mode: JSON report bodies built, their bytes, the longest encode of one.
    pub reports: u64,
    pub report_bytes: u64,
    pub max_encode: Duration,
    pub targets: usize,
    pub duration: Duration,
    pub expected_probes: u64,
    pub probes: u64,
    pub ok: u64,
    pub missed_slots: u64,
    pub max_start_lag: Duration,
    pub cpu_percent: f64,
    /// Context switches of this process's threads per probe.
    pub switches_per_probe: f64,
    /// Wall time from the first slot to the last probe's end.
    pub wall: Duration,
    pub cpu_ms_per_probe: f64,
    pub nginx_cpu_percent: Option<f64>,
    pub peak_rss_kb: Option<u64>,
    pub peak_rss_reset: bool,
    pub rss_before_kb: Option<u64>,
    pub recorder_bytes_per_target: f64,
    pub max_in_flight: u64,
    pub total_p50_ms: f64,
    pub total_p99_ms: f64,
    pub ttfb_p50_ms: f64,
    pub tls_p50_ms: f64,
    pub failures: BTreeMap<String, (u64, String)>,
    /// "TLS 1.3 ×N" for the handshakes seen.
    pub tls_versions: String,
    pub task_future_bytes: usize,
    pub setup: Duration,
    /// Longest drain of every recorder (heap_bytes + take_through + encoding).
    pub max_drain: Duration,
    /// The CPU time of the drain thread during that longest drain: on a shared machine the
    /// wall time includes preemption by other processes, the CPU time does not.
    pub max_drain_cpu: Duration,
    /// All drains: time in heap_bytes + take_through, and in encoding histograms.
    pub take_time: Duration,
    pub encode_time: Duration,
    /// Of `encode_time`, the part spent building dense histograms (SampleSet::to_histogram).
    pub to_histogram_time: Duration,
    pub encoded_histograms: u64,
    pub encoded_bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) take_time: Duration,
    pub(crate) to_histogram_time: Duration,
    pub(crate) encode_time: Duration,
    pub(crate) encoded_histograms: u64,
    pub(crate) encoded_bytes: u64,
    pub(crate) attempts: u64,
    pub(crate) ok: u64,
    pub(crate) missed_slots: u64,
    pub(crate) max_start_lag: Duration,
    pub(crate) peak_recorder_bytes: usize,
    pub(crate) max_drain: Duration,
    pub(crate) max_drain_cpu: Duration,
    pub(crate) reports: u64,
    pub(crate) report_bytes: u64,
    pub(crate) max_encode: Duration,
}

/// A [`Prober`] that also keeps the first message of each failing outcome and counts probes
/// in flight (each holds one socket). `BOXED` = false hands `run_target` the probe future
/// itself, as `impl ProbeTarget for Prober` does; true boxes it (the `--scale-boxed-probes`
/// experiment), so a waiting target's task holds a pointer instead of the whole probe state.
struct Tracked<const BOXED: bool> {
    prober: Prober,
    shared: Arc<Shared>,
    /// Whether a report was being encoded when this target's probe in flight started (one
    /// probe at a time per target).
    started_while_encoding: AtomicBool,
}

struct Shared {
    failures: Mutex<BTreeMap<String, (u64, String)>>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// TLS, ttfb and whole-probe durations in µs, recorded as probes finish (the recorders'
    /// own histograms are drained and dropped, as the agent does after reporting).
    latency: Mutex<[Histogram<u64>; 3]>,
    tls_versions: Mutex<BTreeMap<&'static str, u64>>,
    /// True while a report is being encoded (inline in the drain, or in the encoder).
    encoding: AtomicBool,
    /// Start lags in µs: [started while encoding, the rest].
    lag: Mutex<[Histogram<u64>; 2]>,
}

impl Shared {
    fn new() -> anyhow::Result<Self> {
        let h = || new_latency_histogram(3);
        Ok(Shared {
            failures: Mutex::default(),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            latency: Mutex::new([h()?, h()?, h()?]),
            tls_versions: Mutex::default(),
            encoding: AtomicBool::new(false),
            lag: Mutex::new([h()?, h()?]),
        })
    }
}

impl ProbeTarget for Tracked<false> {
    fn probe(&self) -> impl std::future::Future<Output = ProbeResult> + Send {
        self.tracked_probe()
    }

    fn observe(&self, _result: &ProbeResult, start_lag: Duration) {
        self.observe_lag(start_lag);
    }
}

impl ProbeTarget for Tracked<true> {
    fn probe(&self) -> impl std::future::Future<Output = ProbeResult> + Send {
        Box::pin(self.tracked_probe())
    }

    fn observe(&self, _result: &ProbeResult, start_lag: Duration) {
        self.observe_lag(start_lag);
    }
}

impl<const BOXED: bool> Tracked<BOXED> {
    fn observe_lag(&self, start_lag: Duration) {
        let during = self.started_while_encoding.load(Ordering::Relaxed);
        lock(&self.shared.lag)[usize::from(!during)]
            .saturating_record(clamp_micros(start_lag.as_micros() as u64));
    }

    async fn tracked_probe(&self) -> ProbeResult {
        self.started_while_encoding.store(
            self.shared.encoding.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let now = self.shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.max_in_flight.fetch_max(now, Ordering::Relaxed);
        let result = self.prober.probe().await;
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        {
            let mut h = lock(&self.shared.latency);
            for (i, phase) in [Phase::Tls, Phase::Ttfb, Phase::Total]
                .into_iter()
                .enumerate()
            {
                if let Some(d) = result.timings.get(phase) {
                    h[i].saturating_record(clamp_micros(d.as_micros() as u64));
                }
            }
        }
        if let Some(v) = result.tls_version {
            *lock(&self.shared.tls_versions).entry(v).or_default() += 1;
        }
        if let Some(f) = &result.failure {
            let mut map = self
                .shared
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let e = map
                .entry(result.outcome.as_str().to_owned())
                .or_insert_with(|| (0, f.message.clone()));
            e.0 += 1;
        }
        result
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn run(opts: &ScaleOptions) -> anyhow::Result<ScaleReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    if opts.boxed {
        runtime.block_on(run_async::<true>(opts))
    } else {
        runtime.block_on(run_async::<false>(opts))
    }
}

async fn run_async<const BOXED: bool>(opts: &ScaleOptions) -> anyhow::Result<ScaleReport>
where
    Tracked<BOXED>: ProbeTarget,
{
    let setup_start = Instant::now();
    let tls = Arc::new(TlsConfigCache::new());
    let shared = Arc::new(Shared::new()?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let offsets = spread_offsets(&vec![opts.interval; opts.targets], &mut rng);
    // First slots start a second from now, after every task is spawned.
    let origin = Instant::now() + Duration::from_secs(1);
    let clock = IntervalClock::new(origin, opts.interval);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut targets = Vec::with_capacity(opts.targets);
    for (i, offset) in offsets.into_iter().enumerate() {
        let ip = &opts.ips[i % opts.ips.len()];
        let mut spec = ProbeSpec::get(&format!("https://{ip}:{}/t/{i}", opts.port))?;
        spec.tls.ca_file = Some(opts.ca.clone());
        let prober = Prober::new(spec, tls.clone())?;
        targets.push(Arc::new(ScheduledTarget {
            probe: Tracked::<BOXED> {
                prober,
                shared: shared.clone(),
                started_while_encoding: AtomicBool::new(false),
            },
            grid: SlotGrid::new(origin, offset, opts.interval),
            recorder: Arc::new(Mutex::new(TargetRecorder::new(3))),
        }));
    }
    let task_future_bytes = std::mem::size_of_val(&run_target(
        targets[0].clone(),
        clock,
        None,
        stop_rx.clone(),
    ));
    let reset = procs::reset_peak_rss();
    let rss_before_kb = procs::status_kb("VmRSS");
    let mut tasks = Vec::with_capacity(opts.targets);
    for t in &targets {
        tasks.push(tokio::spawn(run_target(
            t.clone(),
            clock,
            None,
            stop_rx.clone(),
        )));
    }
    let setup = setup_start.elapsed();

    // What a report builder does each interval: take every closed interval out of every
    // recorder. Counted here, then dropped.
    let mut totals = Totals::default();
    let drain = |through: u64, totals: &mut Totals| {
        let started = Instant::now();
        let cpu_started = thread_cpu();
        let bytes: usize = targets.iter().map(|t| lock(&t.recorder).heap_bytes()).sum();
        totals.peak_recorder_bytes = totals.peak_recorder_bytes.max(bytes);
        let mut taken = Vec::with_capacity(targets.len());
        for t in &targets {
            taken.extend(lock(&t.recorder).take_through(through));
        }
        let encoding = Instant::now();
        shared.encoding.store(true, Ordering::Relaxed);
        for (_, s) in &taken {
            totals.attempts += s.attempts;
            totals.ok += s.outcome_count(Outcome::Ok);
            totals.missed_slots += s.missed_slots;
            totals.max_start_lag = totals.max_start_lag.max(s.max_start_lag);
            // What the report builder (report::target_report) does with each interval: every
            // phase that has samples becomes an HDR histogram, encoded V2-deflate + base64.
            for p in Phase::ALL {
                let set = s.phase(p);
                if !set.is_empty() {
                    let t0 = Instant::now();
                    let h = set.to_histogram();
                    let t1 = Instant::now();
                    let text = encode_base64(&h).unwrap_or_default();
                    totals.to_histogram_time += t1 - t0;
                    totals.encoded_bytes += text.len() as u64;
                    totals.encoded_histograms += 1;
                }
            }
        }
        shared.encoding.store(false, Ordering::Relaxed);
        let done = Instant::now();
        totals.max_encode = totals.max_encode.max(done - encoding);
        totals.take_time += encoding - started;
        totals.encode_time += done - encoding;
        if done - started > totals.max_drain {
            totals.max_drain = done - started;
            totals.max_drain_cpu = thread_cpu().saturating_sub(cpu_started);
        }
    };

    // The agent's encoder, its encode timed and flagged for the start-lag split.
    let ids: Vec<String> = (0..targets.len()).map(|i| format!("t/{i}")).collect();
    let encoded = Arc::new(Mutex::new(EncodeTotals::default()));
    let timed: EncodeFn = {
        let (shared, encoded) = (shared.clone(), encoded.clone());
        Arc::new(move |identity, sealed| {
            shared.encoding.store(true, Ordering::Relaxed);
            let t0 = Instant::now();
            let built = encode(identity, sealed);
            let took = t0.elapsed();
            shared.encoding.store(false, Ordering::Relaxed);
            let mut e = lock(&encoded);
            e.time += took;
            e.max = e.max.max(took);
            e.histograms += sealed
                .targets
                .iter()
                .map(|t| {
                    Phase::ALL
                        .iter()
                        .filter(|p| !t.stats.phase(**p).is_empty())
                        .count() as u64
                })
                .sum::<u64>();
            if let Ok(r) = &built {
                e.bytes += r.body.len() as u64;
            }
            built
        })
    };
    let identity = ReportIdentity {
        fleet: "bench".into(),
        agent_id: "bench".into(),
        vantage: "local".into(),
    };
    let encoder = Encoder::with_encode(identity, Discard, timed);

    tokio::time::sleep_until(origin).await;
    let cpu_start = procs::cpu_ticks("self")?.own;
    let switches_start = procs::context_switches();
    let nginx_start = procs::tree_ticks(opts.nginx_pid);
    let wall_start = Instant::now();
    let end = origin + opts.duration;
    // Drain interval k a second after it closes (probes started near its end have finished).
    let grace = Duration::from_secs(1);
    let mut k = 0u64;
    loop {
        let drain_at = clock.start_of(k + 1) + grace;
        if drain_at >= end {
            break;
        }
        tokio::time::sleep_until(drain_at).await;
        match opts.drain {
            DrainMode::Inline => drain(k, &mut totals),
            DrainMode::Encoder => {
                for sealed in seal(&targets, &ids, k, opts.interval, &mut totals) {
                    encoder.submit(sealed).await;
                }
            }
        }
        k += 1;
    }
    tokio::time::sleep_until(end).await;
    let _ = stop_tx.send(true);
    // Bounded: every probe ends within its 10 s overall deadline.
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    let wall = wall_start.elapsed();
    let cpu_ticks = procs::cpu_ticks("self")?.own - cpu_start;
    let switches = procs::context_switches().saturating_sub(switches_start);
    let nginx_ticks = procs::tree_ticks(opts.nginx_pid).saturating_sub(nginx_start);
    match opts.drain {
        DrainMode::Inline => drain(u64::MAX, &mut totals),
        DrainMode::Encoder => {
            for sealed in seal(&targets, &ids, u64::MAX, opts.interval, &mut totals) {
                encoder.submit(sealed).await;
            }
        }
    }
    let (_, reports) = encoder.finish().await;
    {
        let e = lock(&encoded);
        totals.encode_time += e.time;
        totals.encoded_histograms += e.histograms;
        totals.report_bytes += e.bytes;
        totals.max_encode = totals.max_encode.max(e.max);
        totals.reports += reports;
    }
    let lag = lock(&shared.lag).clone();

    let cpu_secs = cpu_ticks as f64 / opts.clk_tck;
    let latency = lock(&shared.latency).clone();
    let ms = |i: usize, q: f64| {
        let h = &latency[i];
        if h.is_empty() {
            f64::NAN
        } else {
            h.value_at_quantile(q) as f64 / 1e3
        }
    };
    let failures = lock(&shared.failures).clone();
    let tls_versions = lock(&shared.tls_versions)
        .iter()
        .map(|(v, n)| format!("{} ×{n}", v.replace("TLSv1_", "TLS 1.")))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(ScaleReport {
        drain: opts.drain,
        lag_encoding: Lag::of(&lag[0]),
        lag_other: Lag::of(&lag[1]),
        reports: totals.reports,
        report_bytes: totals.report_bytes,
        max_encode: totals.max_encode,
        targets: opts.targets,
        duration: opts.duration,
        expected_probes: (opts.targets as u64 * opts.duration.as_millis() as u64)
            / opts.interval.as_millis().max(1) as u64,
        probes: totals.attempts,
        ok: totals.ok,
        missed_slots: totals.missed_slots,
        max_start_lag: totals.max_start_lag,
        cpu_percent: 100.0 * cpu_secs / wall.as_secs_f64(),
        switches_per_probe: switches as f64 / totals.attempts.max(1) as f64,
        wall,
        cpu_ms_per_probe: 1e3 * cpu_secs / totals.attempts.max(1) as f64,
        nginx_cpu_percent: (nginx_ticks > 0)
            .then(|| 100.0 * nginx_ticks as f64 / opts.clk_tck / wall.as_secs_f64()),
        peak_rss_kb: procs::status_kb("VmHWM"),
        peak_rss_reset: reset,
        rss_before_kb,
        recorder_bytes_per_target: totals.peak_recorder_bytes as f64 / opts.targets.max(1) as f64,
        max_drain: totals.max_drain,
        max_drain_cpu: totals.max_drain_cpu,
        take_time: totals.take_time,
        encode_time: totals.encode_time,
        to_histogram_time: totals.to_histogram_time,
        encoded_histograms: totals.encoded_histograms,
        encoded_bytes: totals.encoded_bytes,
        max_in_flight: shared.max_in_flight.load(Ordering::Relaxed),
        total_p50_ms: ms(2, 0.5),
        total_p99_ms: ms(2, 0.99),
        ttfb_p50_ms: ms(1, 0.5),
        tls_p50_ms: ms(0, 0.5),
        failures,
        tls_versions,
        task_future_bytes,
        setup,
    })
}
