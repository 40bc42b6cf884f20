//! The vantage aggregator: merges the agents' interval reports, decides per Region whether it
//! serves traffic and at what weight, and makes Route 53 agree.
//!
//! - [`model`]: the decision core's data: policy, observations, state, decisions.
//! - [`decide`]: the pure decision function (quorum, hysteresis, flap damping, safety rules,
//!   weights); no clock, no I/O.
//! - [`backend`]: reconciler backends behind one trait: dry-run and Route 53.

pub mod backend;
pub mod config;
pub mod decide;
pub mod model;
pub mod service;
pub mod window;
