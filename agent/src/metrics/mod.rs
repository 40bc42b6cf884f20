//! The agent's Prometheus metrics: names, labels and buckets in one place, and the recorder
//! that holds them.
//!
//! Recording goes through the `metrics` facade, so library code never holds an exporter; the
//! binary installs a recorder (see [`install`]) and serves its rendering on `/metrics`. Names
//! follow Prometheus conventions: `vantage_<what>_<unit>`, base units, `_total` only on
//! counters, labels from small fixed sets (service names and target ids come from the fleet
//! file, outcome and phase values from [`Outcome::as_str`] and [`Phase::as_str`]). Every
//! per-target series carries `service` (the target's service, `fleet.name` for a single-API
//! file) beside `target`, so one dashboard can filter a multi-service fleet by service without
//! parsing ids. Every series also carries the global label `vantage`, the Region the agent
//! probes from, so one Prometheus can scrape the whole fleet.
//!
//! Histograms are classic Prometheus histograms with fixed buckets rather than summaries:
//! buckets aggregate across vantages and targets (`sum by (le)`), summaries' quantiles do not.
//! A classic histogram costs a series per bucket for every target, so only the phases listed in
//! `metrics.phase_histograms` ([`HistogramPhases`], default `total`) get one; every other phase
//! is exported per target as [`PROBE_PHASE_ELAPSED_SECONDS`] (seconds spent, summed) and
//! [`PROBE_PHASE_OBSERVATIONS_TOTAL`] (how many probes timed it), whose ratio of rates is the
//! mean. Outcome counters appear when an outcome first happens, not pre-registered at zero for
//! every outcome code. With the defaults a target costs about fifteen series instead of about
//! 130 (measured by the 1,000-target test in `agent/tests/metrics_size.rs` and `bench/agent`).
//! [`PHASE_BUCKETS`] is dense where API latency lives and reaches the limits that matter;
//! [`DELIVERY_BUCKETS`] spans a quick POST to the aggregator up to API Gateway's 29 s
//! integration limit. The exact distributions travel in the interval reports as HDR histograms;
//! these buckets only have to answer "is it fast, slow or failing" on a dashboard.
//!
//! Native histograms: `metrics-exporter-prometheus` 0.18 can keep them
//! (`set_native_histogram_for_metric`) but only renders them in the protobuf exposition (its
//! `protobuf` feature, which needs `protoc` at build time); its text rendering, which `/metrics`
//! serves, skips them. vantage does not enable that feature, so there is no native-histogram
//! option yet.
//!
//! Delivery metrics (attempts, drops, attempt durations, spool depth) belong to one delivery
//! queue; with `aggregator.replicas` each replica has its own and every such series carries a
//! `replica` label (the ids from the fleet file), built by [`DeliveryLabels`]. With one
//! aggregator they carry no `replica` label at all, exactly as before replicas existed.
//!
//! Serving: [`vantage_runtime::metrics_http::serve`], which also keeps histogram buffers
//! drained.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics::{Counter, Gauge, Histogram, Label, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::Arc;
use vantage_protocol::Phase;

