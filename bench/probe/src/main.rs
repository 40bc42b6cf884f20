//! `bench-probe`: vantage's probe engine side by side with Prometheus blackbox_exporter, on
//! this machine, against the same local nginx (HTTPS, ECDSA P-256, a fresh TLS handshake per
//! probe). See `bench-probe --help` for what is measured and how.

// Benchmarks measure wall time outside tokio (blocking threads, child processes, a spinning
// delay server), so std's Instant is the right clock here; the ban exists for the agent's
// paused-clock tests.
#![allow(clippy::disallowed_types)]

mod accuracy;
mod certs;
mod delay;
mod procs;
mod scale;
mod servers;

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::Value;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
every interval each target's recorder is drained with take_through and every phase with samples \
is encoded (to_histogram, V2-deflate + base64), as the agent's report builder does; the drains \
run on the runtime like the agent's, and their cost is shown apart. Reported: probes run and ok, missed slots, max start lag, this process's CPU % \
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

/// Result of one side of the CPU comparison.
#[derive(Debug, Default, Clone)]
struct CpuSide {
    probes: u64,
    ok: u64,
    cpu_secs: f64,
    wall_secs: f64,
    tls: String,
    first_error: Option<String>,
}

impl CpuSide {
    fn per_1000(&self) -> f64 {
        1000.0 * self.cpu_secs / self.probes.max(1) as f64
    }
}

struct CpuResult {
    ours: CpuSide,
    blackbox: CpuSide,
    /// CPU of one `vantage probe --count 1` process (start-up, roots, one probe).
    ours_fixed_ms: f64,
}

/// Other processes' CPU (% of one core) during each section.
#[derive(Debug, Default)]
struct Background {
    cpu: Option<f64>,
    accuracy: Option<f64>,
    scale: Option<f64>,
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
    let scale = if args.skip_scale {
        None
    } else {
        progress(format!(
            "scale: {} targets every {} s for {} s ...",
            args.scale_targets, args.scale_interval_secs, args.scale_secs
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
        };
        wait_quiet(args, clk_tck);
        let meter = procs::Background::start(&[nginx.guard.pid()]);
        let r = scale::run(&opts)?;
        background.scale = Some(meter.percent(clk_tck));
        Some(r)
    };
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
            scale.as_ref(),
            &background,
        )
    );
    Ok(())
}

/// Runs `vantage probe` and returns its JSON and the CPU seconds it used.
fn run_vantage(
    exe: &Path,
    url: &str,
    extra: &[&str],
    clk_tck: f64,
) -> anyhow::Result<(Value, f64, f64)> {
    let before = procs::cpu_ticks("self")?.children;
    let started = Instant::now();
    let out = Command::new(exe)
        .arg("probe")
        .arg(url)
        .args(extra)
        .arg("--json")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let after = procs::cpu_ticks("self")?.children;
    let json: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "vantage printed no JSON ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((json, (after - before) as f64 / clk_tck, wall))
}

fn json_u64(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

fn first_error(v: &Value) -> Option<String> {
    v.get("errors")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().next())
        .map(|(k, m)| format!("{k}: {}", m.as_str().unwrap_or("")))
}

/// Drives `n` blackbox probes of `target` from `threads` threads; returns the answers.
fn drive_blackbox(
    addr: SocketAddr,
    target: &str,
    n: u64,
    threads: u32,
) -> Vec<servers::BlackboxProbe> {
    let next = Arc::new(AtomicU64::new(0));
    let results = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (next, results, target) = (next.clone(), results.clone(), target.to_owned());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    mine.push(servers::blackbox_probe(addr, &target));
                }
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(mine);
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let mut out = results.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::take(&mut *out)
}

