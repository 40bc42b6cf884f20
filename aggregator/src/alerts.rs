//! Alerts as states, not as evaluations: the decision core says at every evaluation which
//! alerts hold; [`AlertBook`] turns that into what people are told. An alert is raised once
//! with its reason, repeated at most every `alert_repeat` while it holds, and resolved once
//! when it stops holding. The decision log, `vantage_alert_active{alert, service, region}` and
//! `GET /v1/state` (`active_alerts`) all follow the book, so they always agree. Pure: time is
//! an argument.

use crate::model::{Alert, AlertKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Default `aggregator.alert_repeat`.
pub const DEFAULT_ALERT_REPEAT: Duration = Duration::from_secs(600);

/// What identifies one alert across evaluations: its kind, service and Region.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlertKey {
    pub kind: AlertKind,
    pub service: String,
    pub region: Option<String>,
}

impl AlertKind {
    /// snake_case, as on the wire and in the `alert` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::FailOpen => "fail_open",
            AlertKind::CorrelatedFailure => "correlated_failure",
            AlertKind::ChangeLimit => "change_limit",
            AlertKind::Frozen => "frozen",
            AlertKind::PinnedAgainstMeasurements => "pinned_against_measurements",
            AlertKind::Forced => "forced",
            AlertKind::ArcSafetyRule => "arc_safety_rule",
            AlertKind::VantageSuspect => "vantage_suspect",
        }
    }
}

/// One alert that holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveAlert {
    pub kind: AlertKind,
    pub service: String,
    pub region: Option<String>,
    /// The latest reason.
    pub message: String,
    /// When it was raised (Unix ms).
    pub since_ms: u64,
    /// When it was last told (raised or repeated).
    #[serde(skip)]
    told_ms: u64,
}

/// What to tell about one alert now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Raised,
    Repeated,
    Resolved,
}

/// The alerts that hold, and when each was raised and last told.
#[derive(Debug, Default)]
pub struct AlertBook {
    active: BTreeMap<AlertKey, ActiveAlert>,
}

impl AlertBook {
    /// Takes the alerts that hold at `now_ms` and returns what to tell, in key order: new ones
    /// raised, ones told `repeat` or longer ago repeated, ones gone resolved.
    pub fn update(
        &mut self,
        holding: &[Alert],
        now_ms: u64,
        repeat: Duration,
    ) -> Vec<(AlertState, ActiveAlert)> {
        let repeat_ms = u64::try_from(repeat.as_millis()).unwrap_or(u64::MAX);
        let mut now_holding: BTreeMap<AlertKey, &Alert> = BTreeMap::new();
        for a in holding {
            let key = AlertKey {
                kind: a.kind,
                service: a.service.clone(),
                region: a.region.clone(),
            };
            now_holding.insert(key, a);
        }
        let mut told = Vec::new();
        let gone: Vec<AlertKey> = self
            .active
            .keys()
            .filter(|k| !now_holding.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(a) = self.active.remove(&key) {
                told.push((AlertState::Resolved, a));
            }
        }
        for (key, a) in now_holding {
            match self.active.get_mut(&key) {
                None => {
                    let active = ActiveAlert {
                        kind: a.kind,
                        service: a.service.clone(),
                        region: a.region.clone(),
                        message: a.message.clone(),
                        since_ms: now_ms,
                        told_ms: now_ms,
                    };
                    told.push((AlertState::Raised, active.clone()));
                    self.active.insert(key, active);
                }
                Some(active) => {
                    active.message = a.message.clone();
                    if now_ms.saturating_sub(active.told_ms) >= repeat_ms {
                        active.told_ms = now_ms;
                        told.push((AlertState::Repeated, active.clone()));
                    }
                }
            }
        }
        told
    }

    /// The alerts that hold now, in key order.
    pub fn active(&self) -> Vec<ActiveAlert> {
        self.active.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn alert(kind: AlertKind, region: &str) -> Alert {
        Alert {
            kind,
            service: "orders".into(),
            region: Some(region.into()),
            message: format!("{kind:?} {region}"),
        }
    }

    #[test]
    fn raised_once_repeated_after_the_interval_resolved_once() {
        let mut book = AlertBook::default();
        let repeat = Duration::from_secs(600);
        let a = alert(AlertKind::FailOpen, "eu-west-1");
        let told = book.update(std::slice::from_ref(&a), 0, repeat);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].0, AlertState::Raised);
        // Every second for ten minutes: nothing more to tell.
        for s in 1..600 {
            assert!(book
                .update(std::slice::from_ref(&a), s * 1000, repeat)
                .is_empty());
        }
        let told = book.update(std::slice::from_ref(&a), 600_000, repeat);
        assert_eq!(told[0].0, AlertState::Repeated);
        assert_eq!(told[0].1.since_ms, 0);
        assert_eq!(book.active().len(), 1);
        let told = book.update(&[], 601_000, repeat);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].0, AlertState::Resolved);
        assert!(book.update(&[], 602_000, repeat).is_empty());
        assert!(book.active().is_empty());
    }

    proptest! {
        /// Whatever holds when: each episode of an alert is raised exactly once and resolved
        /// at most once (exactly once if it ended), and never told more often than `repeat`.
        #[test]
        fn each_episode_is_raised_once_and_resolved_once(
            holds in proptest::collection::vec(proptest::bool::ANY, 1..200),
            step_ms in 100u64..5_000,
        ) {
            let mut book = AlertBook::default();
            let repeat = Duration::from_secs(30);
            let a = alert(AlertKind::CorrelatedFailure, "us-east-1");
            let (mut raised, mut resolved, mut episodes) = (0, 0, 0);
            let mut last_told: Option<u64> = None;
            let mut was = false;
            for (i, h) in holds.iter().enumerate() {
                let now = i as u64 * step_ms;
                if *h && !was {
                    episodes += 1;
                }
                let holding = if *h { vec![a.clone()] } else { vec![] };
                for (state, _) in book.update(&holding, now, repeat) {
                    match state {
                        AlertState::Raised => raised += 1,
                        AlertState::Resolved => resolved += 1,
                        AlertState::Repeated => {
                            let last = last_told.expect("told before");
                            prop_assert!(now - last >= 30_000);
                        }
                    }
                    if state != AlertState::Resolved {
                        last_told = Some(now);
                    }
                }
                was = *h;
            }
            prop_assert_eq!(raised, episodes);
            prop_assert_eq!(resolved, if was { episodes - 1 } else { episodes });
        }
    }
}
