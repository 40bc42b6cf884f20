//! Route 53 and CloudWatch on moto for the backend's tests: the SDK pointed at the test
//! binary's one moto_server (`vantage_testkit::moto`, started once and shared; each test works
//! in a hosted zone of its own), plus set-up of the hosted zone, weighted records and health
//! checks the backend expects. A missing moto_server fails the test with the install hint.
#![allow(dead_code)]

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, HealthCheckConfig, HealthCheckType, ResourceRecord,
    ResourceRecordSet, RrType,
};
use vantage_aggregator::backend::route53::sdk_loader;
pub use vantage_testkit::moto::Moto;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The zone every test creates.
pub const ZONE: &str = "example.com.";
/// The weighted records' name.
pub const RECORD: &str = "api-origin.example.com.";

/// The backend's own SDK clients on a moto server.
pub trait AwsMoto {
    /// The backend's own SDK configuration pointed at moto, with static test credentials.
    fn sdk_config(&self) -> impl std::future::Future<Output = aws_config::SdkConfig>;
    fn route53(&self) -> impl std::future::Future<Output = aws_sdk_route53::Client>;
    fn cloudwatch(&self) -> impl std::future::Future<Output = aws_sdk_cloudwatch::Client>;
}

impl AwsMoto for Moto {
    async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_loader(Some(&self.endpoint()), Some("us-east-1"))
            .credentials_provider(vantage_testkit::moto::credentials())
            .load()
            .await
    }

    async fn route53(&self) -> aws_sdk_route53::Client {
        aws_sdk_route53::Client::new(&self.sdk_config().await)
    }

    async fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        aws_sdk_cloudwatch::Client::new(&self.sdk_config().await)
    }
}

/// One Region's record as the tests create it.
#[derive(Debug, Clone)]
pub struct SeedRecord {
    pub set_identifier: String,
    pub weight: i64,
    pub value: String,
    pub health_check_id: Option<String>,
}

/// A caller reference no other test of this process uses: they share one moto.
fn unique(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("vantage-test-{tag}-{}-{n}", std::process::id())
}

/// Creates the hosted zone and returns its bare id.
pub async fn create_zone(r53: &aws_sdk_route53::Client) -> Result<String> {
    let out = r53
        .create_hosted_zone()
        .name(ZONE)
        .caller_reference(unique("zone"))
        .send()
        .await?;
    let id = out.hosted_zone().ok_or("no hosted zone")?.id();
    Ok(id.trim_start_matches("/hostedzone/").to_owned())
}

/// Creates weighted CNAME records (TTL 60) named [`RECORD`] in one batch.
pub async fn create_records(
    r53: &aws_sdk_route53::Client,
    zone: &str,
    records: &[SeedRecord],
) -> Result<()> {
    create_records_named(r53, zone, RECORD, records).await
}

/// Creates weighted CNAME records (TTL 60) named `name` in one batch.
pub async fn create_records_named(
    r53: &aws_sdk_route53::Client,
    zone: &str,
    name: &str,
    records: &[SeedRecord],
) -> Result<()> {
    let mut changes = Vec::new();
    for r in records {
        let set = ResourceRecordSet::builder()
            .name(name)
            .r#type(RrType::Cname)
            .set_identifier(&r.set_identifier)
            .weight(r.weight)
            .ttl(60)
            .resource_records(ResourceRecord::builder().value(&r.value).build()?)
            .set_health_check_id(r.health_check_id.clone())
            .build()?;
        changes.push(
            Change::builder()
                .action(ChangeAction::Create)
                .resource_record_set(set)
                .build()?,
        );
    }
    r53.change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(ChangeBatch::builder().set_changes(Some(changes)).build()?)
        .send()
        .await?;
    Ok(())
}

/// An HTTPS health check (a child of a CALCULATED one).
pub async fn create_https_check(r53: &aws_sdk_route53::Client, fqdn: &str) -> Result<String> {
    let out = r53
        .create_health_check()
        .caller_reference(unique(&format!("https-{fqdn}")))
        .health_check_config(
            HealthCheckConfig::builder()
                .r#type(HealthCheckType::Https)
                .fully_qualified_domain_name(fqdn)
                .port(443)
                .resource_path("/status")
                .request_interval(10)
                .failure_threshold(3)
                .build()?,
        )
        .send()
        .await?;
    Ok(out.health_check().ok_or("no health check")?.id().to_owned())
}

/// A CALCULATED health check over `children`, healthy while all of them are.
pub async fn create_calculated_check(
    r53: &aws_sdk_route53::Client,
    name: &str,
    children: &[String],
) -> Result<String> {
    let out = r53
        .create_health_check()
        .caller_reference(unique(&format!("calculated-{name}")))
        .health_check_config(
            HealthCheckConfig::builder()
                .r#type(HealthCheckType::Calculated)
                .health_threshold(children.len() as i32)
                .set_child_health_checks(Some(children.to_vec()))
                .build()?,
        )
        .send()
        .await?;
    Ok(out.health_check().ok_or("no health check")?.id().to_owned())
}

/// Every record of the zone with the test record name, by set identifier.
pub async fn read_records(
    r53: &aws_sdk_route53::Client,
    zone: &str,
) -> Result<std::collections::BTreeMap<String, ResourceRecordSet>> {
    read_records_named(r53, zone, RECORD).await
}

/// Every record of the zone named `name`, by set identifier.
pub async fn read_records_named(
    r53: &aws_sdk_route53::Client,
    zone: &str,
    name: &str,
) -> Result<std::collections::BTreeMap<String, ResourceRecordSet>> {
    let out = r53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await?;
    Ok(out
        .resource_record_sets()
        .iter()
        .filter(|r| r.name() == name)
        .filter_map(|r| Some((r.set_identifier()?.to_owned(), r.clone())))
        .collect())
}

/// (HealthThreshold, child count) of a health check as moto reports it.
pub async fn threshold_and_children(
    r53: &aws_sdk_route53::Client,
    id: &str,
) -> Result<(Option<i32>, usize)> {
    let out = r53.get_health_check().health_check_id(id).send().await?;
    let config = out
        .health_check()
        .and_then(|h| h.health_check_config())
        .ok_or("no config")?;
    Ok((
        config.health_threshold(),
        config.child_health_checks().len(),
    ))
}
