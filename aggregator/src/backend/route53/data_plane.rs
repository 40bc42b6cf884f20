//! Data-plane health: a CloudWatch metric per unit (dimension `Region`, and `Service` for a
//! named service; 1 in service, 0 out) that a CLOUDWATCH_METRIC health check's alarm follows.
//! A replica adds the dimension `Replica` (its id) and publishes to its own AWS Region's
//! CloudWatch (the client `mod.rs` builds for it), so each replica's vote is its own metric,
//! alarm and health check. PutMetricData is a data-plane call, so taking a Region out keeps
//! working while the Route 53 control plane (us-east-1) is down. Values are published on every
//! change and every heartbeat, so the alarm never runs out of data, every unit of every service
//! in as few requests as CloudWatch takes (1,000 metrics each); observing reads the latest
//! one-minute `Minimum` back with one GetMetricData per 500 units. A pass right after
//! publishing may still read the old value and publish again: harmless, and it stops as soon as
//! CloudWatch has the new point.

use super::retry::describe;
use super::units::Unit;
use super::Inner;
use aws_sdk_cloudwatch as cloudwatch;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The metric's dimension naming the vantage Region.
pub const REGION_DIMENSION: &str = "Region";
/// The dimension naming the service (only in a fleet with `[[services]]`).
pub const SERVICE_DIMENSION: &str = "Service";
/// The dimension naming the replica whose vote a metric is (absent for one aggregator).
pub const REPLICA_DIMENSION: &str = "Replica";
/// Standard resolution: CLOUDWATCH_METRIC health checks do not support high-resolution metrics.
const STORAGE_RESOLUTION: i32 = 60;
/// How far back observe looks for the latest published health value.
const METRIC_LOOKBACK: Duration = Duration::from_secs(300);
/// PutMetricData takes at most 1,000 metrics a request; GetMetricData 500 queries.
pub(crate) const PUT_METRIC_DATA_MAX: usize = 1000;
pub(crate) const GET_METRIC_DATA_MAX: usize = 500;

impl Inner {
    /// The dimensions of `unit`'s health metric as this process publishes it.
    fn dimensions(&self, unit: &Unit) -> Vec<cloudwatch::types::Dimension> {
        use cloudwatch::types::Dimension;
        let mut dimensions = vec![Dimension::builder()
            .name(REGION_DIMENSION)
            .value(&unit.region)
            .build()];
        if let Some(service) = &unit.service {
            dimensions.push(
                Dimension::builder()
                    .name(SERVICE_DIMENSION)
                    .value(service)
                    .build(),
            );
        }
        if let Some(replica) = &self.config.replica {
            dimensions.push(
                Dimension::builder()
                    .name(REPLICA_DIMENSION)
                    .value(&replica.id)
                    .build(),
            );
        }
        dimensions
    }

