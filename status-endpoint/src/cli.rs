//! `vantage status-endpoint`: flags (each also read from a `VANTAGE_*` environment variable, as
//! ECS task definitions and Lambda configurations set them) over the optional config file, then
//! either a server on `--listen` or, inside Lambda, the Lambda adapter.
//! Exit codes: 0 clean shutdown, 1 the server failed, 2 bad configuration. At start it warns
//! about database TLS that is not verified ([`tls_warnings`]).

use crate::config::{Config, ConfigError, Database, DynamoTable, Engine, LambdaConfig, Settings};
use crate::{lambda_adapter, router};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vantage_runtime::http_server::Limits;

const EXIT_BAD_INPUT: u8 = 2;
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

#[derive(Args, Debug, Clone, Default)]
#[command(
    after_help = "Endpoints: GET /status (liveness), GET /status/deep[?verbose][&exclude=NAME] \
(readiness, application/health+json, 503 on fail), GET /metrics (Prometheus).
Inside AWS Lambda (AWS_LAMBDA_RUNTIME_API set) the same routes serve API Gateway events and \
--listen is ignored."
)]
pub struct StatusEndpointArgs {
    /// Address to serve on outside Lambda [default: 0.0.0.0:8080].
    #[arg(long, env = "VANTAGE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// The Region this endpoint speaks for (also the AWS Region of the Lambda client).
    #[arg(long, env = "VANTAGE_REGION", value_name = "NAME")]
    pub region: Option<String>,

    /// Aurora writer (cluster) endpoint: postgres://, postgresql://, mysql:// or mariadb:// URL.
    /// TLS in the URL: ?sslmode=verify-full&sslrootcert=PEM (PostgreSQL) or
    /// ?ssl-mode=VERIFY_IDENTITY&ssl-ca=PEM (MySQL); the default only prefers TLS.
    #[arg(
        long,
        env = "VANTAGE_AURORA_WRITER",
        value_name = "URL",
        hide_env_values = true
    )]
    pub aurora_writer: Option<String>,

    /// Aurora reader endpoint URL; replication lag is measured here.
    #[arg(
        long,
        env = "VANTAGE_AURORA_READER",
        value_name = "URL",
        hide_env_values = true
    )]
    pub aurora_reader: Option<String>,

    /// Lambda function (name or ARN) to check with a DryRun Invoke and GetFunction.
    #[arg(long, env = "VANTAGE_LAMBDA_FUNCTION", value_name = "NAME")]
    pub lambda_function: Option<String>,

    /// DynamoDB table to check in this Region (repeatable; the environment variable takes a
    /// comma-separated list). Each needs a canary key.
    #[arg(
        long = "dynamodb-table",
        env = "VANTAGE_DYNAMODB_TABLES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub dynamodb_tables: Vec<String>,

    /// An item that always exists in a DynamoDB table, as TABLE:ATTRIBUTE=VALUE (a string
    /// attribute of its primary key; repeat for a sort key). Replaces the file's canary_key.
    #[arg(
        long = "dynamodb-canary-key",
        env = "VANTAGE_DYNAMODB_CANARY_KEYS",
        value_name = "TABLE:ATTR=VALUE",
        value_delimiter = ','
    )]
    pub dynamodb_canary_keys: Vec<String>,

    /// Read-only mode for the tables named by --dynamodb-table: read the peers' heartbeats,
    /// write none (for a table the service owns).
    #[arg(long, env = "VANTAGE_DYNAMODB_READ_ONLY")]
    pub dynamodb_read_only: bool,

    /// Endpoint URL for AWS APIs (moto in tests, VPC endpoints).
    #[arg(long, env = "VANTAGE_AWS_ENDPOINT_URL", value_name = "URL")]
    pub aws_endpoint_url: Option<String>,

    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "VANTAGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// `serviceId` of the health answers.
    #[arg(long, env = "VANTAGE_SERVICE_ID", value_name = "ID")]
    pub service_id: Option<String>,

    /// Limit of the whole /status/deep answer [default: 1500ms].
    #[arg(long, env = "VANTAGE_DEADLINE", value_name = "DUR", value_parser = duration_arg)]
    pub deadline: Option<Duration>,

    /// How long a round of dependency checks is reused [default: 2s].
    #[arg(long, env = "VANTAGE_CACHE_TTL", value_name = "DUR", value_parser = duration_arg)]
    pub cache_ttl: Option<Duration>,

    /// Bearer token that unlocks component detail (host names, error text).
    #[arg(
        long,
        env = "VANTAGE_STATUS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Connections served at once; more wait in the accept backlog [default: 1024].
    #[arg(long, env = "VANTAGE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// A client must send its request head within this long [default: 10s].
    #[arg(long, env = "VANTAGE_HEADER_READ_TIMEOUT", value_name = "DUR", value_parser = duration_arg)]
    pub header_read_timeout: Option<Duration>,

    /// A connection with no request and no bytes this long is closed [default: 60s].
    #[arg(long, env = "VANTAGE_IDLE_TIMEOUT", value_name = "DUR", value_parser = duration_arg)]
    pub idle_timeout: Option<Duration>,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    vantage_protocol::duration::parse_duration(s).map_err(|e| e.to_string())
}

