//! `vantage demo`: the whole fleet on one machine, with no cloud account. One real status
//! endpoint per simulated Region, one real agent per vantage Region, the aggregator with the
//! dry-run backend, a simulated network between them carrying realistic round-trip times
//! ([`rtt`]) and the faults of a [`scenario`], and a global endpoint per vantage that follows
//! the aggregator's weights, so a failover can be watched from detection to traffic moving.
//!
//! - [`scenario`]: Regions, vantages, duration and the fault timeline (`--fail`, `--recover`,
//!   `--slow`, `--flaky`), with the embedded default.
//! - [`net`]: the links (latency and faults in user space) and the weighted global endpoint.
//! - [`run`]: starts everything, evaluates, emits events, draws the live view, summarises.
//! - [`page`]: the status page (HTML, no build step) and every component's `/metrics`.

pub mod net;
pub mod page;
pub mod rtt;
pub mod run;
pub mod scenario;

pub use run::{run, DemoError, DemoSummary, Event, Outputs};
pub use scenario::{DemoOptions, Fault, Scheduled};
