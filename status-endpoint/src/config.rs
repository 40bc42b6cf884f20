//! The status endpoint's configuration: one TOML file (strict: an unknown key is an error), with
//! every deployment-specific value also settable by flag or environment variable (see
//! [`crate::cli`]), merged and then validated up front with messages that name the key.
//!
//! ```toml
//! region = "eu-west-1"
//! service_id = "orders-api"
//! listen = "0.0.0.0:8080"
//! deadline = "1500ms"     # the whole /status/deep answer
//! cache_ttl = "2s"        # at most one round of dependency checks per TTL
//! token = "..."           # callers with `Authorization: Bearer <token>` see component detail
//!
//! [aurora.writer]
//! url = "postgres://health@orders.cluster-xyz.eu-west-1.rds.amazonaws.com/orders?sslmode=verify-full&sslrootcert=/etc/vantage/rds-global-bundle.pem"
//!
//! [aurora.reader]
//! url = "mysql://health@orders.cluster-ro-xyz.eu-west-1.rds.amazonaws.com/orders?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/vantage/rds-global-bundle.pem"
//! lag_warn = "1s"
//! lag_fail = "10s"
//!
//! [lambda]
//! function = "orders-api"
//!
//! [[http]]
//! name = "payments"
//! url = "https://payments.internal/status"
//! critical = false
//!
//! [[tcp]]
//! name = "cache"
//! address = "cache.internal:6379"
//! ```

