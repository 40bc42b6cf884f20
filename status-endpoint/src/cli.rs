//! `vantage status-endpoint`: flags (each also read from a `VANTAGE_*` environment variable, as
//! ECS task definitions and Lambda configurations set them) over the optional config file, then
//! either a server on `--listen` or, inside Lambda, the Lambda adapter.
//! Exit codes: 0 clean shutdown, 1 the server failed, 2 bad configuration.

use crate::config::{Config, Database, LambdaConfig};
use crate::{lambda_adapter, router};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    vantage_protocol::duration::parse_duration(s).map_err(|e| e.to_string())
}

impl StatusEndpointArgs {
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
        for key in overridden {
            c.set_overridden(key);
        }
        Ok(c)
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
    tracing::info!(%addr, region = %settings.region, "status endpoint listening");
    match router::run(app, listener, vantage_runtime::shutdown::requested()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage: serving: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