fn cpu_comparison(
    args: &Args,
    vantage: &Path,
    ca: &Path,
    target: &str,
    blackbox: &servers::Blackbox,
    clk_tck: f64,
) -> anyhow::Result<CpuResult> {
    let ca = ca.to_str().context("temp path is not UTF-8")?;
    let n = args.probes.to_string();
    let c = args.concurrency.to_string();

    // Fixed cost of a vantage process: ten one-probe runs (also warms the page cache).
    progress("cpu: vantage fixed cost (10 × --count 1) ...");
    let mut fixed = 0.0;
    for _ in 0..10 {
        let (json, cpu, _) =
            run_vantage(vantage, target, &["--cacert", ca, "--count", "1"], clk_tck)?;
        if json_u64(&json, "/outcomes/ok") != 1 {
            bail!("vantage warm-up probe failed: {json}");
        }
        fixed += cpu;
    }
    let ours_fixed_ms = 1e3 * fixed / 10.0;

    progress(format!("cpu: vantage, {n} probes, concurrency {c} ..."));
    let extra = [
        "--cacert",
        ca,
        "--count",
        &n,
        "--interval",
        "0",
        "--concurrency",
        &c,
    ];
    let (json, cpu_secs, wall_secs) = run_vantage(vantage, target, &extra, clk_tck)?;
    let tls = json
        .get("tls_versions")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{} ×{}", k.replace("TLSv1_", "TLS 1."), v))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let ours = CpuSide {
        probes: json_u64(&json, "/attempts"),
        ok: json_u64(&json, "/outcomes/ok"),
        cpu_secs,
        wall_secs,
        tls,
        first_error: first_error(&json),
    };

    progress("cpu: blackbox_exporter warm-up (20 probes) ...");
    let warm = drive_blackbox(blackbox.addr, target, 20, 1);
    if let Some(bad) = warm.iter().find(|p| !p.success) {
        bail!(
            "blackbox_exporter warm-up probe failed: {}",
            bad.error.as_deref().unwrap_or("?")
        );
    }
    progress(format!(
        "cpu: blackbox_exporter, {n} probes, concurrency {c} ..."
    ));
    let pid = blackbox.guard.pid().to_string();
    let before = procs::cpu_ticks(&pid)?.own;
    let started = Instant::now();
    let answers = drive_blackbox(blackbox.addr, target, args.probes, args.concurrency);
    let wall_secs = started.elapsed().as_secs_f64();
    let cpu_secs = (procs::cpu_ticks(&pid)?.own - before) as f64 / clk_tck;
    let mut tls_counts = std::collections::BTreeMap::<String, u64>::new();
    for a in &answers {
        if let Some(v) = &a.tls_version {
            *tls_counts.entry(v.clone()).or_default() += 1;
        }
    }
    let blackbox = CpuSide {
        probes: answers.len() as u64,
        ok: answers.iter().filter(|a| a.success).count() as u64,
        cpu_secs,
        wall_secs,
        tls: tls_counts
            .iter()
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect::<Vec<_>>()
            .join(", "),
        first_error: answers.iter().find_map(|a| a.error.clone()),
    };
    Ok(CpuResult {
        ours,
        blackbox,
        ours_fixed_ms,
    })
}

/// Nearest-rank quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "met"
    } else {
        "MISSED"
    }
}

