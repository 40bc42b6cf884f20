//! Optional exports of what the agent measures, beside its reports to the aggregator:
//! CloudWatch latency distributions and outcome counts (`[export.cloudwatch]`), sent with
//! `PutMetricData` by a task of their own ([`cloudwatch`]) or, in Lambda, written as Embedded
//! Metric Format lines on stdout ([`emf`]); X-Ray segments of sampled probes (`[export.xray]`,
//! [`xray`]). The daemon hands [`Exporters::interval`] each collected interval and every
//! target the [`Exporters::tracer`]; nothing here makes a probe wait.
//!
//! - [`distribution`]: HDR histogram → `Values`/`Counts` within the histogram's precision.
//! - [`datum`]: the metric data of an interval and their batching within the API's limits.

pub mod cloudwatch;
pub mod datum;
pub mod distribution;
pub mod emf;
pub mod xray;

use crate::recorder::IntervalStats;
use cloudwatch::{ApiSettings, ApiSink, SinkSummary};
use datum::{batches, target_data, TargetMeta, MAX_DATA_PER_REQUEST, MAX_REQUEST_BYTES};
use std::collections::BTreeMap;
use std::time::Duration;
use vantage_protocol::config::{CloudWatchExport, CloudWatchMode, FleetConfig};

/// The configured exporters of a running agent.
pub struct Exporters {
    cloudwatch: Option<Sink>,
    xray: Option<xray::XRaySink>,
    vantage: String,
    significant_digits: u8,
    /// An empty histogram of that precision: the bucket layout for sparse intervals.
    layout: hdrhistogram::Histogram<u64>,
    window: Option<Window>,
}

/// Intervals being merged into one storage-resolution period, per target.
struct Window {
    start_ms: u64,
    /// By (service, target id, Region).
    targets: BTreeMap<(String, String, Option<String>), IntervalStats>,
}

enum Sink {
    Api(ApiSink),
    Emf {
        namespace: String,
        resolution: i32,
        summary: SinkSummary,
    },
}

impl Exporters {
    /// No export.
    pub fn none() -> Self {
        Exporters {
            cloudwatch: None,
            xray: None,
            vantage: String::new(),
            significant_digits: 3,
            layout: layout(3),
            window: None,
        }
    }

    /// The exporters `fleet` enables, for the agent in `vantage`. The API client takes its
    /// credentials from the default chain (environment, profile, ECS or Lambda role).
    pub async fn start(fleet: &FleetConfig, vantage: &str) -> Self {
        let mut exporters = Exporters {
            cloudwatch: None,
            xray: None,
            vantage: vantage.to_owned(),
            significant_digits: fleet.histogram_precision(),
            layout: layout(fleet.histogram_precision()),
            window: None,
        };
        if let Some(cw) = fleet.cloudwatch_export() {
            exporters.cloudwatch = Some(match effective_mode(cw) {
                CloudWatchMode::Emf => Sink::Emf {
                    namespace: cw.namespace().to_owned(),
                    resolution: cw.resolution() as i32,
                    summary: SinkSummary::default(),
                },
                _ => {
                    let region = cw.region.as_ref().map_or(vantage, |r| r.get_ref().as_str());
                    let endpoint = cw.endpoint_url.as_ref().map(|u| u.get_ref().as_str());
                    let config = sdk_loader(endpoint, region).load().await;
                    Sink::Api(ApiSink::start(
                        cloudwatch::client(&config),
                        api_settings(cw),
                    ))
                }
            });
            tracing::info!(namespace = cw.namespace(), mode = ?effective_mode(cw), "CloudWatch export on");
        }
        if let Some(x) = fleet.xray_export() {
            let destination = match &x.daemon {
                Some(daemon) => match tokio::net::lookup_host(daemon.get_ref().as_str())
                    .await
                    .map(|mut a| a.next())
                {
                    Ok(Some(addr)) => Some(xray::Destination::Daemon(addr)),
                    Ok(None) | Err(_) => {
                        tracing::error!(daemon = %daemon.get_ref(), "X-Ray daemon address does not resolve; X-Ray export off");
                        None
                    }
                },
                None => {
                    let region = x.region.as_ref().map_or(vantage, |r| r.get_ref().as_str());
                    let endpoint = x.endpoint_url.as_ref().map(|u| u.get_ref().as_str());
                    let config = sdk_loader(endpoint, region).load().await;
                    Some(xray::Destination::Api(aws_sdk_xray::Client::new(&config)))
                }
            };
            if let Some(d) = destination {
                exporters.xray = Some(xray::XRaySink::start(d, x.sample_rate(), vantage));
                tracing::info!(sample_rate = x.sample_rate(), "X-Ray export on");
            }
        }
        exporters
    }

    /// X-Ray with a destination of the caller's (tests, benchmarks).
    pub fn with_xray(mut self, destination: xray::Destination, sample_rate: f64) -> Self {
        self.xray = Some(xray::XRaySink::start(
            destination,
            sample_rate,
            &self.vantage,
        ));
        self
    }

    /// The probe tracer, when X-Ray export is on.
    pub fn tracer(&self) -> Option<std::sync::Arc<xray::Tracer>> {
        self.xray.as_ref().map(|x| x.tracer.clone())
    }

    /// CloudWatch through the API with a client of the caller's (tests, benchmarks).
    pub fn with_cloudwatch_client(
        client: aws_sdk_cloudwatch::Client,
        settings: ApiSettings,
        vantage: &str,
        significant_digits: u8,
    ) -> Self {
        Exporters {
            cloudwatch: Some(Sink::Api(ApiSink::start(client, settings))),
            xray: None,
            vantage: vantage.to_owned(),
            significant_digits,
            layout: layout(significant_digits),
            window: None,
        }
    }

