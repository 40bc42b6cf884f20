//! The CloudWatch API sink: a task that sends batches of [`Datum`]s with `PutMetricData`, off
//! the probe schedule. The collector hands it batches through a bounded queue and never waits:
//! when the queue is full the batch is dropped and counted. A failed call is retried with the
//! project's one [`Backoff`], a few times, then the batch is dropped and counted.
//!
//! Request bodies over [`COMPRESS_ABOVE_BYTES`] are gzipped at the fastest level by
//! [`FastGzip`] instead of the SDK's own compression, which uses level 6: a 1,000-datum
//! `PutMetricData` body is about a megabyte of form encoding, and at level 6 compressing it was
//! the largest single cost of the whole export (2.5 % of the agent's CPU at 1,000 targets, more
//! than serialising it). Level 1 keeps most of the saving, which matters as much: the bytes
//! cross a NAT gateway or VPC endpoint that bills per gigabyte.

use super::datum::{Datum, Unit};
use aws_sdk_cloudwatch as cloudwatch;
use cloudwatch::config::interceptors::BeforeTransmitInterceptorContextMut;
use cloudwatch::config::{ConfigBag, Intercept, RuntimeComponents};
use cloudwatch::primitives::DateTime;
use cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use std::io::Write;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vantage_runtime::Backoff;

/// Batches waiting to be sent; with 1,000 data per batch, a backlog of many intervals.
pub const QUEUE_BATCHES: usize = 64;
/// Attempts per batch before it is dropped.
pub const MAX_ATTEMPTS: u32 = 4;
/// Retry delays.
pub const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

/// Counters of the exporters (label `exporter`: `cloudwatch`, `emf`, `xray`).
pub const SENT_TOTAL: &str = "vantage_export_sent_total";
pub const FAILED_TOTAL: &str = "vantage_export_failed_total";
pub const DROPPED_TOTAL: &str = "vantage_export_dropped_total";
pub const RETRIES_TOTAL: &str = "vantage_export_retries_total";

/// What a sink did, in data (metric datums), for the agent's summary and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SinkSummary {
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub requests: u64,
    pub retries: u64,
}

/// Where the API sink sends.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub namespace: String,
    /// 60 or 1.
    pub storage_resolution: i32,
}

/// Bodies at least this long are compressed (the SDK's default threshold: smaller ones can
/// grow).
pub const COMPRESS_ABOVE_BYTES: usize = 10 * 1024;

/// The CloudWatch client of the API sink: [`client_config`] built.
pub fn client(config: &aws_config::SdkConfig) -> cloudwatch::Client {
    cloudwatch::Client::from_conf(client_config(config).build())
}

/// `config` with the SDK's level-6 request compression replaced by [`FastGzip`].
pub fn client_config(config: &aws_config::SdkConfig) -> cloudwatch::config::Builder {
    cloudwatch::config::Builder::from(config)
        .disable_request_compression(true)
        .interceptor(FastGzip)
}

/// Gzips request bodies of at least [`COMPRESS_ABOVE_BYTES`] at the fastest level, before the
/// retry loop, so the compressed body is what SigV4 signs and every attempt sends.
#[derive(Debug)]
pub struct FastGzip;

impl Intercept for FastGzip {
    fn name(&self) -> &'static str {
        "FastGzip"
    }

    fn modify_before_retry_loop(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), cloudwatch::error::BoxError> {
        let request = context.request_mut();
        let Some(body) = request.body().bytes() else {
            return Ok(()); // a streaming body: PutMetricData never has one
        };
        if body.len() < COMPRESS_ABOVE_BYTES {
            return Ok(());
        }
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        encoder.write_all(body)?;
        let compressed = encoder.finish()?;
        let length = compressed.len().to_string();
        *request.body_mut() = compressed.into();
        let headers = request.headers_mut();
        headers.insert("content-length", length);
        headers.append("content-encoding", "gzip");
        Ok(())
    }
}

