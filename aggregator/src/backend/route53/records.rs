//! The weighted records: read per hosted zone in one sweep (`list`), and changed with UPSERTs
//! that alter only Weight (value, TTL, alias target and health check are re-sent as read), so
//! nothing else about a record can drift. Every service's weight changes in one hosted zone go
//! in as few ChangeResourceRecordSets batches as Route 53 takes (at most 1,000 changes, 1,000
//! ResourceRecord elements and 32,000 value characters a request, an UPSERT counting twice);
//! one service's records always travel in the same batch, so its traffic shifts in one step.
//! Each batch then waits for INSYNC, timed in [`INSYNC_METRIC`].

use super::list::{list_record_sets, ListError, NameType};
use super::retry::describe;
use super::units::{RecordSetKey, Unit};
use super::{Inner, INSYNC_METRIC};
use crate::backend::{BackendError, Change};
use aws_sdk_route53 as route53;
use route53::types::{ChangeAction, ChangeBatch, ChangeStatus, ResourceRecordSet};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// GetChange polling: first wait and ceiling (doubling in between).
const INSYNC_POLL_FIRST: Duration = Duration::from_secs(1);
const INSYNC_POLL_MAX: Duration = Duration::from_secs(10);
/// Route 53's limits on one ChangeResourceRecordSets request (an UPSERT counts twice towards
/// the last two).
const MAX_CHANGES: usize = 1000;
const MAX_RESOURCE_RECORDS: usize = 1000;
const MAX_VALUE_CHARACTERS: usize = 32_000;

/// The records of each record set, by set identifier.
pub(super) type Records = BTreeMap<RecordSetKey, BTreeMap<String, ResourceRecordSet>>;

/// One record set's weight UPSERTs and the changes they carry (for messages).
struct Group {
    labels: Vec<String>,
    upserts: Vec<ResourceRecordSet>,
}

/// (changes, ResourceRecord elements, value characters) that UPSERTs of `records` count
/// towards Route 53's limits on one request.
pub(crate) fn upsert_cost(records: &[ResourceRecordSet]) -> (usize, usize, usize) {
    let elements: usize = records.iter().map(|r| r.resource_records().len()).sum();
    let characters = records
        .iter()
        .flat_map(|r| r.resource_records())
        .map(|v| v.value().len())
        .sum::<usize>();
    (records.len(), 2 * elements, 2 * characters)
}

fn pack(groups: Vec<Group>) -> Vec<Vec<Group>> {
    pack_by(groups, |g| upsert_cost(&g.upserts))
}

/// Whole groups packed, in order, into as few ChangeResourceRecordSets requests as Route 53's
/// limits allow (a group larger than a request alone gets one of its own).
pub(crate) fn pack_by<T>(
    groups: Vec<T>,
    cost: impl Fn(&T) -> (usize, usize, usize),
) -> Vec<Vec<T>> {
    let mut batches: Vec<Vec<T>> = Vec::new();
    let mut used = (0, 0, 0);
    for group in groups {
        let (c, r, v) = cost(&group);
        let fits = used.0 + c <= MAX_CHANGES
            && used.1 + r <= MAX_RESOURCE_RECORDS
            && used.2 + v <= MAX_VALUE_CHARACTERS;
        match batches.last_mut() {
            Some(batch) if fits => {
                batch.push(group);
                used = (used.0 + c, used.1 + r, used.2 + v);
            }
            _ => {
                batches.push(vec![group]);
                used = (c, r, v);
            }
        }
    }
    batches
}

impl Inner {
    /// How errors and logs name one unit's record, so an operator can find it in the zone.
    pub(super) fn record_label(&self, unit: &Unit) -> String {
        format!(
            "weighted record {} {} with set identifier {:?} ({})",
            unit.set.name,
            unit.set.rr_type,
            unit.record.set_identifier,
            unit.label()
        )
    }

    /// The records of `sets` (every unit's with `None`), exactly as Route 53 returns them: one
    /// sweep per hosted zone. An error names the zone it came from.
    pub(super) async fn read_records(
        &self,
        sets: Option<&BTreeSet<RecordSetKey>>,
    ) -> Result<Records, (String, ListError)> {
        let mut by_zone: BTreeMap<&str, BTreeSet<NameType>> = BTreeMap::new();
        for unit in self.units.values() {
            if sets.is_some_and(|s| !s.contains(&unit.set)) {
                continue;
            }
            by_zone
                .entry(&unit.set.zone)
                .or_default()
                .insert((unit.set.name.clone(), unit.set.rr_type.clone()));
        }
        let mut out = Records::new();
        for (zone, wanted) in by_zone {
            let sets = list_record_sets(&self.route53, &self.config.retry, zone, &wanted)
                .await
                .map_err(|e| (zone.to_owned(), e))?;
            for ((name, rr_type), records) in sets {
                let key = RecordSetKey {
                    zone: zone.to_owned(),
                    name,
                    rr_type,
                };
                out.insert(key, records);
            }
        }
        Ok(out)
    }

