//! The agent's `/metrics` endpoint, end to end: real probes against a local server, every metric
//! the agent defines recorded through the `metrics` facade, a scrape over real HTTP from
//! [`metrics::serve`], and Prometheus' own linter (`promtool check metrics`) on what came back.
//!
//! The recorder is process-global; nextest runs each test in its own process, and this binary
//! holds a single test so `cargo test` is safe too.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use vantage_agent::metrics::{self as m, TargetLabels};
use vantage_probe::spec::ProbeSpec;
use vantage_probe::tls::TlsConfigCache;
use vantage_probe::{PhaseTimings, ProbeResult, Prober};
use vantage_protocol::{Outcome, Phase};
use vantage_testkit::http::RawResponse;
use vantage_testkit::TestServer;

const VANTAGE: &str = "ap-southeast-2";

/// A plain HTTP server answering every request `200 ok` with the Region header.
async fn region_server() -> TestServer {
    vantage_testkit::server()
        .header("x-vantage-region", "eu-west-1")
        .start()
        .await
}

/// One HTTP/1.1 request on a fresh connection, read to the end.
async fn request(addr: SocketAddr, method: &str, path: &str) -> RawResponse {
    vantage_testkit::http::exchange(addr, method, path, &[], b"")
        .await
        .expect("HTTP exchange with /metrics")
}

fn promtool() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/promtool")).filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("promtool not found: install with apt-get install -y prometheus"))
}

/// Sample lines of `name` (exactly, not a longer name) whose label set holds every one of
/// `labels`.
fn series<'a>(text: &'a str, name: &str, labels: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && labels.iter().all(|want| l.contains(want))
        })
        .collect()
}

/// The value of the single sample line matching `name` and `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    let lines = series(text, name, labels);
    assert_eq!(
        lines.len(),
        1,
        "one {name} {labels:?} series expected in:\n{text}"
    );
    let v = lines[0].rsplit(' ').next().unwrap_or_default();
    v.parse()
        .unwrap_or_else(|_| panic!("{name}: value {v:?} is not a number"))
}

