//! Child processes (nginx, blackbox_exporter, vantage), temporary directories and CPU
//! accounting from /proc.

use anyhow::{bail, Context as _};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const INSTALL_HINT: &str =
    "install with: apt-get install -y nginx-light prometheus-blackbox-exporter";

/// A directory removed (with everything in it) when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "vantage-bench-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        lock(&CLEANUP).1.push(dir.clone());
        Ok(TempDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        lock(&CLEANUP).1.retain(|d| d != &self.0);
    }
}

/// Children and directories to clean up if the bench is interrupted (Drop does not run when a
/// signal ends the process).
static CLEANUP: Mutex<(Vec<u32>, Vec<PathBuf>)> = Mutex::new((Vec::new(), Vec::new()));

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn send_term(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// On SIGINT or SIGTERM: stop the registered children, remove the temporary directories and
/// exit with status 130.
pub fn cleanup_on_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
            eprintln!("bench-probe: interrupted, stopping nginx and blackbox_exporter");
            let (pids, dirs) = std::mem::take(&mut *lock(&CLEANUP));
            for pid in pids {
                send_term(pid);
            }
            // nginx removes its pid file on exit; give it a moment before removing its directory.
            std::thread::sleep(Duration::from_millis(300));
            for dir in dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
            std::process::exit(130);
        })?;
    Ok(())
}

/// A child process that is stopped when dropped: SIGTERM (so nginx's master takes its workers
/// down with it), then SIGKILL if it has not exited within two seconds.
pub struct ChildGuard {
    name: &'static str,
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(name: &'static str, child: Child) -> Self {
        lock(&CLEANUP).0.push(child.id());
        ChildGuard {
            name,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails if the process has already exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                bail!("{} exited early ({status})", self.name);
            }
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        lock(&CLEANUP).0.retain(|p| *p != child.id());
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // std only sends SIGKILL; a killed nginx master would orphan its workers.
        send_term(child.id());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("bench-probe: {} ignored SIGTERM, killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port: bind port 0, note the port, release it.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Waits (at most `limit`) until `addr` accepts TCP connections.
pub fn wait_for_port(
    addr: SocketAddr,
    limit: Duration,
    child: &mut ChildGuard,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        child.check_running()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listening on {addr} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Finds a required executable, or explains how to install it.
pub fn require_binary(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_owned());
    }
    bail!("{what} not found at {} — {INSTALL_HINT}", path.display())
}

/// Clock ticks per second for /proc/*/stat (sysconf(_SC_CLK_TCK)); 100 on every Linux we know.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// CPU times of a process from /proc/<pid>/stat, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTicks {
    /// utime + stime of the process (all its threads).
    pub own: u64,
    /// cutime + cstime: children that have exited and been waited for.
    pub children: u64,
}

pub fn cpu_ticks(pid: &str) -> anyhow::Result<CpuTicks> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/pid/stat")?;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(1) // state
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the state: ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    // utime(10) stime(11) cutime(12) cstime(13).
    if f.len() < 14 {
        bail!("short /proc/{pid}/stat");
    }
    Ok(CpuTicks {
        own: f[10] + f[11],
        children: f[12] + f[13],
    })
}

/// Direct children of a process (needs CONFIG_PROC_CHILDREN; empty otherwise).
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU ticks of a process and its live children (nginx master plus workers).
pub fn tree_ticks(pid: u32) -> u64 {
    std::iter::once(pid)
        .chain(children_of(pid))
        .filter_map(|p| cpu_ticks(&p.to_string()).ok())
        .map(|t| t.own)
        .sum()
}

/// A line of /proc/self/status, in kB (VmHWM, VmRSS).
pub fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0); false if the kernel refused.
pub fn reset_peak_rss() -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/clear_refs")
        .and_then(|mut f| f.write_all(b"5"))
        .is_ok()
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Version line of an executable (`nginx -v` writes to stderr, blackbox to stdout or stderr).
pub fn version_of(exe: &Path, arg: &str, marker: &str) -> Option<String> {
    let out = Command::new(exe).arg(arg).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text.lines().find(|l| l.contains(marker))?;
    Some(line.trim().to_owned())
}

pub fn read_file_lossy(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        s = String::from_utf8_lossy(&bytes).into_owned();
    }
    s
}

/// Clock ticks the whole machine (every CPU) spent running tasks: user + nice + system from
/// /proc/stat. Interrupt and softirq time is left out because it is not charged to any task's
/// utime/stime either (loopback TCP does much of its work in softirq), and steal is the
/// hypervisor's.
pub fn system_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    v.iter().take(3).sum()
}

/// Watches how much CPU the machine spent on processes other than this bench and its
/// children (nginx, blackbox_exporter, vantage) during a section: unrelated load (a build
/// running alongside) disturbs latency and CPU figures.
pub struct Background {
    pids: Vec<u32>,
    start: Instant,
    busy: u64,
    ours: u64,
}

impl Background {
    /// `pids`: live children to count as ours (their children too).
    pub fn start(pids: &[u32]) -> Self {
        let pids = pids.to_vec();
        let ours = Self::ours(&pids);
        Background {
            start: Instant::now(),
            busy: system_busy_ticks(),
            ours,
            pids,
        }
    }

    fn ours(pids: &[u32]) -> u64 {
        let me = cpu_ticks("self").unwrap_or_default();
        me.own + me.children + pids.iter().map(|p| tree_ticks(*p)).sum::<u64>()
    }

    /// Other processes' CPU since `start`, in % of one core.
    pub fn percent(&self, clk_tck: f64) -> f64 {
        let wall = self.start.elapsed().as_secs_f64().max(1e-3);
        let busy = system_busy_ticks().saturating_sub(self.busy);
        let ours = Self::ours(&self.pids).saturating_sub(self.ours);
        100.0 * busy.saturating_sub(ours) as f64 / clk_tck / wall
    }
}

/// Waits (at most `limit`) for a second in which the whole machine used under 10% of one core,
/// so a test does not start in the middle of someone else's build. Returns the last second's
/// load in % of one core.
pub fn wait_for_quiet(limit: Duration, clk_tck: f64) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let before = system_busy_ticks();
        std::thread::sleep(Duration::from_secs(1));
        let pct = 100.0 * system_busy_ticks().saturating_sub(before) as f64 / clk_tck;
        if pct < 10.0 || Instant::now() >= deadline {
            return pct;
        }
    }
}

/// Context switches (voluntary + involuntary) of every live thread of this process.
pub fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}
