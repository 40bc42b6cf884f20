//! The vocabulary every vantage component shares, with no I/O: the fixed set of probe
//! [`Outcome`] codes, the timed [`Phase`]s of a probe, and the [`histogram`] codec that carries
//! HDR latency histograms between agents and the aggregator in the standard V2-deflate format.
//!
//! Agents, the aggregator and the status endpoint depend on this crate so that a code or a
//! phase name means the same thing in metrics, reports and decisions.

pub mod duration;
pub mod histogram;
mod outcome;
mod phase;

pub use outcome::Outcome;
pub use phase::Phase;
