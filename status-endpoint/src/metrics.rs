//! Prometheus metrics for `/metrics`: each check's last status, result counts, latency
//! histogram and replication lag; rounds run; answers given. Plain atomics and a lock taken
//! once per round, rendered by hand in the text exposition format — no global recorder, so
//! several servers in one process (tests) keep separate numbers.
//!
//! Labels come from small fixed sets: `check` is a configured check name, `status` is
//! pass | warn | fail, `path` is status | deep; the DynamoDB lag gauge adds `table` (a
//! configured table) and `peer` (a Region name, configured or checked as one when listed by
//! DescribeTable).

use crate::checks::{Round, Status};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the check-duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
];

#[derive(Default)]
pub struct Metrics {
    /// Answers by path (status, deep) and status (pass, warn, fail).
    answers: [[AtomicU64; 3]; 2],
    rounds: AtomicU64,
    checks: Mutex<BTreeMap<String, CheckMetrics>>,
}

#[derive(Default)]
struct CheckMetrics {
    last: Option<Status>,
    results: [u64; 3],
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
    lag_seconds: Option<f64>,
    /// DynamoDB heartbeat lag by peer Region, with the table (the check's component id).
    peer_lag_seconds: BTreeMap<String, f64>,
    table: String,
}

/// Which endpoint answered.
#[derive(Debug, Clone, Copy)]
pub enum Path {
    Status = 0,
    Deep = 1,
}

