//! `vantage demo`: the whole fleet on one machine, with no cloud account. One real status
//! endpoint per simulated Region, one real agent per vantage Region, the aggregator with the
//! dry-run backend, a simulated network between them carrying realistic round-trip times
//! ([`rtt`]) and the faults of a [`scenario`], and a global endpoint per vantage that follows
//! the aggregator's weights, so a failover can be watched from detection to traffic moving.
//!
//! - [`scenario`]: Regions, vantages, services, replicas, duration and the fault timeline
//!   (`--fail`, `--recover`, `--slow`, `--flaky`, each for one service or all;
//!   `--kill-aggregator`, `--revive-aggregator`), with the embedded default.
//! - [`layout`]: `--services`: each service in each Region a unit with its own endpoints, unit
//!   keys, which units a fault reaches, and the fleet file (`[[services]]` or single-API).
//! - [`rtt`]: approximate round-trip times between AWS Regions.
//! - [`net`]: the links (latency and faults in user space) and the weighted global endpoint.
//! - [`run`]: the run as a short sequence: start, apply faults, evaluate, show, stop, summarise.
//! - `start`: the work directory and keys, status endpoints, links, the replicas' fleet file
//!   and agents.
//! - `replicas`: the aggregator replicas (`--aggregators N`): start, kill, revive, their
//!   latest decisions and votes, the shared demo lease.
//! - [`combine`]: the simulated Route 53 over the replicas (majority of votes, last known
//!   status for a silent one, weights from the lease holder); pure.
//! - `schedule`: the fault timeline, applied to the network as each fault comes due.
//! - `decisions`: when to evaluate, and each evaluation turned into routing and events.
//! - `events`: the event stream (JSON lines, printed lines, kept for page and summary).
//! - `view`: the state for the status page and the live terminal table.
//! - `summary`: detection, traffic-moved and recovery times, false transitions, flaps.
//! - [`page`]: the status page (HTML, no build step) and every component's `/metrics`.

pub mod combine;
mod decisions;
mod events;
pub mod layout;
pub mod net;
pub mod page;
mod replicas;
pub mod rtt;
pub mod run;
pub mod scenario;
mod schedule;
mod start;
mod summary;
mod view;

pub use run::{run, DemoError, DemoSummary, Event, Outputs};
pub use scenario::{DemoOptions, Fault, Scheduled};
