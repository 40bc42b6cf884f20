//! Clocks and memory: CPU time of this thread and of the process (`clock_gettime`, nanoseconds)
//! and peak RSS (`/proc/self/status`). CPU time, not wall time, is what the per-core figures
//! divide by: other builds share this machine's cores. (`/proc/thread-self/schedstat` and
//! `/proc/self/stat` only advance on scheduler ticks: too coarse for millisecond stretches.)

use rustix::time::{clock_gettime, ClockId};
use std::time::{Duration, Instant};

fn cpu(id: ClockId) -> Duration {
    let t = clock_gettime(id);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    cpu(ClockId::ThreadCPUTime)
}

/// User + system CPU time of the whole process, every thread included.
pub fn process_cpu() -> Duration {
    cpu(ClockId::ProcessCPUTime)
}

/// A `/proc/self/status` field in bytes (`VmHWM`, `VmRSS`).
pub fn status_bytes(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Wall and CPU time of one measured stretch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    pub wall: Duration,
    /// This thread's CPU time.
    pub cpu: Duration,
    /// The process's CPU time.
    pub process_cpu: Duration,
}

/// Runs `f` and measures it.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Span) {
    let (c0, p0) = (thread_cpu(), process_cpu());
    let start = Instant::now();
    let out = f();
    let wall = start.elapsed();
    let (c1, p1) = (thread_cpu(), process_cpu());
    (
        out,
        Span {
            wall,
            cpu: c1.saturating_sub(c0),
            process_cpu: p1.saturating_sub(p0),
        },
    )
}

/// Busy CPU time of the whole machine so far, every core (`/proc/stat`: all but idle and
/// iowait, in USER_HZ ticks, which Linux fixes at 100 per second for this file).
pub fn machine_busy() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some(Duration::from_millis(
        (ticks.iter().sum::<u64>() - idle) * 10,
    ))
}
