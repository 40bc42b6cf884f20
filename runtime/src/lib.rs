//! What every long-running vantage process shares, so each thing is done one way:
//!
//! - [`shutdown`]: SIGTERM and Ctrl-C, counted, for every long-running command.
//! - [`backoff`]: the one jittered, exponential, bounded retry delay.
//! - [`errors`]: an error and its sources as one line of text.
//! - [`sync`]: a mutex lock that survives a panicked holder.
//! - [`metrics_http`]: the `/metrics` listener the agent and the aggregator both serve.

pub mod backoff;
pub mod errors;
pub mod metrics_http;
pub mod shutdown;
pub mod sync;

pub use backoff::Backoff;
