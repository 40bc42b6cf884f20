//! What every long-running vantage process shares, so each thing is done one way:
//!
//! - [`shutdown`]: SIGTERM and Ctrl-C, counted, for every long-running command.
//! - [`backoff`]: the one jittered, exponential, bounded retry delay.
//! - [`errors`]: an error and its sources as one line of text.
//! - [`sync`]: a mutex lock that survives a panicked holder.
//! - [`http_server`]: the one HTTP server loop (limits, connection cap, TLS, drain) every
//!   listener runs.
//! - [`reload`]: SIGHUP, observed once per process, and file watches: what asks for a reload.
//! - [`tls_server`]: server TLS from PEM files, reloaded on SIGHUP or when the files change.
//! - [`metrics_http`]: the `/metrics` listener the agent and the aggregator both serve.
//! - [`process_metrics`]: the standard `process_*` metrics (CPU, memory, fds) from `/proc`.

#[cfg(feature = "aws")]
pub mod aws;
pub mod backoff;
pub mod errors;
pub mod http_server;
pub mod metrics_http;
pub mod process_metrics;
pub mod reload;
pub mod shutdown;
pub mod sync;
pub mod tls_server;

pub use backoff::Backoff;
