//! Headless Chromium (Debian's `chromium`) for the tests that look at a page as a browser does:
//! each run gets a fresh profile in a scratch directory of its own, runs in its own process
//! group, and is killed whole (helpers included) when it overruns, so no browser outlives its
//! test. [`Browser::dump_dom`] returns the DOM after the page's scripts ran for a few seconds
//! of virtual time; [`Browser::screenshot`] writes a PNG.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// One run's deadline: Chromium's start, the page, its exit.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// The browser binary, or a panic with the install hint.
pub fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("chromium not found: install with apt-get install -y chromium (./scripts/test.sh does)")
        })
}

/// Headless Chromium runs under one scratch directory, removed on drop.
pub struct Browser {
    binary: PathBuf,
    scratch: PathBuf,
    runs: AtomicUsize,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        let scratch = crate::dirs::temp_dir("browser").keep();
        Browser {
            binary: chromium(),
            scratch,
            runs: AtomicUsize::new(0),
        }
    }

    /// Loads `url`, lets its scripts run for `virtual_ms` of virtual time, and returns the DOM.
    pub async fn dump_dom(&self, url: &str, virtual_ms: u32) -> Result<String, String> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let out_path = self.scratch.join(format!("dom-{n}.html"));
        self.run(
            n,
            &[
                format!("--virtual-time-budget={virtual_ms}"),
                "--dump-dom".into(),
            ],
            url,
            &out_path,
        )
        .await?;
        Ok(std::fs::read_to_string(&out_path).unwrap_or_default())
    }

    /// Loads `url` in a `width`×`height` window and writes its screenshot to `png`.
    pub async fn screenshot(
        &self,
        url: &str,
        png: &Path,
        width: u32,
        height: u32,
    ) -> Result<(), String> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let log = self.scratch.join(format!("screenshot-{n}.out"));
        self.run(
            n,
            &[
                format!("--window-size={width},{height}"),
                format!("--screenshot={}", png.display()),
                "--hide-scrollbars".into(),
            ],
            url,
            &log,
        )
        .await?;
        match std::fs::metadata(png) {
            Ok(m) if m.len() > 0 => Ok(()),
            _ => Err(format!("no screenshot at {}", png.display())),
        }
    }

    async fn run(&self, n: usize, args: &[String], url: &str, stdout: &Path) -> Result<(), String> {
        let profile = self.scratch.join(format!("profile-{n}"));
        let err_path = self.scratch.join(format!("chromium-{n}.log"));
        let out = std::fs::File::create(stdout).map_err(|e| e.to_string())?;
        let err = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
        let child = {
            use std::os::unix::process::CommandExt as _;
            Command::new(&self.binary)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-quic",
                    "--disable-dev-shm-usage",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .args(args)
                .arg(url)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", self.binary.display()))?
        };
        let result = finish(child, Instant::now() + RUN_TIMEOUT).await;
        let _ = std::fs::remove_dir_all(&profile);
        result.map_err(|e| {
            let log = std::fs::read_to_string(&err_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{e}; stderr tail:\n{}", tail.join("\n"))
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A browser helper that has just exited may still be flushing into its profile.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.scratch).is_ok() || !self.scratch.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The members of process group `pgid` still alive (not zombies), from /proc.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp ...; comm may contain spaces, so split after ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
            pgrp == Some(pgid) && state != Some("Z")
        })
        .collect()
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Ends a Chromium started in its own process group: on a timeout the whole group is killed
/// while the leader is still unreaped (so the group id cannot have been reused); after a
/// normal exit, helpers left behind get a moment to go and are then killed.
async fn finish(mut child: Child, deadline: Instant) -> Result<(), String> {
    let pgid = child.id();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let until = Instant::now() + Duration::from_secs(3);
                while !group_members(pgid).is_empty() {
                    if Instant::now() >= until {
                        kill_group(pgid);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("chromium exited with {status}"))
                };
            }
            Ok(None) if Instant::now() >= deadline => {
                kill_group(pgid);
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "chromium still running after {RUN_TIMEOUT:?}: killed"
                ));
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => {
                kill_group(pgid);
                let _ = child.wait();
                return Err(format!("waiting for chromium: {e}"));
            }
        }
    }
}
