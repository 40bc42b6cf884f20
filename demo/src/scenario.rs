//! What a demo run does: which Regions and vantages, for how long, and which faults when.

use std::time::Duration;

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The Region's endpoint answers 503 or resets connections.
    Fail { region: String },
    /// Undoes `Fail` and `Slow`.
    Recover { region: String },
    /// Adds latency to every answer from the Region.
    Slow { region: String, extra: Duration },
    /// The vantage's own network drops this share of its connections (a vantage-side problem).
    Flaky { vantage: String, ratio: f64 },
    /// Aggregator replica `id` (`1`..`N`) stops: its API and its loop, as if its process or
    /// its Region were lost. Its Route 53 votes freeze at their last value.
    KillAggregator { id: String },
    /// A killed replica starts again from its state file.
    ReviveAggregator { id: String },
}

impl Fault {
    /// The Region or vantage the fault is about.
    pub fn subject(&self) -> &str {
        match self {
            Fault::Fail { region } | Fault::Recover { region } | Fault::Slow { region, .. } => {
                region
            }
            Fault::Flaky { vantage, .. } => vantage,
            Fault::KillAggregator { id } | Fault::ReviveAggregator { id } => id,
        }
    }

    /// The aggregator replica the fault is about, if any.
    pub fn replica(&self) -> Option<&str> {
        match self {
            Fault::KillAggregator { id } | Fault::ReviveAggregator { id } => Some(id),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Fault::Fail { region } => format!("fail {region}"),
            Fault::Recover { region } => format!("recover {region}"),
            Fault::Slow { region, extra } => format!("slow {region} +{} ms", extra.as_millis()),
            Fault::Flaky { vantage, ratio } => {
                format!("flaky vantage {vantage} {:.0}%", ratio * 100.0)
            }
            Fault::KillAggregator { id } => format!("kill aggregator {id}"),
            Fault::ReviveAggregator { id } => format!("revive aggregator {id}"),
        }
    }
}

/// A fault and when it happens, from the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    pub at: Duration,
    pub fault: Fault,
}

/// A bad `--fail` / `--recover` / `--slow` / `--flaky` value.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad {flag} {value:?}: {expected}")]
pub struct BadFault {
    pub flag: &'static str,
    pub value: String,
    pub expected: &'static str,
}

fn secs(text: &str) -> Option<Duration> {
    let v: f64 = text.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v))
}

/// `REGION@SECS` for `--fail` and `--recover`.
pub fn parse_region_at(
    flag: &'static str,
    text: &str,
    recover: bool,
) -> Result<Scheduled, BadFault> {
    let bad = || BadFault {
        flag,
        value: text.to_owned(),
        expected: "expected REGION@SECS, e.g. us-east-1@10",
    };
    let (region, at) = text.split_once('@').ok_or_else(bad)?;
    let at = secs(at).ok_or_else(bad)?;
    if region.is_empty() {
        return Err(bad());
    }
    let region = region.to_owned();
    let fault = if recover {
        Fault::Recover { region }
    } else {
        Fault::Fail { region }
    };
    Ok(Scheduled { at, fault })
}

/// `REGION@SECS:+MS` for `--slow`.
pub fn parse_slow(text: &str) -> Result<Scheduled, BadFault> {
    let bad = || BadFault {
        flag: "--slow",
        value: text.to_owned(),
        expected: "expected REGION@SECS:+MS, e.g. eu-west-1@5:+300",
    };
    let (region, rest) = text.split_once('@').ok_or_else(bad)?;
    let (at, ms) = rest.split_once(':').ok_or_else(bad)?;
    let ms: u64 = ms.trim_start_matches('+').parse().map_err(|_| bad())?;
    if region.is_empty() || ms == 0 || ms > 10_000 {
        return Err(bad());
    }
    Ok(Scheduled {
        at: secs(at).ok_or_else(bad)?,
        fault: Fault::Slow {
            region: region.to_owned(),
            extra: Duration::from_millis(ms),
        },
    })
}

/// `VANTAGE@SECS:RATIO` for `--flaky`.
pub fn parse_flaky(text: &str) -> Result<Scheduled, BadFault> {
    let bad = || BadFault {
        flag: "--flaky",
        value: text.to_owned(),
        expected: "expected VANTAGE@SECS:RATIO with RATIO in (0, 1], e.g. eu-west-1@5:0.5",
    };
    let (vantage, rest) = text.split_once('@').ok_or_else(bad)?;
    let (at, ratio) = rest.split_once(':').ok_or_else(bad)?;
    let ratio: f64 = ratio.parse().map_err(|_| bad())?;
    if vantage.is_empty() || !(ratio > 0.0 && ratio <= 1.0) {
        return Err(bad());
    }
    Ok(Scheduled {
        at: secs(at).ok_or_else(bad)?,
        fault: Fault::Flaky {
            vantage: vantage.to_owned(),
            ratio,
        },
    })
}

