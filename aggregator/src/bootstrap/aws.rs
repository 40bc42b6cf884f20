//! One bootstrap run against AWS: every read first ([`Run::read`]), then every write
//! ([`Run::apply`]) in dependency order, one [`Line`] per object as soon as its status is known.

use super::{BootstrapError, Clients, Line, Mode, Status};
use crate::backend::route53::layout::{
    AlarmSpec, Layout, MajorityCheck, RecordSet, RegionLayout, Vote, ALARM_EVALUATION_PERIODS,
    ALARM_PERIOD_SECS, ALARM_THRESHOLD, ALARM_TREAT_MISSING_DATA,
};
use crate::backend::route53::{describe, pack_by, upsert_cost, RetryPolicy};
use aws_sdk_cloudwatch as cloudwatch;
use aws_sdk_route53 as route53;
use route53::types::{
    AlarmIdentifier, ChangeAction, ChangeBatch, CloudWatchRegion, HealthCheck, HealthCheckConfig,
    HealthCheckType, InsufficientDataHealthStatus, ResourceRecordSet,
};
use std::collections::{BTreeMap, BTreeSet};

mod read;

/// DescribeAlarms takes at most 100 names per call.
const DESCRIBE_ALARMS_BATCH: usize = 100;
/// ListHealthChecks page size (the API maximum) and a bound on pages (100,000 checks).
const HEALTH_CHECK_PAGE: i32 = 1000;
const HEALTH_CHECK_MAX_PAGES: usize = 100;

/// The state of one run.
pub(super) struct Run<'a> {
    layout: &'a Layout,
    clients: &'a Clients,
    mode: Mode,
    report: &'a mut dyn FnMut(&Line),
    retry: RetryPolicy,
    lines: Vec<Line>,
    /// Every layout alarm that exists, by (AWS Region, alarm name).
    alarms: BTreeMap<(String, String), cloudwatch::types::MetricAlarm>,
    /// Every health check in the account, by CallerReference.
    checks: BTreeMap<String, HealthCheck>,
    /// The weighted records of each record set, by set identifier.
    record_sets: BTreeMap<RecordSet, BTreeMap<String, ResourceRecordSet>>,
    table_exists: bool,
}

fn aws_error<E>(
    object: &str,
    operation: &'static str,
    e: &route53::error::SdkError<E, route53::config::http::HttpResponse>,
) -> BootstrapError
where
    E: route53::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut message = describe(e);
    // The SDK's text for a missing credential chain is a page of Debug output; say what to do.
    if matches!(e, route53::error::SdkError::DispatchFailure(_))
        && message.to_ascii_lowercase().contains("credentials")
    {
        message = "no AWS credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and \
                   AWS_SECRET_ACCESS_KEY, or run with an instance or task role)"
            .into();
    }
    BootstrapError::Aws {
        object: object.to_owned(),
        operation,
        message,
    }
}

/// How lines name a unit: `Region eu-west-1`, or `service payments, Region eu-west-1`.
fn unit_label(r: &RegionLayout) -> String {
    match &r.service {
        Some(s) => format!("service {s}, Region {}", r.region),
        None => format!("Region {}", r.region),
    }
}

fn alarm_label(a: &AlarmSpec) -> String {
    format!("alarm {} in {}", a.name, a.aws_region)
}

fn vote_label(v: &Vote, id: Option<&str>) -> String {
    format!(
        "health check {} (CLOUDWATCH_METRIC on alarm {}{})",
        v.caller_reference,
        v.alarm.name,
        id.map_or(String::new(), |id| format!(", id {id}"))
    )
}

fn majority_label(m: &MajorityCheck, children: usize, id: Option<&str>) -> String {
    format!(
        "health check {} (CALCULATED, healthy while {} of {children} are{})",
        m.caller_reference,
        m.health_threshold,
        id.map_or(String::new(), |id| format!(", id {id}"))
    )
}

