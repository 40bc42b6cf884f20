//! `bench-status`: vantage's status endpoint side by side with nginx returning a fixed 200, on
//! this machine, in the same run, loaded by wrk on loopback. See `bench-status --help`.

// Wall time outside tokio (child processes, polling loops): std's Instant is the right clock
// here; the ban exists for paused-clock tests.
#![allow(clippy::disallowed_types)]

use anyhow::{bail, Context as _};
use clap::Parser;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
mod cpu;

use vantage_runtime::http_server::{self, Limits, TowerToHyperService};
use vantage_status_endpoint::config::Config;
use vantage_status_endpoint::router;

const LONG_ABOUT: &str = "\
Side-by-side benchmark of vantage's status endpoint against nginx, same machine, same run.

1. nginx (worker_processes 2, access_log off) answering every request with a fixed 200 and a \
small JSON body: the ceiling for a loopback HTTP/1.1 server here.
2. vantage /status (liveness: a pre-rendered answer, no dependency touched), served by the \
status-endpoint library in this process on a 2-worker tokio runtime (nginx has 2 worker \
processes: like for like). It is answered ahead of the axum routes (status-endpoint's service.rs).
3. vantage /status/deep with the cache on (TTL --ttl): the Aurora writer check points at a real \
PostgreSQL (Debian postgresql 15, run as nobody, log_statement=all), so the table also shows how \
many checks the database saw during the run: at most one per TTL.
4. before: the same /status through the axum routes alone (how it was served until service.rs), \
same process, runtime, server loop and limits: the old figure beside the new one.

Each is loaded by `wrk -t THREADS -c CONNECTIONS -d DURATION --latency` after a short warm-up; \
requests/s and p50/p99 latency come from wrk's own report; CPU/req is the server's CPU time \
(scheduler accounting of nginx's processes, or of the tokio workers) over the requests wrk \
completed, the figure least moved by other load on the machine. wrk, nginx and the server share the \
machine's cores, as they would on one host. Goals: /status ≥ 1.0× nginx with a p99 no worse \
than nginx's, /status/deep within 20% of /status.";

#[derive(Parser, Debug)]
#[command(name = "bench-status", about = "vantage status endpoint vs nginx, loaded by wrk", long_about = LONG_ABOUT)]
struct Args {
    /// Seconds of load per target.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Cache TTL of the deep check.
    #[arg(long, default_value = "2s")]
    ttl: String,
    /// Tokio worker threads of the server (nginx runs 2 worker processes).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Rounds (nginx, /status, /status/deep, /status via the routes each once per round); the
    /// best round of each is shown.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
}

const WRK: &str = "/usr/bin/wrk";
const NGINX: &str = "/usr/sbin/nginx";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const HINT: &str = "install with: apt-get install -y wrk nginx-light postgresql";

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-status: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Load {
    rps: f64,
    p50: Duration,
    p99: Duration,
    non_2xx: u64,
    /// The server's CPU time per request completed, microseconds.
    cpu_us: f64,
}

fn run(args: &Args) -> anyhow::Result<String> {
    for (path, what) in [(WRK, "wrk"), (NGINX, "nginx")] {
        if !Path::new(path).is_file() {
            bail!("{what} not found at {path}: {HINT}");
        }
    }
    let dir = TempDir::new()?;
    let nginx_port = free_port()?;
    let mut nginx = start_nginx(&dir, nginx_port)?;
    let pg = Postgres::start(&dir)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()?;
    let config = format!(
        "region = \"eu-west-1\"\ncache_ttl = \"{}\"\n[aurora.writer]\nurl = \"postgres://postgres@127.0.0.1:{}/postgres\"\n",
        args.ttl, pg.port
    );
    let settings = Config::from_toml(&config, "bench")?.validate()?;
    let (addr, routed_addr, stop) = runtime.block_on(async {
        let checks = router::build_checks(&settings, None).await?;
        let app = router::router(&settings, checks);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // The before-figure: the same app through its axum routes alone, as every request
        // was served until /status got its own path, on the same server loop and limits.
        let routed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let routed_addr = routed.local_addr()?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let routes = app.routes().clone();
        tokio::spawn(http_server::serve(
            routed,
            move |_peer| TowerToHyperService::new(routes.clone()),
            Limits::API,
            None,
            stopped(rx.clone()),
        ));
        tokio::spawn(router::run(app, listener, stopped(rx)));
        anyhow::Ok((addr, routed_addr, tx))
    })?;

    // The deep answer must pass before it is worth measuring. PostgreSQL listens a moment
    // before it accepts queries (longer on a loaded machine), and a failed round is cached
    // for the TTL: ask again for up to 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = http_get(addr, "/status/deep")?;
        if probe.starts_with("HTTP/1.1 200") {
            break;
        }
        if Instant::now() >= deadline {
            bail!("/status/deep does not pass after 30s: {probe}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    let nginx_url = format!("http://127.0.0.1:{nginx_port}/status");
    let status_url = format!("http://{addr}/status");
    let routed_url = format!("http://{routed_addr}/status");
    let deep_url = format!("http://{addr}/status/deep");
    let mut best = [Load::default(); 4];
    let mut deep_checks = (0usize, 0.0f64);
    for _ in 0..args.rounds {
        nginx.check_running()?;
        let urls = [&nginx_url, &status_url, &deep_url, &routed_url];
        for (i, url) in urls.into_iter().enumerate() {
            wrk(url, args, 2)?; // warm-up
            let before = pg.checks_seen();
            let server = if i == 0 {
                cpu::Server::Nginx(nginx.child.id())
            } else {
                cpu::Server::Tokio
            };
            let cpu_before = cpu::on_cpu_ns(server)?;
            let started = Instant::now();
            let mut load = wrk(url, args, args.duration)?;
            let seconds = started.elapsed().as_secs_f64();
            let cpu_ns = cpu::on_cpu_ns(server)?.saturating_sub(cpu_before);
            load.cpu_us = cpu_ns as f64 / 1e3 / (load.rps * seconds).max(1.0);
            if i == 2 {
                deep_checks = (pg.checks_seen() - before, seconds);
            }
            if load.rps > best[i].rps {
                best[i] = load;
            }
        }
    }
    let _ = stop.send(true);
    drop(runtime);

    let ttl = vantage_status_endpoint_duration(&args.ttl)?;
    let allowed = (deep_checks.1 / ttl.as_secs_f64()).ceil() as usize + 1;
    let mut out = String::new();
    writeln!(
        out,
        "wrk -t{} -c{} -d{}s, best of {} rounds, {} tokio workers vs 2 nginx workers, {} cores",
        args.threads,
        args.connections,
        args.duration,
        args.rounds,
        args.workers,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(
        out,
        "{:<34} {:>10} {:>10} {:>10} {:>9} {:>11} {:>9}",
        "target", "req/s", "p50", "p99", "vs nginx", "CPU/req", "vs nginx"
    )?;
    let rows = [
        ("nginx fixed 200", best[0]),
        ("vantage /status", best[1]),
        ("vantage /status/deep (cache on)", best[2]),
        ("before: /status via axum routes", best[3]),
    ];
    for (name, load) in rows {
        writeln!(
            out,
            "{:<34} {:>10.0} {:>10} {:>10} {:>8.2}x {:>9.1}us {:>8.2}x{}",
            name,
            load.rps,
            fmt_latency(load.p50),
            fmt_latency(load.p99),
            load.rps / best[0].rps,
            load.cpu_us,
            load.cpu_us / best[0].cpu_us,
            if load.non_2xx > 0 {
                format!("  ({} non-2xx!)", load.non_2xx)
            } else {
                String::new()
            }
        )?;
    }
    writeln!(
        out,
        "/status vs nginx: {:.2}x (goal >= 1.00, p99 no worse than nginx's); before (axum routes): {:.2}x; \
         now vs before: {:.2}x; /status/deep vs /status: {:.2}x (target >= 0.80)",
        best[1].rps / best[0].rps,
        best[3].rps / best[0].rps,
        best[1].rps / best[3].rps,
        best[2].rps / best[1].rps
    )?;
    writeln!(
        out,
        "database checks during the last deep run: {} in {:.1}s with TTL {} (at most {allowed} allowed)",
        deep_checks.0, deep_checks.1, args.ttl
    )?;
    if deep_checks.0 > allowed {
        bail!("{out}the database saw more than one check per TTL");
    }
    Ok(out)
}

fn vantage_status_endpoint_duration(text: &str) -> anyhow::Result<Duration> {
    let c = Config::from_toml(&format!("region = \"x\"\ncache_ttl = \"{text}\""), "--ttl")?;
    Ok(c.cache_ttl.unwrap_or(Duration::from_secs(2)))
}

fn wrk(url: &str, args: &Args, seconds: u64) -> anyhow::Result<Load> {
    let out = Command::new(WRK)
        .args([
            "-t",
            &args.threads.to_string(),
            "-c",
            &args.connections.to_string(),
        ])
        .args(["-d", &format!("{seconds}s"), "--latency", url])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut load = Load::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => load.rps = v.parse()?,
            (Some("50%"), Some(v)) => load.p50 = parse_latency(v)?,
            (Some("99%"), Some(v)) => load.p99 = parse_latency(v)?,
            (Some("Non-2xx"), _) => {
                load.non_2xx = line
                    .rsplit(' ')
                    .next()
                    .unwrap_or("0")
                    .trim()
                    .parse()
                    .unwrap_or(0)
            }
            _ => {}
        }
    }
    if load.rps == 0.0 {
        bail!("no Requests/sec in wrk's output: {text}");
    }
    Ok(load)
}

fn parse_latency(v: &str) -> anyhow::Result<Duration> {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().with_context(|| format!("latency {v:?}"))?;
    let seconds = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => bail!("latency unit in {v:?}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn fmt_latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0}us")
    } else {
        format!("{:.2}ms", us / 1000.0)
    }
}

fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

fn start_nginx(dir: &TempDir, port: u16) -> anyhow::Result<ChildGuard> {
    let conf = dir.join("nginx.conf");
    let d = dir.path().display();
    std::fs::write(
        &conf,
        format!(
            "worker_processes 2;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      default_type application/health+json;\n\
             return 200 '{{\"status\":\"pass\"}}';\n    }}\n  }}\n}}\n"
        ),
    )?;
    let child = Command::new(NGINX)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    let mut guard = ChildGuard::new("nginx", child, "TERM");
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), &mut guard)?;
    Ok(guard)
}