    /// Every weight change, grouped by record set and packed into batches per hosted zone,
    /// each then INSYNC. Every batch is attempted; the first error is returned.
    pub(super) async fn apply_weights(
        &self,
        weights: &[(&Change, &Unit, u8)],
    ) -> Result<(), BackendError> {
        let all = || {
            weights
                .iter()
                .map(|(c, _, _)| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut by_set: BTreeMap<&RecordSetKey, Vec<(&Change, &Unit, u8)>> = BTreeMap::new();
        for w in weights {
            by_set.entry(&w.1.set).or_default().push(*w);
        }
        let wanted: BTreeSet<RecordSetKey> = by_set.keys().map(|k| (*k).clone()).collect();
        // Re-read so every UPSERT carries the record exactly as it is now: values, TTL, alias
        // target and health check survive, only Weight changes.
        let records =
            self.read_records(Some(&wanted))
                .await
                .map_err(|(_, e)| BackendError::Apply {
                    change: all(),
                    message: format!("ListResourceRecordSets: {}", describe(&e)),
                })?;
        let mut errors = Vec::new();
        let mut by_zone: BTreeMap<&str, Vec<Group>> = BTreeMap::new();
        'sets: for (set, changes) in by_set {
            let empty = BTreeMap::new();
            let have = records.get(set).unwrap_or(&empty);
            let mut group = Group {
                labels: changes.iter().map(|(c, _, _)| c.to_string()).collect(),
                upserts: Vec::new(),
            };
            for (_, unit, to) in changes {
                let Some(record) = have.get(&unit.record.set_identifier) else {
                    // The service's weights move together or not at all.
                    errors.push(BackendError::Shape(
                        self.record_label(unit),
                        format!("no such record in hosted zone {}", set.zone),
                    ));
                    continue 'sets;
                };
                if record.weight == Some(i64::from(to)) {
                    continue;
                }
                let mut record = record.clone();
                record.weight = Some(i64::from(to));
                group.upserts.push(record);
            }
            if !group.upserts.is_empty() {
                by_zone.entry(&set.zone).or_default().push(group);
            }
        }
        for (zone, groups) in by_zone {
            for batch in pack(groups) {
                if let Err(e) = self.send_batch(zone, batch).await {
                    errors.push(e);
                }
            }
        }
        let mut errors = errors.into_iter();
        match errors.next() {
            None => Ok(()),
            Some(first) => {
                for other in errors {
                    tracing::error!(backend = "route53", "{other}");
                }
                Err(first)
            }
        }
    }

    /// One ChangeResourceRecordSets request, then INSYNC.
    async fn send_batch(&self, zone: &str, batch: Vec<Group>) -> Result<(), BackendError> {
        let label = batch
            .iter()
            .flat_map(|g| &g.labels)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let apply_error = |message: String| BackendError::Apply {
            change: label.clone(),
            message,
        };
        let mut changes = Vec::new();
        for record in batch.into_iter().flat_map(|g| g.upserts) {
            changes.push(
                route53::types::Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(record)
                    .build()
                    .map_err(|e| apply_error(format!("building the change: {e}")))?,
            );
        }
        let mut comment = format!("vantage: {label}");
        comment.truncate(256);
        let change_batch = ChangeBatch::builder()
            .set_changes(Some(changes))
            .comment(comment)
            .build()
            .map_err(|e| apply_error(format!("building the batch: {e}")))?;
        let request = self
            .route53
            .change_resource_record_sets()
            .hosted_zone_id(zone)
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

#[cfg(test)]
mod tests {
    use super::*;
    use route53::types::{ResourceRecord, RrType};

    fn group(records: usize, value_len: usize) -> Group {
        let upserts = (0..records)
            .map(|i| {
                ResourceRecordSet::builder()
                    .name("x.example.com.")
                    .r#type(RrType::Cname)
                    .set_identifier(format!("s{i}"))
                    .weight(1)
                    .resource_records(
                        ResourceRecord::builder()
                            .value("v".repeat(value_len))
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap()
            })
            .collect();
        Group {
            labels: Vec::new(),
            upserts,
        }
    }

    #[test]
    fn batches_hold_whole_groups_within_route53s_limits() {
        // 200 services of 3 records: an UPSERT counts twice, so 166 groups (498 records, 996
        // elements) fit in the first request and the other 34 in a second.
        let batches = pack((0..200).map(|_| group(3, 20)).collect());
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [166, 34]);
        // Longer values: 32,000 characters counted twice, 3 × 40 × 2 = 240 a group, 133 fit.
        let batches = pack((0..200).map(|_| group(3, 40)).collect());
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [133, 67]);
        assert!(pack(Vec::new()).is_empty());
    }
}