impl<'a> Run<'a> {
    pub(super) fn new(
        layout: &'a Layout,
        clients: &'a Clients,
        mode: Mode,
        report: &'a mut dyn FnMut(&Line),
    ) -> Self {
        Run {
            layout,
            clients,
            mode,
            report,
            retry: RetryPolicy::default(),
            lines: Vec::new(),
            alarms: BTreeMap::new(),
            checks: BTreeMap::new(),
            record_sets: BTreeMap::new(),
            table_exists: false,
        }
    }

    pub(super) fn into_lines(self) -> Vec<Line> {
        self.lines
    }

    fn emit(&mut self, status: Status, object: String) {
        let line = Line { status, object };
        (self.report)(&line);
        self.lines.push(line);
    }

    fn cloudwatch(&self, region: &str) -> &cloudwatch::Client {
        // Clients::new builds one per alarm Region of the same layout.
        &self.clients.cloudwatch[region]
    }

    /// Creates what is missing ([`Mode::Apply`]) or reports it ([`Mode::Inspect`]).
    pub(super) async fn apply(&mut self) -> Result<(), BootstrapError> {
        let layout = self.layout;
        // Per hosted zone, each record set's UPSERTs (a service's records travel together).
        let mut upserts: BTreeMap<String, BTreeMap<RecordSet, Vec<ResourceRecordSet>>> =
            BTreeMap::new();
        let mut record_lines = Vec::new();
        for region in &layout.regions {
            let mut vote_ids = Vec::new();
            for vote in &region.votes {
                self.ensure_alarm(&vote.alarm).await?;
                vote_ids.push(self.ensure_vote_check(vote).await?);
            }
            let guard = match &region.majority {
                Some(m) => self.ensure_majority(m, &vote_ids).await?,
                None => vote_ids.first().cloned().flatten(),
            };
            let (Some(set), Some(r)) = (&region.set_identifier, &region.records) else {
                continue;
            };
            // read_records checked that every unit's record exists.
            let record = self.record_sets[r][set].clone();
            let target = guard
                .as_deref()
                .unwrap_or("(the check above, once created)");
            let object = format!(
                "record {} {} {set:?} ({}) guarded by health check {target}",
                r.record_name,
                r.record_type,
                unit_label(region)
            );
            if guard.is_some() && record.health_check_id == guard {
                record_lines.push((Status::Exists, object));
            } else if self.mode == Mode::Inspect {
                record_lines.push((Status::Differs, object));
            } else {
                // Values, TTL, alias target and weight as read; only the health check changes.
                let mut record = record;
                record.health_check_id = guard;
                upserts
                    .entry(r.hosted_zone_id.clone())
                    .or_default()
                    .entry(r.clone())
                    .or_default()
                    .push(record);
                record_lines.push((Status::Updated, object));
            }
        }
        for (zone, sets) in upserts {
            let groups: Vec<Vec<ResourceRecordSet>> = sets.into_values().collect();
            for batch in pack_by(groups, |g| upsert_cost(g)) {
                self.upsert_records(&zone, batch.concat()).await?;
            }
        }
        for (status, object) in record_lines {
            self.emit(status, object);
        }
        self.ensure_table().await
    }

