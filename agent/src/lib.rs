//! The vantage agent library.
//!
//! - [`probe`]: the probe engine. One [`probe::Prober`] per target measures a single HTTP(S)
//!   exchange phase by phase (DNS, TCP connect, TLS, first byte, transfer) over its own
//!   hyper + tokio-rustls connector, checks the assertions and returns a [`probe::ProbeResult`]
//!   whose failure is one fixed [`vantage_protocol::Outcome`] code.
//! - [`scheduler`]: runs every target on its own drift-free slot grid, spread across the
//!   interval, and accounts late starts and missed slots (coordinated omission).
//! - [`recorder`]: per-target interval statistics and HDR histograms whose memory follows the
//!   samples actually recorded, rotated by interval without losing or double-counting a sample.
//! - [`oneshot`]: `vantage probe`, the command-line prober built from the three above.
//! - [`spool`]: the bounded on-disk spool of undelivered reports, crash-safe, resumed on restart.
//! - [`push`]: [`push::run_pusher`] delivers reports at least once, oldest first, with backoff.

pub mod daemon;
pub mod fleet;
pub mod metrics;
pub mod oneshot;
pub mod push;
pub mod recorder;
pub mod report;
pub mod scheduler;
pub mod spool;
