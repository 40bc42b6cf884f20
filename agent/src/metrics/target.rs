//! One target's series: its labels ([`TargetLabels`]) and the handles of every series it
//! records into ([`TargetSeries`]), resolved once so that a probe touches atomics only.

use super::{
    HistogramPhases, CERT_EXPIRY, DNS_ANSWERS_TOTAL, DNS_ANSWER_TTL_SECONDS, GLOBAL_REGION,
    MISSED_SLOTS_TOTAL, PROBE_PHASE_ELAPSED_SECONDS, PROBE_PHASE_OBSERVATIONS_TOTAL,
    PROBE_PHASE_SECONDS, PROBE_TOTAL, UNMATCHED_REGION,
};
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Label};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};
use vantage_probe::ProbeResult;
use vantage_protocol::{Outcome, Phase};

/// Labels of one target, built once per target (cheap clones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLabels {
    /// The service the target belongs to: a `[[services]]` name, or `fleet.name` for a
    /// single-API file.
    pub service: String,
    /// The target id from the fleet file: `global`, `status:<region>`, `deep:<region>` or
    /// `dns`, after `<service>/` in a file with `[[services]]`.
    pub target: String,
    /// The target's Region, or [`GLOBAL_REGION`] for the global endpoint.
    pub region: String,
}

impl TargetLabels {
    /// Labels for `target` of `service`, which belongs to `region` (`None`: the global
    /// endpoint or the DNS target).
    pub fn new(
        service: impl Into<String>,
        target: impl Into<String>,
        region: Option<&str>,
    ) -> Self {
        TargetLabels {
            service: service.into(),
            target: target.into(),
            region: region.unwrap_or(GLOBAL_REGION).to_owned(),
        }
    }
}

/// The Prometheus series of one target, their label sets built once.
///
/// Looking a series up by name and labels hashes and compares every label, and the labels are
/// owned strings cloned per call: done per probe that is several allocations and hash-map
/// lookups for each of six phases, at 1,000 probes a second a measurable share of the agent's
/// CPU. The handles are resolved on first use and kept, so a probe touches atomics only. They
/// bind to the recorder installed when first used (the global one in the agent, a local one in
/// tests).
pub struct TargetSeries {
    labels: TargetLabels,
    histograms: HistogramPhases,
    /// By position in [`Outcome::ALL`]; created when that outcome first happens.
    outcomes: [OnceLock<Counter>; Outcome::COUNT],
    /// By [`Phase::index`]; created when that phase is first timed.
    phases: [OnceLock<PhaseSeries>; Phase::COUNT],
    cert_expiry: OnceLock<Gauge>,
    missed: Counter,
}

/// A phase's series: a histogram, or the elapsed/observations pair.
enum PhaseSeries {
    Histogram(Histogram),
    Sums {
        elapsed: Gauge,
        observations: Counter,
    },
}

impl TargetSeries {
    /// The series of a target with `labels`, exporting the phases in `histograms` as
    /// histograms. Creates the missed-slot counter at zero, so the agent's dashboard sees every
    /// target's schedule and `increase()` sees the first miss. Outcome counters are not created
    /// ahead: an outcome that never happened costs no series (thirteen outcome codes per target
    /// would be most of `/metrics` at fleet scale); dashboards read them with `sum(...)` or `or`.
    pub fn register(labels: TargetLabels, histograms: HistogramPhases) -> TargetSeries {
        let missed = counter!(MISSED_SLOTS_TOTAL, Self::target_labels(&labels));
        missed.increment(0);
        TargetSeries {
            labels,
            histograms,
            outcomes: std::array::from_fn(|_| OnceLock::new()),
            phases: std::array::from_fn(|_| OnceLock::new()),
            cert_expiry: OnceLock::new(),
            missed,
        }
    }

    /// The target's labels.
    pub fn labels(&self) -> &TargetLabels {
        &self.labels
    }

    fn target_labels(labels: &TargetLabels) -> Vec<Label> {
        vec![
            Label::new("service", labels.service.clone()),
            Label::new("target", labels.target.clone()),
            Label::new("region", labels.region.clone()),
        ]
    }

    fn with(&self, key: &'static str, value: &'static str) -> Vec<Label> {
        let mut labels = Self::target_labels(&self.labels);
        labels.push(Label::new(key, value));
        labels
    }

    fn phase(&self, phase: Phase) -> &PhaseSeries {
        self.phases[phase.index()].get_or_init(|| {
            let labels = self.with("phase", phase.as_str());
            if self.histograms.contains(phase) {
                PhaseSeries::Histogram(histogram!(PROBE_PHASE_SECONDS, labels))
            } else {
                PhaseSeries::Sums {
                    elapsed: gauge!(PROBE_PHASE_ELAPSED_SECONDS, labels.clone()),
                    observations: counter!(PROBE_PHASE_OBSERVATIONS_TOTAL, labels),
                }
            }
        })
    }

    /// Records one probe that was meant to start `start_lag` before it did.
    ///
    /// Counts it under its outcome, observes every timed phase (a histogram for the phases in
    /// `metrics.phase_histograms`, the elapsed/observations pair for the others), and sets the
    /// certificate expiry when the leaf was seen. Like the interval recorder, `total` is
    /// measured from the intended start and observed only for probes that were ok: a failure's
    /// latency says nothing about serving; it shows in [`PROBE_TOTAL`] under its outcome
    /// instead.
    pub fn record_probe(&self, result: &ProbeResult, start_lag: Duration) {
        let outcome = result.outcome;
        let slot = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[slot]
            .get_or_init(|| counter!(PROBE_TOTAL, self.with("outcome", outcome.as_str())))
            .increment(1);
        for (phase, d) in result.timings.iter() {
            let d = match phase {
                Phase::Total if !outcome.is_ok() => continue,
                Phase::Total => d + start_lag,
                _ => d,
            };
            match self.phase(phase) {
                PhaseSeries::Histogram(h) => h.record(d.as_secs_f64()),
                PhaseSeries::Sums {
                    elapsed,
                    observations,
                } => {
                    elapsed.increment(d.as_secs_f64());
                    observations.increment(1);
                }
            }
        }
        if let Some(not_after) = result.cert_not_after {
            self.cert_expiry
                .get_or_init(|| gauge!(CERT_EXPIRY, Self::target_labels(&self.labels)))
                .set(unix_seconds(not_after));
        }
        if let Some(dns) = &result.dns {
            self.record_dns(dns);
        }
    }

    /// The DNS target's answers per Region and smallest TTL. One target per service has them,
    /// and their Region labels come from the answers, so these are looked up per probe.
    fn record_dns(&self, dns: &vantage_probe::dns::DnsObservation) {
        let labels = &self.labels;
        let (regions, unmatched) = dns.by_region();
        let unmatched = (unmatched > 0).then_some((UNMATCHED_REGION, unmatched));
        for (region, n) in regions.into_iter().chain(unmatched) {
            counter!(
                DNS_ANSWERS_TOTAL,
                "service" => labels.service.clone(),
                "target" => labels.target.clone(),
                "region" => region.to_owned(),
            )
            .increment(n);
        }
        if let Some(ttl) = dns.answers.iter().map(|a| a.ttl).min() {
            gauge!(
                DNS_ANSWER_TTL_SECONDS,
                "service" => labels.service.clone(),
                "target" => labels.target.clone(),
            )
            .set(f64::from(ttl));
        }
    }

    /// Counts `slots` skipped slots of the target.
    pub fn record_missed(&self, slots: u64) {
        self.missed.increment(slots);
    }
}

/// Seconds since the Unix epoch, negative before it (a certificate can claim anything).
pub(super) fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}
