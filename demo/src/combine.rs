//! The simulated Route 53 in front of the replicas: per Region, one CLOUDWATCH_METRIC child
//! health check per replica (its vote: the health it last published) and a CALCULATED parent
//! that is healthy when at least `N / 2 + 1` children are. A replica that has stopped
//! publishing keeps its last vote, as `InsufficientDataHealthStatus = LastKnownStatus` does;
//! one that never published counts as healthy (a new health check starts healthy). Weights are
//! whatever the lease holder last wrote to the records: a Region out of service gets no traffic
//! whatever its record says.
//!
//! Pure: the caller says what each replica last published and who last wrote weights; this
//! module only counts, so the majority rule is unit- and property-tested on its own. With
//! `--services` every key here is a unit (`payments/eu-west-1`): each service in each Region
//! has its own health checks and record, as in the fleet's Route 53 layout.

use serde::Serialize;
use std::collections::BTreeMap;

/// What one replica last published: its health vote per Region.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaVotes {
    pub id: String,
    /// Running and publishing. A replica that is down keeps its last votes (frozen).
    pub live: bool,
    /// Region → in service, as last published. Absent: never published (counts as healthy).
    pub health: BTreeMap<String, bool>,
}

/// One child health check's state as the combined view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Vote {
    pub healthy: bool,
    /// The replica is down: this is its last known status, not a fresh one.
    pub frozen: bool,
}

/// The CALCULATED health check of one Region and the weight traffic follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CombinedRegion {
    pub in_service: bool,
    /// Children that say healthy, and the threshold (`N / 2 + 1`).
    pub healthy_votes: usize,
    pub threshold: usize,
    /// Replica id → its vote.
    pub votes: BTreeMap<String, Vote>,
    /// The record's weight (the lease holder's last write), 0 when out of service.
    pub weight: u8,
}

/// The majority of `n` children: the CALCULATED check's `HealthThreshold`.
pub fn threshold(n: usize) -> usize {
    n / 2 + 1
}

/// Route 53's view of every Region, from each replica's last published health and the
/// weights last written by a lease holder (`records`, Region → weight).
pub fn combine(
    regions: &[String],
    replicas: &[ReplicaVotes],
    records: &BTreeMap<String, u8>,
) -> BTreeMap<String, CombinedRegion> {
    let threshold = threshold(replicas.len());
    regions
        .iter()
        .map(|region| {
            let votes: BTreeMap<String, Vote> = replicas
                .iter()
                .map(|r| {
                    let vote = Vote {
                        healthy: r.health.get(region).copied().unwrap_or(true),
                        frozen: !r.live,
                    };
                    (r.id.clone(), vote)
                })
                .collect();
            let healthy_votes = votes.values().filter(|v| v.healthy).count();
            let in_service = healthy_votes >= threshold;
            let weight = if in_service {
                records.get(region).copied().unwrap_or(0)
            } else {
                0
            };
            let combined = CombinedRegion {
                in_service,
                healthy_votes,
                threshold,
                votes,
                weight,
            };
            (region.clone(), combined)
        })
        .collect()
}

/// The records after one round of weight writes: the writer's weights replace them, and
/// without a writer (nobody holds the lease) they stay as they were: weights fail static.
pub fn write_weights(
    records: &BTreeMap<String, u8>,
    writer: Option<&BTreeMap<String, u8>>,
) -> BTreeMap<String, u8> {
    match writer {
        Some(w) => w.clone(),
        None => records.clone(),
    }
}