/// Probes by outcome. Labels: `service`, `target`, `region`, `outcome`.
pub const PROBE_TOTAL: &str = "vantage_probe_total";
/// Per-phase probe latency histogram, seconds. Labels: `service`, `target`, `region`, `phase`.
pub const PROBE_PHASE_SECONDS: &str = "vantage_probe_phase_duration_seconds";
/// Seconds spent in a phase that has no histogram, summed over every probe since the agent
/// started: only grows, `rate()` it like a counter (a gauge because the exporter's counters are
/// integers). Labels: `service`, `target`, `region`, `phase`.
pub const PROBE_PHASE_ELAPSED_SECONDS: &str = "vantage_probe_phase_elapsed_seconds";
/// Probes that timed a phase that has no histogram: the divisor of
/// [`PROBE_PHASE_ELAPSED_SECONDS`]. Labels: `service`, `target`, `region`, `phase`.
pub const PROBE_PHASE_OBSERVATIONS_TOTAL: &str = "vantage_probe_phase_observations_total";
/// Leaf certificate notAfter, Unix seconds. Labels: `service`, `target`, `region`.
pub const CERT_EXPIRY: &str = "vantage_probe_cert_expiry_timestamp_seconds";
/// Slots skipped because a probe or the scheduler ran late. Labels: `service`, `target`,
/// `region`.
pub const MISSED_SLOTS_TOTAL: &str = "vantage_probe_missed_slots_total";
/// Interval reports built.
pub const REPORTS_BUILT_TOTAL: &str = "vantage_reports_built_total";
/// Report delivery attempts by result. Label `result`: `delivered`, `duplicate`, `retry`
/// (network error, timeout, 5xx, 429...), `rejected` (4xx bad request: logged, dropped);
/// `replica` with `aggregator.replicas`.
pub const REPORT_DELIVERIES_TOTAL: &str = "vantage_report_deliveries_total";
/// Reports dropped without delivery. Label `reason`: `spool_full`, `expired`, `rejected`;
/// `replica` with `aggregator.replicas`.
pub const REPORTS_DROPPED_TOTAL: &str = "vantage_reports_dropped_total";
/// Time of one delivery attempt, seconds. Label `replica` with `aggregator.replicas`.
pub const REPORT_DELIVERY_SECONDS: &str = "vantage_report_delivery_duration_seconds";
/// Reports waiting in the spool. Label `replica` with `aggregator.replicas`.
pub const SPOOL_REPORTS: &str = "vantage_spool_reports";
/// Bytes in the spool. Label `replica` with `aggregator.replicas`.
pub const SPOOL_BYTES: &str = "vantage_spool_bytes";
/// Spool writes that failed (disk full, permissions); the agent keeps probing. Label `replica`
/// with `aggregator.replicas`.
pub const SPOOL_WRITE_ERRORS_TOTAL: &str = "vantage_spool_write_errors_total";
/// The label naming the aggregator replica a delivery series is about.
pub const REPLICA_LABEL: &str = "replica";
/// DNS answer records of the `dns` target, by the Region they map to (`region`), or
/// `region="unmatched"`: `rate()` of it per Region is the share of DNS answers per Region.
/// Labels: `service`, `target`, `region`.
pub const DNS_ANSWERS_TOTAL: &str = "vantage_dns_answers_total";
/// Smallest remaining TTL among the last resolution's answers. Labels: `service`, `target`.
pub const DNS_ANSWER_TTL_SECONDS: &str = "vantage_dns_answer_ttl_seconds";
/// The `region` value of DNS answers that map to no Region.
pub const UNMATCHED_REGION: &str = "unmatched";

/// Which probe phases [`TargetSeries::record_probe`] exports as histograms (`metrics.phase_histograms`); the
/// others as [`PROBE_PHASE_ELAPSED_SECONDS`] and [`PROBE_PHASE_OBSERVATIONS_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramPhases([bool; Phase::COUNT]);

impl HistogramPhases {
    /// Exactly `phases`.
    pub fn of(phases: &[Phase]) -> Self {
        let mut set = [false; Phase::COUNT];
        for p in phases {
            set[p.index()] = true;
        }
        HistogramPhases(set)
    }

    /// True when `phase` has a histogram.
    pub fn contains(self, phase: Phase) -> bool {
        self.0[phase.index()]
    }
}

/// `total` only, as a fleet file without `[metrics]` says.
impl Default for HistogramPhases {
    fn default() -> Self {
        HistogramPhases::of(&vantage_protocol::config::DEFAULT_PHASE_HISTOGRAMS)
    }
}

