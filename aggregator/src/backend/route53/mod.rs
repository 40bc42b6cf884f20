//! The Route 53 backend: makes each service's weighted record set and each unit's (one service
//! in one Region) health signal agree with the desired state through the AWS SDK, with every
//! retry our own (jittered, bounded and counted in `vantage_route53_retries_total`). `config`
//! says what one service drives and `units` flattens every service into units keyed as
//! decisions are (`payments/eu-west-1`, or the bare Region for a single-API fleet); `list` reads
//! the records (one sweep per hosted zone), `records` moves the weights (UPSERT batches per
//! zone, then INSYNC); health goes through `data_plane` (a CloudWatch metric behind a
//! CLOUDWATCH_METRIC health check, the default) or `control_plane` (forced CALCULATED health
//! checks); `retry` wraps every call and `sdk` sets up the clients, one set for all services;
//! this module wires them into one [`Backend`]. `layout` computes, from the fleet file alone, every
//! object the health votes need (alarms, health checks, the records' checks, the lease table),
//! which `vantage aggregator bootstrap` creates and `plan` / `check-config` show.

mod config;
mod control_plane;
mod data_plane;
pub mod layout;
mod list;
mod records;
mod retry;
mod sdk;
mod units;

pub use config::{
    HealthMode, RegionRecord, ReplicaVote, Route53Config, DEFAULT_METRIC_NAME,
    DEFAULT_METRIC_NAMESPACE,
};
pub use data_plane::{REGION_DIMENSION, REPLICA_DIMENSION, SERVICE_DIMENSION};
pub(crate) use list::{list_record_sets, NameType};
pub(crate) use records::{pack_by, upsert_cost};
pub(crate) use retry::describe;
pub use retry::RetryPolicy;
pub use sdk::sdk_loader;
pub use units::ServiceRecords;

use super::{Backend, BackendError, Change, DesiredState, ObservedRegion, ObservedState};
use aws_sdk_cloudwatch as cloudwatch;
use aws_sdk_route53 as route53;
use route53::error::ProvideErrorMetadata;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use units::Unit;

/// Counter of retried AWS calls, labelled by `operation` (the AWS API name).
pub const RETRIES_METRIC: &str = "vantage_route53_retries_total";
/// Histogram of the time from ChangeResourceRecordSets to INSYNC.
pub const INSYNC_METRIC: &str = "vantage_route53_change_insync_seconds";

/// The Route 53 + CloudWatch backend, for one API or every service of a fleet: one set of
/// clients whatever the number of services. Cheap to clone (the clients are shared).
#[derive(Clone)]
pub struct Route53Backend {
    inner: Arc<Inner>,
}

/// What every clone shares; the per-concern modules add their methods to it.
struct Inner {
    route53: route53::Client,
    cloudwatch: cloudwatch::Client,
    /// The shared settings (health mode, retry, INSYNC timeout, replica): the one service's
    /// configuration, or the first service's (every service has the fleet's `[route53]` ones).
    config: Route53Config,
    /// Every unit driven, by unit key.
    units: BTreeMap<String, Unit>,
    /// Write attempts sent (ChangeResourceRecordSets, UpdateHealthCheck, PutMetricData), so
    /// tests can prove that a pass with nothing to do writes nothing.
    writes: AtomicU64,
}