    async fn ensure_alarm(&mut self, a: &AlarmSpec) -> Result<(), BootstrapError> {
        let key = (a.aws_region.clone(), a.name.clone());
        let (object, done) = match self
            .alarms
            .get(&key)
            .map(|found| alarm_differences(a, found))
        {
            None => (alarm_label(a), Status::Created),
            Some(differences) if differences.is_empty() => {
                self.emit(Status::Exists, alarm_label(a));
                return Ok(());
            }
            Some(differences) => (
                format!("{} (differs: {})", alarm_label(a), differences.join(", ")),
                Status::Updated,
            ),
        };
        if self.mode == Mode::Inspect {
            let status = match done {
                Status::Created => Status::Missing,
                _ => Status::Differs,
            };
            self.emit(status, object);
            return Ok(());
        }
        // PutMetricAlarm creates the alarm or replaces its whole definition: one call for both.
        use cloudwatch::types::{ComparisonOperator, Dimension, StandardUnit, Statistic};
        let dimensions = a
            .dimensions
            .iter()
            .map(|(k, v)| Dimension::builder().name(k).value(v).build())
            .collect();
        let request = self
            .cloudwatch(&a.aws_region)
            .put_metric_alarm()
            .alarm_name(&a.name)
            .alarm_description(
                "vantage: this voter's health verdict for the Region (1 in service, 0 out); a \
                 Route 53 CLOUDWATCH_METRIC health check follows it",
            )
            .namespace(&a.namespace)
            .metric_name(&a.metric_name)
            .set_dimensions(Some(dimensions))
            .statistic(Statistic::Minimum)
            .period(ALARM_PERIOD_SECS)
            .evaluation_periods(ALARM_EVALUATION_PERIODS)
            .threshold(ALARM_THRESHOLD)
            .comparison_operator(ComparisonOperator::LessThanThreshold)
            .treat_missing_data(ALARM_TREAT_MISSING_DATA)
            .unit(StandardUnit::Count);
        self.retry
            .run("PutMetricAlarm", || request.clone().send())
            .await
            .map_err(|e| aws_error(&object, "PutMetricAlarm", &e))?;
        self.emit(done, object);
        Ok(())
    }