/// Histogram buckets for probe phases, seconds: a factor of 2 to 2.5 apart from 2.5 ms (a probe
/// inside one Region) to Route 53's 2 s first-byte limit and the 10 s probe deadline. Twelve,
/// not more: every bucket is a series per target and histogram phase, and at 1,000 targets each
/// costs about 145 kB of `/metrics`.
pub const PHASE_BUCKETS: [f64; 12] = [
    0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Histogram buckets for report deliveries, seconds: an in-Region POST to the aggregator takes
/// tens of milliseconds, a cross-Region one a few hundred, a Lambda cold start one to a few
/// seconds; API Gateway cuts any request off at 29 s.
pub const DELIVERY_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

/// Global label naming the Region the agent probes from.
pub const VANTAGE_LABEL: &str = "vantage";
/// The `region` label value of the global (Route 53 failover) endpoint, which belongs to no
/// Region.
pub const GLOBAL_REGION: &str = "global";

mod target;
pub use target::{TargetLabels, TargetSeries};

/// The labels of one delivery queue's series: a `replica` label with the replica's id, or none
/// for the single aggregator (`DeliveryLabels::default()`). Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryLabels {
    replica: Option<Arc<str>>,
}

impl DeliveryLabels {
    /// The series of replica `id`.
    pub fn replica(id: &str) -> DeliveryLabels {
        DeliveryLabels {
            replica: Some(Arc::from(id)),
        }
    }

    /// The replica id, `None` for the single aggregator.
    pub fn replica_id(&self) -> Option<&str> {
        self.replica.as_deref()
    }

    fn labels(&self, extra: Option<(&'static str, &'static str)>) -> Vec<Label> {
        let replica = self
            .replica
            .as_ref()
            .map(|id| Label::new(REPLICA_LABEL, id.to_string()));
        let extra = extra.map(|(k, v)| Label::new(k, v));
        replica.into_iter().chain(extra).collect()
    }

    /// [`REPORT_DELIVERIES_TOTAL`] for `result`.
    pub fn deliveries(&self, result: &'static str) -> Counter {
        counter!(
            REPORT_DELIVERIES_TOTAL,
            self.labels(Some(("result", result)))
        )
    }

    /// [`REPORTS_DROPPED_TOTAL`] for `reason`.
    pub fn dropped(&self, reason: &'static str) -> Counter {
        counter!(REPORTS_DROPPED_TOTAL, self.labels(Some(("reason", reason))))
    }

    /// [`REPORT_DELIVERY_SECONDS`].
    pub fn delivery_seconds(&self) -> Histogram {
        histogram!(REPORT_DELIVERY_SECONDS, self.labels(None))
    }

    /// [`SPOOL_REPORTS`].
    pub fn spool_reports(&self) -> Gauge {
        gauge!(SPOOL_REPORTS, self.labels(None))
    }

    /// [`SPOOL_BYTES`].
    pub fn spool_bytes(&self) -> Gauge {
        gauge!(SPOOL_BYTES, self.labels(None))
    }

    /// [`SPOOL_WRITE_ERRORS_TOTAL`].
    pub fn spool_write_errors(&self) -> Counter {
        counter!(SPOOL_WRITE_ERRORS_TOTAL, self.labels(None))
    }

    /// Creates a replica's counters at zero, so a dashboard sees every replica of the fleet
    /// file (and `rate()` its first failure) before anything happens to it. Without a replica
    /// nothing is registered ahead, as before replicas existed.
    pub fn register(&self) {
        if self.replica.is_none() {
            return;
        }
        for result in ["delivered", "duplicate", "retry", "rejected"] {
            self.deliveries(result).increment(0);
        }
        for reason in ["spool_full", "expired", "rejected"] {
            self.dropped(reason).increment(0);
        }
        self.spool_write_errors().increment(0);
    }
}

/// Errors of the metrics layer.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Building the recorder failed, or another recorder is already installed.
    #[error("installing the Prometheus recorder: {0}")]
    Install(#[source] BuildError),
}

/// The exporter configuration [`install`] uses, for tests that want a local recorder.
pub fn builder(vantage: &str) -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        // Any latency histogram added later defaults to the phase buckets rather than silently
        // becoming a summary.
        .set_buckets(&PHASE_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(PROBE_PHASE_SECONDS.into()), &PHASE_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(REPORT_DELIVERY_SECONDS.into()),
            &DELIVERY_BUCKETS,
        )
        .map(|b| b.add_global_label(VANTAGE_LABEL, vantage))
}

