//! Where the aggregator runs: one process (`aggregator.url`), or 2 to 5 replicas in different
//! AWS Regions (`aggregator.replicas`), each deciding on its own and publishing its own vote,
//! so the failover survives the loss of the Region an aggregator runs in. Route 53 combines the
//! votes (a CALCULATED health check over one CLOUDWATCH_METRIC check per replica); weights are
//! written by one replica at a time, the holder of the `[aggregator.lease]` in DynamoDB.
//!
//! Agents deliver every report to every replica ([`AggregatorSection::replica_endpoints`]).

use super::{AggregatorSection, ConfigError, DurationText, FleetConfig, Located, Problem};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;

/// Most replicas a fleet may run: a CALCULATED check's majority of 5 tolerates 2 lost Regions,
/// and every replica receives every report, so more would only multiply agent traffic.
pub const MAX_REPLICAS: usize = 5;

/// Default lease duration: a dead holder's weights are frozen at most this long (plus skew).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(30);
/// Default bound on clock disagreement between replicas.
pub const DEFAULT_LEASE_MAX_CLOCK_SKEW: Duration = Duration::from_secs(2);

/// One aggregator replica, as `aggregator.replicas` lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaSection {
    /// Short id (letters, digits, '-', '_', '.'); `vantage aggregator --replica ID` picks it,
    /// and it is the `Replica` dimension of the replica's health metric.
    pub id: Located<String>,
    /// The AWS Region the replica runs in: its CloudWatch (metric and alarms) lives there.
    pub region: Located<String>,
    /// Base URL; agents POST to `<url>/v1/reports`.
    pub url: Located<String>,
}

/// The weight lease: a DynamoDB item that one replica at a time holds (conditional writes with
/// an expiry and a fencing token).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseSection {
    /// DynamoDB table name (partition key `lease_id`, a string).
    pub table: Located<String>,
    /// The table's AWS Region (default: the first replica's).
    pub region: Option<Located<String>>,
    /// How long a lease lasts without renewal (default 30 s; renewed every third of it).
    pub duration: Option<DurationText>,
    /// Largest clock disagreement between replicas tolerated (default 2 s): a holder stops
    /// writing this long before its lease ends, others take it only this long after.
    pub max_clock_skew: Option<DurationText>,
    /// Endpoint override for DynamoDB (moto, LocalStack, a VPC endpoint).
    pub endpoint_url: Option<Located<String>>,
}

impl LeaseSection {
    pub fn duration(&self) -> Duration {
        self.duration.map_or(DEFAULT_LEASE_DURATION, |d| d.0)
    }

    pub fn max_clock_skew(&self) -> Duration {
        self.max_clock_skew
            .map_or(DEFAULT_LEASE_MAX_CLOCK_SKEW, |d| d.0)
    }
}

/// Where an agent delivers its reports: one entry per replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaEndpoint {
    /// The replica's id; `None` for the single `aggregator.url` form.
    pub id: Option<String>,
    /// The replica's AWS Region, when it is a listed replica.
    pub region: Option<String>,
    pub url: String,
}

impl AggregatorSection {
    /// Every aggregator an agent reports to, in file order: the listed replicas, or the one
    /// `aggregator.url`.
    pub fn replica_endpoints(&self) -> Vec<ReplicaEndpoint> {
        if self.replicas.is_empty() {
            return self
                .url
                .iter()
                .map(|u| ReplicaEndpoint {
                    id: None,
                    region: None,
                    url: u.get_ref().clone(),
                })
                .collect();
        }
        self.replicas
            .iter()
            .map(|r| ReplicaEndpoint {
                id: Some(r.id.get_ref().clone()),
                region: Some(r.region.get_ref().clone()),
                url: r.url.get_ref().clone(),
            })
            .collect()
    }

    /// The replica with this id.
    pub fn replica(&self, id: &str) -> Option<&ReplicaSection> {
        self.replicas.iter().find(|r| r.id.get_ref() == id)
    }
}

