//! `vantage probe`: probe one URL a number of times and summarise, for people (a table) and
//! scripts (one JSON object). Probe `i` is intended to start at `start + i·interval`; up to
//! `concurrency` probes run at once, and a probe that could not start on time is measured from
//! its intended start, as the agent does. With an interval of zero the probes run back to back
//! and are measured from their actual start.

use crate::recorder::IntervalStats;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use vantage_probe::{ProbeResult, Prober};
use vantage_protocol::histogram::encode_base64;
use vantage_protocol::{Outcome, Phase};

/// How many probes, how often, how many at once.
#[derive(Debug, Clone, Copy)]
pub struct OneshotOptions {
    pub count: u64,
    pub interval: Duration,
    pub concurrency: usize,
    pub significant_digits: u8,
}

/// The quantiles printed for every phase.
pub const QUANTILES: [(&str, f64); 3] = [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)];

/// What a run saw.
#[derive(Debug)]
pub struct OneshotReport {
    pub url: String,
    pub stats: IntervalStats,
    /// Probes that were planned but not run because the run was interrupted.
    pub not_run: u64,
    /// The first message seen for each failing outcome.
    pub first_failure: BTreeMap<Outcome, String>,
    pub http_versions: BTreeMap<String, u64>,
    pub tls_versions: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl OneshotReport {
    pub fn all_ok(&self) -> bool {
        self.stats.attempts > 0 && self.stats.outcome_count(Outcome::Ok) == self.stats.attempts
    }

    fn cert_expiry_days(&self) -> Option<f64> {
        self.stats
            .cert_not_after
            .map(|t| vantage_probe::tls::days_until(t, SystemTime::now()))
    }

    /// The `--json` object.
    pub fn to_json(&self) -> Value {
        let s = &self.stats;
        let outcomes: Map<String, Value> = Outcome::ALL
            .into_iter()
            .map(|o| (o.as_str().to_owned(), json!(s.outcome_count(o))))
            .collect();
        let mut phases = Map::new();
        let mut histograms = Map::new();
        for p in Phase::ALL {
            let set = s.phase(p);
            let h = set.to_histogram();
            let summary = if set.is_empty() {
                Value::Null
            } else {
                let mut m = Map::new();
                for (name, q) in QUANTILES {
                    m.insert(name.into(), json!(micros_to_secs(h.value_at_quantile(q))));
                }
                m.insert("max".into(), json!(micros_to_secs(h.max())));
                m.insert("count".into(), json!(h.len()));
                Value::Object(m)
            };
            phases.insert(p.as_str().into(), summary);
            let encoded = encode_base64(&h).unwrap_or_default();
            histograms.insert(p.as_str().into(), json!(encoded));
        }
        let errors: Map<String, Value> = self
            .first_failure
            .iter()
            .map(|(o, m)| (o.as_str().to_owned(), json!(m)))
            .collect();
        let answered: Map<String, Value> = s
            .answered_by
            .iter()
            .map(|(r, n)| (r.clone(), json!(n)))
            .collect();
        json!({
            "url": self.url,
            "attempts": s.attempts,
            "not_run": self.not_run,
            "missed_slots": s.missed_slots,
            "outcomes": outcomes,
            "phases": phases,
            "histograms": histograms,
            "histogram_unit": "microseconds",
            "answered_by": answered,
            "http_versions": self.http_versions,
            "tls_versions": self.tls_versions,
            "cert_expiry_days": self.cert_expiry_days(),
            "max_start_lag": s.max_start_lag.as_secs_f64(),
            "errors": errors,
            "elapsed": self.elapsed.as_secs_f64(),
        })
    }

    /// The readable table.
    pub fn render_table(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let ok = s.outcome_count(Outcome::Ok);
        let _ = writeln!(
            out,
            "{}: {} probes in {:.2} s, {} ok, {} failed",
            self.url,
            s.attempts,
            self.elapsed.as_secs_f64(),
            ok,
            s.attempts - ok
        );
        if self.not_run > 0 {
            let _ = writeln!(out, "interrupted: {} probes not run", self.not_run);
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<9} {:>11} {:>11} {:>11} {:>11} {:>8}",
            "phase", "p50", "p90", "p99", "max", "samples"
        );
        for p in Phase::ALL {
            let set = s.phase(p);
            if set.is_empty() {
                let _ = writeln!(
                    out,
                    "{:<9} {:>11} {:>11} {:>11} {:>11} {:>8}",
                    p, "-", "-", "-", "-", 0
                );
                continue;
            }
            let h = set.to_histogram();
            let _ = writeln!(
                out,
                "{:<9} {:>11} {:>11} {:>11} {:>11} {:>8}",
                p,
                fmt_micros(h.value_at_quantile(0.50)),
                fmt_micros(h.value_at_quantile(0.90)),
                fmt_micros(h.value_at_quantile(0.99)),
                fmt_micros(h.max()),
                h.len()
            );
        }
        let _ = writeln!(out);
        let counts: Vec<String> = Outcome::ALL
            .into_iter()
            .filter(|o| s.outcome_count(*o) > 0)
            .map(|o| format!("{o} {}", s.outcome_count(o)))
            .collect();
        let _ = writeln!(
            out,
            "outcomes: {}",
            if counts.is_empty() {
                "none".into()
            } else {
                counts.join(", ")
            }
        );
        for (o, message) in &self.first_failure {
            let _ = writeln!(out, "  {o}: {message}");
        }
        if s.missed_slots > 0 {
            let _ = writeln!(
                out,
                "missed slots: {} (probes could not start on time)",
                s.missed_slots
            );
        }
        if !s.answered_by.is_empty() {
            let regions: Vec<String> = s
                .answered_by
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            let _ = writeln!(out, "answered by: {}", regions.join(", "));
        }
        let mut protocol = Vec::new();
        for (v, n) in self.http_versions.iter().chain(&self.tls_versions) {
            protocol.push(format!("{v} {n}"));
        }
        if !protocol.is_empty() {
            let _ = writeln!(out, "protocols: {}", protocol.join(", "));
        }
        if let Some(days) = self.cert_expiry_days() {
            if days >= 0.0 {
                let _ = writeln!(out, "certificate expires in {days:.1} days");
            } else {
                let _ = writeln!(out, "certificate EXPIRED {:.1} days ago", -days);
            }
        }
        out
    }
}

