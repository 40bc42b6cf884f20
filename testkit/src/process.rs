//! Child processes for tests: the guard that stops a server when the test ends (even when it
//! panics), the readiness wait that notices a server dying early, set-up commands checked for
//! success, tools located with an install hint when missing, and helpers to run a server as
//! `nobody` (PostgreSQL refuses root).

use crate::error::{io, KitError, Result};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// What to install when a tool is missing: `./scripts/test.sh` installs every one of them.
pub const INSTALL_HINT: &str = "run ./scripts/test.sh, or: apt-get install -y postgresql \
     mariadb-server prometheus nginx-light chromium bind9 bind9-dnsutils && python3 -m venv .venv \
     && .venv/bin/pip install 'moto[server]==5.*' 'hdrhistogram==0.10.*'";

/// `path` if it is an installed file; otherwise the error names `what` and how to install it.
pub fn require(path: &Path, what: &str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path.to_owned())
    } else {
        Err(KitError::ToolMissing {
            what: what.to_owned(),
            path: path.to_owned(),
            hint: INSTALL_HINT,
        })
    }
}

/// A free loopback port: bind port 0, note it, release it. Servers that then fail to bind
/// (another test took the port in between) are retried on another by their starters.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("binding 127.0.0.1:0"))?;
    Ok(listener
        .local_addr()
        .map_err(io("reading the bound port"))?
        .port())
}

/// Runs a set-up command to completion; its stdout when it succeeded, else both outputs.
pub fn run_checked(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(io(format!("running {what}")))?;
    if !out.status.success() {
        return Err(KitError::CommandFailed {
            what: what.to_owned(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `program` run as `nobody:nogroup` with no supplementary groups.
pub fn as_nobody(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(program);
    c
}

/// Hands `path` (recursively) to `nobody:nogroup`.
pub fn chown_nobody(path: &Path) -> Result<()> {
    run_checked(
        Command::new("chown")
            .arg("-R")
            .arg("nobody:nogroup")
            .arg(path),
        "chown",
    )?;
    Ok(())
}

/// Sends a signal by name (std only knows SIGKILL).
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A child process stopped when dropped: `signal` first, SIGKILL after five seconds.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    signal: &'static str,
}

impl ChildGuard {
    /// Guards `child`; `signal` (e.g. `"TERM"`, `"QUIT"`) is what stops it.
    pub fn new(name: &str, child: Child, signal: &'static str) -> Self {
        ChildGuard {
            name: name.to_owned(),
            child: Some(child),
            signal,
        }
    }

    /// Spawns `cmd` (stdin closed) and guards it.
    pub fn spawn(name: &str, cmd: &mut Command, signal: &'static str) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .map_err(io(format!("starting {name}")))?;
        Ok(Self::new(name, child, signal))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, 0 once stopped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// An error if the process has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = &mut self.child {
            let exited = child
                .try_wait()
                .map_err(io(format!("waiting for {}", self.name)))?;
            if let Some(status) = exited {
                return Err(KitError::ExitedEarly {
                    what: self.name.clone(),
                    status: status.to_string(),
                    log: String::new(),
                });
            }
        }
        Ok(())
    }

    /// Sends a signal by name to the running process.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            send_signal(child.id(), signal);
        }
    }

    /// Polls `ready` every 50 ms until it returns true, the process dies, or `limit` passes.
    pub fn wait_until(&mut self, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_running()?;
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(KitError::NotReady {
                    what: self.name.clone(),
                    limit,
                    log: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process (its signal, then SIGKILL after five seconds) and reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        send_signal(child.id(), self.signal);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Appends the end of a server's log to a start-up error, so the failure says why.
pub(crate) fn with_log(error: KitError, log: &Path) -> KitError {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: String = {
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        lines[from..].join("\n")
    };
    let log = if tail.is_empty() {
        String::new()
    } else {
        format!("; {}:\n{tail}", log.display())
    };
    match error {
        KitError::NotReady { what, limit, .. } => KitError::NotReady { what, limit, log },
        KitError::ExitedEarly { what, status, .. } => KitError::ExitedEarly { what, status, log },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_itself_and_the_install_hint() {
        let e = require(Path::new("/nonexistent/tool"), "the tool").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("the tool not found at /nonexistent/tool"),
            "{text}"
        );
        assert!(text.contains("./scripts/test.sh"), "{text}");
    }

    #[test]
    fn a_guarded_child_is_stopped_on_drop() {
        let mut guard =
            ChildGuard::spawn("sleep", Command::new("sleep").arg("30"), "TERM").unwrap();
        let pid = guard.pid();
        guard.check_running().unwrap();
        drop(guard);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still there"
        );
    }

    #[test]
    fn a_child_that_dies_fails_the_wait_at_once() {
        let mut guard = ChildGuard::spawn("false", &mut Command::new("false"), "TERM").unwrap();
        let e = guard
            .wait_until(Duration::from_secs(10), || false)
            .unwrap_err();
        assert!(e.to_string().starts_with("false exited early"), "{e}");
    }

    #[test]
    fn a_failed_command_carries_its_output() {
        let e = run_checked(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            "sh",
        )
        .unwrap_err();
        assert!(e.to_string().contains("oops"), "{e}");
    }
}
