//! X-Ray export: one segment per sampled probe (`[export.xray]`, default 5 % of probes) with
//! the probe's phases as subsegments (`dns`, `connect`, `tls`, `ttfb`, `transfer`, laid end to
//! end from the probe's start), the outcome as the `error` (4xx) / `throttle` (429) / `fault`
//! (any other failure) flags and annotations for service, target, Region, vantage and outcome.
//! The probe's request carries `X-Amzn-Trace-Id` with the segment as parent, so API Gateway,
//! Lambda and the status endpoint join the same trace.
//!
//! Segments leave through a bounded queue (full: dropped and counted) to a task that sends them
//! to a local X-Ray daemon over UDP (a `{"format":"json","version":1}` header line, then the
//! segment, one datagram each) or with `PutTraceSegments` in batches of up to 50 gathered for
//! at most [`BATCH_WAIT`], retried with the
//! project's [`Backoff`](vantage_runtime::Backoff).

use super::cloudwatch::{
    SinkSummary, BACKOFF, DROPPED_TOTAL, FAILED_TOTAL, MAX_ATTEMPTS, RETRIES_TOTAL, SENT_TOTAL,
};
use crate::metrics::TargetLabels;
use http::HeaderValue;
use rand::Rng;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vantage_probe::ProbeResult;
use vantage_protocol::{Outcome, Phase};

/// The trace header name.
pub const TRACE_HEADER: &str = "x-amzn-trace-id";
/// The X-Ray daemon's datagram header.
pub const DAEMON_HEADER: &str = "{\"format\":\"json\",\"version\":1}\n";
/// Segments waiting to be sent.
pub const QUEUE_SEGMENTS: usize = 4_096;
/// Segment documents per `PutTraceSegments` call (the API's documented batch is small; X-Ray
/// SDKs send up to 50 at a time).
pub const SEGMENTS_PER_CALL: usize = 50;
/// Longest a segment waits for others to share its `PutTraceSegments` call.
pub const BATCH_WAIT: Duration = Duration::from_secs(1);
/// The subsegments, in the order the phases happen.
const PHASES: [Phase; 5] = [
    Phase::Dns,
    Phase::Connect,
    Phase::Tls,
    Phase::Ttfb,
    Phase::Transfer,
];

/// Where segments go.
pub enum Destination {
    /// A local X-Ray daemon.
    Daemon(SocketAddr),
    /// The X-Ray API.
    Api(aws_sdk_xray::Client),
}

/// A trace context of one sampled probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `1-<8 hex epoch seconds>-<24 hex random>`.
    pub trace_id: String,
    /// 16 hex digits.
    pub segment_id: String,
    pub start: SystemTime,
}

impl TraceContext {
    pub fn new(start: SystemTime) -> Self {
        let mut rng = rand::rng();
        let secs = start.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        TraceContext {
            trace_id: format!("1-{:08x}-{:024x}", secs as u32, rng.random::<u128>() >> 32),
            segment_id: format!("{:016x}", rng.random::<u64>()),
            start,
        }
    }

    /// The `X-Amzn-Trace-Id` value: this trace, this segment as the parent, sampled.
    pub fn header(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "Root={};Parent={};Sampled=1",
            self.trace_id, self.segment_id
        ))
        .expect("hex digits and ASCII punctuation")
    }
}

/// The segment document of one probe (pure), borrowed from what it describes and serialised
/// straight to JSON: building a `serde_json::Value` tree first cost a map and a string per
/// field, most of the tracer's CPU.
#[derive(Debug, Serialize)]
pub struct Segment<'a> {
    name: &'static str,
    id: &'a str,
    trace_id: &'a str,
    start_time: f64,
    end_time: f64,
    // Flags only when set: absent means false, and moto tells them by presence.
    #[serde(skip_serializing_if = "is_false")]
    error: bool,
    #[serde(skip_serializing_if = "is_false")]
    throttle: bool,
    #[serde(skip_serializing_if = "is_false")]
    fault: bool,
    http: Http<'a>,
    annotations: Annotations<'a>,
    subsegments: Vec<Subsegment>,
}

#[derive(Debug, Serialize)]
struct Http<'a> {
    request: HttpRequest<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<HttpResponse>,
}

#[derive(Debug, Serialize)]
struct HttpRequest<'a> {
    method: &'a str,
    url: String,
}

#[derive(Debug, Serialize)]
struct HttpResponse {
    status: u16,
}

#[derive(Debug, Serialize)]
struct Annotations<'a> {
    service: &'a str,
    target: &'a str,
    region: &'a str,
    vantage: &'a str,
    outcome: &'static str,
}

