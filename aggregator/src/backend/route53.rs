//! The Route 53 backend: makes one weighted record set and each Region's health signal agree
//! with the desired state, through the AWS SDK (rustls with ring, no aws-lc, SDK retries off so
//! that every retry is ours: jittered, bounded and counted in `vantage_route53_retries_total`).
//!
//! - Weights: the weighted records of `record_name`/`record_type`, one per Region by set
//!   identifier. All weight changes go out as ONE ChangeResourceRecordSets batch of UPSERTs built
//!   from the records as Route 53 returns them (value, TTL, alias target, health check kept), then
//!   we wait for INSYNC.
//! - Health, [`HealthMode::DataPlane`] (default): a CloudWatch metric per Region (1 in service,
//!   0 out) that a CLOUDWATCH_METRIC health check's alarm follows. Changes are published at once,
//!   and [`Backend::heartbeat`] republishes every Region each period so the alarm never runs out
//!   of data. Observed health is the latest one-minute `Minimum` of that metric (GetMetricData,
//!   one request for all Regions), so a pass right after publishing may still read the old value
//!   and publish again: harmless, and it stops as soon as CloudWatch has the new point.
//! - Health, [`HealthMode::ControlPlane`]: an aggregator-owned CALCULATED health check per
//!   Region, forced healthy with HealthThreshold 0 and unhealthy with a threshold above its
//!   child count, under HealthCheckVersion optimistic concurrency.

use super::{Backend, BackendError, Change, DesiredState, ObservedRegion, ObservedState};
use aws_sdk_cloudwatch as cloudwatch;
use aws_sdk_route53 as route53;
use route53::config::http::HttpResponse;
use route53::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use route53::types::{
    ChangeAction, ChangeBatch, ChangeStatus, HealthCheckConfig, HealthCheckType, ResourceRecordSet,
    RrType,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_protocol::config::{Route53Health, Route53Section};

/// Counter of retried AWS calls, labelled by `operation` (the AWS API name).
pub const RETRIES_METRIC: &str = "vantage_route53_retries_total";
/// Histogram of the time from ChangeResourceRecordSets to INSYNC.
pub const INSYNC_METRIC: &str = "vantage_route53_change_insync_seconds";
/// Default CloudWatch namespace and metric name of the per-Region health metric.
pub const DEFAULT_METRIC_NAMESPACE: &str = "Vantage";
pub const DEFAULT_METRIC_NAME: &str = "RegionHealthy";
/// The metric's dimension naming the vantage Region.
pub const REGION_DIMENSION: &str = "Region";
/// Standard resolution: CLOUDWATCH_METRIC health checks do not support high-resolution metrics.
const STORAGE_RESOLUTION: i32 = 60;
/// How far back observe looks for the latest published health value.
const METRIC_LOOKBACK: Duration = Duration::from_secs(300);
/// Extra rounds after a HealthCheckVersionMismatch (someone else updated the check between our
/// read and our write).
const VERSION_MISMATCH_ROUNDS: u32 = 2;
/// GetChange polling: first wait and ceiling (doubling in between).
const INSYNC_POLL_FIRST: Duration = Duration::from_secs(1);
const INSYNC_POLL_MAX: Duration = Duration::from_secs(10);
/// ListResourceRecordSets page size (the API maximum) and a bound on pages, so a service that
/// never stops saying "truncated" cannot keep us looping.
const LIST_PAGE_SIZE: i32 = 300;
const LIST_MAX_PAGES: usize = 20;
/// A CALCULATED check has at most 256 children and a threshold of at most 256.
const MAX_HEALTH_THRESHOLD: usize = 256;
/// Error codes worth retrying besides 5xx: Route 53's and CloudWatch's throttling, and Route 53's
/// "a change to this zone is still being processed".
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "PriorRequestNotComplete",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalError",
];

/// How a Region's health reaches Route 53.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthMode {
    /// Publish `metric_name` (dimension `Region`) in `namespace`; a CLOUDWATCH_METRIC health
    /// check on an alarm over it guards the Region's record. Survives a control-plane outage.
    DataPlane {
        namespace: String,
        metric_name: String,
    },
    /// Force each Region's CALCULATED health check through UpdateHealthCheck. Faster, but uses
    /// the Route 53 control plane (us-east-1).
    ControlPlane,
}