use serde::{Deserialize, Deserializer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `/status/deep` deadline: the whole answer, with room to spare under Route 53's 2 s
/// first-byte limit (a deadline of exactly 2 s would lose to network time).
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(1500);
/// Default time-to-live of a round of dependency checks.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(2);
/// Default per-check timeout.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_LAG_WARN: Duration = Duration::from_secs(1);
pub const DEFAULT_LAG_FAIL: Duration = Duration::from_secs(10);

/// Names the built-in checks use; extra dependencies may not take them.
pub const WRITER: &str = "aurora-writer";
pub const READER: &str = "aurora-reader";
pub const LAMBDA: &str = "lambda";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type; the message has the line.
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    /// A value that parsed but cannot work.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Region this endpoint speaks for: in the body, the `x-vantage-region` header, and the
    /// AWS Region of the Lambda client.
    pub region: Option<String>,
    /// `serviceId` of the health answer.
    pub service_id: Option<String>,
    /// Where to listen outside Lambda.
    pub listen: Option<SocketAddr>,
    /// Limit of the whole `/status/deep` answer.
    #[serde(default, deserialize_with = "opt_duration")]
    pub deadline: Option<Duration>,
    /// How long a round of dependency checks is reused.
    #[serde(default, deserialize_with = "opt_duration")]
    pub cache_ttl: Option<Duration>,
    /// Bearer token that unlocks component detail (host names, error text).
    pub token: Option<String>,
    /// Endpoint override for AWS APIs (moto, VPC endpoints).
    pub aws_endpoint_url: Option<String>,
    #[serde(default)]
    pub aurora: Aurora,
    pub lambda: Option<LambdaConfig>,
    #[serde(default)]
    pub http: Vec<HttpDependency>,
    #[serde(default)]
    pub tcp: Vec<TcpDependency>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Aurora {
    pub writer: Option<Database>,
    pub reader: Option<Database>,
}

/// An Aurora endpoint; the URL scheme picks the engine: `postgres://` / `postgresql://` or
/// `mysql://` / `mariadb://`. TLS is set in the URL: `sslmode` / `sslrootcert` (PostgreSQL,
/// libpq's names) or `ssl-mode` / `ssl-ca` (MySQL, the `mysql` client's names); see
/// [`crate::checks::postgres`] and [`crate::checks::mysql`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub url: String,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Default true: a failing database fails the Region.
    pub critical: Option<bool>,
    /// Reader only: replication lag at which the check warns.
    #[serde(default, deserialize_with = "opt_duration")]
    pub lag_warn: Option<Duration>,
    /// Reader only: replication lag at which the check fails.
    #[serde(default, deserialize_with = "opt_duration")]
    pub lag_fail: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LambdaConfig {
    /// Function name or ARN.
    pub function: String,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Default true.
    pub critical: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpDependency {
    pub name: String,
    pub url: String,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Default false: an extra dependency only warns.
    #[serde(default)]
    pub critical: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpDependency {
    pub name: String,
    /// `host:port`.
    pub address: String,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Default false.
    #[serde(default)]
    pub critical: bool,
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    vantage_protocol::duration::parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Database engine, from the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    pub fn of(url: &str) -> Option<Engine> {
        let scheme = url.split_once("://")?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(Engine::Postgres),
            "mysql" | "mariadb" => Some(Engine::Mysql),
            _ => None,
        }
    }
}

/// A configuration that passed [`Config::validate`]: every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub region: String,
    pub service_id: String,
    pub listen: Option<SocketAddr>,
    pub deadline: Duration,
    pub cache_ttl: Duration,
    pub token: Option<String>,
    pub aws_endpoint_url: Option<String>,
    pub writer: Option<DatabaseSettings>,
    pub reader: Option<DatabaseSettings>,
    pub lambda: Option<LambdaSettings>,
    pub http: Vec<HttpDependency>,
    pub tcp: Vec<TcpDependency>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSettings {
    pub url: String,
    pub engine: Engine,
    pub timeout: Duration,
    pub critical: bool,
    pub lag_warn: Duration,
    pub lag_fail: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LambdaSettings {
    pub function: String,
    pub timeout: Duration,
    pub critical: bool,
}

impl Config {
    /// Reads and parses a TOML file (not yet validated).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// Checks every value and fills in defaults.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let region = self.region.clone().ok_or_else(|| {
            invalid(
                "region",
                "missing: set it in the file, with --region or VANTAGE_REGION",
            )
        })?;
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(invalid(
                "region",
                format!("{region:?} is not a Region name (lowercase letters, digits and '-', like eu-west-1)"),
            ));
        }
        let deadline = self.deadline.unwrap_or(DEFAULT_DEADLINE);
        if deadline.is_zero() || deadline > Duration::from_secs(30) {
            return Err(invalid("deadline", format!("{deadline:?} must be above 0 and at most 30s (Route 53 waits 2s for the first byte)")));
        }
        let cache_ttl = self.cache_ttl.unwrap_or(DEFAULT_CACHE_TTL);
        if cache_ttl > Duration::from_secs(300) {
            return Err(invalid("cache_ttl", format!("{cache_ttl:?} is too long: a cached answer older than a few seconds hides an outage (at most 300s)")));
        }
        if let Some(token) = &self.token {
            if token.len() < 16 {
                return Err(invalid("token", "too short: use at least 16 characters"));
            }
        }
        if let Some(url) = &self.aws_endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "aws_endpoint_url",
                    format!("{url:?} must be an http:// or https:// URL"),
                ));
            }
        }
        let timeout = |key: &str, t: Option<Duration>| -> Result<Duration, ConfigError> {
            let t = t.unwrap_or(DEFAULT_CHECK_TIMEOUT.min(deadline));
            if t.is_zero() || t > deadline {
                return Err(invalid(
                    key,
                    format!("{t:?} must be above 0 and at most the deadline ({deadline:?})"),
                ));
            }
            Ok(t)
        };
        let database = |section: &str,
                        db: &Option<Database>|
         -> Result<Option<DatabaseSettings>, ConfigError> {
            let Some(db) = db else { return Ok(None) };
            let engine = Engine::of(&db.url).ok_or_else(|| {
                invalid(
                    format!("{section}.url"),
                    "use a postgres://, postgresql://, mysql:// or mariadb:// URL",
                )
            })?;
            let lag_warn = db.lag_warn.unwrap_or(DEFAULT_LAG_WARN);
            let lag_fail = db.lag_fail.unwrap_or(DEFAULT_LAG_FAIL);
            if section.ends_with("writer") && (db.lag_warn.is_some() || db.lag_fail.is_some()) {
                return Err(invalid(
                    format!("{section}.lag_warn"),
                    "lag limits apply to the reader only",
                ));
            }
            if lag_warn > lag_fail {
                return Err(invalid(
                    format!("{section}.lag_warn"),
                    format!("{lag_warn:?} is above lag_fail ({lag_fail:?})"),
                ));
            }
            Ok(Some(DatabaseSettings {
                url: db.url.clone(),
                engine,
                timeout: timeout(&format!("{section}.timeout"), db.timeout)?,
                critical: db.critical.unwrap_or(true),
                lag_warn,
                lag_fail,
            }))
        };
        let writer = database("aurora.writer", &self.aurora.writer)?;
        let reader = database("aurora.reader", &self.aurora.reader)?;
        let lambda = match &self.lambda {
            None => None,
            Some(l) => {
                if l.function.is_empty() {
                    return Err(invalid(
                        "lambda.function",
                        "empty: name the function (or its ARN)",
                    ));
                }
                Some(LambdaSettings {
                    function: l.function.clone(),
                    timeout: timeout("lambda.timeout", l.timeout)?,
                    critical: l.critical.unwrap_or(true),
                })
            }
        };
        let mut names: BTreeSet<&str> = [WRITER, READER, LAMBDA].into();
        for (i, h) in self.http.iter().enumerate() {
            name_ok(&format!("http[{i}].name"), &h.name, &mut names)?;
            if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                return Err(invalid(
                    format!("http[{i}].url"),
                    format!("{:?} must be an http:// or https:// URL", h.url),
                ));
            }
            timeout(&format!("http[{i}].timeout"), h.timeout)?;
        }
        for (i, t) in self.tcp.iter().enumerate() {
            name_ok(&format!("tcp[{i}].name"), &t.name, &mut names)?;
            if t.address
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(invalid(
                    format!("tcp[{i}].address"),
                    format!("{:?} must be host:port", t.address),
                ));
            }
            timeout(&format!("tcp[{i}].timeout"), t.timeout)?;
        }
        let fill = |t: Option<Duration>| Some(t.unwrap_or(DEFAULT_CHECK_TIMEOUT.min(deadline)));
        Ok(Settings {
            service_id: self
                .service_id
                .clone()
                .unwrap_or_else(|| "vantage-status-endpoint".to_owned()),
            region,
            listen: self.listen,
            deadline,
            cache_ttl,
            token: self.token.clone(),
            aws_endpoint_url: self.aws_endpoint_url.clone(),
            writer,
            reader,
            lambda,
            http: self
                .http
                .iter()
                .map(|h| HttpDependency {
                    timeout: fill(h.timeout),
                    ..h.clone()
                })
                .collect(),
            tcp: self
                .tcp
                .iter()
                .map(|t| TcpDependency {
                    timeout: fill(t.timeout),
                    ..t.clone()
                })
                .collect(),
        })
    }
}