impl FleetConfig {
    /// `aggregator.url` or `aggregator.replicas` (not both), 1 to 5 replicas with distinct ids
    /// and URLs, and a lease wherever more than one replica could write Route 53 weights.
    pub(super) fn validate_replicas(&self) -> Result<(), ConfigError> {
        let a = &self.aggregator;
        match (&a.url, a.replicas.is_empty()) {
            (None, true) => {
                return Err(self.place(Problem::key(
                    "aggregator.url",
                    "missing: give url = \"https://aggregator.example.com\" (one aggregator) or \
                     replicas = [{ id = \"use1\", region = \"us-east-1\", url = \"https://...\" }, \
                     ...] (2 to 5 replicas)",
                )))
            }
            (Some(url), false) => {
                return Err(self.invalid(
                    url,
                    "aggregator.url",
                    "give either url (one aggregator) or replicas (each with its own url), not \
                     both",
                ))
            }
            (Some(url), true) => super::validate::check_url(self, url, "aggregator.url")?,
            (None, false) => {}
        }
        if a.replicas.len() > MAX_REPLICAS {
            return Err(self.place(Problem::key(
                "aggregator.replicas",
                format!(
                    "{} replicas: at most {MAX_REPLICAS} (a majority of 5 already survives two \
                     lost Regions, and agents deliver every report to every replica)",
                    a.replicas.len()
                ),
            )));
        }
        let mut ids = BTreeSet::new();
        let mut urls = BTreeSet::new();
        for (i, r) in a.replicas.iter().enumerate() {
            let key = format!("aggregator.replicas[{i}]");
            if !super::validate::valid_name(r.id.get_ref()) {
                return Err(self.invalid(
                    &r.id,
                    &format!("{key}.id"),
                    "use letters, digits, '-', '_' and '.', 1 to 64 characters",
                ));
            }
            if !ids.insert(r.id.get_ref().as_str()) {
                return Err(self.invalid(
                    &r.id,
                    &format!("{key}.id"),
                    format!("replica id {:?} is listed twice", r.id.get_ref()),
                ));
            }
            if !super::validate::valid_name(r.region.get_ref()) {
                return Err(self.invalid(
                    &r.region,
                    &format!("{key}.region"),
                    "use a Region code like us-east-1",
                ));
            }
            super::validate::check_url(self, &r.url, &format!("{key}.url"))?;
            if !urls.insert(r.url.get_ref().trim_end_matches('/')) {
                return Err(self.invalid(
                    &r.url,
                    &format!("{key}.url"),
                    "two replicas share this URL; each replica needs its own, or agents would \
                     deliver to one of them twice and never to the other",
                ));
            }
        }
        if let Some(lease) = &a.lease {
            if !valid_table_name(lease.table.get_ref()) {
                return Err(self.invalid(
                    &lease.table,
                    "aggregator.lease.table",
                    "a DynamoDB table name: 3 to 255 of letters, digits, '_', '-' and '.'",
                ));
            }
            let duration = lease.duration();
            let skew = lease.max_clock_skew();
            if duration < Duration::from_secs(5) || duration > Duration::from_secs(600) {
                return Err(self.place(Problem::key(
                    "aggregator.lease.duration",
                    "must be between 5s and 10m",
                )));
            }
            if skew * 4 > duration {
                return Err(self.place(Problem::key(
                    "aggregator.lease.max_clock_skew",
                    format!(
                        "{}s is more than a quarter of the lease ({}s): the holder would stop \
                         writing before it could renew; lengthen the lease or bound the skew",
                        skew.as_secs_f64(),
                        duration.as_secs_f64()
                    ),
                )));
            }
            if let Some(url) = &lease.endpoint_url {
                super::validate::check_url(self, url, "aggregator.lease.endpoint_url")?;
            }
        }
        let route53 = a.backend.as_ref().map(|b| b.get_ref().as_str()) == Some("route53");
        if route53 && a.replicas.len() > 1 {
            if a.lease.is_none() {
                return Err(self.place(Problem::key(
                    "aggregator.lease",
                    "missing: with more than one replica on the route53 backend, weights are \
                     written only by the holder of a lease; add [aggregator.lease] with \
                     table = \"vantage-lease\" (`vantage aggregator bootstrap` creates it)",
                )));
            }
            let control_plane = self
                .route53
                .as_ref()
                .and_then(|r| r.health.as_ref())
                .is_some_and(|h| h.get_ref() == "control-plane");
            if control_plane {
                return Err(self.place(Problem::key(
                    "route53.health",
                    "\"control-plane\" forces one health check from one writer; replicas vote \
                     through the data plane: use \"data-plane\" (the default) with replicas",
                )));
            }
        }
        Ok(())
    }
}

fn valid_table_name(s: &str) -> bool {
    (3..=255).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}
