//! The reading half of a run: everything that exists, before anything is written, so a
//! refused read or a missing record stops bootstrap with nothing half-built.

use super::{
    aws_error, unit_label, Run, DESCRIBE_ALARMS_BATCH, HEALTH_CHECK_MAX_PAGES, HEALTH_CHECK_PAGE,
};
use crate::backend::route53::layout::RecordSet;
use crate::backend::route53::{list_record_sets, NameType};
use crate::bootstrap::BootstrapError;
use std::collections::{BTreeMap, BTreeSet};

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

    /// Every unit's weighted records: one ListResourceRecordSets sweep per hosted zone.
    pub(super) async fn read_records(&mut self) -> Result<(), BootstrapError> {
        let mut by_zone: BTreeMap<&str, BTreeSet<NameType>> = BTreeMap::new();
        for r in self
            .layout
            .regions
            .iter()
            .filter_map(|r| r.records.as_ref())
        {
            by_zone
                .entry(&r.hosted_zone_id)
                .or_default()
                .insert((r.record_name.clone(), r.record_type.clone()));
        }
        for (zone, wanted) in by_zone {
            let what = match wanted.iter().collect::<Vec<_>>().as_slice() {
                [(name, rr_type)] => format!("records {name} {rr_type} in hosted zone {zone}"),
                many => format!("records of {} services in hosted zone {zone}", many.len()),
            };
            let sets = list_record_sets(&self.clients.route53, &self.retry, zone, &wanted)
                .await
                .map_err(|e| aws_error(&what, "ListResourceRecordSets", &e))?;
            for ((record_name, record_type), records) in sets {
                let key = RecordSet {
                    hosted_zone_id: zone.to_owned(),
                    record_name,
                    record_type,
                };
                self.record_sets.insert(key, records);
            }
        }
        // Records carry the traffic's values, which only their owner knows: bootstrap guards
        // them but never invents one, so a missing record stops it before anything is written.
        for region in &self.layout.regions {
            let (Some(set), Some(r)) = (&region.set_identifier, &region.records) else {
                continue;
            };
            let object = format!(
                "weighted record {} {} {set:?} ({})",
                r.record_name,
                r.record_type,
                unit_label(region)
            );
            match self.record_sets.get(r).and_then(|records| records.get(set)) {
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