/// Jittered exponential backoff for retryable AWS errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Ceiling of the first backoff; doubles per retry.
    pub base: Duration,
    /// Largest backoff.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// Six attempts over roughly 8 to 16 s: Route 53 allows five API requests per second per
    /// account, and PriorRequestNotComplete clears once the previous change is processed.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(250),
            max: Duration::from_secs(16),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based): "equal jitter", half of the exponential
    /// ceiling fixed and half random, so a burst of callers spreads out but none retries at once.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(retry.min(30)))
            .min(self.max);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            rand::Rng::random_range(&mut rand::rng(), 0..=spread)
        };
        half + Duration::from_micros(jitter)
    }
}

/// One Region's objects in Route 53.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionRecord {
    /// SetIdentifier of the Region's weighted record.
    pub set_identifier: String,
    /// The CALCULATED health check forced in control-plane mode (required there).
    pub health_check_id: Option<String>,
}

/// What the backend drives, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route53Config {
    /// Bare zone id (a `/hostedzone/` prefix is removed).
    pub hosted_zone_id: String,
    /// FQDN of the weighted records, lower case, with the trailing dot.
    pub record_name: String,
    /// `A`, `AAAA` or `CNAME`.
    pub record_type: String,
    /// Per vantage Region name.
    pub regions: BTreeMap<String, RegionRecord>,
    pub health: HealthMode,
    /// How long to wait for a record change to reach INSYNC before reporting it.
    pub insync_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Route53Config {
    /// The fleet file's `[route53]` section as the backend drives it. The section's values are
    /// checked (with file and line) when the fleet file loads, by the same
    /// [`Route53Section::settings`] used here; this only fails for a section built by hand.
    pub fn from_section(s: &Route53Section) -> Result<Self, BackendError> {
        let s = s
            .settings()
            .map_err(|p| BackendError::Config(p.to_string()))?;
        let health = match s.health {
            Route53Health::DataPlane => HealthMode::DataPlane {
                namespace: s
                    .metric_namespace
                    .unwrap_or_else(|| DEFAULT_METRIC_NAMESPACE.to_owned()),
                metric_name: DEFAULT_METRIC_NAME.to_owned(),
            },
            Route53Health::ControlPlane => HealthMode::ControlPlane,
        };
        let regions = s
            .regions
            .into_iter()
            .map(|(name, r)| {
                let record = RegionRecord {
                    set_identifier: r.set_identifier,
                    health_check_id: r.health_check_id,
                };
                (name, record)
            })
            .collect();
        Ok(Route53Config {
            hosted_zone_id: s.hosted_zone_id,
            record_name: s.record_name,
            record_type: s.record_type.as_str().to_owned(),
            regions,
            health,
            insync_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
        })
    }
}

/// The SDK configuration the backend uses: credentials from the default chain, `aws_region`
/// (default us-east-1, where the Route 53 control plane lives) for both clients, an optional
/// endpoint override, HTTPS through rustls with ring, and no SDK retries (ours count them).
/// Tests add static credentials to the loader before `load()`.
pub fn sdk_loader(
    endpoint_url: Option<&str>,
    aws_region: Option<&str>,
) -> aws_config::ConfigLoader {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http_client = aws_smithy_http_client::Builder::new()
        .pool_max_idle_per_host(4)
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(
            aws_region.unwrap_or("us-east-1").to_owned(),
        ))
        .http_client(http_client)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .build(),
        );
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader
}

/// The Route 53 + CloudWatch backend. Cheap to clone (the clients are shared).
#[derive(Clone)]
pub struct Route53Backend {
    inner: Arc<Inner>,
}

struct Inner {
    route53: route53::Client,
    cloudwatch: cloudwatch::Client,
    config: Route53Config,
    /// Write attempts sent (ChangeResourceRecordSets, UpdateHealthCheck, PutMetricData), so
    /// tests can prove that a pass with nothing to do writes nothing.
    writes: AtomicU64,
}