#[tokio::test]
async fn scrape_passes_promtool_and_holds_every_series() {
    let handle = m::install(VANTAGE).expect("install the recorder");

    // Five real probes of a healthy Regional endpoint.
    let server = region_server().await;
    let tls = Arc::new(TlsConfigCache::new());
    // ttfb as a histogram too (metrics.phase_histograms = ["ttfb", "total"]); the other phases
    // as elapsed/observations pairs.
    let ttfb_too = m::HistogramPhases::of(&[Phase::Ttfb, Phase::Total]);
    let status = m::TargetSeries::register(
        TargetLabels::new("orders-api", "status:eu-west-1", Some("eu-west-1")),
        ttfb_too,
    );
    let prober = Prober::new(
        ProbeSpec::get(&server.url("/status")).expect("spec"),
        tls.clone(),
    )
    .expect("prober");
    for i in 0..5 {
        let result = prober.probe().await;
        assert_eq!(result.outcome, Outcome::Ok, "{:?}", result.failure);
        assert_eq!(result.answered_by.as_deref(), Some("eu-west-1"));
        status.record_probe(&result, Duration::from_micros(100 * i));
    }
    status.record_missed(2);

    // One real failure: nothing listens on the global endpoint's port.
    let global = m::TargetSeries::register(
        TargetLabels::new("orders-api", "global", None),
        m::HistogramPhases::default(),
    );
    let refused = Prober::new(
        ProbeSpec::get(&format!(
            "http://127.0.0.1:{}/status",
            vantage_testkit::closed_port()
        ))
        .expect("spec"),
        tls,
    )
    .expect("prober")
    .probe()
    .await;
    assert_eq!(refused.outcome, Outcome::Connect, "{:?}", refused.failure);
    global.record_probe(&refused, Duration::ZERO);

    // A TLS target's result, so the certificate gauge goes through `record_probe` too.
    let deep = m::TargetSeries::register(
        TargetLabels::new("orders-api", "deep:eu-west-1", Some("eu-west-1")),
        m::HistogramPhases::default(),
    );
    let mut timings = PhaseTimings::default();
    timings.set(Phase::Tls, Duration::from_millis(12));
    timings.set(Phase::Total, Duration::from_millis(80));
    let mut tls_result = ProbeResult::synthetic(Outcome::HttpStatus, timings);
    tls_result.status = Some(503);
    tls_result.cert_not_after = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000));
    deep.record_probe(&tls_result, Duration::ZERO);

    // What the report pusher and spool record.
    metrics::counter!(m::REPORTS_BUILT_TOTAL).increment(3);
    metrics::counter!(m::REPORT_DELIVERIES_TOTAL, "result" => "delivered").increment(2);
    metrics::counter!(m::REPORT_DELIVERIES_TOTAL, "result" => "retry").increment(1);
    metrics::counter!(m::REPORTS_DROPPED_TOTAL, "reason" => "expired").increment(1);
    metrics::histogram!(m::REPORT_DELIVERY_SECONDS).record(0.042);
    metrics::histogram!(m::REPORT_DELIVERY_SECONDS).record(3.5);
    metrics::gauge!(m::SPOOL_REPORTS).set(1.0);
    metrics::gauge!(m::SPOOL_BYTES).set(2048.0);
    metrics::counter!(m::SPOOL_WRITE_ERRORS_TOTAL).increment(0);

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(vantage_runtime::metrics_http::serve(
        listener,
        handle,
        async {
            let _ = stopped.await;
        },
    ));

    let scrape = request(addr, "GET", "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert_eq!(
        scrape.header("content-type"),
        Some(vantage_runtime::metrics_http::CONTENT_TYPE)
    );
    let text = scrape.body;

    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!("promtool check metrics: {}", out.status);
    println!("promtool stdout: {:?}", stdout.trim());
    println!("promtool stderr: {:?}", stderr.trim());
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics found problems ({}):\n{stdout}{stderr}\nin:\n{text}",
        out.status
    );

    // Every metric has its help text and type.
    let kinds = [
        (m::PROBE_TOTAL, "counter"),
        (m::PROBE_PHASE_SECONDS, "histogram"),
        (m::PROBE_PHASE_ELAPSED_SECONDS, "gauge"),
        (m::PROBE_PHASE_OBSERVATIONS_TOTAL, "counter"),
        (m::CERT_EXPIRY, "gauge"),
        (m::MISSED_SLOTS_TOTAL, "counter"),
        (m::REPORTS_BUILT_TOTAL, "counter"),
        (m::REPORT_DELIVERIES_TOTAL, "counter"),
        (m::REPORTS_DROPPED_TOTAL, "counter"),
        (m::REPORT_DELIVERY_SECONDS, "histogram"),
        (m::SPOOL_REPORTS, "gauge"),
        (m::SPOOL_BYTES, "gauge"),
        (m::SPOOL_WRITE_ERRORS_TOTAL, "counter"),
    ];
    for (name, kind) in kinds {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "no HELP for {name} in:\n{text}"
        );
        assert!(
            text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
            "no TYPE {kind} for {name} in:\n{text}"
        );
    }

    // Every vantage sample carries the vantage label; the standard process_* metrics the
    // listener appends are the process', labelled by Prometheus' instance alone.
    let vantage = format!("vantage=\"{VANTAGE}\"");
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if line.starts_with("process_") {
            continue;
        }
        assert!(line.contains(&vantage), "no {vantage} on {line:?}");
    }
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter\n")
            && text
                .lines()
                .any(|l| l.starts_with("process_resident_memory_bytes ")),
        "no process metrics in:\n{text}"
    );

    let status_target = r#"target="status:eu-west-1""#;
    let eu = r#"region="eu-west-1""#;
    let ok = [status_target, eu, r#"outcome="ok""#];
    assert_eq!(value(&text, m::PROBE_TOTAL, &ok), 5.0);
    assert!(
        series(&text, m::PROBE_TOTAL, &[status_target, r#"outcome="tls""#]).is_empty(),
        "an outcome that never happened has no series"
    );
    let global_target = [r#"target="global""#, r#"region="global""#];
    assert_eq!(
        value(
            &text,
            m::PROBE_TOTAL,
            &[global_target[0], global_target[1], r#"outcome="connect""#]
        ),
        1.0
    );
    assert_eq!(
        value(&text, m::MISSED_SLOTS_TOTAL, &[status_target, eu]),
        2.0
    );

    let bucket = format!("{}_bucket", m::PROBE_PHASE_SECONDS);
    let count = format!("{}_count", m::PROBE_PHASE_SECONDS);
    let total = r#"phase="total""#;
    assert_eq!(
        series(&text, &bucket, &[status_target, total, r#"le="0.0025""#]).len(),
        1,
        "no le=\"0.0025\" bucket in:\n{text}"
    );
    for le in m::PHASE_BUCKETS.iter().map(|b| format!("le=\"{b}\"")) {
        assert_eq!(
            series(&text, &bucket, &[status_target, total, &le]).len(),
            1,
            "{le}"
        );
    }
    assert_eq!(
        value(&text, &bucket, &[status_target, total, r#"le="+Inf""#]),
        5.0
    );
    assert_eq!(value(&text, &count, &[status_target, total]), 5.0);
    assert_eq!(
        value(&text, &count, &[status_target, r#"phase="ttfb""#]),
        5.0
    );
    let connect = [status_target, r#"phase="connect""#];
    assert!(
        series(&text, &count, &connect).is_empty(),
        "connect has no histogram"
    );
    assert_eq!(
        value(&text, m::PROBE_PHASE_OBSERVATIONS_TOTAL, &connect),
        5.0
    );
    assert!(value(&text, m::PROBE_PHASE_ELAPSED_SECONDS, &connect) > 0.0);
    let deep_tls = [r#"target="deep:eu-west-1""#, r#"phase="tls""#];
    assert!((value(&text, m::PROBE_PHASE_ELAPSED_SECONDS, &deep_tls) - 0.012).abs() < 1e-9);
    assert!(
        series(&text, &count, &[global_target[0], total]).is_empty(),
        "a refused connection has no total latency"
    );
    assert_eq!(
        value(&text, m::CERT_EXPIRY, &[r#"target="deep:eu-west-1""#]),
        1.9e9
    );

    let delivery_bucket = format!("{}_bucket", m::REPORT_DELIVERY_SECONDS);
    assert_eq!(value(&text, &delivery_bucket, &[r#"le="0.05""#]), 1.0);
    assert_eq!(value(&text, &delivery_bucket, &[r#"le="5""#]), 2.0);
    assert_eq!(value(&text, &delivery_bucket, &[r#"le="30""#]), 2.0);
    assert_eq!(
        value(
            &text,
            m::REPORT_DELIVERIES_TOTAL,
            &[r#"result="delivered""#]
        ),
        2.0
    );
    assert_eq!(value(&text, m::SPOOL_BYTES, &[]), 2048.0);

    let elsewhere = request(addr, "GET", "/").await;
    assert_eq!(elsewhere.status, 404);
    assert_eq!(request(addr, "GET", "/metrics/x").await.status, 404);
    assert_eq!(request(addr, "POST", "/metrics").await.status, 405);

    stop.send(()).expect("serve still running");
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("serve stops on shutdown")
        .expect("serve task")
        .expect("serve ends cleanly");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}
