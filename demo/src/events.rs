//! The event stream of a run: every `start`, `fault`, `region_out`, `region_in`, `weights`,
//! `plan_applied`, `alert`, `traffic_moved` and `summary`, stamped with seconds since the
//! start, written as one JSON line to `--events FILE`, printed as a line when the live view is
//! off, and kept for the status page and the summary.

use serde::Serialize;
use std::io::Write as _;
use tokio::time::Instant;

/// One line of the event stream.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the start of the run.
    pub t: f64,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vantage: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// Where a run's events go.
pub(crate) struct Events {
    pub(crate) start: Instant,
    pub(crate) file: Option<std::fs::File>,
    /// Every event so far, oldest first.
    pub(crate) all: Vec<Event>,
    /// Print each event as a line on stdout.
    pub(crate) print: bool,
}

impl Events {
    pub(crate) fn emit(
        &mut self,
        event: &str,
        region: Option<&str>,
        vantage: Option<&str>,
        reason: String,
        detail: serde_json::Value,
    ) {
        let e = Event {
            t: self.start.elapsed().as_secs_f64(),
            event: event.to_owned(),
            region: region.map(str::to_owned),
            vantage: vantage.map(str::to_owned),
            reason,
            detail,
        };
        let line = serde_json::to_string(&e).unwrap_or_default();
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{line}");
        }
        if self.print {
            println!(
                "{:>6.1}s  {:<13} {:<16} {}",
                e.t,
                e.event,
                e.region.as_deref().or(e.vantage.as_deref()).unwrap_or(""),
                e.reason
            );
        }
        self.all.push(e);
    }
}