impl StatusEndpointArgs {
    /// The listener's limits: [`Limits::API`] with any flag laid over it.
    pub fn limits(&self) -> Result<Limits, String> {
        let mut limits = Limits::API;
        if let Some(n) = self.max_connections {
            if n == 0 {
                return Err("--max-connections: must be at least 1".into());
            }
            limits.max_connections = n;
        }
        for (flag, value, slot) in [
            (
                "--header-read-timeout",
                self.header_read_timeout,
                &mut limits.header_read_timeout,
            ),
            (
                "--idle-timeout",
                self.idle_timeout,
                &mut limits.idle_timeout,
            ),
        ] {
            if let Some(d) = value {
                if d.is_zero() {
                    return Err(format!("{flag}: must be above 0"));
                }
                *slot = d;
            }
        }
        Ok(limits)
    }

    /// The config file (if any) with every given flag laid over it; a flag's key is noted as
    /// overridden, so an error about its value does not point at the file.
    pub fn config(&self) -> Result<Config, crate::config::ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let strings = [
            ("region", &mut c.region, &self.region),
            ("service_id", &mut c.service_id, &self.service_id),
            ("token", &mut c.token, &self.token),
            (
                "aws_endpoint_url",
                &mut c.aws_endpoint_url,
                &self.aws_endpoint_url,
            ),
        ];
        let mut overridden = Vec::new();
        for (key, slot, value) in strings {
            if let Some(v) = value {
                *slot = Some(v.clone());
                overridden.push(key);
            }
        }
        if let Some(l) = self.listen {
            c.listen = Some(l);
            overridden.push("listen");
        }
        if let Some(d) = self.deadline {
            c.deadline = Some(d);
            overridden.push("deadline");
        }
        if let Some(t) = self.cache_ttl {
            c.cache_ttl = Some(t);
            overridden.push("cache_ttl");
        }
        for (key, slot, url) in [
            (
                "aurora.writer.url",
                &mut c.aurora.writer,
                &self.aurora_writer,
            ),
            (
                "aurora.reader.url",
                &mut c.aurora.reader,
                &self.aurora_reader,
            ),
        ] {
            if let Some(url) = url {
                slot.get_or_insert_with(Database::default).url = url.clone();
                overridden.push(key);
            }
        }
        if let Some(f) = &self.lambda_function {
            c.lambda.get_or_insert_with(LambdaConfig::default).function = f.clone();
            overridden.push("lambda.function");
        }
        let mut overridden: Vec<String> = overridden.into_iter().map(str::to_owned).collect();
        self.dynamodb_flags(&mut c, &mut overridden)?;
        for key in overridden {
            c.set_overridden(&key);
        }
        Ok(c)
    }

    /// Lays `--dynamodb-table`, `--dynamodb-canary-key` and `--dynamodb-read-only` over the
    /// file's `[[dynamodb]]` tables (matched by table name; a new name adds a table).
    fn dynamodb_flags(
        &self,
        c: &mut Config,
        overridden: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let index =
            |c: &mut Config, table: &str| match c.dynamodb.iter().position(|t| t.table == table) {
                Some(i) => i,
                None => {
                    c.dynamodb.push(DynamoTable {
                        table: table.to_owned(),
                        ..DynamoTable::default()
                    });
                    c.dynamodb.len() - 1
                }
            };
        for table in &self.dynamodb_tables {
            let i = index(c, table);
            overridden.push(format!("dynamodb[{i}].table"));
            if self.dynamodb_read_only {
                c.dynamodb[i].heartbeat = Some(false);
                overridden.push(format!("dynamodb[{i}].heartbeat"));
            }
        }
        let mut replaced = std::collections::BTreeSet::new();
        for given in &self.dynamodb_canary_keys {
            let parsed = given
                .split_once(':')
                .and_then(|(table, kv)| Some((table, kv.split_once('=')?)));
            let Some((table, (attr, value))) = parsed else {
                return Err(ConfigError::Setting {
                    key: "dynamodb.canary_key".into(),
                    message: format!(
                        "{given}: use TABLE:ATTRIBUTE=VALUE, e.g. rates:pk=rate#EURUSD"
                    ),
                });
            };
            let i = index(c, table);
            if replaced.insert(i) {
                c.dynamodb[i].canary_key.clear();
                overridden.push(format!("dynamodb[{i}].canary_key"));
            }
            c.dynamodb[i]
                .canary_key
                .insert(attr.to_owned(), value.to_owned());
        }
        Ok(())
    }
}