fn name_ok<'a>(key: &str, name: &'a str, taken: &mut BTreeSet<&'a str>) -> Result<(), ConfigError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(invalid(
            key,
            format!("{name:?}: use lowercase letters, digits, '-' and '_'"),
        ));
    }
    if !taken.insert(name) {
        return Err(invalid(
            key,
            format!("{name:?} is already used by another check"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Config::from_toml(text, "test.toml")?.validate()
    }

    #[test]
    fn full_file_parses_with_defaults() {
        let s = parse(
            r#"
region = "eu-west-1"
[aurora.writer]
url = "postgres://u@db/x"
[aurora.reader]
url = "mariadb://u@db/x"
lag_fail = "5s"
[lambda]
function = "f"
[[http]]
name = "payments"
url = "http://127.0.0.1:1/"
[[tcp]]
name = "cache"
address = "127.0.0.1:6379"
critical = true
"#,
        )
        .unwrap();
        assert_eq!(s.deadline, DEFAULT_DEADLINE);
        assert_eq!(s.cache_ttl, DEFAULT_CACHE_TTL);
        assert_eq!(s.writer.as_ref().unwrap().engine, Engine::Postgres);
        let reader = s.reader.unwrap();
        assert_eq!(reader.engine, Engine::Mysql);
        assert_eq!(reader.lag_fail, Duration::from_secs(5));
        assert!(s.lambda.unwrap().critical);
        assert!(!s.http[0].critical);
        assert_eq!(s.http[0].timeout, Some(DEFAULT_CHECK_TIMEOUT));
        assert!(s.tcp[0].critical);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = parse("region = \"eu-west-1\"\ndeadlin = \"1s\"").unwrap_err();
        assert!(e.to_string().contains("deadlin"), "{e}");
        let e = parse("region = \"eu-west-1\"\n[aurora.writer]\nurl = \"postgres://x\"\nlag = 1")
            .unwrap_err();
        assert!(e.to_string().contains("lag"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let cases = [
            ("", "region"),
            ("region = \"EU West\"", "region"),
            ("region = \"a\"\ndeadline = \"0s\"", "deadline"),
            ("region = \"a\"\n[aurora.writer]\nurl = \"redis://x\"", "aurora.writer.url"),
            ("region = \"a\"\n[aurora.writer]\nurl = \"postgres://x\"\ntimeout = \"5s\"", "aurora.writer.timeout"),
            ("region = \"a\"\n[aurora.reader]\nurl = \"postgres://x\"\nlag_warn = \"5s\"\nlag_fail = \"1s\"", "aurora.reader.lag_warn"),
            ("region = \"a\"\n[[tcp]]\nname = \"lambda\"\naddress = \"h:1\"", "tcp[0].name"),
            ("region = \"a\"\n[[tcp]]\nname = \"x\"\naddress = \"h\"", "tcp[0].address"),
            ("region = \"a\"\ntoken = \"short\"", "token"),
        ];
        for (text, key) in cases {
            match parse(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected an error on {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn bad_duration_is_a_parse_error_with_the_line() {
        let e = parse("region = \"a\"\ncache_ttl = \"soon\"").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("line 2") && text.contains("soon"), "{text}");
    }
}