/// A PostgreSQL primary run as nobody, logging every statement.
struct Postgres {
    port: u16,
    log: PathBuf,
    _server: ChildGuard,
}

impl Postgres {
    fn start(dir: &TempDir) -> anyhow::Result<Self> {
        let bin = Path::new(PG_BIN);
        if !bin.join("initdb").is_file() {
            bail!("PostgreSQL not found in {PG_BIN}: {HINT}");
        }
        let data = dir.join("pgdata");
        std::fs::create_dir(&data)?;
        checked(
            Command::new("chown")
                .arg("-R")
                .arg("nobody:nogroup")
                .arg(dir.path()),
        )?;
        checked(as_nobody(&bin.join("initdb")).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-N",
            "--locale=C",
        ]))?;
        let port = free_port()?;
        let log = dir.join("postgres.log");
        let child = as_nobody(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off",
                "-c",
                "log_statement=all",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting postgres")?;
        let mut server = ChildGuard::new("postgres", child, "QUIT");
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), &mut server)?;
        Ok(Postgres {
            port,
            log,
            _server: server,
        })
    }

    /// Writer checks the server has logged so far.
    fn checks_seen(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("statement:") && l.contains("SHOW transaction_read_only"))
            .count()
    }
}

fn as_nobody(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(program);
    c
}

fn checked(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(addr: SocketAddr, child: &mut ChildGuard) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        child.check_running()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{} not listening on {addr} after 30s", child.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory under /tmp that `nobody` can reach, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!("/tmp/vantage-bench-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(TempDir(dir))
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process stopped when dropped: `signal`, then SIGKILL after five seconds.
struct ChildGuard {
    name: &'static str,
    child: Child,
    signal: &'static str,
}

impl ChildGuard {
    fn new(name: &'static str, child: Child, signal: &'static str) -> Self {
        ChildGuard {
            name,
            child,
            signal,
        }
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status})", self.name);
        }
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args([&format!("-{}", self.signal), &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
