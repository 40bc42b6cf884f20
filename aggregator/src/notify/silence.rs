//! Which vantages have stopped reporting: the time of each vantage's last authenticated
//! report, and at each evaluation the ones silent for `agent_silent_after` report intervals,
//! told once when they fall silent and once when they report again. Pure: time is an
//! argument. A vantage never heard from counts from the first check (the aggregator's start),
//! so a restart does not page for every vantage at once.

use std::collections::{BTreeMap, BTreeSet};

/// A change in whether a vantage reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SilenceChange {
    /// No report since `last_ms` (`None`: not since the aggregator started).
    Silent {
        vantage: String,
        last_ms: Option<u64>,
    },
    Reporting {
        vantage: String,
    },
}

#[derive(Debug, Default)]
pub struct Silence {
    last: BTreeMap<String, u64>,
    silent: BTreeSet<String>,
    started_ms: Option<u64>,
}

impl Silence {
    /// A report from `vantage` arrived at `now_ms`.
    pub fn heard(&mut self, vantage: &str, now_ms: u64) {
        let last = self.last.entry(vantage.to_owned()).or_default();
        *last = (*last).max(now_ms);
    }

    /// The changes at `now_ms` among `vantages` (the fleet's), silent after `after_ms`.
    pub fn check(&mut self, vantages: &[String], now_ms: u64, after_ms: u64) -> Vec<SilenceChange> {
        let started = *self.started_ms.get_or_insert(now_ms);
        let mut out = Vec::new();
        for v in vantages {
            let last = self.last.get(v).copied();
            let quiet = now_ms.saturating_sub(last.unwrap_or(started)) >= after_ms;
            match (quiet, self.silent.contains(v)) {
                (true, false) => {
                    self.silent.insert(v.clone());
                    out.push(SilenceChange::Silent {
                        vantage: v.clone(),
                        last_ms: last,
                    });
                }
                (false, true) => {
                    self.silent.remove(v);
                    out.push(SilenceChange::Reporting { vantage: v.clone() });
                }
                _ => {}
            }
        }
        // Vantages removed from the fleet are forgotten.
        self.silent.retain(|v| vantages.contains(v));
        self.last.retain(|v, _| vantages.contains(v));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_once_after_the_limit_then_reporting_once_when_heard_again() {
        let vs = vec!["eu-west-1".to_owned(), "us-east-1".to_owned()];
        let mut s = Silence::default();
        s.heard("eu-west-1", 1_000);
        assert!(s.check(&vs, 1_000, 30_000).is_empty());
        s.heard("eu-west-1", 20_000);
        // us-east-1 never reported: silent 30 s after the first check; eu-west-1 heard at 20 s.
        assert_eq!(
            s.check(&vs, 31_000, 30_000),
            vec![SilenceChange::Silent {
                vantage: "us-east-1".into(),
                last_ms: None
            }]
        );
        assert!(s.check(&vs, 40_000, 30_000).is_empty());
        assert_eq!(
            s.check(&vs, 50_000, 30_000),
            vec![SilenceChange::Silent {
                vantage: "eu-west-1".into(),
                last_ms: Some(20_000)
            }]
        );
        s.heard("us-east-1", 51_000);
        assert_eq!(
            s.check(&vs, 52_000, 30_000),
            vec![SilenceChange::Reporting {
                vantage: "us-east-1".into()
            }]
        );
        assert!(s.check(&vs, 53_000, 30_000).is_empty());
    }
}
