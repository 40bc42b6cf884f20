//! Data-plane health: a CloudWatch metric per Region (dimension `Region`, 1 in service, 0 out)
//! that a CLOUDWATCH_METRIC health check's alarm follows. A replica adds the dimension
//! `Replica` (its id) and publishes to its own AWS Region's CloudWatch (the client `mod.rs`
//! builds for it), so each replica's vote is its own metric, alarm and health check. PutMetricData is a data-plane call,
//! so taking a Region out keeps working while the Route 53 control plane (us-east-1) is down.
//! Values are published on every change and every heartbeat, so the alarm never runs out of
//! data; observing reads the latest one-minute `Minimum` back with one GetMetricData for all
//! Regions. A pass right after publishing may still read the old value and publish again:
//! harmless, and it stops as soon as CloudWatch has the new point.

use super::retry::describe;
use super::Inner;
use aws_sdk_cloudwatch as cloudwatch;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The metric's dimension naming the vantage Region.
pub const REGION_DIMENSION: &str = "Region";
/// The dimension naming the replica whose vote a metric is (absent for one aggregator).
pub const REPLICA_DIMENSION: &str = "Replica";
/// Standard resolution: CLOUDWATCH_METRIC health checks do not support high-resolution metrics.
const STORAGE_RESOLUTION: i32 = 60;
/// How far back observe looks for the latest published health value.
const METRIC_LOOKBACK: Duration = Duration::from_secs(300);

impl Inner {
    /// The dimensions of `region`'s health metric as this process publishes it.
    fn dimensions(&self, region: &str) -> Vec<cloudwatch::types::Dimension> {
        use cloudwatch::types::Dimension;
        let mut dimensions = vec![Dimension::builder()
            .name(REGION_DIMENSION)
            .value(region)
            .build()];
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

    /// PutMetricData: one datum per Region, 1 in service and 0 out, standard resolution.
    pub(super) async fn put_health(
        &self,
        namespace: &str,
        metric_name: &str,
        values: &[(&str, bool)],
    ) -> Result<(), String> {
        use cloudwatch::types::{MetricDatum, StandardUnit};
        let now = cloudwatch::primitives::DateTime::from(SystemTime::now());
        let data = values
            .iter()
            .map(|(region, in_service)| {
                MetricDatum::builder()
                    .metric_name(metric_name)
                    .set_dimensions(Some(self.dimensions(region)))
                    .timestamp(now)
                    .value(if *in_service { 1.0 } else { 0.0 })
                    .unit(StandardUnit::Count)
                    .storage_resolution(STORAGE_RESOLUTION)
                    .build()
            })
            .collect();
        let request = self
            .cloudwatch
            .put_metric_data()
            .namespace(namespace)
            .set_metric_data(Some(data));
        self.config
            .retry
            .run("PutMetricData", || {
                self.count_write();
                request.clone().send()
            })
            .await
            .map_err(|e| describe(&e))?;
        tracing::debug!(
            backend = "route53",
            regions = values.len(),
            "published health metric"
        );
        Ok(())
    }

    /// The latest one-minute Minimum of every Region's health metric (None without a point in
    /// the last few minutes, or when CloudWatch cannot be read: the metric is advisory here,
    /// publishing goes on regardless).
    pub(super) async fn observe_metric(
        &self,
        namespace: &str,
        metric_name: &str,
    ) -> BTreeMap<String, Option<bool>> {
        use cloudwatch::types::{Metric, MetricDataQuery, MetricStat, ScanBy};
        let regions: Vec<&String> = self.config.regions.keys().collect();
        let mut health: BTreeMap<String, Option<bool>> =
            regions.iter().map(|r| ((*r).clone(), None)).collect();
        let queries = regions
            .iter()
            .enumerate()
            .map(|(i, region)| {
                MetricDataQuery::builder()
                    .id(format!("r{i}"))
                    .return_data(true)
                    .metric_stat(
                        MetricStat::builder()
                            .metric(
                                Metric::builder()
                                    .namespace(namespace)
                                    .metric_name(metric_name)
                                    .set_dimensions(Some(self.dimensions(region)))
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
                return health;
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
            let (Some(region), Some(latest)) = (regions.get(index), latest(result)) else {
                continue;
            };
            health.insert((*region).clone(), Some(latest >= 0.5));
        }
        health
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
