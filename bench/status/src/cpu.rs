//! CPU time of each server while wrk loads it, from the scheduler's own accounting
//! (`/proc/<pid>/task/<tid>/schedstat`, nanoseconds on CPU): nginx's master and workers, and
//! this process's tokio workers (which serve both vantage paths). Divided by the requests wrk
//! completed, it gives CPU per request, a figure that holds up on a shared, loaded machine
//! where requests/s mostly says how much of the cores wrk and the server were given.

use anyhow::Context as _;
use std::path::Path;

/// Which threads to count.
#[derive(Debug, Clone, Copy)]
pub enum Server {
    /// nginx's master (this pid) and its worker processes (children of it).
    Nginx(u32),
    /// This process's tokio worker threads.
    Tokio,
}

/// Nanoseconds on CPU so far of `server`'s threads.
pub fn on_cpu_ns(server: Server) -> anyhow::Result<u64> {
    match server {
        Server::Tokio => threads_ns(Path::new("/proc/self"), |comm| {
            comm.starts_with("tokio-rt-worker")
        }),
        Server::Nginx(master) => {
            let mut total = threads_ns(&Path::new("/proc").join(master.to_string()), |_| true)?;
            for entry in std::fs::read_dir("/proc")?.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if parent_of(pid) == Some(master) {
                    // A worker that exited meanwhile is simply not counted.
                    total += threads_ns(&entry.path(), |_| true).unwrap_or(0);
                }
            }
            Ok(total)
        }
    }
}

fn threads_ns(process: &Path, wanted: impl Fn(&str) -> bool) -> anyhow::Result<u64> {
    let tasks = process.join("task");
    let mut total = 0;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {}", tasks.display()))? {
        let task = task?.path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !wanted(comm.trim_end()) {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// The parent pid from `/proc/<pid>/stat` (the field after the parenthesised name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}
