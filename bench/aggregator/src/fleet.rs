//! The synthetic fleet of the single-API run: a fleet file naming N Regions (each Region's
//! status target is one endpoint to the aggregator) and M vantages; and, for every run, the
//! signed reports every vantage sends for each interval of the window, built from a
//! [`Layout`] (the targets a report carries) as an agent builds them: `IntervalStats` recorded
//! from `ProbeResult`s with plausible phase timings, `report::build`, JSON, `auth::sign`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_agent::recorder::IntervalStats;
use vantage_agent::report::{build, ReportIdentity, TargetInterval};
use vantage_aggregator::config::AggregatorConfig;
use vantage_probe::{PhaseTimings, ProbeResult};
use vantage_protocol::auth;
use vantage_protocol::config::{FleetConfig, TargetKind};
use vantage_protocol::{Outcome, Phase};

/// The variable the fleet file names for the agents' key; set in-process before parsing.
pub const KEY_ENV: &str = "VANTAGE_BENCH_AGGREGATOR_KEY";
pub const KEY: &str = "bench-aggregator-key-0123456789abcdef";
pub const KEY_ID: &str = "bench";
pub const FLEET: &str = "bench-fleet";
/// The single-API run's report interval (its window is three of them, 30 s).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Intervals in the window (the aggregator's default window: three report intervals).
pub const INTERVALS: u64 = 3;
/// Start of the first interval: a fixed time (a multiple of the interval) so runs compare.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// The aggregator's clock during a run with reports every `interval`: the end of the last
/// interval, so the window (three intervals) holds exactly the intervals reported.
pub fn now(interval: Duration) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(now_ms(interval))
}

pub fn now_ms(interval: Duration) -> u64 {
    EPOCH_MS + INTERVALS * interval.as_millis() as u64
}

pub fn region_name(i: usize) -> String {
    format!("r{i:04}")
}

pub fn vantage_name(i: usize) -> String {
    format!("v{i:02}")
}

/// One endpoint in a hundred fails most probes from every vantage, so the decision has
/// take-outs (and the change limit and floor) to work through, not only a healthy fleet.
pub fn is_down(endpoint: usize) -> bool {
    endpoint % 100 == 37
}

fn fleet_toml(endpoints: usize, vantages: usize) -> String {
    // One key signs for every vantage: the bench measures ingest, not key handling.
    let names: Vec<String> = (0..vantages).map(vantage_name).collect();
    let mut t = format!(
        r#"[fleet]
name = "{FLEET}"
report_interval = "10s"

[global]
url = "https://api.example.com/status"

[aggregator]
url = "http://127.0.0.1:1"
window = "30s"

[aggregator.keys]
{KEY_ID} = {{ env = "{KEY_ENV}", allow_shared = true, vantages = {names:?} }}

[agents.auth]
key_id = "{KEY_ID}"
"#
    );
    for i in 0..endpoints {
        let r = region_name(i);
        t += &format!(
            "\n[[regions]]\nname = \"{r}\"\nstatus_url = \"https://{r}.example.com/status\"\n"
        );
    }
    for name in &names {
        t += &format!("\n[[vantages]]\nregion = \"{name}\"\n");
    }
    t
}

/// The fleet file parsed and checked as the aggregator binary does.
pub fn config(endpoints: usize, vantages: usize) -> anyhow::Result<AggregatorConfig> {
    parse(&fleet_toml(endpoints, vantages))
}

/// `text` parsed and checked as the aggregator binary does, with the agents' key set.
pub fn parse(text: &str) -> anyhow::Result<AggregatorConfig> {
    // Set before any other thread exists: nothing reads the environment concurrently.
    std::env::set_var(KEY_ENV, KEY);
    let fleet = FleetConfig::parse(text, "bench fleet")?;
    Ok(AggregatorConfig::from_fleet(fleet)?)
}

/// One target every report carries.
pub struct Target {
    pub id: String,
    pub kind: TargetKind,
    pub region: Option<String>,
    /// The Region its ok probes name as the one that answered (the Region header).
    pub answered_by: String,
    /// Fails most probes from every vantage.
    pub down: bool,
}

/// What each report holds: its targets, in the order the agent lists them, and its interval.
pub struct Layout {
    pub targets: Vec<Target>,
    pub interval: Duration,
}

