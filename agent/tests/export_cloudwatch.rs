//! The CloudWatch export against moto (one moto_server for this binary): interval data sent
//! with PutMetricData and read back with GetMetricStatistics and ListMetrics.
//!
//! What moto does not show, so these tests do not claim it: moto expands `Values`/`Counts`
//! into single samples and answers SampleCount, Sum, Minimum and Maximum, but computes no
//! percentiles (ExtendedStatistics), ignores StorageResolution and enforces neither the
//! 150-values, 1,000-data nor 1 MB limits. Percentile fidelity is covered by the property
//! test in `export::distribution`, batching limits by `export::datum`'s tests.

use aws_sdk_cloudwatch::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_cloudwatch::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_agent::export::cloudwatch::ApiSettings;
use vantage_agent::export::datum::TargetMeta;
use vantage_agent::export::{sdk_loader, Exporters};
use vantage_agent::recorder::IntervalStats;
use vantage_protocol::{Outcome, Phase};
use vantage_testkit::moto::Moto;

/// The client the agent's API sink uses (its own request compression included), on moto.
async fn client(moto: &Moto) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::from_conf(client_config(moto).await.build())
}

async fn client_config(moto: &Moto) -> aws_sdk_cloudwatch::config::Builder {
    let config = sdk_loader(Some(&moto.endpoint()), "us-east-1")
        .credentials_provider(vantage_testkit::moto::credentials())
        .load()
        .await;
    vantage_agent::export::cloudwatch::client_config(&config)
}

/// A request's `Content-Encoding` and body.
type SentBody = (Option<String>, Vec<u8>);

/// Records each request's `Content-Encoding` and body as they are sent.
#[derive(Debug, Default, Clone)]
struct SentBodies(std::sync::Arc<std::sync::Mutex<Vec<SentBody>>>);

impl Intercept for SentBodies {
    fn name(&self) -> &'static str {
        "SentBodies"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_cloudwatch::error::BoxError> {
        let request = context.request();
        let encoding = request.headers().get("content-encoding").map(str::to_owned);
        let body = request.body().bytes().unwrap_or_default().to_vec();
        self.0.lock().unwrap().push((encoding, body));
        Ok(())
    }
}

fn dims(pairs: &[(&str, &str)]) -> Vec<Dimension> {
    pairs
        .iter()
        .map(|(n, v)| Dimension::builder().name(*n).value(*v).build())
        .collect()
}

async fn stats_of(
    cw: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metric: &str,
    dimensions: Vec<Dimension>,
) -> Vec<aws_sdk_cloudwatch::types::Datapoint> {
    let now = SystemTime::now();
    cw.get_metric_statistics()
        .namespace(namespace)
        .metric_name(metric)
        .set_dimensions(Some(dimensions))
        .start_time(DateTime::from(now - Duration::from_secs(3600)))
        .end_time(DateTime::from(now + Duration::from_secs(3600)))
        .period(3600 * 2)
        .statistics(Statistic::SampleCount)
        .statistics(Statistic::Minimum)
        .statistics(Statistic::Maximum)
        .statistics(Statistic::Sum)
        .send()
        .await
        .expect("GetMetricStatistics")
        .datapoints()
        .to_vec()
}

fn now_ms() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    ms - ms % 10_000
}

#[tokio::test]
async fn latency_distributions_and_outcome_counts_are_read_back() {
    let moto = Moto::shared();
    let namespace = format!("VantageTest{}", std::process::id());
    let mut stats = IntervalStats::new(3);
    stats.attempts = 5;
    stats.outcomes[Outcome::Ok.index()] = 4;
    stats.outcomes[Outcome::HttpStatus.index()] = 1;
    for micros in [12_000, 12_000, 15_000, 250_000] {
        stats.phases[Phase::Total.index()].record_micros(micros);
    }
    stats.phases[Phase::Connect.index()].record_micros(3_000);
    let meta = TargetMeta {
        service: "payments",
        id: "status:eu-west-1",
        region: Some("eu-west-1"),
    };
    let settings = ApiSettings {
        namespace: namespace.clone(),
        storage_resolution: 60,
    };
    let mut exporters =
        Exporters::with_cloudwatch_client(client(moto).await, settings, "us-east-1", 3);
    exporters.interval(now_ms(), &[(meta, &stats)]);
    let summary = exporters.finish(Duration::from_secs(30)).await.cloudwatch;
    assert_eq!(
        (summary.sent, summary.failed, summary.dropped),
        (4, 0, 0),
        "{summary:?}"
    );
    assert_eq!(summary.requests, 1);

    let cw = client(moto).await;
    let base = [
        ("Service", "payments"),
        ("Target", "status:eu-west-1"),
        ("Region", "eu-west-1"),
        ("Vantage", "us-east-1"),
    ];
    let mut total = base.to_vec();
    total.push(("Phase", "total"));
    let points = stats_of(&cw, &namespace, "Latency", dims(&total)).await;
    assert_eq!(points.len(), 1, "{points:?}");
    let p = &points[0];
    assert_eq!(p.sample_count(), Some(4.0));
    // Each bucket is exported as its highest equivalent value, as HDR reports percentiles:
    // 12,000 µs lies in an 8 µs-wide bucket, 250,000 µs in a 128 µs-wide one.
    assert_eq!(p.minimum(), Some(12.007));
    assert_eq!(p.maximum(), Some(250.111));
    assert_eq!(p.unit().map(|u| u.as_str()), Some("Milliseconds"));

    let mut failed = base.to_vec();
    failed.push(("Outcome", "http_status"));
    let points = stats_of(&cw, &namespace, "Probes", dims(&failed)).await;
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0].sum(), Some(1.0));
    let mut ok = base.to_vec();
    ok.push(("Outcome", "ok"));
    assert_eq!(
        stats_of(&cw, &namespace, "Probes", dims(&ok)).await[0].sum(),
        Some(4.0)
    );

    let listed = cw
        .list_metrics()
        .namespace(&namespace)
        .metric_name("Latency")
        .send()
        .await
        .expect("ListMetrics");
    let mut phases: Vec<String> = listed
        .metrics()
        .iter()
        .flat_map(|m| m.dimensions())
        .filter(|d| d.name() == Some("Phase"))
        .filter_map(|d| d.value().map(str::to_owned))
        .collect();
    phases.sort();
    phases.dedup();
    assert_eq!(phases, ["connect", "total"]);
}

