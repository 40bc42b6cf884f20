//! The weighted records: read with ListResourceRecordSets exactly as Route 53 holds them, and
//! changed as ONE ChangeResourceRecordSets batch of UPSERTs that alters only Weight (value, TTL,
//! alias target and health check are re-sent as read), so traffic shifts in one step and
//! nothing else about a record can drift; then GetChange until INSYNC, timed in
//! [`INSYNC_METRIC`].

use super::retry::describe;
use super::{Inner, RegionRecord, RetryPolicy, INSYNC_METRIC};
use crate::backend::{BackendError, Change};
use aws_sdk_route53 as route53;
use route53::config::http::HttpResponse;
use route53::error::SdkError;
use route53::types::{ChangeAction, ChangeBatch, ChangeStatus, ResourceRecordSet, RrType};
use std::collections::BTreeMap;
use std::time::Duration;

/// GetChange polling: first wait and ceiling (doubling in between).
const INSYNC_POLL_FIRST: Duration = Duration::from_secs(1);
const INSYNC_POLL_MAX: Duration = Duration::from_secs(10);
/// ListResourceRecordSets page size (the API maximum) and a bound on pages, so a service that
/// never stops saying "truncated" cannot keep us looping.
const LIST_PAGE_SIZE: i32 = 300;
const LIST_MAX_PAGES: usize = 20;

impl Inner {
    /// How errors and logs name one Region's record, so an operator can find it in the zone.
    pub(super) fn record_label(&self, region: &str, want: &RegionRecord) -> String {
        format!(
            "weighted record {} {} with set identifier {:?} (Region {region})",
            self.config.record_name, self.config.record_type, want.set_identifier
        )
    }

    /// The weighted records of the configured name and type, by set identifier, exactly as
    /// Route 53 returns them.
    pub(super) async fn weighted_records(
        &self,
    ) -> Result<BTreeMap<String, ResourceRecordSet>, ListError> {
        let c = &self.config;
        list_weighted_records(
            &self.route53,
            &c.retry,
            &c.hosted_zone_id,
            &c.record_name,
            &c.record_type,
        )
        .await
    }

    /// One ChangeResourceRecordSets batch with every weight change, then INSYNC.
    pub(super) async fn apply_weights(
        &self,
        weights: &[(&Change, &str, u8)],
    ) -> Result<(), BackendError> {
        let label = weights
            .iter()
            .map(|(c, _, _)| c.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let apply_error = |message: String| BackendError::Apply {
            change: label.clone(),
            message,
        };
        // Re-read so every UPSERT carries the record exactly as it is now: values, TTL, alias
        // target and health check survive, only Weight changes.
        let records = self
            .weighted_records()
            .await
            .map_err(|e| apply_error(format!("ListResourceRecordSets: {}", describe(&e))))?;
        let mut batch = Vec::new();
        for (_, region, to) in weights {
            let want = &self.config.regions[*region];
            let Some(record) = records.get(&want.set_identifier) else {
                return Err(BackendError::Shape(
                    self.record_label(region, want),
                    format!(
                        "no such record in hosted zone {}",
                        self.config.hosted_zone_id
                    ),
                ));
            };
            if record.weight == Some(i64::from(*to)) {
                continue;
            }
            let mut record = record.clone();
            record.weight = Some(i64::from(*to));
            batch.push(
                route53::types::Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(record)
                    .build()
                    .map_err(|e| apply_error(format!("building the change: {e}")))?,
            );
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut comment = format!("vantage: {label}");
        comment.truncate(256);
        let change_batch = ChangeBatch::builder()
            .set_changes(Some(batch))
            .comment(comment)
            .build()
            .map_err(|e| apply_error(format!("building the batch: {e}")))?;
        let request = self
            .route53
            .change_resource_record_sets()
            .hosted_zone_id(&self.config.hosted_zone_id)
            .change_batch(change_batch);
        let started = tokio::time::Instant::now();
        let out = self
            .config
            .retry
            .run("ChangeResourceRecordSets", || {
                self.count_write();
                request.clone().send()
            })
            .await
            .map_err(|e| apply_error(format!("ChangeResourceRecordSets: {}", describe(&e))))?;
        tracing::info!(backend = "route53", "applied: {label}");
        let Some(info) = out.change_info else {
            return Ok(());
        };
        if info.status != ChangeStatus::Insync {
            self.wait_insync(&info.id).await.map_err(apply_error)?;
        }
        metrics::histogram!(INSYNC_METRIC).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Polls GetChange with growing pauses until INSYNC or `insync_timeout`.
    pub(super) async fn wait_insync(&self, id: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.config.insync_timeout;
        let mut pause = INSYNC_POLL_FIRST;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(format!(
                    "change {id} still PENDING after {:?}; Route 53 accepted it and keeps propagating",
                    self.config.insync_timeout
                ));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            let request = self.route53.get_change().id(id);
            let out = self
                .config
                .retry
                .run("GetChange", || request.clone().send())
                .await
                .map_err(|e| format!("GetChange {id}: {}", describe(&e)))?;
            if out
                .change_info
                .is_some_and(|c| c.status == ChangeStatus::Insync)
            {
                return Ok(());
            }
            pause = (pause * 2).min(INSYNC_POLL_MAX);
        }
    }
}

/// What listing the records can fail with.
pub(crate) type ListError = SdkError<
    route53::operation::list_resource_record_sets::ListResourceRecordSetsError,
    HttpResponse,
>;

/// The records named `record_name` of `record_type` in `zone` that have a set identifier, by
/// set identifier, exactly as Route 53 returns them (paged, with a bound on pages).
pub(crate) async fn list_weighted_records(
    client: &route53::Client,
    retry: &RetryPolicy,
    zone: &str,
    record_name: &str,
    record_type: &str,
) -> Result<BTreeMap<String, ResourceRecordSet>, ListError> {
    let rr_type = RrType::from(record_type);
    let mut found = BTreeMap::new();
    let mut start = (record_name.to_owned(), rr_type.clone(), None::<String>);
    for _ in 0..LIST_MAX_PAGES {
        let request = client
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .start_record_name(&start.0)
            .start_record_type(start.1.clone())
            .set_start_record_identifier(start.2.clone())
            .max_items(LIST_PAGE_SIZE);
        let page = retry
            .run("ListResourceRecordSets", || request.clone().send())
            .await?;
        let mut past_ours = false;
        for record in page.resource_record_sets() {
            let ours = record
                .name
                .trim_end_matches('.')
                .eq_ignore_ascii_case(record_name.trim_end_matches('.'))
                && record.r#type == rr_type;
            if !ours {
                past_ours = true;
                break;
            }
            if let Some(id) = &record.set_identifier {
                found.insert(id.clone(), record.clone());
            }
        }
        if past_ours || !page.is_truncated() {
            break;
        }
        let next = (
            page.next_record_name().unwrap_or_default().to_owned(),
            page.next_record_type().cloned().unwrap_or(rr_type.clone()),
            page.next_record_identifier().map(str::to_owned),
        );
        if next == start {
            // A service that cannot page inside a weighted group (moto ignores
            // StartRecordIdentifier) would hand back the same page forever.
            break;
        }
        start = next;
    }
    Ok(found)
}
