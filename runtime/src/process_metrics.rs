//! The standard Prometheus `process_*` metrics (CPU seconds, resident and virtual memory, open
//! file descriptors, start time) for the process serving `/metrics`, read from `/proc/self` at
//! each scrape and appended to the exporter's text by [`crate::metrics_http`].
//!
//! The `metrics` facade cannot carry them: its counters are integers and CPU time is not, and
//! these are read when scraped rather than recorded as they change. Names, types and help text
//! are those of Prometheus' own client libraries, so dashboards written for any exporter work.
//! On a system without `/proc` (not Linux) nothing is appended. CPU ticks are converted with
//! Linux's USER_HZ, which the kernel fixes at 100 for `/proc` on every architecture vantage
//! runs on.

use std::fmt::Write as _;

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ).
const USER_HZ: f64 = 100.0;

/// What `/proc` says about this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub start_time_seconds: f64,
}

/// Reads this process' figures; `None` where `/proc` is missing or unreadable.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    parse(&stat, &boot, open_fds)
}

/// Parses `/proc/self/stat` and the `btime` line of `/proc/stat`.
fn parse(stat: &str, proc_stat: &str, open_fds: u64) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces: fields count from the
    // last ')'. After it, field 3 (state) is index 0.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = field(14)? + field(15)?;
    let start_ticks = field(22)?;
    let virtual_bytes = field(23)?;
    let resident_pages = field(24)?;
    let btime: u64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(ProcessStats {
        cpu_seconds: ticks as f64 / USER_HZ,
        // /proc reports RSS in pages; every Linux vantage targets (x86_64, aarch64 as built for
        // Lambda and ECS) uses 4 KiB pages.
        resident_bytes: resident_pages * 4096,
        virtual_bytes,
        open_fds,
        start_time_seconds: btime as f64 + start_ticks as f64 / USER_HZ,
    })
}

/// The text exposition of `stats`.
pub fn render(stats: &ProcessStats) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        stats.cpu_seconds.to_string(),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        stats.resident_bytes.to_string(),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stats.virtual_bytes.to_string(),
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        stats.open_fds.to_string(),
    );
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        stats.start_time_seconds.to_string(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (vantage (x) y) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
        150 25 0 0 20 0 9 0 123400 987654321 3000 18446744073709551615";
    const PROC_STAT: &str = "cpu  1 2 3\nbtime 1700000000\nprocesses 99\n";

    #[test]
    fn fields_count_from_the_last_parenthesis() {
        let s = parse(STAT, PROC_STAT, 12).unwrap();
        assert_eq!(s.cpu_seconds, 1.75);
        assert_eq!(s.virtual_bytes, 987_654_321);
        assert_eq!(s.resident_bytes, 3000 * 4096);
        assert_eq!(s.open_fds, 12);
        assert_eq!(s.start_time_seconds, 1_700_000_000.0 + 1234.0);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(parse("4242 (x) S 1 2", PROC_STAT, 1), None);
        assert_eq!(parse(STAT, "cpu 1 2 3\n", 1), None);
    }

    #[test]
    fn this_process_reads_and_renders() {
        let s = read().expect("/proc/self on Linux");
        assert!(s.resident_bytes > 0 && s.open_fds > 0 && s.start_time_seconds > 1.6e9);
        let text = render(&s);
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(text
            .lines()
            .any(|l| l.starts_with("process_resident_memory_bytes ")));
    }
}