#[tokio::test]
async fn a_distribution_wider_than_150_values_is_split_and_keeps_every_sample() {
    let moto = Moto::shared();
    let namespace = format!("VantageWide{}", std::process::id());
    let mut stats = IntervalStats::new(3);
    stats.attempts = 400;
    stats.outcomes[Outcome::Ok.index()] = 400;
    // 400 samples 1 % apart from 1 ms: 400 distinct values at 3 significant digits.
    let mut v = 1_000f64;
    for _ in 0..400 {
        stats.phases[Phase::Ttfb.index()].record_micros(v as u64);
        v *= 1.01;
    }
    let meta = TargetMeta {
        service: "api",
        id: "global",
        region: None,
    };
    let settings = ApiSettings {
        namespace: namespace.clone(),
        storage_resolution: 1,
    };
    let mut exporters =
        Exporters::with_cloudwatch_client(client(moto).await, settings, "eu-west-1", 3);
    exporters.interval(now_ms(), &[(meta, &stats)]);
    let summary = exporters.finish(Duration::from_secs(30)).await.cloudwatch;
    // 3 Latency datums (150 + 150 + 100 values) and one Probes count.
    assert_eq!((summary.sent, summary.failed), (4, 0), "{summary:?}");

    let cw = client(moto).await;
    let points = stats_of(
        &cw,
        &namespace,
        "Latency",
        dims(&[
            ("Service", "api"),
            ("Target", "global"),
            ("Region", "global"),
            ("Vantage", "eu-west-1"),
            ("Phase", "ttfb"),
        ]),
    )
    .await;
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0].sample_count(), Some(400.0));
    assert_eq!(points[0].minimum(), Some(1.0));
}

#[tokio::test]
async fn an_unreachable_endpoint_counts_failed_data_after_retries() {
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = sdk_loader(Some(&format!("http://127.0.0.1:{port}")), "us-east-1")
        .credentials_provider(vantage_testkit::moto::credentials())
        .load()
        .await;
    let settings = ApiSettings {
        namespace: "Unreachable".into(),
        storage_resolution: 60,
    };
    let mut stats = IntervalStats::new(3);
    stats.attempts = 1;
    stats.outcomes[Outcome::Ok.index()] = 1;
    stats.phases[Phase::Total.index()].record_micros(5_000);
    let meta = TargetMeta {
        service: "api",
        id: "global",
        region: None,
    };
    let mut exporters = Exporters::with_cloudwatch_client(
        aws_sdk_cloudwatch::Client::new(&config),
        settings,
        "eu-west-1",
        3,
    );
    exporters.interval(now_ms(), &[(meta, &stats)]);
    let summary = exporters.finish(Duration::from_secs(60)).await.cloudwatch;
    assert_eq!(summary.sent, 0);
    assert_eq!(summary.failed, 2, "{summary:?}");
    assert_eq!(
        summary.retries,
        u64::from(vantage_agent::export::cloudwatch::MAX_ATTEMPTS - 1)
    );
}

