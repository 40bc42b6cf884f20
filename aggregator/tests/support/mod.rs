//! moto for the Route 53 backend's tests: one `moto_server` per test on a loopback port chosen
//! at run time, stopped when dropped (even when the test fails), plus SDK set-up of the hosted
//! zone, weighted records and health checks the backend expects. A missing moto_server fails
//! the test with the install hint, never skips it.
#![allow(dead_code)]

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, HealthCheckConfig, HealthCheckType, ResourceRecord,
    ResourceRecordSet, RrType,
};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;
use vantage_aggregator::backend::route53::sdk_loader;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub const MISSING_MOTO: &str =
    "moto_server not found: run ./scripts/test.sh (it creates .venv with moto[server])";

/// The zone every test creates.
pub const ZONE: &str = "example.com.";
/// The weighted records' name.
pub const RECORD: &str = "api-origin.example.com.";

/// A running moto_server, killed when dropped.
pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    fn moto_server_path() -> Result<PathBuf> {
        let venv = std::env::var_os("VANTAGE_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .expect("workspace root")
                    .join(".venv")
            });
        let path = venv.join("bin/moto_server");
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{MISSING_MOTO} (looked for {})", path.display()).into())
        }
    }

    /// Starts moto_server on a free port and waits (at most 60 s) until it answers. A port
    /// taken between our probe and moto's bind is retried on another.
    pub fn start() -> Result<Self> {
        let moto = Self::moto_server_path()?;
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let child = Command::new(&moto)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", moto.display()))?;
            let mut server = Moto { port, child };
            match server.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return Ok(server),
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(format!("moto_server did not start: {last_error}").into())
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("moto_server exited early: {status}").into());
            }
            if http_get(self.port, "/moto-api/").is_ok_and(|status| status < 500) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("moto_server not answering after {limit:?}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The backend's own SDK configuration pointed at moto, with static test credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_loader(Some(&self.endpoint()), Some("us-east-1"))
            .credentials_provider(aws_sdk_route53::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await
    }

    pub async fn route53(&self) -> aws_sdk_route53::Client {
        aws_sdk_route53::Client::new(&self.sdk_config().await)
    }

    pub async fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        aws_sdk_cloudwatch::Client::new(&self.sdk_config().await)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status of a plain HTTP GET on loopback.
fn http_get(port: u16, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    Ok(text
        .split_whitespace()
        .nth(1)
        .ok_or("no status line")?
        .parse()?)
}

/// One Region's record as the tests create it.
#[derive(Debug, Clone)]
pub struct SeedRecord {
    pub set_identifier: String,
    pub weight: i64,
    pub value: String,
    pub health_check_id: Option<String>,
}

/// Creates the hosted zone and returns its bare id.
pub async fn create_zone(r53: &aws_sdk_route53::Client) -> Result<String> {
    let out = r53
        .create_hosted_zone()
        .name(ZONE)
        .caller_reference(format!("vantage-test-{}", std::process::id()))
        .send()
        .await?;
    let id = out.hosted_zone().ok_or("no hosted zone")?.id();
    Ok(id.trim_start_matches("/hostedzone/").to_owned())
}

/// Creates weighted CNAME records (TTL 60) in one batch.
pub async fn create_records(
    r53: &aws_sdk_route53::Client,
    zone: &str,
    records: &[SeedRecord],
) -> Result<()> {
    let mut changes = Vec::new();
    for r in records {
        let set = ResourceRecordSet::builder()
            .name(RECORD)
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
        .caller_reference(format!("https-{fqdn}"))
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
        .caller_reference(format!("calculated-{name}"))
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
    let out = r53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await?;
    Ok(out
        .resource_record_sets()
        .iter()
        .filter(|r| r.name() == RECORD)
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
