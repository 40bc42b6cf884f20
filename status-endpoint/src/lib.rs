//! The vantage status endpoint: the server behind every Region's `/status` path.
//!
//! It tells the truth about the Region without becoming the thing that takes the Region down:
//! liveness never touches a dependency, readiness answers within one deadline whatever the
//! dependencies do, and any number of callers cause at most one round of dependency checks per
//! cache TTL.
//!
//! - [`config`]: the TOML file, flag and environment overrides, validation naming the key.
//! - [`checks`]: one module per dependency (Aurora PostgreSQL and MySQL writer/reader with
//!   replication lag, Lambda, DynamoDB tables with heartbeat replication lag, extra HTTP and
//!   TCP), and [`checks::run_round`], which runs them
//!   all under per-check timeouts and the round deadline.
//! - [`cache`]: the TTL cache with single flight, a pure state machine plus its async driver.
//! - [`health`]: the `application/health+json` answer, `?verbose`, `?exclude=`, token gating.
//! - [`router`]: `/status`, `/status/deep`, `/metrics`, and [`router::run`] to serve them.
//! - [`service`]: the per-connection service: `GET /status` from pre-rendered bytes ahead of
//!   the routes.
//! - [`lambda_adapter`]: the same router as a Lambda function behind API Gateway.
//! - [`metrics`]: Prometheus text for check results and latencies.
//! - [`cli`]: `vantage status-endpoint` flags (each also from a `VANTAGE_*` variable).

pub mod cache;
pub mod checks;
pub mod cli;
pub mod config;
pub mod health;
pub mod lambda_adapter;
pub mod metrics;
pub mod router;
pub mod service;
