//! Test-only: the fakes and guards every vantage test shares, so no crate keeps its own copy.
//! Each module has one job; servers bind 127.0.0.1 with a port chosen at run time, run in
//! directories of their own, read no system-wide configuration and stop when their guard drops.
//! A missing tool fails the test with an install hint ([`process::INSTALL_HINT`]), never skips.
//!
//! - [`ca`]: a throwaway certificate authority, in-memory leaves and PEM server certificates.
//! - [`server`]: a builder-style fake HTTP(S) server and misbehaving TCP endpoints.
//! - [`arc`]: five stand-in ARC cluster endpoints (answer, hang, refuse, reset) on loopback.
//! - [`aggregator`]: the stand-in aggregator that verifies, stores and misbehaves on demand.
//! - [`http`]: raw HTTP/1.1 exchanges and a request reader for hand-written fakes.
//! - [`process`]: the child-process guard, readiness waits, set-up commands, tool lookup.
//! - [`dirs`]: temp directories (tempfile), private or traversable by `nobody`.
//! - [`eventually`]: bounded polling and timeouts.
//! - [`fleet`]: fleet files built for tests.
//! - [`lambda`]: the Lambda Runtime API stand-in: queued invocations, recorded answers.
//! - [`log`]: a JSON-lines log in memory (the aggregator's decision log), read back as events.
//! - [`moto`]: moto_server, once per test binary.
//! - [`partition`]: a TCP forwarder a test can cut and heal (a partition in user space).
//! - [`dns`]: a real DNS server (BIND 9's `named`) with a zone changed by dynamic update.
//! - [`postgres`], [`mariadb`]: real database servers (PostgreSQL primary and replica, TLS).

pub mod aggregator;
pub mod arc;
pub mod browser;
pub mod ca;
pub mod dirs;
pub mod dns;
pub mod error;
pub mod eventually;
pub mod fleet;
pub mod http;
pub mod lambda;
pub mod log;
pub mod mariadb;
pub mod moto;
pub mod partition;
pub mod postgres;
pub mod process;
pub mod server;

pub use ca::{Leaf, ServerCert, TestCa};
pub use error::{KitError, Result};
pub use server::*;

/// Wall-clock milliseconds since the Unix epoch, as reports and signatures count time.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}