fn micros_to_secs(micros: u64) -> f64 {
    micros as f64 / 1e6
}

fn fmt_micros(micros: u64) -> String {
    if micros >= 1_000_000 {
        format!("{:.3} s", micros as f64 / 1e6)
    } else {
        format!("{:.3} ms", micros as f64 / 1e3)
    }
}

struct Shared {
    stats: IntervalStats,
    first_failure: BTreeMap<Outcome, String>,
    http_versions: BTreeMap<String, u64>,
    tls_versions: BTreeMap<String, u64>,
    run: u64,
}

impl Shared {
    fn record(&mut self, result: &ProbeResult, start_lag: Duration) {
        self.run += 1;
        self.stats.record(result, start_lag);
        if let Some(f) = &result.failure {
            self.first_failure
                .entry(result.outcome)
                .or_insert_with(|| f.message.clone());
        }
        if let Some(v) = result.http_version {
            *self.http_versions.entry(format!("{v:?}")).or_default() += 1;
        }
        if let Some(v) = result.tls_version {
            *self.tls_versions.entry(v.to_owned()).or_default() += 1;
        }
    }
}

/// Runs the probes; stops early (keeping what was measured) when `stop` turns true.
pub async fn run(
    prober: Arc<Prober>,
    options: OneshotOptions,
    stop: watch::Receiver<bool>,
) -> OneshotReport {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Mutex::new(Shared {
        stats: IntervalStats::new(options.significant_digits),
        first_failure: BTreeMap::new(),
        http_versions: BTreeMap::new(),
        tls_versions: BTreeMap::new(),
        run: 0,
    }));
    let workers = options
        .concurrency
        .max(1)
        .min(options.count.max(1) as usize);
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (prober, next, shared, mut stop) =
            (prober.clone(), next.clone(), shared.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= options.count {
                    break;
                }
                let intended = start
                    + options
                        .interval
                        .saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
                tokio::select! {
                    _ = sleep_until(intended) => {}
                    _ = stop.changed() => break,
                }
                let started = Instant::now();
                let lag = if options.interval.is_zero() {
                    Duration::ZERO
                } else {
                    started.saturating_duration_since(intended)
                };
                let result = prober.probe().await;
                shared
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(&result, lag);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let shared = Arc::try_unwrap(shared)
        .ok()
        .expect("workers finished")
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    OneshotReport {
        url: prober.spec().url.to_string(),
        not_run: options.count - shared.run,
        stats: shared.stats,
        first_failure: shared.first_failure,
        http_versions: shared.http_versions,
        tls_versions: shared.tls_versions,
        elapsed: start.elapsed(),
    }
}
