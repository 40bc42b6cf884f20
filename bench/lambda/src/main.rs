//! Cold start of the packaged Lambda artifact: unzips `bootstrap`, then, run after run, starts
//! it as Lambda would (no arguments, a bare environment, `_HANDLER=agent`) against the Runtime
//! API stand-in holding one invocation, and times, from exec, the first `next` call (init
//! done), the first probe's arrival at a loopback target, and the invocation's response.
//! Prints the zip's and the binary's sizes with them. Figures only: the protocol itself is
//! checked by tests/lambda_package.rs.
//!
//! The first-probe time includes the scheduler's spread: each target starts at a random offset
//! within its interval, here the 100 ms minimum.

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use vantage_testkit::aggregator::StandIn;
use vantage_testkit::fleet::{quoted, FleetToml};
use vantage_testkit::lambda::{Outcome, RuntimeApi};

const KEY: &[u8] = b"bench-lambda-key-0123456789";

#[derive(Parser)]
#[command(about = "Cold start of the packaged Lambda bootstrap (exec to first probe)")]
struct Args {
    /// The zip scripts/package.sh wrote.
    #[arg(long, default_value = "dist/vantage-lambda-x86_64.zip")]
    zip: PathBuf,
    /// Cold starts to time.
    #[arg(long, default_value_t = 20)]
    runs: usize,
}

/// A loopback target that answers healthy and notes when the first request arrived.
fn fake_target() -> Result<(String, Arc<Mutex<Option<Instant>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/status", listener.local_addr()?);
    let first = Arc::new(Mutex::new(None));
    let seen = first.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                while vantage_testkit::http::read_request(&mut stream).is_some() {
                    seen.lock().unwrap().get_or_insert_with(Instant::now);
                    let body = "{\"status\":\"pass\"}\n";
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/health+json\r\n\
                         x-vantage-region: eu-west-1\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
            });
        }
    });
    Ok((url, first))
}

/// Unzips the one `bootstrap` into `dir` (Python's zipfile: no unzip binary needed).
fn unzip(zip: &Path, dir: &Path) -> Result<PathBuf> {
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(zip)
        .arg(dir)
        .status()
        .context("python3 (to unzip)")?;
    if !status.success() {
        bail!("cannot unzip {}", zip.display());
    }
    let bootstrap = dir.join("bootstrap");
    // zipfile's CLI drops the mode the zip records; Lambda keeps it.
    std::fs::set_permissions(
        &bootstrap,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    Ok(bootstrap)
}

struct Timing {
    init: Duration,
    first_probe: Duration,
    answered: Duration,
}

fn cold_start(bootstrap: &Path, fleet: &str, task: &Path) -> Result<Timing> {
    let api = RuntimeApi::start()?;
    let deadline = vantage_testkit::unix_now_ms() + 30_000;
    // Queued before exec: a cold start happens because an invocation is waiting.
    let id = api.invoke(&serde_json::json!({}), deadline);
    let spool = vantage_testkit::dirs::temp_dir("bench-lambda-spool");
    let (url, first_probe) = fake_target()?;
    let fleet = fleet.replace("TARGET", &url);
    let started = Instant::now();
    let mut child = Command::new(bootstrap)
        .env_clear()
        .current_dir(task)
        .env("PATH", "/usr/bin:/bin")
        .env("LAMBDA_TASK_ROOT", task)
        .env("AWS_REGION", "eu-west-1")
        .envs(api.lambda_env("agent"))
        .env("VANTAGE_CONFIG_TOML", fleet)
        .env("VANTAGE_AGENT_KEY", std::str::from_utf8(KEY)?)
        .env("VANTAGE_SPOOL_DIR", spool.path())
        // Long enough that the run (cut at the last 1 s report boundary inside it) probes.
        .env("VANTAGE_RUN_FOR", "3s")
        .stdout(Stdio::null())
        .spawn()
        .context("start bootstrap")?;
    let answer = api.wait_for_answer(&id, Duration::from_secs(30));
    let answered = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let answer = answer.context("no answer within 30 s")?;
    if answer.outcome != Outcome::Response {
        bail!("the invocation failed: {}", answer.body);
    }
    let init = *api.next_call_times().first().context("no next call")?;
    let probe = first_probe.lock().unwrap().context("no probe arrived")?;
    Ok(Timing {
        init: init - started,
        first_probe: probe - started,
        answered,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// min / median / max in ms.
fn spread(mut values: Vec<Duration>) -> String {
    values.sort();
    format!(
        "min {:7.1}  median {:7.1}  max {:7.1} ms",
        ms(values[0]),
        ms(values[values.len() / 2]),
        ms(values[values.len() - 1])
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let zip_bytes = std::fs::metadata(&args.zip)
        .with_context(|| format!("{}: run scripts/package.sh first", args.zip.display()))?
        .len();
    let task = vantage_testkit::dirs::temp_dir("bench-lambda-task");
    let bootstrap = unzip(&args.zip, task.path())?;
    let binary_bytes = std::fs::metadata(&bootstrap)?.len();
    // The aggregator the agent reports to: a runtime of its own, alive for every run.
    let rt = tokio::runtime::Runtime::new()?;
    let aggregator = rt.block_on(StandIn::builder().key("k1", KEY).start());
    let fleet = FleetToml::new("bench-lambda")
        .probe("interval", &quoted("100ms"))
        .global("TARGET")
        .region("eu-west-1", "TARGET")
        .vantage("eu-west-1")
        .aggregator("url", &quoted(&aggregator.url()))
        .build();
    let mut timings = Vec::with_capacity(args.runs);
    for run in 0..args.runs {
        let t =
            cold_start(&bootstrap, &fleet, task.path()).with_context(|| format!("run {run}"))?;
        timings.push(t);
    }
    println!(
        "zip {} bytes ({:.1} MiB), bootstrap {} bytes ({:.1} MiB); {} cold starts",
        zip_bytes,
        zip_bytes as f64 / 1048576.0,
        binary_bytes,
        binary_bytes as f64 / 1048576.0,
        args.runs
    );
    println!(
        "exec -> first next (init)    {}",
        spread(timings.iter().map(|t| t.init).collect())
    );
    println!(
        "exec -> first probe arrives  {}",
        spread(timings.iter().map(|t| t.first_probe).collect())
    );
    println!(
        "exec -> response (run_for 3s){}",
        spread(timings.iter().map(|t| t.answered).collect())
    );
    Ok(())
}