    /// The vote's CLOUDWATCH_METRIC check: its id, or None when it is missing (Inspect).
    async fn ensure_vote_check(&mut self, v: &Vote) -> Result<Option<String>, BootstrapError> {
        let alarm = AlarmIdentifier::builder()
            .region(CloudWatchRegion::from(v.alarm.aws_region.as_str()))
            .name(&v.alarm.name)
            .build()
            .map_err(|e| BootstrapError::Aws {
                object: vote_label(v, None),
                operation: "CreateHealthCheck",
                message: e.to_string(),
            })?;
        if let Some(existing) = self.checks.get(&v.caller_reference).cloned() {
            let id = existing.id().to_owned();
            let object = vote_label(v, Some(&id));
            let config = existing.health_check_config();
            let kind = config.map(|c| c.r#type().clone());
            if kind != Some(HealthCheckType::CloudwatchMetric) {
                return Err(wrong_type(object, kind));
            }
            // moto does not keep AlarmIdentifier; AWS does, and a check on another alarm (or
            // counting missing data as healthy) would not carry this vote.
            let same_alarm = config.and_then(|c| c.alarm_identifier()).is_none_or(|a| {
                a.name() == v.alarm.name && a.region().as_str() == v.alarm.aws_region
            });
            let same_missing = config
                .and_then(|c| c.insufficient_data_health_status())
                .is_none_or(|s| *s == InsufficientDataHealthStatus::LastKnownStatus);
            if same_alarm && same_missing {
                self.emit(Status::Exists, object);
            } else if self.mode == Mode::Inspect {
                self.emit(Status::Differs, object);
            } else {
                let request = self
                    .clients
                    .route53
                    .update_health_check()
                    .health_check_id(&id)
                    .health_check_version(existing.health_check_version())
                    .alarm_identifier(alarm)
                    .insufficient_data_health_status(InsufficientDataHealthStatus::LastKnownStatus);
                self.retry
                    .run("UpdateHealthCheck", || request.clone().send())
                    .await
                    .map_err(|e| aws_error(&object, "UpdateHealthCheck", &e))?;
                self.emit(Status::Updated, object);
            }
            return Ok(Some(id));
        }
        if self.mode == Mode::Inspect {
            self.emit(Status::Missing, vote_label(v, None));
            return Ok(None);
        }
        let config = HealthCheckConfig::builder()
            .r#type(HealthCheckType::CloudwatchMetric)
            .alarm_identifier(alarm)
            .insufficient_data_health_status(InsufficientDataHealthStatus::LastKnownStatus)
            .build();
        let id = self
            .create_check(&v.caller_reference, config, vote_label(v, None))
            .await?;
        self.emit(Status::Created, vote_label(v, Some(&id)));
        Ok(Some(id))
    }

    /// The Region's CALCULATED check over the votes' checks: its id, or None (Inspect).
    async fn ensure_majority(
        &mut self,
        m: &MajorityCheck,
        vote_ids: &[Option<String>],
    ) -> Result<Option<String>, BootstrapError> {
        let children: Option<Vec<String>> = vote_ids.iter().cloned().collect();
        if let Some(existing) = self.checks.get(&m.caller_reference).cloned() {
            let id = existing.id().to_owned();
            let object = majority_label(m, vote_ids.len(), Some(&id));
            let config = existing.health_check_config();
            let kind = config.map(|c| c.r#type().clone());
            if kind != Some(HealthCheckType::Calculated) {
                return Err(wrong_type(object, kind));
            }
            let have: BTreeSet<&str> = config
                .map(|c| c.child_health_checks().iter().map(String::as_str).collect())
                .unwrap_or_default();
            let same = children.as_ref().is_some_and(|want| {
                want.iter().map(String::as_str).collect::<BTreeSet<_>>() == have
            }) && config.and_then(|c| c.health_threshold()) == Some(m.health_threshold);
            match (same, self.mode, children) {
                (true, _, _) => self.emit(Status::Exists, object),
                (false, Mode::Apply, Some(children)) => {
                    let request = self
                        .clients
                        .route53
                        .update_health_check()
                        .health_check_id(&id)
                        .health_check_version(existing.health_check_version())
                        .set_child_health_checks(Some(children))
                        .health_threshold(m.health_threshold);
                    self.retry
                        .run("UpdateHealthCheck", || request.clone().send())
                        .await
                        .map_err(|e| aws_error(&object, "UpdateHealthCheck", &e))?;
                    self.emit(Status::Updated, object);
                }
                (false, _, _) => self.emit(Status::Differs, object),
            }
            return Ok(Some(id));
        }
        let object = majority_label(m, vote_ids.len(), None);
        let Some(children) = children.filter(|_| self.mode == Mode::Apply) else {
            self.emit(Status::Missing, object);
            return Ok(None);
        };
        let config = HealthCheckConfig::builder()
            .r#type(HealthCheckType::Calculated)
            .set_child_health_checks(Some(children))
            .health_threshold(m.health_threshold)
            .build();
        let id = self
            .create_check(&m.caller_reference, config, object)
            .await?;
        self.emit(
            Status::Created,
            majority_label(m, vote_ids.len(), Some(&id)),
        );
        Ok(Some(id))
    }

    async fn create_check(
        &mut self,
        caller_reference: &str,
        config: Result<HealthCheckConfig, route53::error::BuildError>,
        object: String,
    ) -> Result<String, BootstrapError> {
        let config = config.map_err(|e| BootstrapError::Aws {
            object: object.clone(),
            operation: "CreateHealthCheck",
            message: e.to_string(),
        })?;
        let request = self
            .clients
            .route53
            .create_health_check()
            .caller_reference(caller_reference)
            .health_check_config(config);
        let out = self
            .retry
            .run("CreateHealthCheck", || request.clone().send())
            .await
            .map_err(|e| aws_error(&object, "CreateHealthCheck", &e))?;
        let check = out.health_check().ok_or_else(|| BootstrapError::Aws {
            object: object.clone(),
            operation: "CreateHealthCheck",
            message: "the answer holds no health check".into(),
        })?;
        self.checks
            .insert(caller_reference.to_owned(), check.clone());
        Ok(check.id().to_owned())
    }

    /// One batch for the records of a hosted zone: each service's weighted group changes
    /// together.
    async fn upsert_records(
        &mut self,
        zone: &str,
        records: Vec<ResourceRecordSet>,
    ) -> Result<(), BootstrapError> {
        let names: BTreeSet<(&str, &str)> = records
            .iter()
            .map(|r| (r.name(), r.r#type().as_str()))
            .collect();
        let object = match names.iter().collect::<Vec<_>>().as_slice() {
            [(name, rr_type)] => format!("records {name} {rr_type} in hosted zone {zone}"),
            many => format!("records of {} services in hosted zone {zone}", many.len()),
        };
        let aws = |message: String| BootstrapError::Aws {
            object: object.clone(),
            operation: "ChangeResourceRecordSets",
            message,
        };
        let mut changes = Vec::new();
        for record in records {
            changes.push(
                route53::types::Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(record)
                    .build()
                    .map_err(|e| aws(e.to_string()))?,
            );
        }
        let batch = ChangeBatch::builder()
            .set_changes(Some(changes))
            .comment("vantage bootstrap: guard each Region's record with its health votes")
            .build()
            .map_err(|e| aws(e.to_string()))?;
        let request = self
            .clients
            .route53
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch);
        self.retry
            .run("ChangeResourceRecordSets", || request.clone().send())
            .await
            .map_err(|e| aws_error(&object, "ChangeResourceRecordSets", &e))?;
        Ok(())
    }

    async fn ensure_table(&mut self) -> Result<(), BootstrapError> {
        let (Some(lease), Some(client)) = (&self.layout.lease, &self.clients.dynamodb) else {
            return Ok(());
        };
        let object = format!("lease table {} in {}", lease.table, lease.aws_region);
        if self.mode == Mode::Inspect {
            let status = if self.table_exists {
                Status::Exists
            } else {
                Status::Missing
            };
            self.emit(status, object);
            return Ok(());
        }
        // The lease's own: creates or adopts (checking the key schema), then waits for ACTIVE.
        let created = crate::lease::ensure_lease_table(client, &lease.table)
            .await
            .map_err(|e| BootstrapError::Aws {
                object: object.clone(),
                operation: "CreateTable",
                message: e.to_string(),
            })?;
        self.emit(
            if created {
                Status::Created
            } else {
                Status::Exists
            },
            object,
        );
        Ok(())
    }
}

/// What of an existing alarm differs from the layout's (empty: it is the layout's alarm).
fn alarm_differences(
    want: &AlarmSpec,
    found: &cloudwatch::types::MetricAlarm,
) -> Vec<&'static str> {
    use cloudwatch::types::{ComparisonOperator, Statistic};
    let dimensions: BTreeSet<(&str, &str)> = found
        .dimensions()
        .iter()
        .map(|d| (d.name().unwrap_or_default(), d.value().unwrap_or_default()))
        .collect();
    let want_dimensions: BTreeSet<(&str, &str)> = want
        .dimensions
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    [
        (
            "namespace",
            found.namespace() == Some(want.namespace.as_str()),
        ),
        (
            "metric",
            found.metric_name() == Some(want.metric_name.as_str()),
        ),
        ("dimensions", dimensions == want_dimensions),
        ("statistic", found.statistic() == Some(&Statistic::Minimum)),
        ("period", found.period() == Some(ALARM_PERIOD_SECS)),
        (
            "evaluation periods",
            found.evaluation_periods() == Some(ALARM_EVALUATION_PERIODS),
        ),
        ("threshold", found.threshold() == Some(ALARM_THRESHOLD)),
        (
            "comparison",
            found.comparison_operator() == Some(&ComparisonOperator::LessThanThreshold),
        ),
        (
            "missing data",
            found.treat_missing_data().unwrap_or("missing") == ALARM_TREAT_MISSING_DATA,
        ),
    ]
    .into_iter()
    .filter(|(_, same)| !same)
    .map(|(field, _)| field)
    .collect()
}

fn wrong_type(object: String, kind: Option<HealthCheckType>) -> BootstrapError {
    BootstrapError::Shape {
        object,
        problem: format!(
            "its CallerReference is vantage's but its type is {}; delete it and run bootstrap again",
            kind.as_ref().map_or("unknown", |k| k.as_str())
        ),
    }
}
