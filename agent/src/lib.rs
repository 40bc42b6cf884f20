//! The vantage agent: probes every target of the fleet from one vantage Region on a drift-free
//! schedule, records HDR histograms per interval, and delivers one report per interval to the
//! aggregator without losing any. The probe engine itself is `vantage-probe`.
//!
//! - [`fleet`]: from the fleet file to probe specs, every service's targets.
//! - [`plan`]: the probe plan `vantage check-config` prints, per service.
//! - [`identity`]: the agent id, checked to be a plain file-name component.
//! - [`scheduler`]: runs every target on its own drift-free slot grid, spread across the
//!   interval, and accounts late starts and missed slots (coordinated omission).
//! - [`recorder`]: per-target interval statistics and HDR histograms whose memory follows the
//!   samples actually recorded, rotated by interval without losing or double-counting a sample.
//! - [`reload`]: the running targets, and a reloaded fleet file applied to them by target id.
//! - [`report`]: builds the `IntervalReport` from recorded intervals (pure).
//! - [`encoder`]: builds and serialises each interval's report on the blocking pool, so no
//!   probe and no drain of the recorders waits for it.
//! - [`spool`]: the bounded on-disk spool of undelivered reports, crash-safe, resumed on restart,
//!   in a directory that must be the agent's alone.
//! - [`push`]: [`push::run_pusher`] delivers reports at least once, oldest first, with backoff;
//!   [`push::Deliveries`] runs one such queue per aggregator replica.
//! - [`metrics`]: the agent's Prometheus metric names, labels, buckets and recorder.
//! - [`export`]: optional CloudWatch export (distributions via the API, or EMF in Lambda).
//! - [`daemon`]: `vantage agent` (long-running or one Lambda invocation) built from the above.
//! - [`oneshot`]: `vantage probe`, the command-line prober.

pub mod daemon;
pub mod encoder;
pub mod export;
pub mod fleet;
pub mod identity;
pub mod metrics;
pub mod oneshot;
pub mod plan;
pub mod push;
pub mod recorder;
pub mod reload;
pub mod report;
pub mod scheduler;
pub mod spool;
