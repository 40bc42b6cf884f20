//! The weights lease: with several aggregator replicas, each publishes its own health vote,
//! but Route 53 weights are written by one replica at a time, the holder of a lease in
//! DynamoDB. A tenure carries a fencing token that grows at every change of hand; the weights
//! plane fences each batch with it and logs it with every weight change, so a replica that
//! wrongly believes it still holds the lease (a clock off by up to `max_clock_skew`, a long
//! pause) has its batch refused.
//!
//! - [`core`]: the pure rules (may take, locally valid, next token), property-tested.
//! - [`store`]: the [`LeaseStore`] trait and [`MemoryLeaseStore`].
//! - [`dynamo`]: [`DynamoLeaseStore`] (conditional PutItem/UpdateItem) and
//!   [`ensure_lease_table`].
//! - [`keeper`]: [`Lease`], which takes, renews, fences and releases, and the aggregator's
//!   keeper task.

pub mod core;
pub mod dynamo;
pub mod keeper;
pub mod store;

pub use self::core::{LeaseRecord, LeaseTiming};
pub use dynamo::{ensure_lease_table, DynamoLeaseStore, LEASE_KEY};
pub use keeper::{Fence, Lease, LeaseClock, LeaseEvent, LostReason};
pub use store::{LeaseFuture, LeaseStore, MemoryLeaseStore};

use crate::config::{AggregatorConfig, BackendKind};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Who this replica is and the lease's timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// This replica's id (`aggregator.replicas[].id`), stored as the holder.
    pub holder: String,
    /// How long a tenure lasts without renewal (`aggregator.lease.duration`).
    pub duration: Duration,
    /// Largest clock disagreement between replicas (`aggregator.lease.max_clock_skew`).
    pub max_clock_skew: Duration,
}

/// The lease as one replica sees it, as `GET /v1/state` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseStatus {
    /// This replica holds the lease and it is locally valid: it writes weights.
    pub held: bool,
    /// The holder as last seen (this replica or another).
    pub holder: Option<String>,
    pub token: Option<u64>,
    /// The tenure's end on its holder's clock (Unix ms).
    pub expires_ms: Option<u64>,
}

/// What went wrong talking to the lease store. A refused condition is not an error.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading the lease (GetItem): {0}")]
    Read(String),
    #[error("taking the lease (PutItem): {0}")]
    Acquire(String),
    #[error("renewing the lease (UpdateItem): {0}")]
    Renew(String),
    #[error("fencing a weight batch (UpdateItem): {0}")]
    Fence(String),
    #[error("releasing the lease (UpdateItem): {0}")]
    Release(String),
    #[error("the lease item is malformed: {0}")]
    Malformed(String),
    #[error("creating lease table {table}: {message}")]
    CreateTable { table: String, message: String },
    #[error("reading lease table {table}: {message}")]
    DescribeTable { table: String, message: String },
    #[error("lease table {table} is not ACTIVE after a minute (status {status})")]
    TableNotActive { table: String, status: String },
    #[error("lease table {table} has key schema [{found}]; the lease needs partition key lease_id (S) alone")]
    TableShape { table: String, found: String },
    #[error("the lease store is unavailable")]
    Unavailable,
    #[error("lease configuration: {0}")]
    Config(String),
}

impl LeaseSettings {
    /// The fleet file's `[aggregator.lease]` timing for replica `holder`.
    pub fn from_section(section: &vantage_protocol::config::LeaseSection, holder: &str) -> Self {
        LeaseSettings {
            holder: holder.to_owned(),
            duration: section.duration(),
            max_clock_skew: section.max_clock_skew(),
        }
    }
}

/// The lease this process keeps, when it needs one: the Route 53 backend with more than one
/// replica listed. The DynamoDB table is `aggregator.lease.table` in `aggregator.lease.region`
/// (default: the first replica's Region), reached through `aggregator.lease.endpoint_url`
/// (default: `route53.endpoint_url`); the item is the fleet's name; the holder is this replica.
pub async fn lease_from_config(config: &AggregatorConfig) -> Result<Option<Lease>, LeaseError> {
    let replicas = &config.fleet.aggregator.replicas;
    if !matches!(config.backend, BackendKind::Route53 | BackendKind::Arc) || replicas.len() < 2 {
        return Ok(None);
    }
    let section = config.fleet.aggregator.lease.as_ref().ok_or_else(|| {
        LeaseError::Config("aggregator.lease is required with route53 and several replicas".into())
    })?;
    let me = config
        .replica
        .as_ref()
        .ok_or_else(|| LeaseError::Config("say which replica this is: --replica ID".into()))?;
    let region = section
        .region
        .as_ref()
        .map(|r| r.get_ref().clone())
        .unwrap_or_else(|| replicas[0].region.get_ref().clone());
    let endpoint = section
        .endpoint_url
        .as_ref()
        .or_else(|| config.fleet.route53.as_ref()?.endpoint_url.as_ref())
        .map(|u| u.get_ref().clone());
    let client = DynamoLeaseStore::client(endpoint.as_deref(), &region).await;
    let store = DynamoLeaseStore::new(
        client,
        section.table.get_ref(),
        config.fleet.fleet.name.get_ref(),
    );
    Ok(Some(Lease::new(
        Arc::new(store),
        LeaseSettings::from_section(section, &me.id),
    )))
}

#[cfg(test)]
mod tests;
