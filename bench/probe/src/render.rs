//! The side-by-side table `bench-probe` prints: ours, the peer, the ratio and the target.

use crate::cpu::CpuResult;
use crate::{accuracy, scale, Args};
use std::fmt::Write as _;

/// Other processes' CPU (% of one core) during each section.
#[derive(Debug, Default)]
pub(crate) struct Background {
    pub(crate) cpu: Option<f64>,
    pub(crate) accuracy: Option<f64>,
    pub(crate) scale: Option<f64>,
}

pub(crate) fn verdict(pass: bool) -> &'static str {
    if pass {
        "met"
    } else {
        "MISSED"
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn render(
    args: &Args,
    cores: usize,
    nginx_version: &str,
    blackbox_version: &str,
    cpu: Option<&CpuResult>,
    accuracy: &[accuracy::AccuracyRow],
    scale: &[scale::ScaleReport],
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
    for s in scale {
        let rss_mb = s.peak_rss_kb.map_or(f64::NAN, |k| k as f64 / 1024.0);
        let pass = s.missed_slots == 0
            && rss_mb <= 128.0
            && s.max_drain <= std::time::Duration::from_millis(50)
            && s.ok == s.probes
            && s.probes > 0;
        let _ = writeln!(
            o,
            "scale, {}: {} targets @{} s, {} s (in-process agent library{}; fresh handshakes: {}):",
            s.drain.label(),
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
        let per_histogram_us =
            1e6 * s.encode_time.as_secs_f64() / s.encoded_histograms.max(1) as f64;
        match s.drain {
            scale::DrainMode::Inline => {
                let _ = writeln!(
                    o,
                    "  drains (take_through, then to_histogram + V2 encoding of {} histograms, all \
                     in the drain on the runtime): take {:.2} s, encoding {:.2} s = {:.1}% of one \
                     core ({:.1} µs a histogram, of which to_histogram {:.1} µs; {:.0} bytes each); \
                     longest drain {:.1} ms ({:.1} ms of CPU)",
                    group(s.encoded_histograms),
                    s.take_time.as_secs_f64(),
                    s.encode_time.as_secs_f64(),
                    100.0 * s.encode_time.as_secs_f64() / wall,
                    per_histogram_us,
                    1e6 * s.to_histogram_time.as_secs_f64() / s.encoded_histograms.max(1) as f64,
                    s.encoded_bytes as f64 / s.encoded_histograms.max(1) as f64,
                    s.max_drain.as_secs_f64() * 1e3,
                    s.max_drain_cpu.as_secs_f64() * 1e3
                );
            }
            scale::DrainMode::Encoder => {
                let _ = writeln!(
                    o,
                    "  drains (take_through and seal, on the runtime): {:.2} s in all, longest \
                     {:.1} ms ({:.1} ms of CPU); encoder on the blocking pool: {} reports, {} histograms, {:.2} s = \
                     {:.1}% of one core ({:.2} µs a histogram with the whole report and its JSON; \
                     {:.0} bytes a report), longest encode {:.1} ms",
                    s.take_time.as_secs_f64(),
                    s.max_drain.as_secs_f64() * 1e3,
                    s.max_drain_cpu.as_secs_f64() * 1e3,
                    group(s.reports),
                    group(s.encoded_histograms),
                    s.encode_time.as_secs_f64(),
                    100.0 * s.encode_time.as_secs_f64() / wall,
                    per_histogram_us,
                    s.report_bytes as f64 / s.reports.max(1) as f64,
                    s.max_encode.as_secs_f64() * 1e3
                );
            }
        }
        let lag = |l: &scale::Lag| {
            format!(
                "{} probes, p50 {:.3} ms, p99 {:.3} ms, max {:.2} ms",
                group(l.probes),
                l.p50_ms,
                l.p99_ms,
                l.max_ms
            )
        };
        let _ = writeln!(
            o,
            "  start lag of probes started while a report was encoded: {}; of the others: {}",
            lag(&s.lag_encoding),
            lag(&s.lag_other)
        );
        let _ = writeln!(
            o,
            "  target: no missed slots, RSS ≤ 128 MB, no drain over 50 ms  {}",
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
    if let [old, new] = scale {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        let _ = writeln!(
            o,
            "scale, before → now (same run): longest drain {:.1} → {:.1} ms ({:.0}× shorter; CPU \
             {:.1} → {:.1} ms); \
             encoding {:.1} → {:.2} µs a histogram; CPU {:.3} → {:.3} ms a probe; p99 start lag \
             while encoding {:.3} → {:.3} ms; missed slots {} → {}",
            old.max_drain.as_secs_f64() * 1e3,
            new.max_drain.as_secs_f64() * 1e3,
            ratio(old.max_drain.as_secs_f64(), new.max_drain.as_secs_f64()),
            old.max_drain_cpu.as_secs_f64() * 1e3,
            new.max_drain_cpu.as_secs_f64() * 1e3,
            1e6 * old.encode_time.as_secs_f64() / old.encoded_histograms.max(1) as f64,
            1e6 * new.encode_time.as_secs_f64() / new.encoded_histograms.max(1) as f64,
            old.cpu_ms_per_probe,
            new.cpu_ms_per_probe,
            old.lag_encoding.p99_ms,
            new.lag_encoding.p99_ms,
            old.missed_slots,
            new.missed_slots
        );
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
pub(crate) fn group(n: u64) -> String {
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
