//! Reload requests, one way for every long-running command: SIGHUP is observed here, once per
//! process ([`hangup_count`]), and everything that reloads subscribes to that count through a
//! [`ReloadTrigger`]: the server's TLS pair ([`crate::tls_server::ServerTls::watch`]) and the
//! fleet file of the agent and the aggregator. A trigger may also watch files' modification
//! times (polled, bounded by the period) for deployments that replace a file without signalling.
//!
//! Installing the handler also keeps SIGHUP from killing the process, which is its default
//! action: a `kill -HUP` sent to reload must never stop an agent that has nothing to reload.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Counts SIGHUP from now on: the receiver sees 1 after the first, 2 after the second, and so
/// on. Call it once per process (inside a Tokio runtime) and clone the receiver for every
/// subscriber. The handler is installed before this returns, so a SIGHUP sent as soon as a
/// command says it is ready is never missed.
pub fn hangup_count() -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        if tx.is_closed() {
                            return;
                        }
                        tx.send_modify(|n| *n += 1);
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: reload on a file change only")
            }
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    Hangup,
    FilesChanged,
}

impl ReloadCause {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadCause::Hangup => "SIGHUP",
            ReloadCause::FilesChanged => "the file changed",
        }
    }
}

impl std::fmt::Display for ReloadCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One subscriber's reload requests: each SIGHUP counted after it was made, and (with
/// [`ReloadTrigger::watching`]) each change of a watched file's modification time.
pub struct ReloadTrigger {
    hangups: watch::Receiver<u64>,
    hangups_open: bool,
    files: Vec<PathBuf>,
    seen: Vec<Option<SystemTime>>,
    tick: Option<tokio::time::Interval>,
}

impl ReloadTrigger {
    /// Reloads on every SIGHUP counted by `hangups` from now on (or every value a test sends).
    pub fn new(mut hangups: watch::Receiver<u64>) -> Self {
        hangups.mark_unchanged();
        ReloadTrigger {
            hangups,
            hangups_open: true,
            files: Vec::new(),
            seen: Vec::new(),
            tick: None,
        }
    }

    /// A trigger that never fires (no SIGHUP source, no files).
    pub fn never() -> Self {
        let (_, rx) = watch::channel(0);
        let mut t = Self::new(rx);
        t.hangups_open = false;
        t
    }

    /// Also reloads when any of `files` changes its modification time, looked at every `poll`.
    /// A file that disappears counts as a change (so does its return).
    pub fn watching(mut self, files: Vec<PathBuf>, poll: Duration) -> Self {
        self.seen = mtimes(&files);
        self.files = files;
        let mut tick = tokio::time::interval(poll.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.tick = Some(tick);
        self
    }

    /// The next reload request. Never resolves when nothing can ask for one.
    pub async fn next(&mut self) -> ReloadCause {
        let ReloadTrigger {
            hangups,
            hangups_open,
            files,
            seen,
            tick,
        } = self;
        loop {
            let polled = async {
                match tick.as_mut() {
                    Some(t) => drop(t.tick().await),
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                changed = hangups.changed(), if *hangups_open => match changed {
                    Ok(()) => return ReloadCause::Hangup,
                    // Nobody counts SIGHUP any more: only the files can ask now.
                    Err(_) => *hangups_open = false,
                },
                () = polled => {
                    let now = mtimes(files);
                    if now != *seen {
                        // Remembered even if the reload fails: a half-written file is retried
                        // when it changes again, not every poll.
                        *seen = now;
                        return ReloadCause::FilesChanged;
                    }
                }
            }
        }
    }
}

fn mtimes(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_counted_hangup_and_a_changed_file_each_ask_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fleet.toml");
        std::fs::write(&file, "a").unwrap();
        let (tx, rx) = watch::channel(0u64);
        let mut trigger =
            ReloadTrigger::new(rx).watching(vec![file.clone()], Duration::from_millis(20));
        tx.send_modify(|n| *n += 1);
        let cause = tokio::time::timeout(Duration::from_secs(5), trigger.next()).await;
        assert_eq!(cause.unwrap(), ReloadCause::Hangup);
        // Nothing changed: no request within a few polls.
        let quiet = tokio::time::timeout(Duration::from_millis(100), trigger.next()).await;
        assert!(quiet.is_err(), "no request without a change");
        // mtimes have at least 10 ms resolution on the filesystems the tests run on.
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::fs::write(&file, "b").unwrap();
        let cause = tokio::time::timeout(Duration::from_secs(5), trigger.next()).await;
        assert_eq!(cause.unwrap(), ReloadCause::FilesChanged);
    }

    #[tokio::test(start_paused = true)]
    async fn never_fires_without_a_source() {
        let mut trigger = ReloadTrigger::never();
        let r = tokio::time::timeout(Duration::from_secs(3600), trigger.next()).await;
        assert!(r.is_err());
    }
}