    /// PutMetricData: one datum per unit (by unit key; keys this backend does not drive are
    /// skipped), 1 in service and 0 out, standard resolution, 1,000 to a request. Every request
    /// is sent even when one fails; the first error is returned.
    pub(super) async fn put_health(
        &self,
        namespace: &str,
        metric_name: &str,
        values: &[(&str, bool)],
    ) -> Result<(), String> {
        use cloudwatch::types::{MetricDatum, StandardUnit};
        let now = cloudwatch::primitives::DateTime::from(SystemTime::now());
        let data: Vec<MetricDatum> = values
            .iter()
            .filter_map(|(key, in_service)| Some((self.units.get(*key)?, in_service)))
            .map(|(unit, in_service)| {
                MetricDatum::builder()
                    .metric_name(metric_name)
                    .set_dimensions(Some(self.dimensions(unit)))
                    .timestamp(now)
                    .value(if *in_service { 1.0 } else { 0.0 })
                    .unit(StandardUnit::Count)
                    .storage_resolution(STORAGE_RESOLUTION)
                    .build()
            })
            .collect();
        let mut first_error = None;
        for chunk in data.chunks(PUT_METRIC_DATA_MAX) {
            let request = self
                .cloudwatch
                .put_metric_data()
                .namespace(namespace)
                .set_metric_data(Some(chunk.to_vec()));
            let sent = self
                .config
                .retry
                .run("PutMetricData", || {
                    self.count_write();
                    request.clone().send()
                })
                .await;
            if let Err(e) = sent {
                first_error.get_or_insert_with(|| describe(&e));
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        tracing::debug!(
            backend = "route53",
            units = data.len(),
            "published health metric"
        );
        Ok(())
    }

    /// The latest one-minute Minimum of every unit's health metric, by unit key (None without
    /// a point in the last few minutes, or when CloudWatch cannot be read: the metric is
    /// advisory here, publishing goes on regardless).
    pub(super) async fn observe_metric(
        &self,
        namespace: &str,
        metric_name: &str,
    ) -> BTreeMap<String, Option<bool>> {
        let units: Vec<(&String, &Unit)> = self.units.iter().collect();
        let mut health: BTreeMap<String, Option<bool>> =
            units.iter().map(|(k, _)| ((*k).clone(), None)).collect();
        for chunk in units.chunks(GET_METRIC_DATA_MAX) {
            if !self
                .read_metric(namespace, metric_name, chunk, &mut health)
                .await
            {
                break;
            }
        }
        health
    }

    /// One GetMetricData for `units`; false when CloudWatch could not be read.
    async fn read_metric(
        &self,
        namespace: &str,
        metric_name: &str,
        units: &[(&String, &Unit)],
        health: &mut BTreeMap<String, Option<bool>>,
    ) -> bool {
        use cloudwatch::types::{Metric, MetricDataQuery, MetricStat, ScanBy};
        let queries = units
            .iter()
            .enumerate()
            .map(|(i, (_, unit))| {
                MetricDataQuery::builder()
                    .id(format!("r{i}"))
                    .return_data(true)
                    .metric_stat(
                        MetricStat::builder()
                            .metric(
                                Metric::builder()
                                    .namespace(namespace)
                                    .metric_name(metric_name)
                                    .set_dimensions(Some(self.dimensions(unit)))
                                    .build(),
                            )
                            .period(STORAGE_RESOLUTION)
                            .stat("Minimum")
                            .build(),
                    )
                    .build()
            })
            .collect();
        // Whole minutes, so each period is one CloudWatch minute; the end is past "now" so the
        // current minute is included.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let minute = now - now % 60;
        let start = minute.saturating_sub(METRIC_LOOKBACK.as_secs());
        let end = minute + 60;
        let request = self
            .cloudwatch
            .get_metric_data()
            .set_metric_data_queries(Some(queries))
            .start_time(cloudwatch::primitives::DateTime::from_secs(start as i64))
            .end_time(cloudwatch::primitives::DateTime::from_secs(end as i64))
            .scan_by(ScanBy::TimestampDescending);
        let out = match self
            .config
            .retry
            .run("GetMetricData", || request.clone().send())
            .await
        {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(backend = "route53", error = %describe(&e), "cannot read the health metric; health unknown this pass");
                return false;
            }
        };
        for result in out.metric_data_results() {
            let Some(index) = result
                .id()
                .and_then(|id| id.strip_prefix('r'))
                .and_then(|i| i.parse::<usize>().ok())
            else {
                continue;
            };
            let (Some((key, _)), Some(latest)) = (units.get(index), latest(result)) else {
                continue;
            };
            health.insert((*key).clone(), Some(latest >= 0.5));
        }
        true
    }
}

/// The newest value of a GetMetricData result, whatever order it came in.
fn latest(result: &cloudwatch::types::MetricDataResult) -> Option<f64> {
    result
        .timestamps()
        .iter()
        .zip(result.values())
        .max_by_key(|(t, _)| (t.secs(), t.subsec_nanos()))
        .map(|(_, v)| *v)
}