#[derive(Debug, Serialize)]
struct Subsegment {
    name: &'static str,
    id: String,
    start_time: f64,
    end_time: f64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The segment of one probe: its phases laid end to end from the start, its outcome as flags.
pub fn segment<'a>(
    ctx: &'a TraceContext,
    labels: &'a TargetLabels,
    vantage: &'a str,
    method: &'a str,
    url: &str,
    result: &ProbeResult,
) -> Segment<'a> {
    let start = secs(ctx.start);
    let total = result.timings.get(Phase::Total).unwrap_or_default();
    let mut subsegments = Vec::with_capacity(PHASES.len());
    let mut at = start;
    let mut rng = rand::rng();
    for phase in PHASES {
        if let Some(d) = result.timings.get(phase) {
            let end = at + d.as_secs_f64();
            subsegments.push(Subsegment {
                name: phase.as_str(),
                id: format!("{:016x}", rng.random::<u64>()),
                start_time: at,
                end_time: end,
            });
            at = end;
        }
    }
    let status = result.status;
    let (error, throttle, fault) = match result.outcome {
        Outcome::Ok => (false, false, false),
        Outcome::HttpStatus if status == Some(429) => (true, true, false),
        Outcome::HttpStatus if status.is_some_and(|s| (400..500).contains(&s)) => {
            (true, false, false)
        }
        _ => (false, false, true),
    };
    Segment {
        name: "vantage-agent",
        id: &ctx.segment_id,
        trace_id: &ctx.trace_id,
        start_time: start,
        end_time: start + total.as_secs_f64(),
        error,
        throttle,
        fault,
        http: Http {
            request: HttpRequest {
                method,
                url: url_for_trace(url),
            },
            response: status.map(|status| HttpResponse { status }),
        },
        annotations: Annotations {
            service: &labels.service,
            target: &labels.target,
            region: &labels.region,
            vantage,
            outcome: result.outcome.as_str(),
        },
        subsegments,
    }
}

/// The URL without credentials or query string, which may carry secrets.
fn url_for_trace(url: &str) -> String {
    let clean = vantage_protocol::config::redact_url(url);
    clean
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Samples probes and queues their segments; shared by every target of the agent.
pub struct Tracer {
    rate: f64,
    vantage: String,
    tx: mpsc::Sender<String>,
}

impl Tracer {
    /// A trace context for a probe about to start, for `rate` of the calls.
    pub fn sample(&self) -> Option<TraceContext> {
        (self.rate > 0.0 && rand::rng().random::<f64>() < self.rate)
            .then(|| TraceContext::new(SystemTime::now()))
    }

    /// Queues the probe's segment without waiting; a full queue drops it (counted).
    pub fn record(
        &self,
        ctx: &TraceContext,
        labels: &TargetLabels,
        method: &str,
        url: &str,
        result: &ProbeResult,
    ) {
        let segment = segment(ctx, labels, &self.vantage, method, url, result);
        // Plain data of strings and numbers: serialising cannot fail.
        let doc = serde_json::to_string(&segment).unwrap_or_default();
        if self.tx.try_send(doc).is_err() {
            metrics::counter!(DROPPED_TOTAL, "exporter" => "xray").increment(1);
        }
    }
}

/// The running X-Ray export: the shared [`Tracer`] and the task that sends.
pub struct XRaySink {
    pub tracer: std::sync::Arc<Tracer>,
    /// Tells the task to send what is queued and stop, though targets still hold the tracer.
    close: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<SinkSummary>,
}

impl XRaySink {
    pub fn start(destination: Destination, rate: f64, vantage: &str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_SEGMENTS);
        let (close, closed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(send_all(destination, rx, closed));
        XRaySink {
            close,
            tracer: std::sync::Arc::new(Tracer {
                rate,
                vantage: vantage.to_owned(),
                tx,
            }),
            task,
        }
    }

    /// Sends what is queued within `deadline`; later segments are not sent.
    pub async fn finish(self, deadline: Duration) -> SinkSummary {
        let _ = self.close.send(());
        let abort = self.task.abort_handle();
        match tokio::time::timeout(deadline, self.task).await {
            Ok(Ok(s)) => s,
            _ => {
                abort.abort();
                tracing::warn!("X-Ray export did not finish in time");
                SinkSummary::default()
            }
        }
    }
}

/// The next segment: waits while open; once `closed` fires, only what is already queued.
async fn next(
    rx: &mut mpsc::Receiver<String>,
    closed: &mut tokio::sync::oneshot::Receiver<()>,
    closing: &mut bool,
) -> Option<String> {
    if !*closing {
        tokio::select! {
            doc = rx.recv() => return doc,
            _ = &mut *closed => *closing = true,
        }
    }
    rx.try_recv().ok()
}

async fn send_all(
    destination: Destination,
    mut rx: mpsc::Receiver<String>,
    mut closed: tokio::sync::oneshot::Receiver<()>,
) -> SinkSummary {
    let mut summary = SinkSummary::default();
    let mut closing = false;
    match destination {
        Destination::Daemon(addr) => {
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = match tokio::net::UdpSocket::bind(bind).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "X-Ray export: cannot open a UDP socket");
                    while next(&mut rx, &mut closed, &mut closing).await.is_some() {
                        summary.failed += 1;
                        metrics::counter!(FAILED_TOTAL, "exporter" => "xray").increment(1);
                    }
                    return summary;
                }
            };
            while let Some(doc) = next(&mut rx, &mut closed, &mut closing).await {
                let datagram = format!("{DAEMON_HEADER}{doc}");
                summary.requests += 1;
                match socket.send_to(datagram.as_bytes(), addr).await {
                    Ok(_) => {
                        summary.sent += 1;
                        metrics::counter!(SENT_TOTAL, "exporter" => "xray").increment(1);
                    }
                    Err(e) => {
                        summary.failed += 1;
                        metrics::counter!(FAILED_TOTAL, "exporter" => "xray").increment(1);
                        tracing::warn!(error = %e, "X-Ray daemon send failed");
                    }
                }
            }
        }
        Destination::Api(client) => {
            while let Some(first) = next(&mut rx, &mut closed, &mut closing).await {
                // Gather for up to BATCH_WAIT: one signed call per 50 segments, not per probe.
                let mut batch = vec![first];
                let until = tokio::time::Instant::now() + BATCH_WAIT;
                while batch.len() < SEGMENTS_PER_CALL {
                    let more = if closing {
                        rx.try_recv().ok()
                    } else {
                        tokio::time::timeout_at(until, next(&mut rx, &mut closed, &mut closing))
                            .await
                            .ok()
                            .flatten()
                    };
                    match more {
                        Some(doc) => batch.push(doc),
                        None => break,
                    }
                }
                put_batch(&client, batch, &mut summary).await;
            }
        }
    }
    summary
}

