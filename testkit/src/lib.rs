//! Test-only: the fakes and guards every vantage test shares, so no crate keeps its own copy.
//!
//! - [`server`]: a throwaway certificate authority, a builder-style fake HTTP(S) server
//!   (linkerd style: routes, delays, TLS versions, ALPN) and misbehaving endpoints (reset,
//!   black holes, a refusing port), all on 127.0.0.1 with an OS-chosen port.

pub mod server;

pub use server::*;
