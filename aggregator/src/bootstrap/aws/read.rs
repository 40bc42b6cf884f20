//! The reading half of a run: everything that exists, before anything is written, so a
//! refused read or a missing record stops bootstrap with nothing half-built.

use super::{aws_error, Run, DESCRIBE_ALARMS_BATCH, HEALTH_CHECK_MAX_PAGES, HEALTH_CHECK_PAGE};
use crate::backend::route53::list_weighted_records;
use crate::bootstrap::BootstrapError;

impl Run<'_> {
    /// Everything that exists, before anything is written.
    pub(in crate::bootstrap) async fn read(&mut self) -> Result<(), BootstrapError> {
        self.read_alarms().await?;
        self.read_checks().await?;
        self.read_records().await?;
        self.read_table().await
    }

    pub(super) async fn read_alarms(&mut self) -> Result<(), BootstrapError> {
        for region in self.layout.alarm_regions() {
            let names: Vec<String> = self
                .layout
                .regions
                .iter()
                .flat_map(|r| &r.votes)
                .filter(|v| v.alarm.aws_region == region)
                .map(|v| v.alarm.name.clone())
                .collect();
            for batch in names.chunks(DESCRIBE_ALARMS_BATCH) {
                let request = self
                    .cloudwatch(&region)
                    .describe_alarms()
                    .set_alarm_names(Some(batch.to_vec()));
                let out = self
                    .retry
                    .run("DescribeAlarms", || request.clone().send())
                    .await
                    .map_err(|e| aws_error(&format!("alarms in {region}"), "DescribeAlarms", &e))?;
                for alarm in out.metric_alarms() {
                    if let Some(name) = alarm.alarm_name() {
                        self.alarms
                            .insert((region.clone(), name.to_owned()), alarm.clone());
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) async fn read_checks(&mut self) -> Result<(), BootstrapError> {
        let mut marker: Option<String> = None;
        for _ in 0..HEALTH_CHECK_MAX_PAGES {
            let request = self
                .clients
                .route53
                .list_health_checks()
                .set_marker(marker.clone())
                .max_items(HEALTH_CHECK_PAGE);
            let page = self
                .retry
                .run("ListHealthChecks", || request.clone().send())
                .await
                .map_err(|e| aws_error("health checks", "ListHealthChecks", &e))?;
            for check in page.health_checks() {
                self.checks
                    .insert(check.caller_reference().to_owned(), check.clone());
            }
            match page.next_marker() {
                Some(next) if page.is_truncated() && marker.as_deref() != Some(next) => {
                    marker = Some(next.to_owned());
                }
                _ => break,
            }
        }
        Ok(())
    }

    pub(super) async fn read_records(&mut self) -> Result<(), BootstrapError> {
        let r = self.records;
        let what = format!(
            "records {} {} in hosted zone {}",
            r.record_name, r.record_type, r.hosted_zone_id
        );
        self.record_sets = list_weighted_records(
            &self.clients.route53,
            &self.retry,
            &r.hosted_zone_id,
            &r.record_name,
            &r.record_type,
        )
        .await
        .map_err(|e| aws_error(&what, "ListResourceRecordSets", &e))?;
        // Records carry the traffic's values, which only their owner knows: bootstrap guards
        // them but never invents one, so a missing record stops it before anything is written.
        for region in &self.layout.regions {
            let Some(set) = &region.set_identifier else {
                continue;
            };
            let object = format!(
                "weighted record {} {} {set:?} (Region {})",
                r.record_name, r.record_type, region.region
            );
            match self.record_sets.get(set) {
                None => {
                    return Err(BootstrapError::Shape {
                        object,
                        problem: format!(
                            "no such record in hosted zone {}: create it (its value, TTL and a weight), then run bootstrap again",
                            r.hosted_zone_id
                        ),
                    })
                }
                Some(rr) if rr.weight.is_none() => {
                    return Err(BootstrapError::Shape {
                        object,
                        problem: "it is not a weighted record (no Weight)".into(),
                    })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    pub(super) async fn read_table(&mut self) -> Result<(), BootstrapError> {
        let (Some(lease), Some(client)) = (&self.layout.lease, &self.clients.dynamodb) else {
            return Ok(());
        };
        let request = client.describe_table().table_name(&lease.table);
        match self
            .retry
            .run("DescribeTable", || request.clone().send())
            .await
        {
            Ok(_) => self.table_exists = true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                self.table_exists = false;
            }
            Err(e) => {
                return Err(aws_error(
                    &format!("lease table {} in {}", lease.table, lease.aws_region),
                    "DescribeTable",
                    &e,
                ))
            }
        }
        Ok(())
    }
}
