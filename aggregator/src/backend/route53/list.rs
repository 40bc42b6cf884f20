//! Reading weighted records with ListResourceRecordSets, exactly as Route 53 holds them: every
//! record set of a hosted zone in one sweep. A page starts at the first record set not yet
//! read and ends wherever Route 53 cuts it, so record sets that sort next to each other (one
//! service's `orders-origin` beside another's `payments-origin`) come back in the same page:
//! a pass costs at most one call per record name, and far fewer when they share a zone.

use super::retry::RetryPolicy;
use aws_sdk_route53 as route53;
use route53::config::http::HttpResponse;
use route53::error::SdkError;
use route53::types::{ResourceRecordSet, RrType};
use std::collections::{BTreeMap, BTreeSet};

/// ListResourceRecordSets page size (the API maximum) and a bound on the pages one record set
/// may take, so a service that never stops saying "truncated" cannot keep us looping.
const LIST_PAGE_SIZE: i32 = 300;
const LIST_MAX_PAGES: usize = 20;

/// What listing the records can fail with.
pub(crate) type ListError = SdkError<
    route53::operation::list_resource_record_sets::ListResourceRecordSetsError,
    HttpResponse,
>;

/// A record set's (name, type): the name lower case with the trailing dot.
pub(crate) type NameType = (String, String);

/// The records of each record set, by set identifier.
pub(crate) type RecordSets = BTreeMap<NameType, BTreeMap<String, ResourceRecordSet>>;

/// How Route 53 orders names: by labels from the right (`com.example.api`), then type; the
/// sweep starts at the first pending name in this order so pages run forward.
fn route53_order((name, rr_type): &NameType) -> (Vec<String>, String) {
    let labels = name
        .trim_end_matches('.')
        .split('.')
        .rev()
        .map(str::to_owned)
        .collect();
    (labels, rr_type.clone())
}

/// A record name as Route 53 lists it: lower case, with the trailing dot.
pub(super) fn normalise(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// The records with a set identifier of every record set in `wanted` (names as configured:
/// lower case, trailing dot), read from `zone` in as few pages as Route 53 allows. A record set
/// with no records maps to an empty map.
pub(crate) async fn list_record_sets(
    client: &route53::Client,
    retry: &RetryPolicy,
    zone: &str,
    wanted: &BTreeSet<NameType>,
) -> Result<RecordSets, ListError> {
    let mut found: RecordSets = wanted
        .iter()
        .map(|k| (k.clone(), BTreeMap::new()))
        .collect();
    let mut pending: Vec<NameType> = wanted.iter().cloned().collect();
    pending.sort_by_key(route53_order);
    pending.reverse(); // the last is the first in Route 53's order: the sweep's next start
    let mut cursor: Option<(NameType, Option<String>)> = None;
    let mut continued = 0;
    for _ in 0..wanted.len().max(1) * LIST_MAX_PAGES {
        let (start, identifier) = match cursor.take() {
            Some(c) => c,
            None => match pending.last() {
                Some(next) => {
                    continued = 0;
                    (next.clone(), None)
                }
                None => break,
            },
        };
        let request = client
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .start_record_name(&start.0)
            .start_record_type(RrType::from(start.1.as_str()))
            .set_start_record_identifier(identifier.clone())
            .max_items(LIST_PAGE_SIZE);
        let page = retry
            .run("ListResourceRecordSets", || request.clone().send())
            .await?;
        let records = page.resource_record_sets();
        let keys: Vec<NameType> = records
            .iter()
            .map(|r| (normalise(&r.name), r.r#type.as_str().to_owned()))
            .collect();
        for (record, key) in records.iter().zip(&keys) {
            if let (Some(map), Some(id)) = (found.get_mut(key), &record.set_identifier) {
                map.insert(id.clone(), record.clone());
            }
        }
        // Records of one name and type are contiguous: every run but the page's last is whole,
        // and so is the last when the page is the zone's end.
        let last = keys.last().cloned();
        let whole = |k: &NameType| Some(k) != last.as_ref() || !page.is_truncated();
        pending.retain(|p| !(keys.contains(p) && whole(p)));
        // The page began past the name it started at: that name has no records.
        if keys.first() != Some(&start) {
            pending.retain(|p| p != &start);
        }
        let Some(last) = last.filter(|l| page.is_truncated() && pending.contains(l)) else {
            continue;
        };
        let next = (
            (
                normalise(page.next_record_name().unwrap_or_default()),
                page.next_record_type()
                    .map_or(last.1.clone(), |t| t.as_str().to_owned()),
            ),
            page.next_record_identifier().map(str::to_owned),
        );
        continued += 1;
        // A service that cannot page inside a weighted group (moto ignores
        // StartRecordIdentifier) would hand back the same page forever.
        if next == (start, identifier) || next.0 != last || continued >= LIST_MAX_PAGES {
            pending.retain(|p| p != &last);
        } else {
            cursor = Some(next);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsOutput;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use route53::types::ResourceRecord;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn record(name: &str, set: &str) -> ResourceRecordSet {
        ResourceRecordSet::builder()
            .name(name)
            .r#type(RrType::Cname)
            .set_identifier(set)
            .weight(10)
            .ttl(60)
            .resource_records(ResourceRecord::builder().value("x").build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn names_sort_as_route53_sorts_them() {
        let key = |n: &str| (n.to_owned(), "CNAME".to_owned());
        let mut names = vec![
            key("b.example.com."),
            key("a.example.org."),
            key("a.example.com."),
        ];
        names.sort_by_key(route53_order);
        assert_eq!(
            names,
            [
                key("a.example.com."),
                key("b.example.com."),
                key("a.example.org.")
            ]
        );
    }

    #[tokio::test]
    async fn neighbouring_record_sets_come_back_in_one_page() {
        // The zone holds two services' records side by side, then an unrelated record: one
        // call reads both, and a name with no records is known to have none.
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let rule = mock!(route53::Client::list_resource_record_sets)
            .match_requests(move |_| {
                seen.fetch_add(1, Ordering::Relaxed);
                true
            })
            .then_output(|| {
                ListResourceRecordSetsOutput::builder()
                    .set_resource_record_sets(Some(vec![
                        record("orders.example.com.", "o-1"),
                        record("orders.example.com.", "o-2"),
                        record("payments.example.com.", "p-1"),
                        record("www.example.com.", "w"),
                    ]))
                    .is_truncated(false)
                    .max_items(300)
                    .build()
                    .unwrap()
            });
        let client = mock_client!(aws_sdk_route53, RuleMode::MatchAny, &[&rule]);
        let wanted: BTreeSet<NameType> = ["orders.example.com.", "payments.example.com."]
            .iter()
            .map(|n| (n.to_string(), "CNAME".to_owned()))
            .collect();
        let sets = list_record_sets(&client, &RetryPolicy::default(), "Z1", &wanted)
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        let ids = |n: &str| {
            sets[&(n.to_owned(), "CNAME".to_owned())]
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("orders.example.com."), ["o-1", "o-2"]);
        assert_eq!(ids("payments.example.com."), ["p-1"]);
    }
}