impl Layout {
    /// The single-API run: one status target per Region (`status:r0000`), one in a hundred
    /// Regions down.
    pub fn single(regions: &[String]) -> Self {
        Layout {
            targets: regions
                .iter()
                .enumerate()
                .map(|(e, r)| Target {
                    id: format!("status:{r}"),
                    kind: TargetKind::Status,
                    region: Some(r.clone()),
                    answered_by: r.clone(),
                    down: is_down(e),
                })
                .collect(),
            interval: REPORT_INTERVAL,
        }
    }
}

/// splitmix64: deterministic and dependency-free; quality is ample for synthetic timings.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, a: u64, b: u64) -> Self {
        let mut r = Rng(seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.rotate_left(32));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(f64::MIN_POSITIVE);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// What one vantage's path to one endpoint looks like: stable across intervals.
struct Path {
    connect_ms: f64,
    tls_ms: f64,
    ttfb_ms: f64,
}

impl Path {
    fn new(seed: u64, vantage: usize, endpoint: usize) -> Self {
        let mut r = Rng::new(seed, 1 + vantage as u64, endpoint as u64);
        Path {
            connect_ms: r.range(0.3, 3.0),
            tls_ms: r.range(1.0, 5.0),
            ttfb_ms: r.range(5.0, 60.0),
        }
    }
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.001) / 1000.0)
}

/// One probe: dns absent (the agent resolves once per connection pool, and an address literal
/// has none), connect ~0.3–3 ms, tls ~1–5 ms, ttfb 5–200 ms with a long tail, transfer ~0.1 ms.
fn probe(r: &mut Rng, path: &Path, region: &str, outcome: Outcome) -> ProbeResult {
    let jitter = |r: &mut Rng, base: f64, sigma: f64| base * (sigma * r.normal()).exp();
    let mut t = PhaseTimings::default();
    let connect = jitter(r, path.connect_ms, 0.15);
    let tls = jitter(r, path.tls_ms, 0.15);
    let mut ttfb = jitter(r, path.ttfb_ms, 0.25);
    if r.unit() < 0.03 {
        ttfb *= r.range(2.0, 8.0);
    }
    let ttfb = ttfb.min(2_000.0);
    let transfer = r.range(0.05, 0.2);
    match outcome {
        Outcome::Ok => {
            t.set(Phase::Connect, ms(connect));
            t.set(Phase::Tls, ms(tls));
            t.set(Phase::Ttfb, ms(ttfb));
            t.set(Phase::Transfer, ms(transfer));
            t.set(
                Phase::Total,
                ms(connect + tls + ttfb + transfer + r.range(0.02, 0.1)),
            );
        }
        Outcome::Timeout => {
            t.set(Phase::Connect, ms(connect));
            t.set(Phase::Tls, ms(tls));
            t.set(Phase::Total, ms(5_000.0));
        }
        _ => t.set(Phase::Total, ms(connect)),
    }
    let mut p = ProbeResult::synthetic(outcome, t);
    if outcome == Outcome::Ok {
        p.status = Some(200);
        p.answered_by = Some(region.to_owned());
        p.cert_not_after = Some(UNIX_EPOCH + Duration::from_secs(1_720_000_000));
    }
    p
}

/// One target's interval: `probes` attempts, all failing mostly for a down endpoint, a failure
/// or two for about one in twenty healthy ones.
fn target_stats(
    r: &mut Rng,
    path: &Path,
    region: &str,
    probes: u64,
    down: bool,
    precision: u8,
) -> IntervalStats {
    let failures = if down {
        // 8 of 10; the only probe of a one-probe interval.
        (probes * 8).div_ceil(10)
    } else if r.unit() < 0.05 {
        (1 + (r.next_u64() % 2)).min(probes)
    } else {
        0
    };
    let mut s = IntervalStats::new(precision);
    for i in 0..probes {
        let outcome = if i < failures {
            [Outcome::Timeout, Outcome::Connect, Outcome::Reset][(r.next_u64() % 3) as usize]
        } else {
            Outcome::Ok
        };
        let lag = Duration::from_micros(r.next_u64() % 200);
        s.record(&probe(r, path, region, outcome), lag);
    }
    s
}

/// One signed report body, as it arrives on `POST /v1/reports`.
#[derive(Clone)]
pub struct Signed {
    pub vantage: usize,
    pub interval: u64,
    pub targets: usize,
    pub timestamp: u64,
    pub signature: String,
    pub body: Vec<u8>,
}

