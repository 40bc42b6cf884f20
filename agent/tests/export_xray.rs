//! The X-Ray export end to end: a real probe of a local server carries `X-Amzn-Trace-Id`, and
//! its segment reaches a local UDP "daemon" socket, or moto through `PutTraceSegments` (one
//! moto_server for this binary) and is read back with `BatchGetTraces`/`GetTraceSummaries`.
//!
//! What moto does not show, so these tests do not claim it: moto keeps each segment's raw
//! document and tells error/fault by the keys' presence, but implements no annotations in
//! summaries, no filter expressions, no service graph and no trace header validation, and its
//! GetTraceSummaries answer has `"Users": {}` where the API has a list (the SDK cannot read it,
//! so the test reads the JSON itself).

use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use vantage_agent::export::xray::{Destination, XRaySink, DAEMON_HEADER, TRACE_HEADER};
use vantage_agent::export::{sdk_loader, Exporters};
use vantage_agent::metrics::TargetLabels;
use vantage_probe::spec::ProbeSpec;
use vantage_probe::tls::TlsConfigCache;
use vantage_probe::Prober;
use vantage_testkit::moto::Moto;
use vantage_testkit::server::server;

fn labels() -> TargetLabels {
    TargetLabels::new("payments", "status:eu-west-1", Some("eu-west-1"))
}

/// Probes `url` with a sampled trace through `sink`'s tracer; returns the trace header sent.
async fn traced_probe(sink: &XRaySink, url: &str) -> (String, String, vantage_probe::ProbeResult) {
    let prober = Prober::new(
        ProbeSpec::get(url).unwrap(),
        Arc::new(TlsConfigCache::new()),
    )
    .unwrap();
    let ctx = sink.tracer.sample().expect("rate 1.0 samples every probe");
    let mut headers = http::HeaderMap::new();
    headers.insert(http::HeaderName::from_static(TRACE_HEADER), ctx.header());
    let result = prober.probe_with_headers(&headers).await;
    sink.tracer.record(&ctx, &labels(), "GET", url, &result);
    (ctx.trace_id, ctx.segment_id, result)
}

#[tokio::test]
async fn a_sampled_probe_carries_the_header_and_its_segment_reaches_the_udp_daemon() {
    let daemon = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let api = server().status(200).body("ok").start().await;
    let sink = XRaySink::start(
        Destination::Daemon(daemon.local_addr().unwrap()),
        1.0,
        "us-east-1",
    );
    let (trace_id, segment_id, result) =
        traced_probe(&sink, &api.url("/status?token=secret")).await;
    assert!(result.outcome.is_ok(), "{result:?}");

    let sent = api
        .seen()
        .headers
        .get(TRACE_HEADER)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sent,
        format!("Root={trace_id};Parent={segment_id};Sampled=1")
    );
    assert!(
        trace_id.len() == 35 && trace_id.starts_with("1-"),
        "{trace_id}"
    );

    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(Duration::from_secs(10), daemon.recv(&mut buf))
        .await
        .expect("a datagram")
        .unwrap();
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    let doc = text
        .strip_prefix(DAEMON_HEADER)
        .expect("daemon header line");
    let segment: Value = serde_json::from_str(doc).unwrap();
    assert_eq!(segment["trace_id"], trace_id.as_str());
    assert_eq!(segment["id"], segment_id.as_str());
    assert!(segment.get("fault").is_none() && segment.get("error").is_none());
    assert_eq!(segment["annotations"]["target"], "status:eu-west-1");
    assert_eq!(segment["annotations"]["region"], "eu-west-1");
    assert_eq!(segment["annotations"]["vantage"], "us-east-1");
    assert_eq!(segment["http"]["response"]["status"], 200);
    let url = segment["http"]["request"]["url"].as_str().unwrap();
    assert!(
        !url.contains("secret"),
        "query strings stay out of traces: {url}"
    );
    let names: Vec<&str> = segment["subsegments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    // A plain-HTTP IP literal: no DNS, no TLS.
    assert_eq!(names, ["connect", "ttfb", "transfer"]);
    let start = segment["start_time"].as_f64().unwrap();
    let end = segment["end_time"].as_f64().unwrap();
    for s in segment["subsegments"].as_array().unwrap() {
        let (s0, s1) = (
            s["start_time"].as_f64().unwrap(),
            s["end_time"].as_f64().unwrap(),
        );
        assert!(
            start <= s0 && s0 <= s1 && s1 <= end + 1e-6,
            "{s} within {start}..{end}"
        );
    }
    let summary = sink.finish(Duration::from_secs(5)).await;
    assert_eq!((summary.sent, summary.failed), (1, 0));
}