impl std::fmt::Debug for Route53Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route53Backend")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Route53Backend {
    /// Loads the SDK configuration ([`sdk_loader`]) and connects ([`Self::connect_with`]).
    pub async fn connect(
        config: Route53Config,
        endpoint_url: Option<String>,
        aws_region: Option<String>,
    ) -> Result<Self, BackendError> {
        let sdk = sdk_loader(endpoint_url.as_deref(), aws_region.as_deref())
            .load()
            .await;
        Self::connect_with(&sdk, config).await
    }

    /// Builds the clients from `sdk` and verifies that Route 53 is shaped as configured: every
    /// Region's weighted record exists (and, in control-plane mode, is guarded by its CALCULATED
    /// health check, which must exist). Anything missing is a [`BackendError::Shape`] naming it.
    pub async fn connect_with(
        sdk: &aws_config::SdkConfig,
        config: Route53Config,
    ) -> Result<Self, BackendError> {
        let backend = Self::from_clients(
            route53::Client::new(sdk),
            cloudwatch::Client::new(sdk),
            config,
        );
        backend.verify_shape().await?;
        Ok(backend)
    }

    /// Wraps existing clients without verifying anything (tests with aws-smithy-mocks). SDK
    /// retries are switched off on both so that every retry is the backend's own.
    pub fn from_clients(
        route53: route53::Client,
        cloudwatch: cloudwatch::Client,
        config: Route53Config,
    ) -> Self {
        let route53 = route53::Client::from_conf(
            route53
                .config()
                .to_builder()
                .retry_config(route53::config::retry::RetryConfig::disabled())
                .build(),
        );
        let cloudwatch = cloudwatch::Client::from_conf(
            cloudwatch
                .config()
                .to_builder()
                .retry_config(cloudwatch::config::retry::RetryConfig::disabled())
                .build(),
        );
        Route53Backend {
            inner: Arc::new(Inner {
                route53,
                cloudwatch,
                config,
                writes: AtomicU64::new(0),
            }),
        }
    }

    pub fn config(&self) -> &Route53Config {
        &self.inner.config
    }

    /// Write attempts sent so far (retries included).
    pub fn write_calls(&self) -> u64 {
        self.inner.writes.load(Ordering::Relaxed)
    }

    /// Checks records and health checks; see [`Self::connect_with`].
    pub async fn verify_shape(&self) -> Result<(), BackendError> {
        let inner = &self.inner;
        let config = &inner.config;
        let records = inner.weighted_records().await.map_err(|e| {
            if e.code() == Some("NoSuchHostedZone") {
                BackendError::Shape(
                    format!("hosted zone {}", config.hosted_zone_id),
                    describe(&e),
                )
            } else {
                BackendError::Observe(format!("ListResourceRecordSets: {}", describe(&e)))
            }
        })?;
        for (region, want) in &config.regions {
            let what = inner.record_label(region, want);
            let Some(record) = records.get(&want.set_identifier) else {
                return Err(BackendError::Shape(
                    what,
                    format!("no such record in hosted zone {}", config.hosted_zone_id),
                ));
            };
            if record.weight.is_none() {
                return Err(BackendError::Shape(
                    what,
                    "it is not a weighted record (no Weight)".into(),
                ));
            }
            match (&config.health, &want.health_check_id) {
                (HealthMode::ControlPlane, Some(check))
                    if record.health_check_id.as_deref() != Some(check.as_str()) =>
                {
                    return Err(BackendError::Shape(
                        what,
                        format!(
                            "it is guarded by health check {}, not {check}: forcing {check} would not move traffic",
                            record.health_check_id.as_deref().unwrap_or("(none)")
                        ),
                    ));
                }
                (HealthMode::DataPlane { .. }, _) if record.health_check_id.is_none() => {
                    tracing::warn!(
                        record = %what,
                        "record has no health check: the published health metric cannot take it out; only weights will move traffic"
                    );
                }
                _ => {}
            }
        }
        if config.health == HealthMode::ControlPlane {
            for (region, want) in &config.regions {
                let id = want.health_check_id.as_deref().unwrap_or_default();
                let check = inner.calculated_check(region, id).await?;
                if check.inverted == Some(true) {
                    return Err(BackendError::Shape(
                        health_check_label(region, id),
                        "it is Inverted: forcing its threshold would have the opposite effect"
                            .into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Backend for Route53Backend {
    fn name(&self) -> &'static str {
        "route53"
    }

    async fn observe(&self) -> Result<ObservedState, BackendError> {
        let inner = &self.inner;
        let records = inner.weighted_records().await.map_err(|e| {
            BackendError::Observe(format!("ListResourceRecordSets: {}", describe(&e)))
        })?;
        let health = match &inner.config.health {
            HealthMode::ControlPlane => self.observe_calculated().await?,
            HealthMode::DataPlane {
                namespace,
                metric_name,
            } => inner.observe_metric(namespace, metric_name).await,
        };
        let mut state = ObservedState::new();
        for (region, want) in &inner.config.regions {
            let weight = match records.get(&want.set_identifier) {
                Some(record) => record.weight.and_then(|w| u8::try_from(w).ok()),
                None => {
                    // Not an error here: health can still be driven; the weight write will
                    // report the missing record as a Shape error.
                    tracing::warn!(record = %inner.record_label(region, want), "weighted record not found");
                    None
                }
            };
            state.insert(
                region.clone(),
                ObservedRegion {
                    in_service: health.get(region).copied().flatten(),
                    weight,
                },
            );
        }
        Ok(state)
    }

    async fn apply(&self, changes: &[Change], _desired: &DesiredState) -> Result<(), BackendError> {
        let inner = &self.inner;
        for c in changes {
            if !inner.config.regions.contains_key(c.region()) {
                return Err(BackendError::Config(format!(
                    "{c}: Region {} has no [route53.regions.{}] entry",
                    c.region(),
                    c.region()
                )));
            }
        }
        // Every change is attempted even when an earlier one failed: taking one Region out must
        // not wait on another Region's broken health check. The first error is returned.
        let mut errors = Vec::new();
        let health: Vec<(&str, bool)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Health { region, in_service } => Some((region.as_str(), *in_service)),
                Change::Weight { .. } => None,
            })
            .collect();
        match &inner.config.health {
            HealthMode::ControlPlane => {
                for (region, in_service) in &health {
                    if let Err(e) = inner.force_health(region, *in_service).await {
                        errors.push(e);
                    }
                }
            }
            HealthMode::DataPlane {
                namespace,
                metric_name,
            } if !health.is_empty() => {
                if let Err(e) = inner.put_health(namespace, metric_name, &health).await {
                    let label = changes
                        .iter()
                        .filter(|c| matches!(c, Change::Health { .. }))
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ");
                    errors.push(BackendError::Apply {
                        change: label,
                        message: format!("PutMetricData: {e}"),
                    });
                }
            }
            HealthMode::DataPlane { .. } => {}
        }
        let weights: Vec<(&Change, &str, u8)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Weight { region, to, .. } => Some((c, region.as_str(), *to)),
                Change::Health { .. } => None,
            })
            .collect();
        if !weights.is_empty() {
            if let Err(e) = inner.apply_weights(&weights).await {
                errors.push(e);
            }
        }
        let mut errors = errors.into_iter();
        match errors.next() {
            None => Ok(()),
            Some(first) => {
                for other in errors {
                    tracing::error!(backend = "route53", "{other}");
                }
                Err(first)
            }
        }
    }

    async fn heartbeat(&self, desired: &DesiredState) -> Result<(), BackendError> {
        let inner = &self.inner;
        let HealthMode::DataPlane {
            namespace,
            metric_name,
        } = &inner.config.health
        else {
            return Ok(());
        };
        let values: Vec<(&str, bool)> = desired
            .iter()
            .filter(|(region, _)| inner.config.regions.contains_key(region.as_str()))
            .map(|(region, want)| (region.as_str(), want.in_service))
            .collect();
        if values.is_empty() {
            return Ok(());
        }
        inner
            .put_health(namespace, metric_name, &values)
            .await
            .map_err(|message| BackendError::Apply {
                change: "health heartbeat".into(),
                message: format!("PutMetricData: {message}"),
            })
    }
}

impl Route53Backend {
    /// GetHealthCheck for every Region at once.
    async fn observe_calculated(&self) -> Result<BTreeMap<String, Option<bool>>, BackendError> {
        let mut reads = tokio::task::JoinSet::new();
        for (region, want) in &self.inner.config.regions {
            let inner = Arc::clone(&self.inner);
            let region = region.clone();
            let id = want.health_check_id.clone().unwrap_or_default();
            reads.spawn(async move {
                let check = inner.calculated_check(&region, &id).await?;
                Ok::<_, BackendError>((region, forced_state(&check)))
            });
        }
        let mut health = BTreeMap::new();
        while let Some(joined) = reads.join_next().await {
            let (region, state) = joined
                .map_err(|e| BackendError::Observe(format!("GetHealthCheck task: {e}")))??;
            health.insert(region, state);
        }
        Ok(health)
    }
}

impl Inner {
    /// Runs `call` until it succeeds, fails with a non-retryable error, or runs out of
    /// attempts; every retry is counted under `operation`.
    async fn with_retries<T, E, F, Fut>(
        &self,
        operation: &'static str,
        mut call: F,
    ) -> Result<T, SdkError<E, HttpResponse>>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let policy = &self.config.retry;
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(e) if attempt < policy.max_attempts.max(1) && is_retryable(&e) => {
                    let delay = policy.backoff(attempt - 1);
                    metrics::counter!(RETRIES_METRIC, "operation" => operation).increment(1);
                    tracing::warn!(
                        operation,
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        error = %describe(&e),
                        "retrying Route 53 / CloudWatch call"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn count_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    fn record_label(&self, region: &str, want: &RegionRecord) -> String {
        format!(
            "weighted record {} {} with set identifier {:?} (Region {region})",
            self.config.record_name, self.config.record_type, want.set_identifier
        )
    }

    /// The weighted records of the configured name and type, by set identifier, exactly as
    /// Route 53 returns them.
    async fn weighted_records(
        &self,
    ) -> Result<
        BTreeMap<String, ResourceRecordSet>,
        SdkError<
            route53::operation::list_resource_record_sets::ListResourceRecordSetsError,
            HttpResponse,
        >,
    > {
        let config = &self.config;
        let rr_type = RrType::from(config.record_type.as_str());
        let mut found = BTreeMap::new();
        let mut start = (config.record_name.clone(), rr_type.clone(), None::<String>);
        for _ in 0..LIST_MAX_PAGES {
            let request = self
                .route53
                .list_resource_record_sets()
                .hosted_zone_id(&config.hosted_zone_id)
                .start_record_name(&start.0)
                .start_record_type(start.1.clone())
                .set_start_record_identifier(start.2.clone())
                .max_items(LIST_PAGE_SIZE);
            let page = self
                .with_retries("ListResourceRecordSets", || request.clone().send())
                .await?;
            let mut past_ours = false;
            for record in page.resource_record_sets() {
                let ours = record
                    .name
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(config.record_name.trim_end_matches('.'))
                    && record.r#type == rr_type;
                if !ours {
                    past_ours = true;
                    break;
                }
                if let Some(id) = &record.set_identifier {
                    found.insert(id.clone(), record.clone());
                }
            }
            if past_ours || !page.is_truncated() {
                break;
            }
            let next = (
                page.next_record_name().unwrap_or_default().to_owned(),
                page.next_record_type().cloned().unwrap_or(rr_type.clone()),
                page.next_record_identifier().map(str::to_owned),
            );
            if next == start {
                // A service that cannot page inside a weighted group (moto ignores
                // StartRecordIdentifier) would hand back the same page forever.
                break;
            }
            start = next;
        }
        Ok(found)
    }

    /// GetHealthCheck, checked to be a CALCULATED check.
    async fn calculated_check(
        &self,
        region: &str,
        id: &str,
    ) -> Result<CheckSnapshot, BackendError> {
        let request = self.route53.get_health_check().health_check_id(id);
        let out = self
            .with_retries("GetHealthCheck", || request.clone().send())
            .await
            .map_err(|e| {
                if e.code() == Some("NoSuchHealthCheck") {
                    BackendError::Shape(health_check_label(region, id), describe(&e))
                } else {
                    BackendError::Observe(format!(
                        "GetHealthCheck {id} (Region {region}): {}",
                        describe(&e)
                    ))
                }
            })?;
        let check = out.health_check.ok_or_else(|| {
            BackendError::Observe(format!("GetHealthCheck {id}: no HealthCheck in the answer"))
        })?;
        let config: HealthCheckConfig = check.health_check_config.ok_or_else(|| {
            BackendError::Observe(format!("GetHealthCheck {id}: no HealthCheckConfig"))
        })?;
        if config.r#type != HealthCheckType::Calculated {
            return Err(BackendError::Shape(
                health_check_label(region, id),
                format!("it is {}, not CALCULATED", config.r#type.as_str()),
            ));
        }
        let children = config.child_health_checks.unwrap_or_default();
        if children.len() >= MAX_HEALTH_THRESHOLD {
            return Err(BackendError::Shape(
                health_check_label(region, id),
                format!(
                    "it has {} children: a threshold above that is over Route 53's limit of {MAX_HEALTH_THRESHOLD}",
                    children.len()
                ),
            ));
        }
        Ok(CheckSnapshot {
            version: check.health_check_version,
            threshold: config.health_threshold,
            children,
            inverted: config.inverted,
            disabled: config.disabled,
        })
    }

    /// Forces `region`'s CALCULATED check healthy (threshold 0) or unhealthy (children + 1),
    /// from a fresh read so the threshold matches the current children and the write carries
    /// the version it was computed from.
    async fn force_health(&self, region: &str, in_service: bool) -> Result<(), BackendError> {
        let id = self.config.regions[region]
            .health_check_id
            .clone()
            .unwrap_or_default();
        let change = Change::Health {
            region: region.to_owned(),
            in_service,
        }
        .to_string();
        let mut round = 0;
        loop {
            let check = self.calculated_check(region, &id).await?;
            let target = if in_service {
                0
            } else {
                check.children.len() as i32 + 1
            };
            let disabled = check.disabled == Some(true);
            if check.threshold == Some(target) && (in_service || !disabled) {
                return Ok(());
            }
            // ChildHealthChecks is re-sent as read: unchanged on AWS (the version guards it),
            // and moto would otherwise clear the children on every update.
            let mut request = self
                .route53
                .update_health_check()
                .health_check_id(&id)
                .health_check_version(check.version)
                .health_threshold(target)
                .set_child_health_checks(Some(check.children.clone()));
            if !in_service && disabled {
                // A disabled check is always healthy: it must be enabled to take the Region out.
                tracing::warn!(region, health_check = %id, "enabling disabled health check to take the Region out");
                request = request.disabled(false);
            }
            let result = self
                .with_retries("UpdateHealthCheck", || {
                    self.count_write();
                    request.clone().send()
                })
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(backend = "route53", health_check = %id, threshold = target, "applied: {change}");
                    return Ok(());
                }
                Err(e)
                    if e.code() == Some("HealthCheckVersionMismatch")
                        && round < VERSION_MISMATCH_ROUNDS =>
                {
                    metrics::counter!(RETRIES_METRIC, "operation" => "UpdateHealthCheck")
                        .increment(1);
                    tracing::warn!(region, health_check = %id, "health check changed under us; re-reading");
                    round += 1;
                }
                Err(e) => {
                    return Err(BackendError::Apply {
                        change,
                        message: format!("UpdateHealthCheck {id}: {}", describe(&e)),
                    })
                }
            }
        }
    }

    /// One ChangeResourceRecordSets batch with every weight change, then INSYNC.
    async fn apply_weights(&self, weights: &[(&Change, &str, u8)]) -> Result<(), BackendError> {
        let label = weights
            .iter()
            .map(|(c, _, _)| c.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let apply_error = |message: String| BackendError::Apply {
            change: label.clone(),
            message,
        };
        // Re-read so every UPSERT carries the record exactly as it is now: values, TTL, alias
        // target and health check survive, only Weight changes.
        let records = self
            .weighted_records()
            .await
            .map_err(|e| apply_error(format!("ListResourceRecordSets: {}", describe(&e))))?;
        let mut batch = Vec::new();
        for (_, region, to) in weights {
            let want = &self.config.regions[*region];
            let Some(record) = records.get(&want.set_identifier) else {
                return Err(BackendError::Shape(
                    self.record_label(region, want),
                    format!(
                        "no such record in hosted zone {}",
                        self.config.hosted_zone_id
                    ),
                ));
            };
            if record.weight == Some(i64::from(*to)) {
                continue;
            }
            let mut record = record.clone();
            record.weight = Some(i64::from(*to));
            batch.push(
                route53::types::Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(record)
                    .build()
                    .map_err(|e| apply_error(format!("building the change: {e}")))?,
            );
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut comment = format!("vantage: {label}");
        comment.truncate(256);
        let change_batch = ChangeBatch::builder()
            .set_changes(Some(batch))
            .comment(comment)
            .build()
            .map_err(|e| apply_error(format!("building the batch: {e}")))?;
        let request = self
            .route53
            .change_resource_record_sets()
            .hosted_zone_id(&self.config.hosted_zone_id)
            .change_batch(change_batch);
        let started = tokio::time::Instant::now();
        let out = self
            .with_retries("ChangeResourceRecordSets", || {
                self.count_write();
                request.clone().send()
            })
            .await
            .map_err(|e| apply_error(format!("ChangeResourceRecordSets: {}", describe(&e))))?;
        tracing::info!(backend = "route53", "applied: {label}");
        let Some(info) = out.change_info else {
            return Ok(());
        };
        if info.status != ChangeStatus::Insync {
            self.wait_insync(&info.id).await.map_err(apply_error)?;
        }
        metrics::histogram!(INSYNC_METRIC).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Polls GetChange with growing pauses until INSYNC or `insync_timeout`.
    async fn wait_insync(&self, id: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.config.insync_timeout;
        let mut pause = INSYNC_POLL_FIRST;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(format!(
                    "change {id} still PENDING after {:?}; Route 53 accepted it and keeps propagating",
                    self.config.insync_timeout
                ));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            let request = self.route53.get_change().id(id);
            let out = self
                .with_retries("GetChange", || request.clone().send())
                .await
                .map_err(|e| format!("GetChange {id}: {}", describe(&e)))?;
            if out
                .change_info
                .is_some_and(|c| c.status == ChangeStatus::Insync)
            {
                return Ok(());
            }
            pause = (pause * 2).min(INSYNC_POLL_MAX);
        }
    }

    /// PutMetricData: one datum per Region, 1 in service and 0 out, standard resolution.
    async fn put_health(
        &self,
        namespace: &str,
        metric_name: &str,
        values: &[(&str, bool)],
    ) -> Result<(), String> {
        use cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
        let now = cloudwatch::primitives::DateTime::from(SystemTime::now());
        let data = values
            .iter()
            .map(|(region, in_service)| {
                MetricDatum::builder()
                    .metric_name(metric_name)
                    .dimensions(
                        Dimension::builder()
                            .name(REGION_DIMENSION)
                            .value(*region)
                            .build(),
                    )
                    .timestamp(now)
                    .value(if *in_service { 1.0 } else { 0.0 })
                    .unit(StandardUnit::Count)
                    .storage_resolution(STORAGE_RESOLUTION)
                    .build()
            })
            .collect();
        let request = self
            .cloudwatch
            .put_metric_data()
            .namespace(namespace)
            .set_metric_data(Some(data));
        self.with_retries("PutMetricData", || {
            self.count_write();
            request.clone().send()
        })
        .await
        .map_err(|e| describe(&e))?;
        tracing::debug!(
            backend = "route53",
            regions = values.len(),
            "published health metric"
        );
        Ok(())
    }

    /// The latest one-minute Minimum of every Region's health metric (None without a point in
    /// the last few minutes, or when CloudWatch cannot be read: the metric is advisory here,
    /// publishing goes on regardless).
    async fn observe_metric(
        &self,
        namespace: &str,
        metric_name: &str,
    ) -> BTreeMap<String, Option<bool>> {
        use cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
        let regions: Vec<&String> = self.config.regions.keys().collect();
        let mut health: BTreeMap<String, Option<bool>> =
            regions.iter().map(|r| ((*r).clone(), None)).collect();
        let queries = regions
            .iter()
            .enumerate()
            .map(|(i, region)| {
                MetricDataQuery::builder()
                    .id(format!("r{i}"))
                    .return_data(true)
                    .metric_stat(
                        MetricStat::builder()
                            .metric(
                                Metric::builder()
                                    .namespace(namespace)
                                    .metric_name(metric_name)
                                    .dimensions(
                                        Dimension::builder()
                                            .name(REGION_DIMENSION)
                                            .value(region.as_str())
                                            .build(),
                                    )
                                    .build(),
                            )
                            .period(STORAGE_RESOLUTION)
                            .stat("Minimum")
                            .build(),
                    )
                    .build()
            })
            .collect();
        // Whole minutes, so each period is one CloudWatch minute; the end is past "now" so the
        // current minute is included.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let minute = now - now % 60;
        let start = minute.saturating_sub(METRIC_LOOKBACK.as_secs());
        let end = minute + 60;
        let request = self
            .cloudwatch
            .get_metric_data()
            .set_metric_data_queries(Some(queries))
            .start_time(cloudwatch::primitives::DateTime::from_secs(start as i64))
            .end_time(cloudwatch::primitives::DateTime::from_secs(end as i64))
            .scan_by(ScanBy::TimestampDescending);
        let out = match self
            .with_retries("GetMetricData", || request.clone().send())
            .await
        {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(backend = "route53", error = %describe(&e), "cannot read the health metric; health unknown this pass");
                return health;
            }
        };
        for result in out.metric_data_results() {
            let Some(index) = result
                .id()
                .and_then(|id| id.strip_prefix('r'))
                .and_then(|i| i.parse::<usize>().ok())
            else {
                continue;
            };
            let (Some(region), Some(latest)) = (regions.get(index), latest(result)) else {
                continue;
            };
            health.insert((*region).clone(), Some(latest >= 0.5));
        }
        health
    }
}

/// The newest value of a GetMetricData result, whatever order it came in.
fn latest(result: &cloudwatch::types::MetricDataResult) -> Option<f64> {
    result
        .timestamps()
        .iter()
        .zip(result.values())
        .max_by_key(|(t, _)| (t.secs(), t.subsec_nanos()))
        .map(|(_, v)| *v)
}

/// What the backend needs from a CALCULATED health check.
#[derive(Debug, Clone)]
struct CheckSnapshot {
    version: i64,
    threshold: Option<i32>,
    children: Vec<String>,
    inverted: Option<bool>,
    disabled: Option<bool>,
}

/// The state a CALCULATED check is forced into: threshold 0 is always healthy, a threshold
/// above the child count always unhealthy; anything else follows the children, which vantage
/// does not decide (None). Disabled checks are always healthy.
fn forced_state(check: &CheckSnapshot) -> Option<bool> {
    if check.inverted == Some(true) {
        return None;
    }
    if check.disabled == Some(true) {
        return Some(true);
    }
    match check.threshold {
        Some(0) => Some(true),
        Some(t) if usize::try_from(t).is_ok_and(|t| t > check.children.len()) => Some(false),
        _ => None,
    }
}

fn health_check_label(region: &str, id: &str) -> String {
    format!("CALCULATED health check {id} (Region {region})")
}

/// Throttling, PriorRequestNotComplete, 5xx, timeouts and connection failures.
fn is_retryable<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(f) => f.is_io() || f.is_timeout(),
        SdkError::ResponseError(r) => r.raw().status().is_server_error(),
        SdkError::ServiceError(s) => {
            s.err().code().is_some_and(|c| RETRYABLE_CODES.contains(&c)) || {
                let status = s.raw().status();
                status.is_server_error() || status.as_u16() == 429
            }
        }
        _ => false,
    }
}