/// The running API sink.
pub struct ApiSink {
    tx: mpsc::Sender<Vec<Datum>>,
    storage_resolution: i32,
    dropped: u64,
    task: JoinHandle<SinkSummary>,
}

impl ApiSink {
    pub fn start(client: cloudwatch::Client, settings: ApiSettings) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let storage_resolution = settings.storage_resolution;
        let task = tokio::spawn(run(client, settings, rx));
        ApiSink {
            tx,
            storage_resolution,
            dropped: 0,
            task,
        }
    }

    /// Seconds: 60 or 1.
    pub fn storage_resolution(&self) -> i32 {
        self.storage_resolution
    }

    /// Queues a batch without waiting; a full queue drops it (counted).
    pub fn offer(&mut self, batch: Vec<Datum>) {
        if let Err(e) = self.tx.try_send(batch) {
            let n = match &e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => {
                    b.len()
                }
            } as u64;
            self.dropped += n;
            metrics::counter!(DROPPED_TOTAL, "exporter" => "cloudwatch").increment(n);
            tracing::warn!(data = n, "CloudWatch export queue full: batch dropped");
        }
    }

    /// Sends what is queued, within `deadline`; what is left then is dropped.
    pub async fn finish(self, deadline: Duration) -> SinkSummary {
        drop(self.tx);
        let abort = self.task.abort_handle();
        let mut summary = match tokio::time::timeout(deadline, self.task).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                abort.abort();
                tracing::warn!("CloudWatch export did not finish in time");
                SinkSummary::default()
            }
        };
        summary.dropped += self.dropped;
        summary
    }
}

async fn run(
    client: cloudwatch::Client,
    settings: ApiSettings,
    mut rx: mpsc::Receiver<Vec<Datum>>,
) -> SinkSummary {
    let mut summary = SinkSummary::default();
    while let Some(batch) = rx.recv().await {
        let n = batch.len() as u64;
        let data: Vec<MetricDatum> = batch
            .iter()
            .map(|d| to_sdk(d, settings.storage_resolution))
            .collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            summary.requests += 1;
            let result = client
                .put_metric_data()
                .namespace(&settings.namespace)
                .set_metric_data(Some(data.clone()))
                .send()
                .await;
            match result {
                Ok(_) => {
                    summary.sent += n;
                    metrics::counter!(SENT_TOTAL, "exporter" => "cloudwatch").increment(n);
                    break;
                }
                Err(e) if attempt < MAX_ATTEMPTS => {
                    summary.retries += 1;
                    metrics::counter!(RETRIES_TOTAL, "exporter" => "cloudwatch").increment(1);
                    tracing::warn!(error = %vantage_runtime::errors::chain(&e), attempt, "PutMetricData failed; retrying");
                    tokio::time::sleep(BACKOFF.delay(attempt)).await;
                }
                Err(e) => {
                    summary.failed += n;
                    metrics::counter!(FAILED_TOTAL, "exporter" => "cloudwatch").increment(n);
                    tracing::error!(error = %vantage_runtime::errors::chain(&e), data = n, "PutMetricData failed; batch dropped");
                    break;
                }
            }
        }
    }
    summary
}

/// The SDK's form of a datum.
pub fn to_sdk(d: &Datum, storage_resolution: i32) -> MetricDatum {
    let unit = match d.unit {
        Unit::Milliseconds => StandardUnit::Milliseconds,
        Unit::Count => StandardUnit::Count,
    };
    MetricDatum::builder()
        .metric_name(d.metric)
        .set_dimensions(Some(
            d.dimensions
                .iter()
                .map(|(n, v)| Dimension::builder().name(*n).value(v).build())
                .collect(),
        ))
        .timestamp(DateTime::from_millis(d.timestamp_ms as i64))
        .unit(unit)
        .set_values(Some(d.values.clone()))
        .set_counts(Some(d.counts.clone()))
        .storage_resolution(storage_resolution)
        .build()
}
