//! The vocabulary every vantage component shares, with no I/O:
//!
//! - `outcome`: the [`Outcome`] codes, a fixed set, so metrics and reports stay bounded.
//! - `phase`: the probe [`Phase`]s (dns, connect, tls, ttfb, transfer, total), a fixed set.
//! - [`histogram`]: HDR latency histograms in the standard V2-deflate encoding, base64.
//! - [`sparse`]: decodes those histograms straight to `(value, count)` pairs, no dense array.
//! - [`config`]: the fleet file, strictly parsed and validated, and the one config-error style.
//! - [`report`]: the agent → aggregator `IntervalReport` wire format.
//! - [`auth`]: HMAC-SHA256 request signing and verification, one implementation for both ends.
//! - [`duration`]: durations as people write them (`250ms`, `10s`).

pub mod auth;
pub mod config;
pub mod duration;
pub mod histogram;
mod outcome;
mod phase;
pub mod report;
pub mod sparse;

pub use outcome::Outcome;
pub use phase::Phase;