impl Signed {
    /// The request headers, as the HTTP handler hands them to `Aggregator::ingest`.
    pub fn header(&self, name: &str) -> Option<String> {
        match name {
            auth::HEADER_KEY_ID => Some(KEY_ID.to_owned()),
            auth::HEADER_TIMESTAMP => Some(self.timestamp.to_string()),
            auth::HEADER_SIGNATURE => Some(self.signature.clone()),
            _ => None,
        }
    }
}

/// The same reports with every histogram V2-deflate, as agents sent them before histograms
/// were encoded by size, re-signed: the bench's "before" on identical data.
pub fn as_before(reports: &[Signed]) -> Vec<Signed> {
    reports
        .iter()
        .map(|r| {
            let mut report: vantage_protocol::report::IntervalReport =
                serde_json::from_slice(&r.body).expect("our own report");
            for t in &mut report.targets {
                for text in t.histograms.values_mut() {
                    let h = vantage_protocol::histogram::decode_base64(text).expect("our own");
                    *text = vantage_protocol::histogram::encode_base64_deflate(&h).expect("encode");
                }
            }
            let body = serde_json::to_vec(&report).expect("reports serialise");
            Signed {
                signature: auth::sign(KEY.as_bytes(), r.timestamp, &body),
                body,
                ..r.clone()
            }
        })
        .collect()
}

/// Sizes of what was built.
pub struct Built {
    pub reports: Vec<Signed>,
    pub histograms: u64,
}

/// Every vantage's report for every interval of the window, interval-major (the order they
/// arrive in), built on `threads` threads.
pub fn reports(
    config: &AggregatorConfig,
    layout: &Layout,
    vantages: usize,
    probes: u64,
    seed: u64,
    threads: usize,
) -> Built {
    let precision = config.fleet.histogram_precision();
    let jobs: Vec<(usize, u64)> = (0..INTERVALS)
        .flat_map(|i| (0..vantages).map(move |v| (v, i)))
        .collect();
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<(Signed, u64)>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(v, interval)) = jobs.get(j) else {
                    break;
                };
                let built = one_report(layout, v, interval, probes, seed, precision);
                out.lock().expect("no panics while held")[j] = Some(built);
            });
        }
    });
    let mut histograms = 0;
    let reports = out
        .into_inner()
        .expect("no panics while held")
        .into_iter()
        .map(|b| {
            let (signed, h) = b.expect("every job ran");
            histograms += h;
            signed
        })
        .collect();
    Built {
        reports,
        histograms,
    }
}

fn one_report(
    layout: &Layout,
    vantage: usize,
    interval: u64,
    probes: u64,
    seed: u64,
    precision: u8,
) -> (Signed, u64) {
    let mut r = Rng::new(seed, 1_000 + vantage as u64, interval);
    let stats: Vec<IntervalStats> = layout
        .targets
        .iter()
        .enumerate()
        .map(|(e, t)| {
            let path = Path::new(seed, vantage, e);
            target_stats(&mut r, &path, &t.answered_by, probes, t.down, precision)
        })
        .collect();
    let targets: Vec<TargetInterval<'_>> = layout
        .targets
        .iter()
        .zip(&stats)
        .map(|(t, stats)| TargetInterval {
            id: &t.id,
            kind: t.kind,
            region: t.region.as_deref(),
            stats,
        })
        .collect();
    let name = vantage_name(vantage);
    let identity = ReportIdentity {
        fleet: FLEET.to_owned(),
        agent_id: format!("vantage-{name}"),
        vantage: name,
    };
    let interval_ms = layout.interval.as_millis() as u64;
    let start_ms = EPOCH_MS + interval * interval_ms;
    let report = build(&identity, interval + 1, start_ms, layout.interval, &targets);
    let histograms = report
        .targets
        .iter()
        .map(|t| t.histograms.len() as u64)
        .sum();
    let body = serde_json::to_vec(&report).expect("reports serialise");
    // Sent as the interval closes.
    let timestamp = (start_ms + interval_ms) / 1000;
    let signature = auth::sign(KEY.as_bytes(), timestamp, &body);
    (
        Signed {
            vantage,
            interval,
            targets: report.targets.len(),
            timestamp,
            signature,
            body,
        },
        histograms,
    )
}