/// Runs the status endpoint until SIGINT or SIGTERM (or, in Lambda, until the runtime ends).
pub async fn run(args: StatusEndpointArgs) -> ExitCode {
    let settings = match args.config().and_then(|c| c.validate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vantage: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let limits = match args.limits() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vantage: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    for warning in tls_warnings(&settings) {
        tracing::warn!("{warning}");
    }
    let checks = match router::build_checks(&settings, None).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vantage: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let app = router::router(&settings, checks);
    if lambda_adapter::in_lambda() {
        tracing::info!(region = %settings.region, "serving Lambda invocations");
        return match lambda_adapter::run(app).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vantage: Lambda runtime: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let addr = settings
        .listen
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address"));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vantage: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Handlers are installed before the readiness line, so a signal right after it counts.
    let stop = vantage_runtime::shutdown::requested();
    tracing::info!(%addr, region = %settings.region, "status endpoint listening");
    match router::run_with(app, listener, limits, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage: serving: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A line for each database whose TLS is only preferred (the default) or required: the
/// connection is encrypted when the server offers it, but nobody checks whose certificate it
/// is. Names the key and the one parameter that makes it `verify-full`. URLs are not quoted.
pub fn tls_warnings(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    for (key, db) in [
        ("aurora.writer.url", &settings.writer),
        ("aurora.reader.url", &settings.reader),
    ] {
        let Some(db) = db else { continue };
        let param = |name: &str| {
            db.url
                .split_once('?')
                .map(|(_, q)| q.split('#').next().unwrap_or(q))
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        };
        let (mode, weak, fix) = match db.engine {
            Engine::Postgres => (
                format!(
                    "sslmode={}",
                    param("sslmode").unwrap_or_else(|| "prefer".into())
                ),
                matches!(
                    param("sslmode").as_deref(),
                    None | Some("prefer" | "require")
                ),
                "sslmode=verify-full&sslrootcert=/path/to/rds-global-bundle.pem",
            ),
            Engine::Mysql => (
                format!(
                    "ssl-mode={}",
                    param("ssl-mode").unwrap_or_else(|| "PREFERRED".into())
                ),
                matches!(
                    param("ssl-mode").map(|m| m.to_ascii_uppercase()).as_deref(),
                    None | Some("PREFERRED" | "REQUIRED")
                ),
                "ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/to/rds-global-bundle.pem",
            ),
        };
        if weak {
            out.push(format!(
                "{key}: {mode}: TLS is not verified (a man in the middle or a downgrade goes \
                 unnoticed); verify-full is one URL parameter away: add {fix}"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn unverified_database_tls_is_named_with_its_fix() {
        let settings = |writer: &str, reader: &str| {
            Config::from_toml(
                &format!("region = \"eu-west-1\"\n[aurora.writer]\nurl = \"{writer}\"\n[aurora.reader]\nurl = \"{reader}\"\n"),
                "t.toml",
            )
            .unwrap()
            .validate()
            .unwrap()
        };
        let w = tls_warnings(&settings(
            "postgres://u:pw@w/db",
            "mysql://u@r/db?ssl-mode=VERIFY_IDENTITY",
        ));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("aurora.writer.url: sslmode=prefer: TLS is not verified"),
            "{w:?}"
        );
        assert!(
            w[0].contains("add sslmode=verify-full&sslrootcert="),
            "{w:?}"
        );
        assert!(!w[0].contains("pw"), "{w:?}");
        let w = tls_warnings(&settings(
            "postgres://w/db?sslmode=verify-full",
            "mysql://r/db?ssl-mode=REQUIRED",
        ));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("aurora.reader.url: ssl-mode=REQUIRED"),
            "{w:?}"
        );
        assert!(w[0].contains("ssl-mode=VERIFY_IDENTITY&ssl-ca="), "{w:?}");
    }

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: StatusEndpointArgs,
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("vantage-se-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "region = \"us-east-1\"\n[aurora.writer]\nurl = \"postgres://a/b\"\ntimeout = \"300ms\"\n",
        )
        .unwrap();
        let w = Wrapper::parse_from([
            "x",
            "--config",
            file.to_str().unwrap(),
            "--region",
            "eu-west-1",
            "--aurora-writer",
            "mysql://h/d",
            "--lambda-function",
            "f",
            "--cache-ttl",
            "500ms",
        ]);
        let s = w.args.config().unwrap().validate().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.region, "eu-west-1");
        let writer = s.writer.unwrap();
        assert_eq!(writer.url, "mysql://h/d");
        assert_eq!(writer.timeout, Duration::from_millis(300));
        assert_eq!(s.lambda.unwrap().function, "f");
        assert_eq!(s.cache_ttl, Duration::from_millis(500));
    }

    #[test]
    fn dynamodb_flags_add_tables_and_replace_canary_keys() {
        let dir = std::env::temp_dir().join(format!("vantage-se-cli-ddb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "region = \"eu-west-1\"\n[[dynamodb]]\ntable = \"rates\"\ncanary_key = { pk = \"old\" }\nlag_warn = \"2s\"\n",
        )
        .unwrap();
        let w = Wrapper::parse_from([
            "x",
            "--config",
            file.to_str().unwrap(),
            "--dynamodb-table",
            "rates",
            "--dynamodb-table",
            "orders",
            "--dynamodb-canary-key",
            "rates:pk=rate#EURUSD",
            "--dynamodb-canary-key",
            "orders:id=canary",
            "--dynamodb-canary-key",
            "orders:sk=a=b",
            "--dynamodb-read-only",
        ]);
        let s = w.args.config().unwrap().validate().unwrap();
        let bad = Wrapper::parse_from(["x", "--dynamodb-canary-key", "rates=pk"])
            .args
            .config()
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.dynamodb.len(), 2);
        let rates = &s.dynamodb[0];
        assert_eq!(
            rates.canary_key,
            [("pk".to_owned(), "rate#EURUSD".to_owned())]
        );
        assert_eq!(
            rates.lag_warn,
            Duration::from_secs(2),
            "the file's value stays"
        );
        assert_eq!(rates.heartbeat_every, None);
        let orders = &s.dynamodb[1];
        assert_eq!(orders.name, "dynamodb-orders");
        assert_eq!(
            orders.canary_key,
            [
                ("id".to_owned(), "canary".to_owned()),
                ("sk".to_owned(), "a=b".to_owned())
            ]
        );
        assert!(
            bad.starts_with("dynamodb.canary_key: ") && bad.contains("TABLE:ATTRIBUTE=VALUE"),
            "{bad}"
        );
    }

    #[test]
    fn a_bad_flag_is_named_without_the_files_line() {
        let dir = std::env::temp_dir().join(format!("vantage-se-cli-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "region = \"us-east-1\"\ndeadline = \"40s\"\n").unwrap();
        let config = |extra: &[&str]| {
            let mut argv = vec!["x", "--config", file.to_str().unwrap()];
            argv.extend_from_slice(extra);
            Wrapper::parse_from(argv).args.config().unwrap().validate()
        };
        let from_file = config(&[]).unwrap_err().to_string();
        let from_flag = config(&["--deadline", "45s"]).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(from_file.ends_with(":2: deadline: 40s must be above 0 and at most 30s (Route 53 waits 2s for the first byte)"), "{from_file}");
        assert!(from_file.contains("c.toml"), "{from_file}");
        assert!(
            from_flag.starts_with("deadline: 45s must be"),
            "{from_flag}"
        );
    }
}