/// `ID@SECS` for `--kill-aggregator` and `--revive-aggregator` (ids `1`..`N`; checked against
/// `--aggregators` by [`DemoOptions::validate`]).
pub fn parse_aggregator_at(
    flag: &'static str,
    text: &str,
    revive: bool,
) -> Result<Scheduled, BadFault> {
    let bad = || BadFault {
        flag,
        value: text.to_owned(),
        expected: "expected ID@SECS with ID a replica number (1 to --aggregators), e.g. 1@8",
    };
    let (id, at) = text.split_once('@').ok_or_else(bad)?;
    let n: usize = id.trim().parse().map_err(|_| bad())?;
    if n == 0 || n > MAX_AGGREGATORS {
        return Err(bad());
    }
    let id = n.to_string();
    Ok(Scheduled {
        at: secs(at).ok_or_else(bad)?,
        fault: if revive {
            Fault::ReviveAggregator { id }
        } else {
            Fault::KillAggregator { id }
        },
    })
}

/// At most this many aggregator replicas (as `aggregator.replicas` allows).
pub const MAX_AGGREGATORS: usize = 5;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub regions: Vec<String>,
    pub vantages: Vec<String>,
    /// None: run until stopped.
    pub duration: Option<Duration>,
    pub faults: Vec<Scheduled>,
    /// Probe interval (and report interval) of the agents.
    pub probe_interval: Duration,
    /// Aggregator replicas (`--aggregators`, 1 to 5): 1 is the single aggregator; more run
    /// side by side, combined as Route 53 would, with a lease for the weights.
    pub aggregators: usize,
}

pub const DEFAULT_REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];

impl DemoOptions {
    /// The embedded default: three Regions seen from the same three, one failing at 10 s and
    /// recovering at 25 s, for 50 s.
    pub fn embedded_default() -> Self {
        let regions: Vec<String> = DEFAULT_REGIONS.iter().map(|s| s.to_string()).collect();
        DemoOptions {
            vantages: regions.clone(),
            faults: vec![
                Scheduled {
                    at: Duration::from_secs(10),
                    fault: Fault::Fail {
                        region: "us-east-1".into(),
                    },
                },
                Scheduled {
                    at: Duration::from_secs(25),
                    fault: Fault::Recover {
                        region: "us-east-1".into(),
                    },
                },
            ],
            regions,
            duration: Some(Duration::from_secs(50)),
            probe_interval: Duration::from_secs(1),
            aggregators: 1,
        }
    }