#[allow(clippy::too_many_arguments)]
fn render(
    args: &Args,
    cores: usize,
    nginx_version: &str,
    blackbox_version: &str,
    cpu: Option<&CpuResult>,
    accuracy: &[accuracy::AccuracyRow],
    scale: Option<&scale::ScaleReport>,
    background: &Background,
) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nvantage bench/probe — {cores} cores, {nginx_version} (ECDSA P-256, fresh TLS each \
         probe), blackbox_exporter {blackbox_version}"
    );
    let w = 38;
    let _ = writeln!(
        o,
        "{:<w$} {:>12} {:>12} {:>8}   target",
        "", "vantage", "blackbox", "ratio"
    );
    if let Some(c) = cpu {
        let (a, b) = (&c.ours, &c.blackbox);
        let ratio = a.per_1000() / b.per_1000();
        let _ = writeln!(
            o,
            "{:<w$} {:>12} {:>12}",
            format!(
                "probes ok (N={}, concurrency {})",
                args.probes, args.concurrency
            ),
            format!("{}/{}", a.ok, a.probes),
            format!("{}/{}", b.ok, b.probes)
        );
        let _ = writeln!(
            o,
            "{:<w$} {:>12.2} {:>12.2} {:>7.2}×",
            "wall time (s)",
            a.wall_secs,
            b.wall_secs,
            a.wall_secs / b.wall_secs
        );
        let _ = writeln!(
            o,
            "{:<w$} {:>12.3} {:>12.3}",
            "CPU per probe (ms)",
            a.per_1000(),
            b.per_1000()
        );
        let _ = writeln!(
            o,
            "{:<w$} {:>12.3} {:>12.3} {:>7.3}×   ≤ 0.25×  {}",
            "CPU per 1,000 probes (s)",
            a.per_1000(),
            b.per_1000(),
            ratio,
            verdict(ratio <= 0.25 && a.ok == a.probes && b.ok == b.probes)
        );
        let _ = writeln!(
            o,
            "{:<w$} {:>12.2} {:>12.2}",
            "CPU seconds in all", a.cpu_secs, b.cpu_secs
        );
        let _ = writeln!(
            o,
            "  (vantage figure includes process start-up: {:.1} ms CPU for a one-probe run; \
             TLS versions: vantage {}, blackbox {})",
            c.ours_fixed_ms,
            if a.tls.is_empty() { "-" } else { &a.tls },
            if b.tls.is_empty() { "-" } else { &b.tls }
        );
        for (side, s) in [("vantage", a), ("blackbox", b)] {
            if s.ok != s.probes {
                let _ = writeln!(
                    o,
                    "  {side} failures: {}",
                    s.first_error.as_deref().unwrap_or("?")
                );
            }
        }
    }
    for r in accuracy {
        let pass = r.ours.p50_ms.abs() <= 0.2 && r.ours.ok == r.ours.n;
        let _ = writeln!(
            o,
            "{:<w$} {:>+12.3} {:>+12.3} {:>8}   |p50| ≤ 0.2 ms  {}",
            format!("ttfb error p50 vs {} ms, {} (ms)", args.delay_ms, r.scheme),
            r.ours.p50_ms,
            r.blackbox.p50_ms,
            "",
            verdict(pass)
        );
        let _ = writeln!(
            o,
            "{:<w$} {:>+12.3} {:>+12.3}",
            format!("ttfb error p99 vs {} ms, {} (ms)", args.delay_ms, r.scheme),
            r.ours.p99_ms,
            r.blackbox.p99_ms
        );
        let _ = writeln!(
            o,
            "  ({} ok: vantage {}/{}, blackbox {}/{}; floor = blocking client in this process: \
             p50 {:+.3} p99 {:+.3} ms; delay server late p50/p99/max {:.0}/{:.0}/{:.0} µs, \
             its write {:.0} µs)",
            r.scheme,
            r.ours.ok,
            r.ours.n,
            r.blackbox.ok,
            r.blackbox.n,
            r.floor.p50_ms,
            r.floor.p99_ms,
            r.server_late_us[0],
            r.server_late_us[1],
            r.server_late_us[2],
            r.server_write_us
        );
    }
    if let Some(s) = scale {
        let rss_mb = s.peak_rss_kb.map_or(f64::NAN, |k| k as f64 / 1024.0);
        let pass = s.missed_slots == 0 && rss_mb <= 256.0 && s.ok == s.probes && s.probes > 0;
        let _ = writeln!(
            o,
            "scale {} targets @{} s, {} s (in-process agent library{}; fresh handshakes: {}):",
            group(s.targets as u64),
            args.scale_interval_secs,
            s.duration.as_secs(),
            if args.scale_boxed_probes {
                ", probe futures boxed"
            } else {
                ""
            },
            s.tls_versions
        );
        let _ = writeln!(
            o,
            "  probes {} (expected ~{}), ok {}, missed slots {}, max start lag {:.2} ms, \
             max in flight {}",
            group(s.probes),
            group(s.expected_probes),
            group(s.ok),
            s.missed_slots,
            s.max_start_lag.as_secs_f64() * 1e3,
            s.max_in_flight
        );
        let _ = writeln!(
            o,
            "  CPU {:.1}% of one core ({:.3} ms per probe); without the report encoding \
             below {:.1}% ({:.3} ms per probe); {:.1} context switches per probe; nginx {}",
            s.cpu_percent,
            s.cpu_ms_per_probe,
            s.cpu_percent - 100.0 * s.encode_time.as_secs_f64() / s.wall.as_secs_f64().max(1e-3),
            s.cpu_ms_per_probe - 1e3 * s.encode_time.as_secs_f64() / s.probes.max(1) as f64,
            s.switches_per_probe,
            s.nginx_cpu_percent
                .map_or("n/a".to_owned(), |p| format!("{p:.1}% (separate process)"))
        );
        let _ = writeln!(
            o,
            "  peak RSS {:.1} MB{} (RSS with targets built, before start: {:.1} MB), \
             recorder {:.0} bytes/target at the fullest point, task future {} bytes",
            rss_mb,
            if s.peak_rss_reset { "" } else { " (whole run)" },
            s.rss_before_kb.map_or(f64::NAN, |k| k as f64 / 1024.0),
            s.recorder_bytes_per_target,
            s.task_future_bytes
        );
        let _ = writeln!(
            o,
            "  latency p50: tls {:.3} ms, ttfb {:.3} ms, whole probe {:.3} ms (p99 {:.3} ms); \
             setup {:.2} s",
            s.tls_p50_ms,
            s.ttfb_p50_ms,
            s.total_p50_ms,
            s.total_p99_ms,
            s.setup.as_secs_f64()
        );
        let wall = s.wall.as_secs_f64().max(1e-3);
        let _ = writeln!(
            o,
            "  drains (take_through every interval): {:.2} s in all, {:.1}% of one core; encoding \
             {} histograms as the report builder does: {:.2} s, {:.1}% of one core ({:.1} µs each, \
             of which to_histogram {:.1} µs; {:.0} bytes each); longest drain {:.1} ms",
            s.take_time.as_secs_f64(),
            100.0 * s.take_time.as_secs_f64() / wall,
            group(s.encoded_histograms),
            s.encode_time.as_secs_f64(),
            100.0 * s.encode_time.as_secs_f64() / wall,
            1e6 * s.encode_time.as_secs_f64() / s.encoded_histograms.max(1) as f64,
            1e6 * s.to_histogram_time.as_secs_f64() / s.encoded_histograms.max(1) as f64,
            s.encoded_bytes as f64 / s.encoded_histograms.max(1) as f64,
            s.max_drain.as_secs_f64() * 1e3
        );
        let _ = writeln!(
            o,
            "  target: no missed slots, RSS ≤ 256 MB  {}",
            verdict(pass)
        );
        for (outcome, (count, message)) in &s.failures {
            let hint = if message.contains("os error 24") {
                " (EMFILE: raise ulimit -n)"
            } else if message.contains("os error 99") {
                " (EADDRNOTAVAIL: ephemeral ports exhausted; use more --scale-addrs)"
            } else {
                ""
            };
            let _ = writeln!(o, "  failures {outcome} ×{count}: {message}{hint}");
        }
    }
    let parts: Vec<String> = [
        ("CPU", background.cpu),
        ("accuracy", background.accuracy),
        ("scale", background.scale),
    ]
    .iter()
    .filter_map(|(name, p)| p.map(|p| format!("{name} {p:.1}%")))
    .collect();
    if !parts.is_empty() {
        let busy = [background.cpu, background.accuracy, background.scale]
            .iter()
            .flatten()
            .any(|p| *p > 10.0);
        let _ = writeln!(
            o,
            "other processes' CPU during each test (% of one core): {}{}",
            parts.join(", "),
            if busy {
                " — the machine was busy: figures are disturbed, run again when it is idle"
            } else {
                ""
            }
        );
    }
    o
}

/// 12345 -> "12,345".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
