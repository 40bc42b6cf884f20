//! The metrics layer against a local recorder: what a probe, a miss and a delivery render as.

use super::target::unix_seconds;
use super::*;
use std::time::{Duration, SystemTime};
use vantage_probe::PhaseTimings;
use vantage_probe::ProbeResult;
use vantage_protocol::Outcome;

fn render_with(f: impl FnOnce()) -> String {
    let recorder = builder("eu-west-1").unwrap().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        f();
    });
    handle.render()
}

/// The series line of `name` whose labels include every one of `labels`.
fn series<'a>(text: &'a str, name: &str, labels: &[&str]) -> Option<&'a str> {
    text.lines().find(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{'))
            && labels.iter().all(|want| l.contains(want))
    })
}

fn value(line: Option<&str>) -> f64 {
    line.and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn total_counts_start_lag_and_only_responses() {
    let labels = TargetLabels::new("orders-api", "status:us-east-1", Some("us-east-1"));
    let text = render_with(|| {
        let series = TargetSeries::register(labels.clone(), HistogramPhases::default());
        let mut timings = PhaseTimings::default();
        timings.set(Phase::Connect, Duration::from_millis(2));
        timings.set(Phase::Total, Duration::from_millis(30));
        let mut ok = ProbeResult::synthetic(Outcome::Ok, timings);
        ok.status = Some(200);
        ok.cert_not_after = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000));
        series.record_probe(&ok, Duration::from_millis(40));
        let refused = ProbeResult::synthetic(Outcome::Connect, timings);
        series.record_probe(&refused, Duration::ZERO);
        series.record_missed(3);
    });
    let target = r#"target="status:us-east-1""#;
    let ok = [
        r#"service="orders-api""#,
        target,
        r#"outcome="ok""#,
        r#"vantage="eu-west-1""#,
    ];
    assert_eq!(value(series(&text, PROBE_TOTAL, &ok)), 1.0, "{text}");
    let connect = [target, r#"outcome="connect""#];
    assert_eq!(value(series(&text, PROBE_TOTAL, &connect)), 1.0);
    let tls = [target, r#"outcome="tls""#];
    assert!(series(&text, PROBE_TOTAL, &tls).is_none(), "{text}");
    let total = format!("{PROBE_PHASE_SECONDS}_count");
    assert_eq!(
        value(series(&text, &total, &[r#"phase="total""#])),
        1.0,
        "{text}"
    );
    // 30 ms measured + 40 ms late start = 70 ms: above the 50 ms bucket, within 100 ms.
    let sum = format!("{PROBE_PHASE_SECONDS}_sum");
    assert!((value(series(&text, &sum, &[r#"phase="total""#])) - 0.07).abs() < 1e-9);
    let bucket = format!("{PROBE_PHASE_SECONDS}_bucket");
    assert_eq!(
        value(series(
            &text,
            &bucket,
            &[r#"phase="total""#, r#"le="0.05""#]
        )),
        0.0
    );
    assert_eq!(
        value(series(&text, &bucket, &[r#"phase="total""#, r#"le="0.1""#])),
        1.0
    );
    // connect has no histogram by default: the elapsed/observations pair instead.
    assert!(
        series(&text, &total, &[r#"phase="connect""#]).is_none(),
        "{text}"
    );
    let connect = [target, r#"phase="connect""#];
    assert_eq!(
        value(series(&text, PROBE_PHASE_OBSERVATIONS_TOTAL, &connect)),
        2.0
    );
    let elapsed = value(series(&text, PROBE_PHASE_ELAPSED_SECONDS, &connect));
    assert!((elapsed - 0.004).abs() < 1e-9, "{text}");
    assert_eq!(value(series(&text, CERT_EXPIRY, &[target])), 2e9);
    assert_eq!(value(series(&text, MISSED_SLOTS_TOTAL, &[target])), 3.0);
    assert!(text.contains(&format!("# TYPE {PROBE_PHASE_SECONDS} histogram")));
}

#[test]
fn delivery_histogram_uses_its_own_buckets() {
    let text = render_with(|| histogram!(REPORT_DELIVERY_SECONDS).record(12.0));
    let bucket = format!("{REPORT_DELIVERY_SECONDS}_bucket");
    assert_eq!(
        value(series(&text, &bucket, &[r#"le="10""#])),
        0.0,
        "{text}"
    );
    assert_eq!(value(series(&text, &bucket, &[r#"le="20""#])), 1.0);
}

#[test]
fn certificate_time_before_the_epoch_is_negative() {
    let t = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
    assert_eq!(unix_seconds(t), -5.0);
}

#[test]
fn dns_answers_are_counted_per_region_with_their_ttl() {
    use vantage_probe::dns::{DnsAnswer, DnsObservation};
    let labels = TargetLabels::new("payments", "payments/dns", None);
    let answer = |value: &str, ttl, region: Option<&str>| DnsAnswer {
        value: value.to_owned(),
        ttl,
        region: region.map(str::to_owned),
    };
    let text = render_with(|| {
        let mut timings = PhaseTimings::default();
        timings.set(Phase::Dns, Duration::from_millis(3));
        timings.set(Phase::Total, Duration::from_millis(3));
        let mut r = ProbeResult::synthetic(Outcome::Ok, timings);
        r.dns = Some(DnsObservation {
            answers: vec![
                answer("192.0.2.1", 7, Some("eu-west-1")),
                answer("192.0.2.2", 5, Some("eu-west-1")),
                answer("198.51.100.1", 9, None),
            ],
        });
        TargetSeries::register(labels.clone(), HistogramPhases::of(&[Phase::Dns]))
            .record_probe(&r, Duration::ZERO);
    });
    let euw1 = [
        r#"service="payments""#,
        r#"target="payments/dns""#,
        r#"region="eu-west-1""#,
    ];
    assert_eq!(
        value(series(&text, DNS_ANSWERS_TOTAL, &euw1)),
        2.0,
        "{text}"
    );
    let none = [r#"region="unmatched""#];
    assert_eq!(
        value(series(&text, DNS_ANSWERS_TOTAL, &none)),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(series(
            &text,
            DNS_ANSWER_TTL_SECONDS,
            &[r#"service="payments""#]
        )),
        5.0,
        "{text}"
    );
    let dns_phase = format!("{PROBE_PHASE_SECONDS}_count");
    assert_eq!(
        value(series(
            &text,
            &dns_phase,
            &[r#"target="payments/dns""#, r#"phase="dns""#]
        )),
        1.0
    );
}