#[tokio::test]
async fn intervals_merge_up_to_the_storage_resolution() {
    let moto = Moto::shared();
    let namespace = format!("VantageMerge{}", std::process::id());
    let minute = now_ms() - now_ms() % 60_000;
    let meta = TargetMeta {
        service: "api",
        id: "deep:us-east-1",
        region: Some("us-east-1"),
    };
    let interval = |micros: u64| {
        let mut s = IntervalStats::new(3);
        s.attempts = 1;
        s.outcomes[Outcome::Ok.index()] = 1;
        s.phases[Phase::Total.index()].record_micros(micros);
        s
    };
    let settings = ApiSettings {
        namespace: namespace.clone(),
        storage_resolution: 60,
    };
    let mut exporters =
        Exporters::with_cloudwatch_client(client(moto).await, settings, "eu-west-1", 3);
    // Three 10 s intervals of one minute, then one of the next minute.
    exporters.interval(minute, &[(meta, &interval(1_000))]);
    exporters.interval(minute + 10_000, &[(meta, &interval(2_000))]);
    exporters.interval(minute + 20_000, &[(meta, &interval(1_000))]);
    exporters.interval(minute + 60_000, &[(meta, &interval(4_000))]);
    let summary = exporters.finish(Duration::from_secs(30)).await.cloudwatch;
    // One Latency and one Probes datum per minute.
    assert_eq!((summary.sent, summary.requests), (4, 2), "{summary:?}");

    let cw = client(moto).await;
    let out = cw
        .get_metric_statistics()
        .namespace(&namespace)
        .metric_name("Latency")
        .set_dimensions(Some(dims(&[
            ("Service", "api"),
            ("Target", "deep:us-east-1"),
            ("Region", "us-east-1"),
            ("Vantage", "eu-west-1"),
            ("Phase", "total"),
        ])))
        .start_time(DateTime::from_millis(minute as i64 - 60_000))
        .end_time(DateTime::from_millis(minute as i64 + 180_000))
        .period(60)
        .statistics(Statistic::SampleCount)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .expect("GetMetricStatistics");
    let mut points: Vec<(f64, f64)> = out
        .datapoints()
        .iter()
        .map(|p| (p.sample_count().unwrap(), p.maximum().unwrap()))
        .collect();
    points.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // 4,000 µs sits in a 2 µs-wide HDR bucket, exported as its highest value.
    assert_eq!(points, [(1.0, 4.001), (3.0, 2.0)]);
}

#[tokio::test]
async fn a_large_batch_is_gzipped_by_the_agent_and_read_back_whole() {
    let moto = Moto::shared();
    let namespace = format!("VantageGzip{}", std::process::id());
    // 25 targets, four phases each with a spread of latencies: far over the 10 KiB threshold.
    let stats: Vec<IntervalStats> = (0..25u64)
        .map(|t| {
            let mut s = IntervalStats::new(3);
            s.attempts = 20;
            s.outcomes[Outcome::Ok.index()] = 20;
            for i in 0..20 {
                for phase in [Phase::Connect, Phase::Tls, Phase::Ttfb, Phase::Total] {
                    s.phases[phase.index()].record_micros(1_000 + t * 37 + i * 911);
                }
            }
            s
        })
        .collect();
    let ids: Vec<String> = (0..25).map(|t| format!("status:r-{t:03}")).collect();
    let targets: Vec<_> = ids
        .iter()
        .zip(&stats)
        .map(|(id, s)| {
            let meta = TargetMeta {
                service: "payments",
                id,
                region: Some("eu-west-1"),
            };
            (meta, s)
        })
        .collect();
    let seen = SentBodies::default();
    let sending = aws_sdk_cloudwatch::Client::from_conf(
        client_config(moto).await.interceptor(seen.clone()).build(),
    );
    let settings = ApiSettings {
        namespace: namespace.clone(),
        storage_resolution: 60,
    };
    let mut exporters = Exporters::with_cloudwatch_client(sending, settings, "us-east-1", 3);
    exporters.interval(now_ms(), &targets);
    let summary = exporters.finish(Duration::from_secs(60)).await.cloudwatch;
    // Four latency phases and one outcome per target.
    assert_eq!(
        (summary.sent, summary.failed, summary.dropped),
        (125, 0, 0),
        "{summary:?}"
    );
    let sent = seen.0.lock().unwrap().clone();
    assert!(!sent.is_empty());
    for (encoding, body) in &sent {
        assert_eq!(encoding.as_deref(), Some("gzip"));
        let mut form = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut form)
            .expect("a gzip body");
        assert!(form.contains("Action=PutMetricData"), "{}", &form[..200]);
        // Even the fastest level shrinks form encoding several-fold.
        assert!(
            body.len() * 4 < form.len(),
            "{} -> {}",
            form.len(),
            body.len()
        );
    }

    let cw = client(moto).await;
    for t in [0, 12, 24] {
        let id = format!("status:r-{t:03}");
        let total = dims(&[
            ("Service", "payments"),
            ("Target", &id),
            ("Region", "eu-west-1"),
            ("Vantage", "us-east-1"),
            ("Phase", "total"),
        ]);
        let points = stats_of(&cw, &namespace, "Latency", total).await;
        assert_eq!(points.len(), 1, "{id}: {points:?}");
        assert_eq!(points[0].sample_count(), Some(20.0), "{id}");
    }
}