    /// No interval export configured (X-Ray works per probe, through the tracer).
    pub fn is_empty(&self) -> bool {
        self.cloudwatch.is_none()
    }

    /// Exports one interval (starting at `timestamp_ms`) of the given targets. Never waits.
    ///
    /// Intervals are merged per target up to the storage resolution (a minute by default):
    /// CloudWatch keeps one point per resolution period anyway, and a merged HDR histogram
    /// loses no precision, so this sends the same percentiles in up to 60 times fewer data
    /// (at `report_interval = "1s"`; 6 times at the default 10 s). A window is sent when an
    /// interval of a later one arrives, and at [`finish`](Self::finish).
    pub fn interval(&mut self, timestamp_ms: u64, targets: &[(TargetMeta<'_>, &IntervalStats)]) {
        let Some(sink) = &self.cloudwatch else {
            return;
        };
        let period = u64::from(sink.resolution_secs().max(1)) * 1_000;
        let start = timestamp_ms - timestamp_ms % period;
        if self.window.as_ref().is_some_and(|w| w.start_ms != start) {
            self.flush();
        }
        let digits = self.significant_digits;
        let window = self.window.get_or_insert_with(|| Window {
            start_ms: start,
            targets: BTreeMap::new(),
        });
        for (meta, stats) in targets {
            let key = (
                meta.service.to_owned(),
                meta.id.to_owned(),
                meta.region.map(str::to_owned),
            );
            let merged = window
                .targets
                .entry(key)
                .or_insert_with(|| IntervalStats::new(digits));
            merged.attempts += stats.attempts;
            for (sum, n) in merged.outcomes.iter_mut().zip(stats.outcomes) {
                *sum += n;
            }
            for (sum, set) in merged.phases.iter_mut().zip(&stats.phases) {
                sum.merge(set);
            }
        }
    }

    /// Sends the window being merged.
    fn flush(&mut self) {
        let (Some(window), Some(sink)) = (self.window.take(), &mut self.cloudwatch) else {
            return;
        };
        let data: Vec<_> = window
            .targets
            .iter()
            .flat_map(|((service, id, region), stats)| {
                let meta = TargetMeta {
                    service,
                    id,
                    region: region.as_deref(),
                };
                target_data(
                    meta,
                    &self.vantage,
                    stats,
                    window.start_ms,
                    &self.layout,
                    self.significant_digits,
                )
            })
            .collect();
        if data.is_empty() {
            return;
        }
        match sink {
            Sink::Api(api) => {
                for batch in batches(data, MAX_DATA_PER_REQUEST, MAX_REQUEST_BYTES) {
                    api.offer(batch);
                }
            }
            Sink::Emf {
                namespace,
                resolution,
                summary,
            } => {
                let n = data.len() as u64;
                let sent = emf::emit(namespace, *resolution, &data);
                summary.sent += sent;
                summary.failed += n - sent;
            }
        }
    }

    /// Sends the window being merged and what is still queued, within `deadline`.
    pub async fn finish(mut self, deadline: Duration) -> ExportSummary {
        self.flush();
        let cloudwatch = async {
            match self.cloudwatch {
                None => SinkSummary::default(),
                Some(Sink::Api(api)) => api.finish(deadline).await,
                Some(Sink::Emf { summary, .. }) => summary,
            }
        };
        let xray = async {
            match self.xray {
                None => SinkSummary::default(),
                Some(x) => x.finish(deadline).await,
            }
        };
        let (cloudwatch, xray) = tokio::join!(cloudwatch, xray);
        ExportSummary { cloudwatch, xray }
    }
}

/// What the exporters did: CloudWatch in metric data, X-Ray in segments.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    pub cloudwatch: SinkSummary,
    pub xray: SinkSummary,
}

/// The bucket layout at `digits` (validated 1..=5 with the fleet file; 3 if not).
fn layout(digits: u8) -> hdrhistogram::Histogram<u64> {
    vantage_protocol::histogram::new_latency_histogram(digits)
        .or_else(|_| vantage_protocol::histogram::new_latency_histogram(3))
        .expect("3 significant digits is valid")
}

impl Sink {
    fn resolution_secs(&self) -> u32 {
        match self {
            Sink::Api(api) => api.storage_resolution() as u32,
            Sink::Emf { resolution, .. } => *resolution as u32,
        }
    }
}

fn api_settings(cw: &CloudWatchExport) -> ApiSettings {
    ApiSettings {
        namespace: cw.namespace().to_owned(),
        storage_resolution: cw.resolution() as i32,
    }
}

/// `auto` is EMF inside Lambda (the runtime sets `AWS_LAMBDA_FUNCTION_NAME`), the API elsewhere.
fn effective_mode(cw: &CloudWatchExport) -> CloudWatchMode {
    match cw.mode() {
        CloudWatchMode::Auto if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() => {
            CloudWatchMode::Emf
        }
        CloudWatchMode::Auto => CloudWatchMode::Api,
        m => m,
    }
}

/// The SDK configuration: rustls on ring like every vantage AWS client, the SDK's own retries
/// off (the sink retries with the project's backoff), short timeouts.
pub fn sdk_loader(endpoint_url: Option<&str>, region: &str) -> aws_config::ConfigLoader {
    vantage_runtime::aws::sdk_loader(vantage_runtime::aws::SdkOptions {
        region,
        endpoint_url,
        connect_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(10),
        max_idle_per_host: 2,
    })
}
