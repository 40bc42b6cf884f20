//! `bench-probe`: vantage's probe engine side by side with Prometheus blackbox_exporter, on
//! this machine, against the same local nginx (HTTPS, ECDSA P-256, a fresh TLS handshake per
//! probe). See `bench-probe --help` for what is measured and how.

// Benchmarks measure wall time outside tokio (blocking threads, child processes, a spinning
// delay server), so std's Instant is the right clock here; the ban exists for the agent's
// paused-clock tests.
#![allow(clippy::disallowed_types)]

mod accuracy;
mod certs;
mod cpu;
mod delay;
mod drain;
mod procs;
mod render;
mod scale;
mod servers;

use cpu::{cpu_comparison, drive_blackbox, json_u64, run_vantage};
use render::{render, Background};

use anyhow::{bail, Context as _};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const ABOUT: &str = "Side-by-side benchmark of vantage's probe engine against Prometheus \
blackbox_exporter, both probing the same local nginx over HTTPS.";

const LONG_ABOUT: &str = "\
Side-by-side benchmark of vantage's probe engine against Prometheus blackbox_exporter, both \
probing the same local nginx over HTTPS (ECDSA P-256 leaf with IP SANs, so no DNS; TLS 1.2/1.3, \
no session tickets or cache, keepalive_timeout 0: every probe is a fresh TCP + TLS handshake).

What is measured:

1. CPU per probe. `vantage probe https://127.0.0.1:PORT/ --count N --interval 0 --concurrency C \
--cacert CA --json` runs as a child process (the release binary next to this one); its CPU is \
the growth of this process's cutime+cstime across the wait, so it includes process start-up \
(reported separately as a fixed cost). blackbox_exporter runs as a child with one module \
(prober http, timeout 5s, ip4, tls_config.ca_file = CA); the bench sends it N HTTP/1.0 GETs of \
/probe?module=https_fresh&target=https://127.0.0.1:PORT/ from C threads and takes the \
utime+stime growth of the exporter from /proc/PID/stat. Both sides' successes are counted \
(ours: outcomes.ok; blackbox: probe_success 1). nginx's own CPU is not counted on either side.

2. Accuracy. A server in this process answers exactly DELAY (25 ms) after the request's last \
byte was read (a thread per connection spin-reads a non-blocking socket, so it sees the last byte \
at once, sleeps to 0.5 ms before the deadline, then spins; the response is already encrypted), \
over plain HTTP and over HTTPS. Error = measured time-to-first-byte − DELAY, p50 and p99: ours \
from the ttfb histograms in the JSON (run with --precision 5, which resolves 1 µs at 25 ms), \
blackbox's from each answer's probe_http_duration_seconds{phase=\"processing\"} (Go's GotConn → \
first response byte). A minimal blocking client in this process (std socket; rustls for HTTPS) \
gives the floor: what loopback delivery and thread wake-ups cost any client on this machine. The \
three take turns in --accuracy-rounds rounds. The server's own lateness is shown too.

3. Scale. TARGETS targets (distinct URLs https://127.0.0.K:PORT/t/I spread over --scale-addrs \
loopback addresses), each probed every INTERVAL, using the agent library in this process: one \
shared TlsConfigCache, spread_offsets, SlotGrid, run_target with an IntervalClock of INTERVAL; \
every interval each target's recorder is drained, once per --scale-drain mode in the same run: \
`inline` (the agent before issue 16: take_through, then every phase with samples to_histogram and \
encoded, all inside the drain) and `encoder` (the agent now: the drain only takes the intervals \
and hands them to vantage_agent::encoder, which builds and serialises the report on the blocking \
pool). Each mode shows its longest drain, the encoding cost, and the start lag of probes that \
started while a report was being encoded beside the others'. The second run's RSS before start \
includes what the allocator kept from the first. Reported: probes run and ok, missed slots, max start lag, this process's CPU % \
(utime+stime over wall; 100% = one core; nginx is a separate process, shown apart), peak RSS \
(VmHWM, reset just before the targets start), recorder heap bytes per target at the fullest \
point (just before a drain).

Unrelated load disturbs all of this: before each test the bench waits (up to --wait-quiet \
seconds) for a quiet second, and afterwards reports how much CPU other processes on the machine \
used during each test (from /proc/stat, minus this bench and its children), saying so when it is \
above 10% of a core.

Requires nginx and prometheus-blackbox-exporter (apt-get install -y nginx-light \
prometheus-blackbox-exporter) and the release vantage binary (cargo build --release -p vantage \
-p vantage-bench-probe). Everything listens on 127.0.0.x only; child processes are stopped on \
exit.";