impl Metrics {
    pub fn answer(&self, path: Path, status: Status) {
        self.answers[path as usize][status as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn round(&self, round: &Round) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        for r in &round.results {
            let m = checks.entry(r.name.clone()).or_default();
            let status = r.status();
            m.last = Some(status);
            m.results[status as usize] += 1;
            let seconds = r.elapsed.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    m.buckets[i] += 1;
                }
            }
            m.count += 1;
            m.sum_seconds += seconds;
            let lag_ms = |o: &crate::checks::Observation| {
                (o.measurement == "replicationLag")
                    .then(|| o.value.as_ref()?.as_f64())
                    .flatten()
            };
            m.lag_seconds = r
                .observations
                .iter()
                .filter(|o| o.peer.is_none())
                .find_map(lag_ms)
                .map(|ms| ms / 1000.0);
            // A peer whose lag could not be read this round has no value: its gauge goes away
            // rather than repeat an old number.
            m.peer_lag_seconds = r
                .observations
                .iter()
                .filter_map(|o| Some((o.peer.clone()?, lag_ms(o)? / 1000.0)))
                .collect();
            m.table.clone_from(&r.component_id);
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let statuses = [Status::Pass, Status::Warn, Status::Fail];
        out.push_str("# HELP vantage_status_answers_total Answers given, by endpoint and health status.\n# TYPE vantage_status_answers_total counter\n");
        for (p, path) in ["status", "deep"].iter().enumerate() {
            for s in statuses {
                let n = self.answers[p][s as usize].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "vantage_status_answers_total{{path=\"{path}\",status=\"{}\"}} {n}",
                    s.as_str()
                );
            }
        }
        out.push_str("# HELP vantage_status_rounds_total Rounds of dependency checks run.\n# TYPE vantage_status_rounds_total counter\n");
        let _ = writeln!(
            out,
            "vantage_status_rounds_total {}",
            self.rounds.load(Ordering::Relaxed)
        );
        let checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP vantage_status_check_status Last status of each check: 0 pass, 1 warn, 2 fail.\n# TYPE vantage_status_check_status gauge\n");
        for (name, m) in checks.iter() {
            if let Some(s) = m.last {
                let _ = writeln!(
                    out,
                    "vantage_status_check_status{{check=\"{name}\"}} {}",
                    s.as_number()
                );
            }
        }
        out.push_str("# HELP vantage_status_check_results_total Check results by status.\n# TYPE vantage_status_check_results_total counter\n");
        for (name, m) in checks.iter() {
            for s in statuses {
                let _ = writeln!(
                    out,
                    "vantage_status_check_results_total{{check=\"{name}\",status=\"{}\"}} {}",
                    s.as_str(),
                    m.results[s as usize]
                );
            }
        }
        out.push_str("# HELP vantage_status_check_duration_seconds Time each check took.\n# TYPE vantage_status_check_duration_seconds histogram\n");
        for (name, m) in checks.iter() {
            for (bound, n) in BUCKETS.iter().zip(m.buckets) {
                let _ = writeln!(out, "vantage_status_check_duration_seconds_bucket{{check=\"{name}\",le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "vantage_status_check_duration_seconds_bucket{{check=\"{name}\",le=\"+Inf\"}} {}",
                m.count
            );
            let _ = writeln!(
                out,
                "vantage_status_check_duration_seconds_sum{{check=\"{name}\"}} {}",
                m.sum_seconds
            );
            let _ = writeln!(
                out,
                "vantage_status_check_duration_seconds_count{{check=\"{name}\"}} {}",
                m.count
            );
        }
        out.push_str("# HELP vantage_status_replication_lag_seconds Replication lag seen by the last reader check.\n# TYPE vantage_status_replication_lag_seconds gauge\n");
        for (name, m) in checks.iter() {
            if let Some(lag) = m.lag_seconds {
                let _ = writeln!(
                    out,
                    "vantage_status_replication_lag_seconds{{check=\"{name}\"}} {lag}"
                );
            }
        }
        out.push_str("# HELP vantage_status_dynamodb_replication_lag_seconds Replication lag from each peer Region, from its heartbeat item in this Region's replica.\n# TYPE vantage_status_dynamodb_replication_lag_seconds gauge\n");
        for (name, m) in checks.iter() {
            for (peer, lag) in &m.peer_lag_seconds {
                let _ = writeln!(
                    out,
                    "vantage_status_dynamodb_replication_lag_seconds{{check=\"{name}\",table=\"{}\",peer=\"{peer}\"}} {lag}",
                    m.table
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{CheckResult, ComponentType, Observation};
    use std::time::{Duration, SystemTime};

    #[test]
    fn renders_counts_and_buckets() {
        let m = Metrics::default();
        m.answer(Path::Deep, Status::Fail);
        m.round(&Round {
            elapsed: Duration::from_millis(3),
            results: vec![
                CheckResult {
                    name: "aurora-reader".into(),
                    critical: true,
                    component_type: ComponentType::Datastore,
                    component_id: String::new(),
                    time: SystemTime::now(),
                    elapsed: Duration::from_millis(3),
                    observations: vec![
                        Observation::new("responseTime", Status::Pass),
                        Observation::new("replicationLag", Status::Warn).value(1500u64, Some("ms")),
                    ],
                },
                CheckResult {
                    name: "dynamodb-rates".into(),
                    critical: true,
                    component_type: ComponentType::Datastore,
                    component_id: "rates".into(),
                    time: SystemTime::now(),
                    elapsed: Duration::from_millis(2),
                    observations: vec![
                        Observation::new("responseTime", Status::Pass),
                        Observation::new("replicaStatus", Status::Pass)
                            .value("ACTIVE", None)
                            .peer("us-east-1"),
                        Observation::new("replicationLag", Status::Pass)
                            .value(250u64, Some("ms"))
                            .peer("us-east-1"),
                        // Unread this round: no gauge.
                        Observation::new("replicationLag", Status::Warn).peer("ap-south-1"),
                    ],
                },
            ],
        });
        let text = m.render();
        assert!(!text.contains("peer=\"ap-south-1\""), "{text}");
        assert!(
            !text.contains("vantage_status_replication_lag_seconds{check=\"dynamodb-rates\"}"),
            "{text}"
        );
        for line in [
            "vantage_status_answers_total{path=\"deep\",status=\"fail\"} 1",
            "vantage_status_rounds_total 1",
            "vantage_status_check_status{check=\"aurora-reader\"} 1",
            "vantage_status_check_duration_seconds_bucket{check=\"aurora-reader\",le=\"0.0025\"} 0",
            "vantage_status_check_duration_seconds_bucket{check=\"aurora-reader\",le=\"0.005\"} 1",
            "vantage_status_check_duration_seconds_count{check=\"aurora-reader\"} 1",
            "vantage_status_replication_lag_seconds{check=\"aurora-reader\"} 1.5",
            "vantage_status_dynamodb_replication_lag_seconds{check=\"dynamodb-rates\",table=\"rates\",peer=\"us-east-1\"} 0.25",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