impl std::fmt::Debug for Route53Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route53Backend")
            .field("config", &self.inner.config)
            .field("units", &self.inner.units.len())
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
        let sdk = Self::load_sdk(endpoint_url, aws_region).await;
        Self::connect_with(&sdk, config).await
    }

    /// [`Self::connect`] (or, `tolerant`, [`Self::connect_tolerant`]) for a fleet with
    /// `[[services]]`: every service's records driven through one set of clients.
    pub async fn connect_services(
        services: Vec<ServiceRecords>,
        endpoint_url: Option<String>,
        aws_region: Option<String>,
        tolerant: bool,
    ) -> Result<Self, BackendError> {
        let sdk = Self::load_sdk(endpoint_url, aws_region).await;
        let backend = Self::build(&sdk, services)?;
        if tolerant {
            backend.verify_tolerant().await?;
        } else {
            backend.verify_shape().await?;
        }
        Ok(backend)
    }

    /// [`Self::connect_with`] for a fleet with `[[services]]`.
    pub async fn connect_services_with(
        sdk: &aws_config::SdkConfig,
        services: Vec<ServiceRecords>,
    ) -> Result<Self, BackendError> {
        let backend = Self::build(sdk, services)?;
        backend.verify_shape().await?;
        Ok(backend)
    }

    fn build(
        sdk: &aws_config::SdkConfig,
        services: Vec<ServiceRecords>,
    ) -> Result<Self, BackendError> {
        let cloudwatch = match services.first() {
            Some(first) => cloudwatch_client(sdk, &first.config),
            None => cloudwatch::Client::new(sdk),
        };
        Self::from_service_clients(route53::Client::new(sdk), cloudwatch, services)
    }

    async fn load_sdk(
        endpoint_url: Option<String>,
        aws_region: Option<String>,
    ) -> aws_config::SdkConfig {
        sdk_loader(endpoint_url.as_deref(), aws_region.as_deref())
            .load()
            .await
    }

    /// Like [`Self::connect`], for a process that must keep deciding whatever AWS does: when
    /// Route 53 cannot be reached (no credentials, no network, an API outage) the backend is
    /// returned unverified with one clear line, and the planes retry with backoff. A shape
    /// error (a record or health check that is not there) still fails: no retry fixes it.
    pub async fn connect_tolerant(
        config: Route53Config,
        endpoint_url: Option<String>,
        aws_region: Option<String>,
    ) -> Result<Self, BackendError> {
        let sdk = Self::load_sdk(endpoint_url, aws_region).await;
        let backend = Self::from_clients(
            route53::Client::new(&sdk),
            cloudwatch_client(&sdk, &config),
            config,
        );
        backend.verify_tolerant().await?;
        Ok(backend)
    }

    /// [`Self::verify_shape`], where only a shape or configuration error is fatal.
    async fn verify_tolerant(&self) -> Result<(), BackendError> {
        match self.verify_shape().await {
            Ok(()) => Ok(()),
            Err(e @ (BackendError::Shape(..) | BackendError::Config(_))) => Err(e),
            Err(e) => {
                let text = e.to_string();
                if text.to_ascii_lowercase().contains("credential") {
                    tracing::error!("no AWS credentials found: {text}; deciding goes on, Route 53 and CloudWatch are retried with backoff");
                } else {
                    tracing::error!("cannot reach Route 53 to verify the records: {text}; deciding goes on, AWS calls are retried with backoff");
                }
                Ok(())
            }
        }
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
            cloudwatch_client(sdk, &config),
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
        let units = units::single(&config);
        Self::from_parts(route53, cloudwatch, config, units)
    }

    /// [`Self::from_clients`] for a fleet with `[[services]]`; fails when two services name
    /// one record or differ in the shared settings.
    pub fn from_service_clients(
        route53: route53::Client,
        cloudwatch: cloudwatch::Client,
        services: Vec<ServiceRecords>,
    ) -> Result<Self, BackendError> {
        let units = units::units(&services)?;
        let config = shared(services)?;
        Ok(Self::from_parts(route53, cloudwatch, config, units))
    }

    fn from_parts(
        route53: route53::Client,
        cloudwatch: cloudwatch::Client,
        config: Route53Config,
        units: BTreeMap<String, Unit>,
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
                units,
                writes: AtomicU64::new(0),
            }),
        }
    }

    /// The shared settings, and for a single-API fleet its records (with services, the first
    /// service's).
    pub fn config(&self) -> &Route53Config {
        &self.inner.config
    }

    /// The unit keys this backend drives, sorted.
    pub fn unit_keys(&self) -> Vec<String> {
        self.inner.units.keys().cloned().collect()
    }

    /// Write attempts sent so far (retries included).
    pub fn write_calls(&self) -> u64 {
        self.inner.writes.load(Ordering::Relaxed)
    }

    /// Checks records and health checks; see [`Self::connect_with`].
    pub async fn verify_shape(&self) -> Result<(), BackendError> {
        let inner = &self.inner;
        let config = &inner.config;
        let records = inner.read_records(None).await.map_err(|(zone, e)| {
            if e.code() == Some("NoSuchHostedZone") {
                BackendError::Shape(format!("hosted zone {zone}"), describe(&e))
            } else {
                BackendError::Observe(format!("ListResourceRecordSets: {}", describe(&e)))
            }
        })?;
        for unit in inner.units.values() {
            let what = inner.record_label(unit);
            let Some(record) = records
                .get(&unit.set)
                .and_then(|r| r.get(&unit.record.set_identifier))
            else {
                return Err(BackendError::Shape(
                    what,
                    format!("no such record in hosted zone {}", unit.set.zone),
                ));
            };
            if record.weight.is_none() {
                return Err(BackendError::Shape(
                    what,
                    "it is not a weighted record (no Weight)".into(),
                ));
            }
            match (&config.health, &unit.record.health_check_id) {
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
            inner.verify_calculated_checks().await?;
        }
        Ok(())
    }

    /// Each unit's weight from `records` (`None` where its record is missing).
    fn weights_of(&self, records: &records::Records, warn: bool) -> BTreeMap<String, Option<u8>> {
        let inner = &self.inner;
        inner
            .units
            .iter()
            .map(|(key, unit)| {
                let record = records
                    .get(&unit.set)
                    .and_then(|r| r.get(&unit.record.set_identifier));
                if record.is_none() && warn {
                    // Not an error here: health can still be driven; the weight write will
                    // report the missing record as a Shape error.
                    tracing::warn!(record = %inner.record_label(unit), "weighted record not found");
                }
                let weight = record
                    .and_then(|r| r.weight)
                    .and_then(|w| u8::try_from(w).ok());
                (key.clone(), weight)
            })
            .collect()
    }

    /// Each unit's weight alone (one ListResourceRecordSets sweep per zone), for a backend that
    /// moves health some other way (ARC) and leaves the weights here; `in_service` is left
    /// `None`.
    pub async fn observe_weights(&self) -> Result<ObservedState, BackendError> {
        let records = self.inner.read_records(None).await.map_err(|(_, e)| {
            BackendError::Observe(format!("ListResourceRecordSets: {}", describe(&e)))
        })?;
        Ok(self
            .weights_of(&records, false)
            .into_iter()
            .map(|(key, weight)| {
                let observed = ObservedRegion {
                    in_service: None,
                    weight,
                };
                (key, observed)
            })
            .collect())
    }
}