#[derive(Parser, Debug)]
#[command(name = "bench-probe", about = ABOUT, long_about = LONG_ABOUT)]
struct Args {
    /// Probes per side for the CPU comparison.
    #[arg(short = 'n', long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    probes: u64,

    /// Probes in flight at once, both sides, for the CPU comparison.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,

    /// Probes per side and scheme for the accuracy test (run one at a time).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    accuracy_probes: u64,

    /// Interleaved rounds the accuracy probes are split into (vantage, blackbox and the
    /// blocking floor client take turns), so a burst of unrelated load hits all alike.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    accuracy_rounds: u64,

    /// The accuracy server's answer delay, in milliseconds.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=5_000))]
    delay_ms: u64,

    /// Targets in the scale test.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    scale_targets: u64,

    /// Probe interval of every scale-test target, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    scale_interval_secs: u64,

    /// Length of the scale test, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    scale_secs: u64,

    /// Loopback addresses (127.0.0.1 ..) nginx listens on and scale targets spread over, so
    /// ephemeral ports are not exhausted.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=64))]
    scale_addrs: u8,

    /// How the scale test drains the recorders, one run each, in this order: `inline` (the
    /// agent before issue 16: encode in the drain) and/or `encoder` (the agent now: the
    /// drain only takes, `vantage_agent::encoder` encodes on the blocking pool).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [scale::DrainMode::Inline, scale::DrainMode::Encoder])]
    scale_drain: Vec<scale::DrainMode>,

    /// Experiment: box each probe's future in the scale test, so an idle target's task does
    /// not hold the whole probe state (shows what boxing inside run_target would save).
    #[arg(long)]
    scale_boxed_probes: bool,

    /// Before each test, wait up to this many seconds for a quiet second (machine under 10% of
    /// one core busy), so a test does not start in the middle of an unrelated build; 0 = don't.
    #[arg(long, value_name = "SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    wait_quiet: u64,

    /// Seed for the scale test's offsets.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Skip the CPU comparison.
    #[arg(long)]
    skip_cpu: bool,

    /// Skip the accuracy test.
    #[arg(long)]
    skip_accuracy: bool,

    /// Skip the scale test.
    #[arg(long)]
    skip_scale: bool,

    /// Measure nothing: start nginx, blackbox_exporter and the delay servers, print their URLs
    /// and the CA file, and keep them up for SECS seconds (for profiling by hand).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3_600))]
    serve_only: Option<u64>,

    /// The vantage binary (default: `vantage` next to this executable).
    #[arg(long, value_name = "PATH")]
    vantage: Option<PathBuf>,

    /// The nginx binary.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,

    /// The blackbox_exporter binary.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/usr/bin/prometheus-blackbox-exporter"
    )]
    blackbox: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("bench-probe: {}", msg.as_ref());
}

