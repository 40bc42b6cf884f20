//! What a demo run does: which Regions, vantages and services, for how long, and which faults
//! when (each Region fault for one service, `SERVICE:REGION`, or for all).

use std::time::Duration;

/// One scheduled fault. `service`, where present, narrows a Region fault to that service's
/// endpoints in the Region (and a vantage fault to that vantage's connections to the service);
/// `None` means every service (the only choice for a single-API demo).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The Region's endpoint answers 503 or resets connections.
    Fail {
        region: String,
        service: Option<String>,
    },
    /// Undoes `Fail` and `Slow`.
    Recover {
        region: String,
        service: Option<String>,
    },
    /// Adds latency to every answer from the Region.
    Slow {
        region: String,
        service: Option<String>,
        extra: Duration,
    },
    /// The Region answers 503 to this share of requests: a gray failure, below
    /// `max_failure_ratio` it stays in service and loses weight. `Recover` undoes it.
    Degrade {
        region: String,
        service: Option<String>,
        ratio: f64,
    },
    /// The vantage's own network drops this share of its connections (a vantage-side problem).
    Flaky {
        vantage: String,
        service: Option<String>,
        ratio: f64,
    },
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
            Fault::Fail { region, .. }
            | Fault::Recover { region, .. }
            | Fault::Slow { region, .. }
            | Fault::Degrade { region, .. } => region,
            Fault::Flaky { vantage, .. } => vantage,
            Fault::KillAggregator { id } | Fault::ReviveAggregator { id } => id,
        }
    }

    /// The one service the fault is limited to; `None`: every service.
    pub fn service(&self) -> Option<&str> {
        match self {
            Fault::Fail { service, .. }
            | Fault::Recover { service, .. }
            | Fault::Slow { service, .. }
            | Fault::Degrade { service, .. }
            | Fault::Flaky { service, .. } => service.as_deref(),
            Fault::KillAggregator { .. } | Fault::ReviveAggregator { .. } => None,
        }
    }

    /// The aggregator replica the fault is about, if any.
    pub fn replica(&self) -> Option<&str> {
        match self {
            Fault::KillAggregator { id } | Fault::ReviveAggregator { id } => Some(id),
            _ => None,
        }
    }

    /// `SERVICE:SUBJECT` or the bare subject, as the flags spell it.
    fn address(&self) -> String {
        match self.service() {
            Some(service) => format!("{service}:{}", self.subject()),
            None => self.subject().to_owned(),
        }
    }

    pub fn describe(&self) -> String {
        let at = self.address();
        match self {
            Fault::Fail { .. } => format!("fail {at}"),
            Fault::Recover { .. } => format!("recover {at}"),
            Fault::Slow { extra, .. } => format!("slow {at} +{} ms", extra.as_millis()),
            Fault::Degrade { ratio, .. } => format!("degrade {at} {:.0}% 5xx", ratio * 100.0),
            Fault::Flaky { ratio, .. } => {
                format!("flaky vantage {at} {:.0}%", ratio * 100.0)
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

/// A bad `--fail` / `--recover` / `--slow` / `--degrade` / `--flaky` value.
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

/// `[SERVICE:]NAME`: the service the fault is limited to, if named, and the Region (or
/// vantage). Which names exist is checked later, by [`DemoOptions::validate`].
fn address(text: &str) -> Option<(Option<String>, String)> {
    let (service, name) = match text.split_once(':') {
        Some((service, name)) => (Some(service), name),
        None => (None, text),
    };
    if name.is_empty() || name.contains(':') || service.is_some_and(str::is_empty) {
        return None;
    }
    Some((service.map(str::to_owned), name.to_owned()))
}

/// `[SERVICE:]REGION@SECS` for `--fail` and `--recover`.
pub fn parse_region_at(
    flag: &'static str,
    text: &str,
    recover: bool,
) -> Result<Scheduled, BadFault> {
    let bad = || BadFault {
        flag,
        value: text.to_owned(),
        expected: "expected [SERVICE:]REGION@SECS, e.g. us-east-1@10 or payments:us-east-1@10",
    };
    let (target, at) = text.split_once('@').ok_or_else(bad)?;
    let at = secs(at).ok_or_else(bad)?;
    let (service, region) = address(target).ok_or_else(bad)?;
    let fault = if recover {
        Fault::Recover { region, service }
    } else {
        Fault::Fail { region, service }
    };
    Ok(Scheduled { at, fault })
}

/// `[SERVICE:]REGION@SECS:+MS` for `--slow`.
pub fn parse_slow(text: &str) -> Result<Scheduled, BadFault> {
    let bad = || BadFault {
        flag: "--slow",
        value: text.to_owned(),
        expected: "expected [SERVICE:]REGION@SECS:+MS, e.g. eu-west-1@5:+300",
    };
    let (target, rest) = text.split_once('@').ok_or_else(bad)?;
    let (at, ms) = rest.split_once(':').ok_or_else(bad)?;
    let ms: u64 = ms.trim_start_matches('+').parse().map_err(|_| bad())?;
    let (service, region) = address(target).ok_or_else(bad)?;
    if ms == 0 || ms > 10_000 {
        return Err(bad());
    }
    Ok(Scheduled {
        at: secs(at).ok_or_else(bad)?,
        fault: Fault::Slow {
            region,
            service,
            extra: Duration::from_millis(ms),
        },
    })
}

/// `[SERVICE:]REGION@SECS:RATIO` for `--degrade`: the Region answers 503 to that share of
/// requests from SECS until a `--recover`.
pub fn parse_degrade(text: &str) -> Result<Scheduled, BadFault> {
    let bad = || BadFault {
        flag: "--degrade",
        value: text.to_owned(),
        expected: "expected [SERVICE:]REGION@SECS:RATIO with RATIO in (0, 1), e.g. eu-west-1@5:0.3",
    };
    let (target, rest) = text.split_once('@').ok_or_else(bad)?;
    let (at, ratio) = rest.split_once(':').ok_or_else(bad)?;
    let ratio: f64 = ratio.parse().map_err(|_| bad())?;
    let (service, region) = address(target).ok_or_else(bad)?;
    if !(ratio > 0.0 && ratio < 1.0) {
        return Err(bad());
    }
    Ok(Scheduled {
        at: secs(at).ok_or_else(bad)?,
        fault: Fault::Degrade {
            region,
            service,
            ratio,
        },
    })
}

/// `[SERVICE:]VANTAGE@SECS:RATIO` for `--flaky` (with a service, only the vantage's
/// connections to that service's endpoints drop).
pub fn parse_flaky(text: &str) -> Result<Scheduled, BadFault> {
    let bad = || BadFault {
        flag: "--flaky",
        value: text.to_owned(),
        expected:
            "expected [SERVICE:]VANTAGE@SECS:RATIO with RATIO in (0, 1], e.g. eu-west-1@5:0.5",
    };
    let (target, rest) = text.split_once('@').ok_or_else(bad)?;
    let (at, ratio) = rest.split_once(':').ok_or_else(bad)?;
    let ratio: f64 = ratio.parse().map_err(|_| bad())?;
    let (service, vantage) = address(target).ok_or_else(bad)?;
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(bad());
    }
    Ok(Scheduled {
        at: secs(at).ok_or_else(bad)?,
        fault: Fault::Flaky {
            vantage,
            service,
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
    /// `--services`: the APIs of a `[[services]]` fleet, each served by every Region, each
    /// with its own endpoints in the simulated network. Empty: the single-API demo.
    pub services: Vec<String>,
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
                        service: None,
                    },
                },
                Scheduled {
                    at: Duration::from_secs(25),
                    fault: Fault::Recover {
                        region: "us-east-1".into(),
                        service: None,
                    },
                },
            ],
            regions,
            duration: Some(Duration::from_secs(50)),
            probe_interval: Duration::from_secs(1),
            aggregators: 1,
            services: Vec::new(),
        }
    }

    /// Checks the names (Regions, vantages, services) and that every fault names known ones.
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
        crate::layout::check_services(&self.services)?;
        for s in &self.faults {
            if s.fault.replica().is_some() {
                continue;
            }
            let (known, kind) = match &s.fault {
                Fault::Flaky { .. } => (&self.vantages, "vantages"),
                _ => (&self.regions, "Regions"),
            };
            if !known.iter().any(|k| k == s.fault.subject()) {
                return Err(format!(
                    "{} names {:?}, which is not one of the demo's {kind} ({})",
                    s.fault.describe(),
                    s.fault.subject(),
                    known.join(", ")
                ));
            }
            if let Some(service) = s.fault.service() {
                if self.services.is_empty() {
                    return Err(format!(
                        "{} names service {service:?}, but the demo runs a single API: add \
                         --services (e.g. --services {service},...) or address the Region alone",
                        s.fault.describe()
                    ));
                }
                if !self.services.iter().any(|x| x == service) {
                    return Err(format!(
                        "{} names service {service:?}, which is not one of the demo's services \
                         ({})",
                        s.fault.describe(),
                        self.services.join(", ")
                    ));
                }
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
                    region: "us-east-1".into(),
                    service: None,
                }
            }
        );
        assert_eq!(
            parse_slow("eu-west-1@5:+300").unwrap().fault,
            Fault::Slow {
                region: "eu-west-1".into(),
                service: None,
                extra: Duration::from_millis(300)
            }
        );
        assert_eq!(
            parse_flaky("eu-west-1@2.5:0.5").unwrap().at,
            Duration::from_millis(2500)
        );
        assert_eq!(
            parse_degrade("payments:eu-west-1@5:0.3").unwrap().fault,
            Fault::Degrade {
                region: "eu-west-1".into(),
                service: Some("payments".into()),
                ratio: 0.3
            }
        );
        for bad in [
            "eu-west-1@5",
            "eu-west-1@5:0",
            "eu-west-1@5:1",
            "eu-west-1@5:x",
            "@5:0.3",
        ] {
            let e = parse_degrade(bad).unwrap_err().to_string();
            assert!(
                e.contains("--degrade") && e.contains("RATIO in (0, 1)"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            parse_region_at("--recover", "payments:eu-west-1@10", true)
                .unwrap()
                .fault,
            Fault::Recover {
                region: "eu-west-1".into(),
                service: Some("payments".into()),
            }
        );
        assert_eq!(
            parse_slow("orders:eu-west-1@5:+300")
                .unwrap()
                .fault
                .service(),
            Some("orders")
        );
        let flaky = parse_flaky("payments:us-east-1@2:0.5").unwrap().fault;
        assert_eq!(
            (flaky.service(), flaky.subject()),
            (Some("payments"), "us-east-1")
        );
        assert_eq!(flaky.describe(), "flaky vantage payments:us-east-1 50%");
        for bad in [":eu-west-1@1", "payments:@1", "a:b:c@1"] {
            assert!(parse_region_at("--fail", bad, false).is_err(), "{bad}");
            assert!(parse_slow(&format!("{bad}:+10")).is_err(), "{bad}");
            assert!(parse_flaky(&format!("{bad}:0.5")).is_err(), "{bad}");
        }
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
