//! Rules 1 and 2: what each vantage says of a Region, and the quorum verdict those opinions
//! add up to. Samples are merged per vantage first, so a vantage that reports twice in a window
//! is still one voice and cannot reach a quorum on its own.

use crate::model::{Policy, Quorum, RegionObservation, VantageSample, Verdict};
use std::collections::{BTreeMap, BTreeSet};

/// What one vantage says of one Region: see rule 1 of the module documentation.
pub fn vantage_verdict(policy: &Policy, sample: &VantageSample) -> Verdict {
    if sample.attempts == 0 || sample.attempts < policy.min_attempts {
        Verdict::Unknown
    } else if sample_failure_ratio(sample) > policy.max_failure_ratio
        || latency_exceeded(policy, sample)
    {
        Verdict::Down
    } else {
        Verdict::Up
    }
}

/// The quorum verdict of a Region from its vantages' verdicts: see rule 2 of the module
/// documentation. `Unknown` verdicts do not vote.
pub fn region_verdict(policy: &Policy, verdicts: &[Verdict]) -> Verdict {
    tally(policy, verdicts).verdict
}

/// Votes of the vantages with data, and the verdict they give.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tally {
    pub(super) up: usize,
    pub(super) down: usize,
    pub(super) needed: usize,
    pub(super) verdict: Verdict,
}

pub(super) fn tally(policy: &Policy, verdicts: &[Verdict]) -> Tally {
    tally_with_floor(policy, verdicts, 2)
}

/// [`tally`] with the quorum's floor given: 2, or 1 when broken vantages were left out and the
/// one left is confirmed by its control target (see `vantages.rs`).
pub(super) fn tally_with_floor(policy: &Policy, verdicts: &[Verdict], floor: usize) -> Tally {
    let up = verdicts.iter().filter(|v| **v == Verdict::Up).count();
    let down = verdicts.iter().filter(|v| **v == Verdict::Down).count();
    let voters = up + down;
    let needed = match policy.quorum {
        Quorum::Majority => voters / 2 + 1,
        Quorum::AtLeast(n) => n,
    }
    .max(floor.max(1));
    let verdict = if voters == 0 {
        Verdict::Unknown
    } else if down >= needed {
        Verdict::Down
    } else if up > 0 {
        Verdict::Up
    } else {
        Verdict::Unknown
    };
    Tally {
        up,
        down,
        needed,
        verdict,
    }
}

fn sample_failure_ratio(sample: &VantageSample) -> f64 {
    if sample.attempts == 0 {
        0.0
    } else {
        sample.failures.min(sample.attempts) as f64 / sample.attempts as f64
    }
}

fn latency_exceeded(policy: &Policy, sample: &VantageSample) -> bool {
    matches!(
        (policy.max_latency, sample.limit_latency),
        (Some(max), Some(latency)) if latency > max
    )
}

/// Observations of configured Regions, one merged sample per (Region, vantage).
pub(super) fn merge_observations<'a>(
    names: &BTreeSet<&str>,
    observations: &'a [RegionObservation],
) -> BTreeMap<&'a str, BTreeMap<&'a str, VantageSample>> {
    let mut merged: BTreeMap<&str, BTreeMap<&str, VantageSample>> = BTreeMap::new();
    for observation in observations {
        if !names.contains(observation.region.as_str()) {
            continue;
        }
        let region = merged.entry(observation.region.as_str()).or_default();
        for sample in &observation.vantages {
            region
                .entry(sample.vantage.as_str())
                .and_modify(|m| {
                    m.attempts = m.attempts.saturating_add(sample.attempts);
                    m.failures = m.failures.saturating_add(sample.failures);
                    m.limit_latency = m.limit_latency.max(sample.limit_latency);
                    m.weight_latency = m.weight_latency.max(sample.weight_latency);
                })
                // The vantage is the key: the merged sample does not copy its name.
                .or_insert_with(|| VantageSample {
                    vantage: String::new(),
                    ..*sample
                });
        }
    }
    merged
}