fn wait_quiet(args: &Args, clk_tck: f64) {
    if args.wait_quiet == 0 {
        return;
    }
    let started = Instant::now();
    let pct = procs::wait_for_quiet(Duration::from_secs(args.wait_quiet), clk_tck);
    let waited = started.elapsed().as_secs_f64();
    if pct >= 10.0 {
        progress(format!(
            "the machine is still busy ({pct:.0}% of a core) after {waited:.0} s; going on"
        ));
    } else if waited > 1.5 {
        progress(format!("waited {waited:.0} s for the machine to be quiet"));
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let nginx_exe = procs::require_binary(&args.nginx, "nginx")?;
    let blackbox_exe = procs::require_binary(&args.blackbox, "prometheus-blackbox-exporter")?;
    let vantage_exe = match &args.vantage {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable has no directory")?
            .join("vantage"),
    };
    if !vantage_exe.is_file() {
        bail!(
            "vantage binary not found at {} — build it with: cargo build --release -p vantage \
             -p vantage-bench-probe (or pass --vantage PATH)",
            vantage_exe.display()
        );
    }
    procs::cleanup_on_signal()?;
    let clk_tck = procs::clock_ticks();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let nginx_version = procs::version_of(&nginx_exe, "-v", "nginx version")
        .map(|l| l.trim_start_matches("nginx version: ").to_owned())
        .unwrap_or_else(|| "nginx".into());
    let blackbox_version = procs::version_of(&blackbox_exe, "--version", "version")
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .unwrap_or_else(|| "?".into());

    let tmp = procs::TempDir::new("probe")?;
    let ips: Vec<String> = (1..=args.scale_addrs)
        .map(|k| format!("127.0.0.{k}"))
        .collect();
    let certs = certs::generate(tmp.path(), &ips)?;
    let mut nginx = servers::start_nginx(&nginx_exe, &tmp, &certs, &ips)?;
    let mut blackbox = servers::start_blackbox(&blackbox_exe, &tmp, &certs)?;
    let target = format!("https://127.0.0.1:{}/", nginx.port);
    if let Some(secs) = args.serve_only {
        let delay = Duration::from_millis(args.delay_ms);
        let http = delay::DelayServer::start(delay, None)?;
        let https = delay::DelayServer::start(
            delay,
            Some((certs.leaf_der.as_slice(), certs.leaf_key_der.as_slice())),
        )?;
        println!("nginx            {target}");
        println!(
            "blackbox         http://{}/probe?module={}&target=",
            blackbox.addr,
            servers::BLACKBOX_MODULE
        );
        println!("delay (http)     http://{}/", http.addr);
        println!("delay (https)    https://{}/", https.addr);
        println!("CA               {}", certs.ca_pem.display());
        std::thread::sleep(Duration::from_secs(secs));
        for (name, server) in [("http", &http), ("https", &https)] {
            let mut late: Vec<f64> = server
                .take_lateness()
                .iter()
                .map(|(l, _)| *l as f64 / 1e3)
                .collect();
            late.sort_by(f64::total_cmp);
            println!(
                "delay ({name}): {} answers, lateness p50/p99 µs: {:.0}/{:.0}",
                late.len(),
                quantile(&late, 0.5),
                quantile(&late, 0.99)
            );
        }
        return Ok(());
    }
    progress(format!(
        "nginx pid {} on {target} (+{} more addresses), blackbox_exporter pid {} on {}",
        nginx.guard.pid(),
        ips.len() - 1,
        blackbox.guard.pid(),
        blackbox.addr
    ));

    let live = [nginx.guard.pid(), blackbox.guard.pid()];
    let mut background = Background::default();
    let cpu = if args.skip_cpu {
        None
    } else {
        wait_quiet(args, clk_tck);
        let meter = procs::Background::start(&live);
        let r = cpu_comparison(
            args,
            &vantage_exe,
            &certs.ca_pem,
            &target,
            &blackbox,
            clk_tck,
        )?;
        background.cpu = Some(meter.percent(clk_tck));
        Some(r)
    };
    let accuracy = if args.skip_accuracy {
        Vec::new()
    } else {
        wait_quiet(args, clk_tck);
        let meter = procs::Background::start(&live);
        let r = accuracy::run(&accuracy::AccuracyOptions {
            vantage: &vantage_exe,
            certs: &certs,
            blackbox: &blackbox,
            delay: Duration::from_millis(args.delay_ms),
            probes: args.accuracy_probes,
            rounds: args.accuracy_rounds,
        })?;
        background.accuracy = Some(meter.percent(clk_tck));
        r
    };
    // The exporter is not needed any more; stop it so it does not share the CPU.
    blackbox.guard.stop();
    let mut scale = Vec::new();
    for drain in args
        .scale_drain
        .iter()
        .copied()
        .filter(|_| !args.skip_scale)
    {
        progress(format!(
            "scale ({}): {} targets every {} s for {} s ...",
            drain.label(),
            args.scale_targets,
            args.scale_interval_secs,
            args.scale_secs
        ));
        let opts = scale::ScaleOptions {
            targets: args.scale_targets as usize,
            interval: Duration::from_secs(args.scale_interval_secs),
            duration: Duration::from_secs(args.scale_secs),
            port: nginx.port,
            ips: ips.clone(),
            ca: certs.ca_pem.clone(),
            seed: args.seed,
            nginx_pid: nginx.guard.pid(),
            clk_tck,
            boxed: args.scale_boxed_probes,
            drain,
        };
        wait_quiet(args, clk_tck);
        let meter = procs::Background::start(&[nginx.guard.pid()]);
        let r = scale::run(&opts)?;
        // The busiest of the runs.
        let busy = meter.percent(clk_tck);
        background.scale = Some(background.scale.map_or(busy, |b: f64| b.max(busy)));
        scale.push(r);
    }
    nginx.guard.check_running()?;
    nginx.guard.stop();

    print!(
        "{}",
        render(
            args,
            cores,
            &nginx_version,
            &blackbox_version,
            cpu.as_ref(),
            &accuracy,
            &scale,
            &background,
        )
    );
    Ok(())
}

/// Nearest-rank quantile of sorted values.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
