use super::*;
use crate::prepare::PreparedTarget;
use proptest::prelude::*;
use std::time::Duration;

fn sparse(values: &[u64]) -> SparseLatency {
    let mut h = vantage_protocol::histogram::new_latency_histogram(3).unwrap();
    for v in values {
        h.record(*v).unwrap();
    }
    SparseLatency::from_histogram(&h)
}

/// One series' buckets in range summed, if any is in range.
fn reference_sum(intervals: &BTreeMap<u64, Bucket>, from_ms: u64, to_ms: u64) -> Option<Bucket> {
    let mut sum = Bucket::default();
    let mut any = false;
    for (_, b) in intervals.range(from_ms..to_ms) {
        sum.add(b.clone());
        any = true;
    }
    any.then_some(sum)
}

/// The straightforward reading of an observation (sum each series' buckets, then group by
/// unit and vantage): both the tallies and the rescan must agree with it.
fn reference_observations(
    w: &Window,
    regions: &[String],
    from_ms: u64,
    to_ms: u64,
    lq: f64,
    wq: f64,
) -> Vec<RegionObservation> {
    type Seen = (Bucket, Option<SparseLatency>);
    let mut by_region: BTreeMap<&str, BTreeMap<&str, Seen>> = BTreeMap::new();
    for series in w.targets.values() {
        let Some(region) = &series.unit else {
            continue;
        };
        if !regions.contains(region) || series.kind == TargetKind::Global {
            continue;
        }
        for (vantage, one) in series.vantages.iter(&w.names) {
            let Some(b) = reference_sum(&one.intervals, from_ms, to_ms) else {
                continue;
            };
            let entry = by_region
                .entry(region.as_str())
                .or_default()
                .entry(vantage)
                .or_default();
            if series.kind == TargetKind::Status {
                entry.1 = Some(b.total.clone());
            }
            entry.0.add(b);
        }
    }
    let us = |l: &SparseLatency, q| l.quantile(q).map(Duration::from_micros);
    regions
        .iter()
        .map(|region| RegionObservation {
            region: region.clone(),
            vantages: by_region
                .get(region.as_str())
                .map(|vs| {
                    vs.iter()
                        .map(|(vantage, (b, status))| VantageSample {
                            vantage: (*vantage).to_owned(),
                            attempts: b.attempts,
                            failures: b.failures,
                            limit_latency: us(&b.total, lq),
                            weight_latency: us(status.as_ref().unwrap_or(&b.total), wq),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

fn reference_global_traffic(w: &Window, from_ms: u64, to_ms: u64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for series in w.targets.values() {
        if series.kind != TargetKind::Global {
            continue;
        }
        for one in series.vantages.values() {
            if let Some(b) = reference_sum(&one.intervals, from_ms, to_ms) {
                for (r, n) in b.answered_by {
                    *out.entry(r).or_default() += n;
                }
            }
        }
    }
    out
}

/// A bucket: (interval index, attempts, failures, latency samples, answered by r0/r1).
type Part = (u64, u64, u64, Vec<u64>, u64, u64);

fn part_strategy() -> impl Strategy<Value = Part> {
    (
        0u64..5,
        0u64..20,
        0u64..20,
        proptest::collection::vec(1u64..5_000_000, 0..12),
        0u64..3,
        0u64..3,
    )
}

/// Merges one part of one target's bucket: targets are global, status and deep of Regions
/// r0..r3 (r3 is not configured), vantages v0..v2, intervals 10 s apart.
fn merge_part(w: &mut Window, region: usize, kind: u8, vantage: usize, p: Part) {
    let (id, kind, region) = match kind {
        0 => ("global".to_owned(), TargetKind::Global, None),
        1 => (
            format!("status:r{region}"),
            TargetKind::Status,
            Some(format!("r{region}")),
        ),
        _ => (
            format!("deep:r{region}"),
            TargetKind::Deep,
            Some(format!("r{region}")),
        ),
    };
    let answered_by = [("r0", p.4), ("r1", p.5)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.to_owned(), n))
        .collect();
    w.merge(PreparedReport {
        agent_id: format!("agent-v{vantage}"),
        seq: 1,
        vantage: format!("v{vantage}"),
        interval_start_ms: p.0 * 10_000,
        targets: vec![PreparedTarget {
            id,
            kind,
            region,
            bucket: Bucket {
                attempts: p.1,
                failures: p.2,
                missed_slots: 0,
                total: sparse(&p.3),
                answered_by,
                unmatched: 0,
                failed: BTreeMap::new(),
            },
        }],
    });
}

fn window_strategy() -> impl Strategy<Value = Window> {
    let target = (0usize..4, 0u8..3);
    proptest::collection::vec((target, 0usize..3, part_strategy()), 0..60).prop_map(|entries| {
        let mut w = Window::new();
        for ((region, kind), vantage, p) in entries {
            merge_part(&mut w, region, kind, vantage, p);
        }
        w
    })
}

/// What may happen to a window between two evaluations, and the evaluations themselves.
#[derive(Debug, Clone)]
enum Op {
    Merge(usize, u8, usize, Part),
    /// Prune before interval index.
    Prune(u64),
    /// A reload drops Region rN's targets.
    Forget(usize),
    /// Evaluate over interval indexes `[from, from + len)` at the two quantiles.
    Observe(u64, u64, f64, f64),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..4, 0u8..3, 0usize..3, part_strategy())
            .prop_map(|(r, k, v, p)| Op::Merge(r, k, v, p)),
        1 => (0u64..6).prop_map(Op::Prune),
        1 => (0usize..4).prop_map(Op::Forget),
        3 => (0u64..6, 0u64..5, 0.01f64..=1.0, 0.01f64..=1.0)
            .prop_map(|(f, l, lq, wq)| Op::Observe(f, l, lq, wq)),
    ]
}

fn regions() -> Vec<String> {
    ["r0", "r1", "r2"].map(String::from).to_vec()
}

proptest! {
    /// The proof that the tallies are right: for any sequence of merges (late parts of an
    /// interval included), prunes, reloads and evaluations over ranges that slide either way,
    /// the incremental observations are exactly the rescan's (and the plain reading's).
    #[test]
    fn incremental_observations_equal_the_rescan(ops in proptest::collection::vec(op_strategy(), 0..80)) {
        let mut w = Window::new();
        let regions = regions();
        for op in ops {
            match op {
                Op::Merge(r, k, v, p) => merge_part(&mut w, r, k, v, p),
                Op::Prune(i) => w.prune(i * 10_000),
                Op::Forget(r) => {
                    let suffix = format!(":r{r}");
                    w.forget_targets(|t| !t.ends_with(&suffix));
                }
                Op::Observe(from, len, lq, wq) => {
                    let (from_ms, to_ms) = (from * 10_000, (from + len) * 10_000);
                    let rescan = w.observations_rescan(&regions, from_ms, to_ms, lq, wq);
                    prop_assert_eq!(&rescan, &reference_observations(&w, &regions, from_ms, to_ms, lq, wq));
                    prop_assert_eq!(w.observations(&regions, from_ms, to_ms, lq, wq), rescan);
                }
            }
        }
    }

    #[test]
    fn observations_and_traffic_match_the_reference(
        mut w in window_strategy(),
        from in 0u64..5,
        len in 0u64..5,
        lq in 0.01f64..=1.0,
        wq in 0.01f64..=1.0,
    ) {
        let regions = regions();
        let (from_ms, to_ms) = (from * 10_000, (from + len) * 10_000);
        let reference = reference_observations(&w, &regions, from_ms, to_ms, lq, wq);
        prop_assert_eq!(&w.observations_rescan(&regions, from_ms, to_ms, lq, wq), &reference);
        prop_assert_eq!(&w.observations(&regions, from_ms, to_ms, lq, wq), &reference);
        prop_assert_eq!(w.global_traffic(from_ms, to_ms), reference_global_traffic(&w, from_ms, to_ms));
        // The HTTP layer's counts are the global traffic; no other kind leaks in.
        prop_assert_eq!(
            w.layer_traffic(TargetKind::Global, from_ms, to_ms).counts,
            reference_global_traffic(&w, from_ms, to_ms)
        );
        // Bare ids are one service's: the per-service pass finds the same, under "".
        let by_service = w.layer_traffic_by_service(TargetKind::Global, from_ms, to_ms);
        prop_assert!(by_service.keys().all(|k| k.is_empty()));
        prop_assert_eq!(
            by_service.get("").cloned().unwrap_or_default(),
            w.layer_traffic(TargetKind::Global, from_ms, to_ms)
        );
    }

    #[test]
    fn sparse_merge_matches_hdr(a in proptest::collection::vec(1u64..10_000_000, 0..200), b in proptest::collection::vec(1u64..10_000_000, 0..200)) {
        let mut m = sparse(&a);
        m.merge(&sparse(&b));
        let mut both = a.clone();
        both.extend(&b);
        let mut h = vantage_protocol::histogram::new_latency_histogram(3).unwrap();
        for v in &both { h.record(*v).unwrap(); }
        prop_assert_eq!(m.len(), both.len() as u64);
        let mut ba = sparse(&b);
        ba.merge(&sparse(&a));
        prop_assert_eq!(&ba, &m);
        if !both.is_empty() {
            for q in [0.5, 0.9, 0.99, 1.0] {
                prop_assert_eq!(m.quantile(q), Some(h.value_at_quantile(q)));
                prop_assert_eq!(SparseLatency::quantile_of_both(&sparse(&a), &sparse(&b), q), Some(h.value_at_quantile(q)));
            }
        }
        // Taking b back out leaves exactly a.
        m.subtract(&sparse(&b));
        prop_assert_eq!(m, sparse(&a));
    }
}