async fn put_batch(client: &aws_sdk_xray::Client, batch: Vec<String>, summary: &mut SinkSummary) {
    let n = batch.len() as u64;
    let mut attempt = 0;
    loop {
        attempt += 1;
        summary.requests += 1;
        match client
            .put_trace_segments()
            .set_trace_segment_documents(Some(batch.clone()))
            .send()
            .await
        {
            Ok(out) => {
                let unprocessed = out.unprocessed_trace_segments().len() as u64;
                summary.sent += n - unprocessed.min(n);
                summary.failed += unprocessed.min(n);
                metrics::counter!(SENT_TOTAL, "exporter" => "xray")
                    .increment(n - unprocessed.min(n));
                if unprocessed > 0 {
                    metrics::counter!(FAILED_TOTAL, "exporter" => "xray").increment(unprocessed);
                }
                return;
            }
            Err(e) if attempt < MAX_ATTEMPTS => {
                summary.retries += 1;
                metrics::counter!(RETRIES_TOTAL, "exporter" => "xray").increment(1);
                tracing::warn!(error = %vantage_runtime::errors::chain(&e), attempt, "PutTraceSegments failed; retrying");
                tokio::time::sleep(BACKOFF.delay(attempt)).await;
            }
            Err(e) => {
                summary.failed += n;
                metrics::counter!(FAILED_TOTAL, "exporter" => "xray").increment(n);
                tracing::error!(error = %vantage_runtime::errors::chain(&e), segments = n, "PutTraceSegments failed; segments dropped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome, status: Option<u16>) -> ProbeResult {
        let mut timings = vantage_probe::PhaseTimings::default();
        timings.set(Phase::Dns, Duration::from_millis(2));
        timings.set(Phase::Ttfb, Duration::from_millis(30));
        timings.set(Phase::Total, Duration::from_millis(40));
        let mut result = ProbeResult::synthetic(outcome, timings);
        result.status = status;
        result
    }

    #[test]
    fn outcome_flags_and_phases_laid_end_to_end() {
        let ctx = TraceContext::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert!(ctx.trace_id.starts_with("1-6553f100-"), "{}", ctx.trace_id);
        let labels = TargetLabels::new("api", "global", None);
        let doc = |o, s| -> serde_json::Value {
            let d = segment(
                &ctx,
                &labels,
                "us-east-1",
                "GET",
                "https://u:p@x/y?k=v",
                &result(o, s),
            );
            serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap()
        };
        let flags = |o, s| ["error", "fault", "throttle"].map(|k| doc(o, s).get(k).is_some());
        assert_eq!(flags(Outcome::Ok, Some(200)), [false, false, false]);
        assert_eq!(flags(Outcome::HttpStatus, Some(404)), [true, false, false]);
        assert_eq!(flags(Outcome::HttpStatus, Some(429)), [true, false, true]);
        assert_eq!(flags(Outcome::HttpStatus, Some(503)), [false, true, false]);
        assert_eq!(flags(Outcome::Timeout, None), [false, true, false]);
        let d = doc(Outcome::Ok, Some(200));
        assert_eq!(d["http"]["response"]["status"], 200);
        assert_eq!(d["annotations"]["outcome"], "ok");
        let url = d["http"]["request"]["url"].as_str().unwrap();
        assert!(!url.contains("u:p") && !url.contains("k=v"), "{url}");
        let subs = d["subsegments"].as_array().unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[0]["end_time"], subs[1]["start_time"]);
        let (start, end) = (
            d["start_time"].as_f64().unwrap(),
            d["end_time"].as_f64().unwrap(),
        );
        assert!((end - start - 0.040).abs() < 1e-6);
    }
}
