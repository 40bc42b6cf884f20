//! The vantage aggregator: merges the agents' interval reports, decides per Region whether it
//! serves traffic and at what weight, and makes Route 53 agree.
//!
//! - [`model`]: the decision core's data: policy, observations, state, decisions.
//! - [`decide`]: the pure decision function (quorum, hysteresis, flap damping, safety rules,
//!   weights); no clock, no I/O.
//! - [`backend`]: reconciler backends behind one trait: dry-run and Route 53.
//! - [`bootstrap`]: creates or adopts the AWS objects the fleet's health votes need.
//! - [`config`]: the fleet file's aggregator settings, checked, with defaults applied.
//! - [`budget`]: the AWS calls per minute and the monthly cost the configured periods imply.
//! - [`window`]: the recent intervals' merged histograms and counts, per vantage and target.
//! - [`ingest`]: one report in: auth, the key's vantages, size cap, deduplication, merge.
//! - [`prepare`]: a report checked against the fleet and decoded whole, before any lock.
//! - [`evaluate`]: the evaluation loop: window → decision → log, metrics, state → planes.
//! - [`traffic`]: where traffic goes by layer (HTTP Region header, DNS answers), for `/v1/state`.
//! - [`planes`]: the health heartbeat (data plane) and the health and weights control planes,
//!   each on its own task, so no Route 53 call delays a decision or a health publication.
//! - [`lease`]: the weights lease (DynamoDB, fencing token) that lets one replica of several
//!   write weights at a time.
//! - [`reconcile`]: one control-plane pass: plan one kind of change, apply only that.
//! - [`reload`]: a new fleet file put in force while running, or refused whole.
//! - [`maintenance`]: `[[maintenance]]` windows and pins with an expiry (pure).
//! - [`notify`]: notification sinks (SNS, webhook, Slack) fed from the decision loop through
//!   bounded queues, never waited on.
//! - [`overrides`]: an authenticated override request checked whole, then applied and logged.
//! - `persist`: the state file that carries decisions, overrides and nonces across restarts.
//! - [`api`]: the HTTP API on axum: reports, state, overrides.
//! - [`service`]: the shared [`service::Aggregator`] and [`service::run`], which starts it all.

pub mod alerts;
pub mod api;
pub mod backend;
pub mod bootstrap;
pub mod budget;
pub mod config;
pub mod decide;
pub mod evaluate;
pub mod history;
pub mod ingest;
pub mod lease;
pub mod maintenance;
mod maintenance_loop;
pub mod model;
pub mod notify;
pub mod overrides;
mod persist;
pub mod planes;
#[cfg(test)]
mod planes_route53_tests;
pub mod prepare;
pub mod reconcile;
pub mod reload;
pub mod service;
pub mod status_page;
pub mod traffic;
pub mod window;