#[tokio::test]
async fn segments_are_read_back_from_moto_with_their_fault_flag() {
    let moto = Moto::shared();
    let config = sdk_loader(Some(&moto.endpoint()), "us-east-1")
        .credentials_provider(vantage_testkit::moto::credentials())
        .load()
        .await;
    let client = aws_sdk_xray::Client::new(&config);
    let ok = server().status(200).start().await;
    let failing = server().status(503).start().await;
    let sink = XRaySink::start(Destination::Api(client.clone()), 1.0, "us-east-1");
    let before = SystemTime::now() - Duration::from_secs(60);
    let (ok_trace, _, _) = traced_probe(&sink, &ok.url("/")).await;
    let (bad_trace, bad_segment, _) = traced_probe(&sink, &failing.url("/")).await;
    let summary = sink.finish(Duration::from_secs(30)).await;
    assert_eq!((summary.sent, summary.failed), (2, 0), "{summary:?}");

    let traces = client
        .batch_get_traces()
        .trace_ids(&ok_trace)
        .trace_ids(&bad_trace)
        .send()
        .await
        .expect("BatchGetTraces");
    assert!(traces.unprocessed_trace_ids().is_empty());
    assert_eq!(traces.traces().len(), 2);
    let bad = traces
        .traces()
        .iter()
        .find(|t| t.id() == Some(bad_trace.as_str()))
        .unwrap();
    let doc: Value = serde_json::from_str(bad.segments()[0].document().unwrap()).unwrap();
    assert_eq!(doc["id"], bad_segment.as_str());
    assert_eq!(doc["fault"], true);
    assert_eq!(doc["http"]["response"]["status"], 503);
    assert_eq!(doc["annotations"]["outcome"], "http_status");

    // GetTraceSummaries through raw HTTP: moto answers `"Users": {}` where the API has a list,
    // which the SDK rightly refuses to read.
    let body = serde_json::json!({
        "StartTime": before.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        "EndTime": SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60,
    })
    .to_string();
    let port = moto.port;
    let response = tokio::task::spawn_blocking(move || {
        vantage_testkit::http::exchange_blocking(
            port,
            "POST",
            "/TraceSummaries",
            &[
                ("content-type", "application/json"),
                // moto finds the Region (and so the backend) in the credential scope.
                ("authorization", "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/xray/aws4_request, SignedHeaders=host, Signature=0"),
            ],
            body.as_bytes(),
        )
    })
    .await
    .unwrap()
    .expect("GetTraceSummaries");
    assert_eq!(response.status, 200, "{}", response.body);
    let summaries: Value = serde_json::from_str(&response.body).unwrap();
    let faulted = |id: &str| {
        summaries["TraceSummaries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Id"] == id)
            .map(|s| s["HasFault"].clone())
    };
    assert_eq!(faulted(&bad_trace), Some(Value::Bool(true)));
    assert_eq!(faulted(&ok_trace), Some(Value::Bool(false)));
}

#[tokio::test]
async fn sampling_rate_zero_traces_nothing_and_one_traces_everything() {
    let never =
        Exporters::none().with_xray(Destination::Daemon("127.0.0.1:9".parse().unwrap()), 0.0);
    let tracer = never.tracer().unwrap();
    assert!((0..1_000).all(|_| tracer.sample().is_none()));
    let always =
        Exporters::none().with_xray(Destination::Daemon("127.0.0.1:9".parse().unwrap()), 1.0);
    let tracer = always.tracer().unwrap();
    assert!((0..1_000).all(|_| tracer.sample().is_some()));
    let some =
        Exporters::none().with_xray(Destination::Daemon("127.0.0.1:9".parse().unwrap()), 0.05);
    let tracer = some.tracer().unwrap();
    let n = (0..20_000).filter(|_| tracer.sample().is_some()).count();
    // 5 % of 20,000 is 1,000; the binomial's standard deviation is about 31.
    assert!((800..1_200).contains(&n), "{n}");
}
