//! `vantage demo`: the whole fleet on one machine, with no cloud account. One real status
//! endpoint per simulated Region, one real agent per vantage Region, the aggregator with the
//! dry-run backend, a simulated network between them carrying realistic round-trip times
//! ([`rtt`]) and the faults of a [`scenario`], and a global endpoint per vantage that follows
//! the aggregator's weights, so a failover can be watched from detection to traffic moving.
//!
//! - [`scenario`]: Regions, vantages, duration and the fault timeline (`--fail`, `--recover`,
//!   `--slow`, `--flaky`), with the embedded default.
//! - [`rtt`]: approximate round-trip times between AWS Regions.
//! - [`net`]: the links (latency and faults in user space) and the weighted global endpoint.
//! - [`run`]: the run as a short sequence: start, apply faults, evaluate, show, stop, summarise.
//! - `start`: the work directory and key, status endpoints, links, aggregator and agents.
//! - `schedule`: the fault timeline, applied to the network as each fault comes due.
//! - `decisions`: when to evaluate, and each evaluation turned into routing and events.
//! - `events`: the event stream (JSON lines, printed lines, kept for page and summary).
//! - `view`: the state for the status page and the live terminal table.
//! - `summary`: detection, traffic-moved and recovery times, false transitions, flaps.
//! - [`page`]: the status page (HTML, no build step) and every component's `/metrics`.

mod decisions;
mod events;
pub mod net;
pub mod page;
pub mod rtt;
pub mod run;
pub mod scenario;
mod schedule;
mod start;
mod summary;
mod view;

pub use run::{run, DemoError, DemoSummary, Event, Outputs};
pub use scenario::{DemoOptions, Fault, Scheduled};
