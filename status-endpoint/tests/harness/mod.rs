//! What only the status endpoint's tests need, on top of `vantage_testkit`: our server served
//! in this process on a loopback port, its answers parsed, the committed health+json schema,
//! and Lambda set-up on the shared moto through the SDK. The real dependencies (PostgreSQL
//! primary and replica, MariaDB, moto, the test CA) come from the kit and are re-exported here
//! under the names the tests use.
// Each test binary uses part of this module.
#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use vantage_status_endpoint::config::{Config, Settings};
use vantage_status_endpoint::router;
pub use vantage_testkit::eventually::eventually;
pub use vantage_testkit::mariadb::Mariadb;
pub use vantage_testkit::moto::{Moto, LAMBDA_ROLE};
pub use vantage_testkit::postgres::{psql_port, PgTls, Postgres};
pub use vantage_testkit::process::free_port;
pub use vantage_testkit::TestCa;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Lambda through the SDK on a moto server.
pub trait LambdaMoto {
    /// SDK configuration pointing at moto with test credentials.
    fn sdk_config(&self, region: &str) -> impl std::future::Future<Output = aws_config::SdkConfig>;
    /// Creates a Python function named `name` in `region`; one already there is kept, since
    /// the tests of a binary share one moto.
    fn create_function(
        &self,
        region: &str,
        name: &str,
    ) -> impl std::future::Future<Output = Result<()>>;
}

impl LambdaMoto for Moto {
    async fn sdk_config(&self, region: &str) -> aws_config::SdkConfig {
        vantage_status_endpoint::checks::lambda::sdk_loader(
            region,
            Some(&self.endpoint()),
            Duration::from_secs(5),
        )
        .credentials_provider(vantage_testkit::moto::credentials())
        .load()
        .await
    }

    async fn create_function(&self, region: &str, name: &str) -> Result<()> {
        let client = aws_sdk_lambda::Client::new(&self.sdk_config(region).await);
        let created = client
            .create_function()
            .function_name(name)
            .runtime(aws_sdk_lambda::types::Runtime::Python312)
            .role(LAMBDA_ROLE)
            .handler("index.handler")
            .code(
                aws_sdk_lambda::types::FunctionCode::builder()
                    .zip_file(aws_sdk_lambda::primitives::Blob::new(empty_zip()))
                    .build(),
            )
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_conflict_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(format!(
                "CreateFunction: {}",
                aws_sdk_lambda::error::DisplayErrorContext(&e)
            )
            .into()),
        }
    }
}

/// The smallest valid zip archive: an end-of-central-directory record and nothing else.
fn empty_zip() -> Vec<u8> {
    let mut z = vec![0x50, 0x4b, 0x05, 0x06];
    z.extend_from_slice(&[0; 18]);
    z
}

/// An answer from our server.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    pub elapsed: Duration,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `status` of the first entry under `checks[key]`.
    pub fn check(&self, key: &str) -> &str {
        self.body["checks"][key][0]["status"]
            .as_str()
            .unwrap_or("absent")
    }
}

/// Our status endpoint, served in this process on a loopback port.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Validates `toml` and serves it; `aws` is used for the Lambda check.
    pub async fn start(toml: &str, aws: Option<aws_config::SdkConfig>) -> Result<Self> {
        let settings: Settings = Config::from_toml(toml, "test")?.validate()?;
        let checks = router::build_checks(&settings, aws).await?;
        let app = router::router(&settings, checks);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = router::run(app, listener, async {
                let _ = rx.await;
            })
            .await;
        });
        Ok(Server {
            addr,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// GET `path` with extra headers, on a connection of its own.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Answer> {
        let raw = vantage_testkit::http::exchange(self.addr, "GET", path, headers, b"").await?;
        let (status, headers, body, elapsed) = (raw.status, raw.headers, raw.body, raw.elapsed);
        let body = if path.starts_with("/metrics") {
            serde_json::Value::String(body)
        } else {
            serde_json::from_str(&body)?
        };
        Ok(Answer {
            status,
            headers,
            body,
            elapsed,
        })
    }

    pub async fn deep(&self, query: &str, token: Option<&str>) -> Result<Answer> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        self.get(&format!("/status/deep{query}"), &headers).await
    }

    pub async fn metrics(&self) -> Result<String> {
        let a = self.get("/metrics", &[]).await?;
        Ok(a.body.as_str().unwrap_or_default().to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The health+json schema committed with the crate.
pub fn health_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/health.schema.json"),
    )
    .expect("schema file");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("valid schema")
}

pub fn assert_schema(body: &serde_json::Value) {
    let validator = health_schema();
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "schema violations {errors:?} in {body:#}"
    );
}