/// Of the replicas that believe they hold the lease, the one whose write counts: the highest
/// fencing token (a stale holder's writes carry a lower one and are refused).
pub fn weight_writer<'a>(holders: impl IntoIterator<Item = (&'a str, u64)>) -> Option<&'a str> {
    holders
        .into_iter()
        .max_by_key(|(_, token)| *token)
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn replica(id: &str, live: bool, health: &[(&str, bool)]) -> ReplicaVotes {
        ReplicaVotes {
            id: id.into(),
            live,
            health: health.iter().map(|(r, h)| (r.to_string(), *h)).collect(),
        }
    }

    fn regions() -> Vec<String> {
        vec!["eu-west-1".into(), "us-east-1".into()]
    }

    #[test]
    fn a_region_is_out_when_a_majority_of_replicas_say_so() {
        let records = BTreeMap::from([("eu-west-1".into(), 100), ("us-east-1".into(), 200)]);
        let view = combine(
            &regions(),
            &[
                replica("1", true, &[("eu-west-1", false), ("us-east-1", true)]),
                replica("2", true, &[("eu-west-1", false), ("us-east-1", true)]),
                replica("3", true, &[("eu-west-1", true), ("us-east-1", false)]),
            ],
            &records,
        );
        let eu = &view["eu-west-1"];
        assert!(!eu.in_service);
        assert_eq!((eu.healthy_votes, eu.threshold, eu.weight), (1, 2, 0));
        let us = &view["us-east-1"];
        assert!(us.in_service, "one replica alone cannot take a Region out");
        assert_eq!((us.healthy_votes, us.weight), (2, 200));
    }

    #[test]
    fn a_dead_replica_keeps_its_last_vote_and_the_others_still_decide() {
        let r = |live, eu| replica("1", live, &[("eu-west-1", eu)]);
        // Replica 1 voted eu-west-1 out, then died: its vote stays out (last known status).
        let view = combine(
            &regions(),
            &[
                r(false, false),
                replica("2", true, &[("eu-west-1", false)]),
                replica("3", true, &[("eu-west-1", true)]),
            ],
            &BTreeMap::new(),
        );
        let eu = &view["eu-west-1"];
        assert!(!eu.in_service);
        assert_eq!(
            eu.votes["1"],
            Vote {
                healthy: false,
                frozen: true
            }
        );
        // The two live ones recover it: 2 of 3 healthy, whatever the frozen vote says.
        let view = combine(
            &regions(),
            &[
                r(false, false),
                replica("2", true, &[("eu-west-1", true)]),
                replica("3", true, &[("eu-west-1", true)]),
            ],
            &BTreeMap::new(),
        );
        assert!(view["eu-west-1"].in_service);
    }

    #[test]
    fn one_replica_is_todays_single_aggregator_and_unpublished_means_healthy() {
        let one = |h| {
            combine(
                &regions(),
                &[replica("1", true, &[("eu-west-1", h)])],
                &BTreeMap::new(),
            )
        };
        assert!(one(true)["eu-west-1"].in_service);
        assert!(!one(false)["eu-west-1"].in_service);
        assert!(
            one(false)["us-east-1"].in_service,
            "never published: healthy"
        );
        assert_eq!(threshold(1), 1);
        assert_eq!(threshold(2), 2);
        assert_eq!(threshold(3), 2);
        assert_eq!(threshold(4), 3);
        assert_eq!(threshold(5), 3);
    }

    #[test]
    fn weights_fail_static_without_a_holder_and_the_highest_token_writes() {
        let old = BTreeMap::from([("eu-west-1".to_string(), 50u8)]);
        let new = BTreeMap::from([("eu-west-1".to_string(), 90u8)]);
        assert_eq!(write_weights(&old, None), old);
        assert_eq!(write_weights(&old, Some(&new)), new);
        assert_eq!(weight_writer([("1", 4), ("2", 7)]), Some("2"));
        assert_eq!(weight_writer(std::iter::empty()), None);
    }

    fn votes_strategy() -> impl Strategy<Value = Vec<(bool, bool)>> {
        // (healthy, live) for each of 1..=5 replicas.
        proptest::collection::vec((any::<bool>(), any::<bool>()), 1..=5)
    }

    fn build(votes: &[(bool, bool)]) -> Vec<ReplicaVotes> {
        votes
            .iter()
            .enumerate()
            .map(|(i, (h, live))| replica(&(i + 1).to_string(), *live, &[("eu-west-1", *h)]))
            .collect()
    }

    fn in_service(votes: &[(bool, bool)]) -> bool {
        combine(&regions(), &build(votes), &BTreeMap::new())["eu-west-1"].in_service
    }

    proptest! {
        /// A replica falling silent changes nothing by itself: its vote freezes at what it
        /// last published, so the Region's state is what it was while the replica spoke.
        #[test]
        fn one_silent_replica_never_flips_the_majority_by_itself(
            votes in votes_strategy(),
            silent in 0usize..5,
        ) {
            let silent = silent % votes.len();
            let mut speaking = votes.clone();
            speaking[silent].1 = true;
            let mut quiet = votes.clone();
            quiet[silent].1 = false;
            prop_assert_eq!(in_service(&speaking), in_service(&quiet));
        }

        /// With three or more replicas, the live ones agreeing decide whatever the silent
        /// one's frozen vote says: one dead replica can neither keep a Region out nor take it
        /// out against the others.
        #[test]
        fn the_live_replicas_agreeing_outvote_one_frozen_vote(
            n in 3usize..=5,
            silent_vote: bool,
            verdict: bool,
            silent in 0usize..5,
        ) {
            let silent = silent % n;
            let votes: Vec<(bool, bool)> = (0..n)
                .map(|i| if i == silent { (silent_vote, false) } else { (verdict, true) })
                .collect();
            prop_assert_eq!(in_service(&votes), verdict);
        }

        /// The combined state is exactly the majority rule over the published votes.
        #[test]
        fn the_combined_state_is_the_majority_of_published_votes(votes in votes_strategy()) {
            let healthy = votes.iter().filter(|(h, _)| *h).count();
            prop_assert_eq!(in_service(&votes), healthy >= threshold(votes.len()));
        }
    }
}