/// "Code: message" for service errors (InvalidChangeBatch's list of messages included), the
/// full error chain otherwise.
fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err.code() {
        Some(code) => {
            let mut text = format!("{code}: {}", err.message().unwrap_or("(no message)"));
            use route53::operation::change_resource_record_sets::ChangeResourceRecordSetsError as Crrs;
            if let SdkError::ServiceError(s) = err {
                let any: &(dyn std::error::Error + 'static) = s.err();
                if let Some(Crrs::InvalidChangeBatch(batch)) = any.downcast_ref::<Crrs>() {
                    for m in batch.messages() {
                        text.push_str("; ");
                        text.push_str(m);
                    }
                }
            }
            text
        }
        None => DisplayErrorContext(err).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_protocol::config::{Located, Route53Region};

    fn located(s: &str) -> Located<String> {
        Located::new(0..0, s.to_owned())
    }

    fn section(health: Option<&str>, with_checks: bool) -> Route53Section {
        let regions = ["eu-west-1", "us-east-1"]
            .iter()
            .map(|r| {
                (
                    r.to_string(),
                    Route53Region {
                        set_identifier: located(r),
                        health_check_id: with_checks.then(|| located(&format!("hc-{r}"))),
                    },
                )
            })
            .collect();
        Route53Section {
            hosted_zone_id: located("/hostedzone/Z123"),
            record_name: located("API-Origin.example.com"),
            record_type: None,
            health: health.map(located),
            metric_namespace: None,
            endpoint_url: None,
            aws_region: None,
            regions,
        }
    }

    #[test]
    fn section_defaults_and_normalisation() {
        let c = Route53Config::from_section(&section(None, false)).unwrap();
        assert_eq!(c.hosted_zone_id, "Z123");
        assert_eq!(c.record_name, "api-origin.example.com.");
        assert_eq!(c.record_type, "CNAME");
        assert_eq!(
            c.health,
            HealthMode::DataPlane {
                namespace: "Vantage".into(),
                metric_name: "RegionHealthy".into()
            }
        );
        assert_eq!(c.regions["eu-west-1"].set_identifier, "eu-west-1");
    }

    #[test]
    fn section_validation_names_the_key() {
        let err = Route53Config::from_section(&section(Some("control-plane"), false)).unwrap_err();
        assert!(
            err.to_string()
                .contains("route53.regions.eu-west-1.health_check_id"),
            "{err}"
        );
        assert!(Route53Config::from_section(&section(Some("control-plane"), true)).is_ok());
        let err = Route53Config::from_section(&section(Some("both"), true)).unwrap_err();
        assert!(err.to_string().contains("route53.health"), "{err}");
        let mut s = section(None, false);
        s.record_type = Some(located("MX"));
        let err = Route53Config::from_section(&s).unwrap_err();
        assert!(err.to_string().contains("route53.record_type"), "{err}");
        let mut s = section(None, false);
        s.regions.get_mut("us-east-1").unwrap().set_identifier = located("eu-west-1");
        let err = Route53Config::from_section(&s).unwrap_err();
        assert!(err.to_string().contains("also eu-west-1's"), "{err}");
    }

    #[test]
    fn forced_state_reads_thresholds() {
        let check = |threshold, children: usize| CheckSnapshot {
            version: 1,
            threshold,
            children: vec!["c".into(); children],
            inverted: None,
            disabled: None,
        };
        assert_eq!(forced_state(&check(Some(0), 2)), Some(true));
        assert_eq!(forced_state(&check(Some(3), 2)), Some(false));
        assert_eq!(forced_state(&check(Some(2), 2)), None);
        assert_eq!(forced_state(&check(None, 2)), None);
        let mut disabled = check(Some(3), 2);
        disabled.disabled = Some(true);
        assert_eq!(forced_state(&disabled), Some(true));
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for retry in 0..40 {
            let d = p.backoff(retry);
            let ceiling = (Duration::from_millis(100) * 2u32.pow(retry.min(10))).min(p.max);
            assert!(d >= ceiling / 2 && d <= ceiling, "retry {retry}: {d:?}");
        }
    }
}