impl Backend for Route53Backend {
    fn name(&self) -> &'static str {
        "route53"
    }

    async fn observe(&self) -> Result<ObservedState, BackendError> {
        let inner = &self.inner;
        let records = inner.read_records(None).await.map_err(|(_, e)| {
            BackendError::Observe(format!("ListResourceRecordSets: {}", describe(&e)))
        })?;
        let health = match &inner.config.health {
            HealthMode::ControlPlane => self.observe_calculated().await?,
            HealthMode::DataPlane {
                namespace,
                metric_name,
            } => inner.observe_metric(namespace, metric_name).await,
        };
        Ok(self
            .weights_of(&records, true)
            .into_iter()
            .map(|(key, weight)| {
                let in_service = health.get(&key).copied().flatten();
                (key, ObservedRegion { in_service, weight })
            })
            .collect())
    }

    async fn apply(&self, changes: &[Change], _desired: &DesiredState) -> Result<(), BackendError> {
        let inner = &self.inner;
        for c in changes {
            if !inner.units.contains_key(c.region()) {
                return Err(BackendError::Config(unmapped(c)));
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
                for (key, in_service) in &health {
                    if let Err(e) = inner.force_health(key, *in_service).await {
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
        let weights: Vec<(&Change, &Unit, u8)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Weight { region, to, .. } => Some((c, &inner.units[region], *to)),
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
        // Every unit of every service in as few PutMetricData requests as CloudWatch takes.
        let values: Vec<(&str, bool)> = desired
            .iter()
            .filter(|(key, _)| inner.units.contains_key(key.as_str()))
            .map(|(key, want)| (key.as_str(), want.in_service))
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

/// Why a change names a unit the backend does not drive, with the fleet-file key that would.
fn unmapped(c: &Change) -> String {
    match vantage_protocol::config::split_unit(c.region()) {
        (Some(service), region) => format!(
            "{c}: service {service} has no [services.route53.regions.{region}] entry for Region {region}"
        ),
        (None, region) => format!("{c}: Region {region} has no [route53.regions.{region}] entry"),
    }
}

/// The shared settings of named services: the first one's configuration.
fn shared(services: Vec<ServiceRecords>) -> Result<Route53Config, BackendError> {
    services
        .into_iter()
        .next()
        .map(|s| s.config)
        .ok_or_else(|| {
            BackendError::Config("no service names Route 53 records ([services.route53])".into())
        })
}

/// CloudWatch in the SDK's Region, or in the replica's own Region when this process is one of
/// several replicas (its vote must survive the loss of any other Region). The endpoint
/// override, if any, stays the same.
fn cloudwatch_client(sdk: &aws_config::SdkConfig, config: &Route53Config) -> cloudwatch::Client {
    let mut builder = cloudwatch::config::Builder::from(sdk);
    if let Some(replica) = &config.replica {
        builder = builder.region(cloudwatch::config::Region::new(replica.aws_region.clone()));
    }
    cloudwatch::Client::from_conf(builder.build())
}

impl Inner {
    fn count_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}