    /// Checks that every fault names a known Region or vantage.
    pub fn validate(&self) -> Result<(), String> {
        if self.regions.is_empty() || self.vantages.is_empty() {
            return Err("need at least one Region and one vantage".into());
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        for name in self.regions.iter().chain(&self.vantages) {
            if !name_ok(name) {
                return Err(format!("{name:?} is not a Region name (like eu-west-1)"));
            }
        }
        if self.aggregators == 0 || self.aggregators > MAX_AGGREGATORS {
            return Err(format!(
                "--aggregators {}: give 1 to {MAX_AGGREGATORS} replicas",
                self.aggregators
            ));
        }
        self.validate_replica_faults()?;
        for s in &self.faults {
            if s.fault.replica().is_some() {
                continue;
            }
            let known = match &s.fault {
                Fault::Flaky { vantage, .. } => self.vantages.contains(vantage),
                other => self.regions.contains(&other.subject().to_owned()),
            };
            if !known {
                return Err(format!(
                    "{} names {:?}, which is not one of the demo's {}",
                    s.fault.describe(),
                    s.fault.subject(),
                    if matches!(s.fault, Fault::Flaky { .. }) {
                        "vantages"
                    } else {
                        "Regions"
                    }
                ));
            }
        }
        Ok(())
    }

    /// Kills and revivals name a replica that exists, come inside the run, and a revival
    /// follows a kill of the same replica (and a kill never hits a replica already down).
    fn validate_replica_faults(&self) -> Result<(), String> {
        let mut timeline: Vec<&Scheduled> = self
            .faults
            .iter()
            .filter(|s| s.fault.replica().is_some())
            .collect();
        timeline.sort_by_key(|s| s.at);
        let mut down = std::collections::BTreeSet::new();
        for s in timeline {
            let id = s.fault.replica().unwrap_or_default();
            let flag = match s.fault {
                Fault::KillAggregator { .. } => "--kill-aggregator",
                _ => "--revive-aggregator",
            };
            let n: usize = id.parse().unwrap_or(0);
            if n == 0 || n > self.aggregators {
                return Err(format!(
                    "{flag} {id}@{}: there is no replica {id}; the demo runs replicas 1 to {} \
                     (set --aggregators to run more)",
                    s.at.as_secs_f64(),
                    self.aggregators
                ));
            }
            if let Some(d) = self.duration {
                if s.at > d {
                    return Err(format!(
                        "{flag} {id}@{}: after the end of the run (--duration {})",
                        s.at.as_secs_f64(),
                        d.as_secs_f64()
                    ));
                }
            }
            match s.fault {
                Fault::KillAggregator { .. } if !down.insert(id) => {
                    return Err(format!(
                        "{flag} {id}@{}: replica {id} is already down then (revive it first)",
                        s.at.as_secs_f64()
                    ))
                }
                Fault::ReviveAggregator { .. } if !down.remove(id) => {
                    return Err(format!(
                        "{flag} {id}@{}: replica {id} is not down then; revive only after \
                         --kill-aggregator {id}@SECS",
                        s.at.as_secs_f64()
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_flags_parse_and_reject_nonsense() {
        assert_eq!(
            parse_region_at("--fail", "us-east-1@10", false).unwrap(),
            Scheduled {
                at: Duration::from_secs(10),
                fault: Fault::Fail {
                    region: "us-east-1".into()
                }
            }
        );
        assert_eq!(
            parse_slow("eu-west-1@5:+300").unwrap().fault,
            Fault::Slow {
                region: "eu-west-1".into(),
                extra: Duration::from_millis(300)
            }
        );
        assert_eq!(
            parse_flaky("eu-west-1@2.5:0.5").unwrap().at,
            Duration::from_millis(2500)
        );
        for bad in ["us-east-1", "@10", "us-east-1@x", "us-east-1@-3"] {
            assert!(parse_region_at("--fail", bad, false).is_err(), "{bad}");
        }
        for bad in ["r@5", "r@5:+0", "r@x:+10", "@5:+10"] {
            assert!(parse_slow(bad).is_err(), "{bad}");
        }
        for bad in ["v@5:0", "v@5:1.5", "v@5", "v@5:x"] {
            assert!(parse_flaky(bad).is_err(), "{bad}");
        }
        let mut o = DemoOptions::embedded_default();
        assert!(o.validate().is_ok());
        o.faults.push(parse_flaky("mars-1@1:0.5").unwrap());
        assert!(o.validate().unwrap_err().contains("mars-1"));
    }

    #[test]
    fn replica_faults_parse_and_are_checked_against_the_run() {
        let kill = |s| parse_aggregator_at("--kill-aggregator", s, false).unwrap();
        let revive = |s| parse_aggregator_at("--revive-aggregator", s, true).unwrap();
        assert_eq!(
            kill("1@8"),
            Scheduled {
                at: Duration::from_secs(8),
                fault: Fault::KillAggregator { id: "1".into() }
            }
        );
        for bad in ["0@3", "6@3", "x@3", "1", "1@", "@3", "1@-1"] {
            assert!(
                parse_aggregator_at("--kill-aggregator", bad, false).is_err(),
                "{bad}"
            );
        }
        let with = |aggregators, faults: Vec<Scheduled>| DemoOptions {
            aggregators,
            faults,
            duration: Some(Duration::from_secs(30)),
            ..DemoOptions::embedded_default()
        };
        assert!(with(3, vec![kill("1@8"), revive("1@15"), kill("1@20")])
            .validate()
            .is_ok());
        let err = with(3, vec![kill("4@8")]).validate().unwrap_err();
        assert!(
            err.contains("no replica 4") && err.contains("1 to 3"),
            "{err}"
        );
        let err = with(1, vec![kill("2@8")]).validate().unwrap_err();
        assert!(err.contains("--aggregators"), "{err}");
        let err = with(3, vec![revive("2@8")]).validate().unwrap_err();
        assert!(err.contains("not down"), "{err}");
        let err = with(3, vec![revive("2@8"), kill("2@9")])
            .validate()
            .unwrap_err();
        assert!(err.contains("not down"), "revive before its kill: {err}");
        let err = with(3, vec![kill("2@31")]).validate().unwrap_err();
        assert!(err.contains("after the end"), "{err}");
        let err = with(3, vec![kill("2@5"), kill("2@6")])
            .validate()
            .unwrap_err();
        assert!(err.contains("already down"), "{err}");
        assert!(with(6, vec![]).validate().is_err());
        assert!(with(0, vec![]).validate().is_err());
    }
}
