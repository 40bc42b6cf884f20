//! The event stream of a run: every `start`, `fault`, `region_out`, `region_in`,
//! `region_wide`, `weights`, `plan_applied`, `alert`, `traffic_moved` and `summary`, stamped
//! with seconds since the start, written as one JSON line to `--events FILE`, printed as a line
//! when the live view is off, and kept for the status page and the summary. With `--services`,
//! an event about one service in one Region names the service in `service` beside `region`.

use serde::Serialize;
use std::io::Write as _;
use tokio::time::Instant;

/// One line of the event stream.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the start of the run.
    pub t: f64,
    pub event: String,
    /// The service the event is about (`--services` only; absent: the single API, or every
    /// service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vantage: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

impl Event {
    /// What the event is about, for a printed line: `payments/eu-west-1`, a Region or a
    /// vantage.
    pub fn subject(&self) -> String {
        let place = self.region.as_deref().or(self.vantage.as_deref());
        match (&self.service, place) {
            (Some(s), Some(p)) => format!("{s}/{p}"),
            (Some(s), None) => s.clone(),
            (None, p) => p.unwrap_or("").to_owned(),
        }
    }
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
        self.emit_for(event, None, region, vantage, reason, detail);
    }

    /// An event about one service (`service`) in a Region, or about no service in particular.
    pub(crate) fn emit_for(
        &mut self,
        event: &str,
        service: Option<&str>,
        region: Option<&str>,
        vantage: Option<&str>,
        reason: String,
        detail: serde_json::Value,
    ) {
        let e = Event {
            t: self.start.elapsed().as_secs_f64(),
            event: event.to_owned(),
            service: service.map(str::to_owned),
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
                e.subject(),
                e.reason
            );
        }
        self.all.push(e);
    }
}