/// Installs the global Prometheus recorder: [`PHASE_BUCKETS`] for [`PROBE_PHASE_SECONDS`],
/// [`DELIVERY_BUCKETS`] for [`REPORT_DELIVERY_SECONDS`], a global label `vantage` = the agent's
/// vantage Region, and describes every metric (help text and unit) once.
///
/// Fails if a recorder is already installed: call it once per process. The caller must keep
/// histogram buffers drained, which `vantage_runtime::metrics_http::serve` does.
pub fn install(vantage: &str) -> Result<PrometheusHandle, MetricsError> {
    let handle = builder(vantage)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(MetricsError::Install)?;
    describe();
    Ok(handle)
}

/// Registers help text and unit of every metric with the current recorder. The text exposition
/// prints `# HELP` and `# TYPE` for a metric once it has a series.
pub fn describe() {
    describe_counter!(
        PROBE_TOTAL,
        Unit::Count,
        "Probes run, by outcome code (ok, dns, connect, tls, timeout, http_status, ...)."
    );
    describe_histogram!(
        PROBE_PHASE_SECONDS,
        Unit::Seconds,
        "Probe latency by phase. phase=\"total\" counts only probes that got a response and is \
         measured from the intended start, so late starts show as latency."
    );
    describe_gauge!(
        PROBE_PHASE_ELAPSED_SECONDS,
        Unit::Seconds,
        "Seconds spent in a probe phase that has no histogram (metrics.phase_histograms), summed \
         over every probe; only grows: rate() it and divide by \
         vantage_probe_phase_observations_total for the mean."
    );
    describe_counter!(
        PROBE_PHASE_OBSERVATIONS_TOTAL,
        Unit::Count,
        "Probes that timed a phase that has no histogram (metrics.phase_histograms)."
    );
    describe_gauge!(
        CERT_EXPIRY,
        Unit::Seconds,
        "notAfter of the target's TLS leaf certificate, Unix time."
    );
    describe_counter!(
        MISSED_SLOTS_TOTAL,
        Unit::Count,
        "Probe slots skipped because the previous probe or the scheduler ran late."
    );
    describe_counter!(
        REPORTS_BUILT_TOTAL,
        Unit::Count,
        "Interval reports built for the aggregator."
    );
    describe_counter!(
        REPORT_DELIVERIES_TOTAL,
        Unit::Count,
        "Report delivery attempts, by result (delivered, duplicate, retry, rejected)."
    );
    describe_counter!(
        REPORTS_DROPPED_TOTAL,
        Unit::Count,
        "Reports dropped without delivery, by reason (spool_full, expired, rejected)."
    );
    describe_histogram!(
        REPORT_DELIVERY_SECONDS,
        Unit::Seconds,
        "Duration of one report delivery attempt."
    );
    describe_gauge!(
        SPOOL_REPORTS,
        Unit::Count,
        "Reports waiting in the spool for delivery."
    );
    describe_gauge!(SPOOL_BYTES, Unit::Bytes, "Bytes held by the report spool.");
    describe_counter!(
        DNS_ANSWERS_TOTAL,
        Unit::Count,
        "DNS answer records of the global name, by the Region they map to (region=\"unmatched\" \
         for none); the resolution time is phase=\"dns\" of vantage_probe_phase_elapsed_seconds \
         (or of vantage_probe_phase_duration_seconds when metrics.phase_histograms lists dns)."
    );
    describe_gauge!(
        DNS_ANSWER_TTL_SECONDS,
        Unit::Seconds,
        "Smallest remaining TTL among the last DNS resolution's answers."
    );
    describe_counter!(
        SPOOL_WRITE_ERRORS_TOTAL,
        Unit::Count,
        "Spool writes that failed (disk full, permissions); probing goes on."
    );
}

#[cfg(test)]
mod tests;
