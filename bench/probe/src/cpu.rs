//! The CPU comparison: the same number of probes through `vantage probe` and through
//! blackbox_exporter's `/probe`, CPU seconds of each process read from `/proc`.

use crate::{procs, progress, servers, Args};
use anyhow::{bail, Context as _};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Result of one side of the CPU comparison.
#[derive(Debug, Default, Clone)]
pub(crate) struct CpuSide {
    pub(crate) probes: u64,
    pub(crate) ok: u64,
    pub(crate) cpu_secs: f64,
    pub(crate) wall_secs: f64,
    pub(crate) tls: String,
    pub(crate) first_error: Option<String>,
}

impl CpuSide {
    pub(crate) fn per_1000(&self) -> f64 {
        1000.0 * self.cpu_secs / self.probes.max(1) as f64
    }
}

pub(crate) struct CpuResult {
    pub(crate) ours: CpuSide,
    pub(crate) blackbox: CpuSide,
    /// CPU of one `vantage probe --count 1` process (start-up, roots, one probe).
    pub(crate) ours_fixed_ms: f64,
}

/// Runs `vantage probe` and returns its JSON and the CPU seconds it used.
pub(crate) fn run_vantage(
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

pub(crate) fn json_u64(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

pub(crate) fn first_error(v: &Value) -> Option<String> {
    v.get("errors")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().next())
        .map(|(k, m)| format!("{k}: {}", m.as_str().unwrap_or("")))
}

/// Drives `n` blackbox probes of `target` from `threads` threads; returns the answers.
pub(crate) fn drive_blackbox(
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

pub(crate) fn cpu_comparison(
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
