//! The status endpoint's configuration: one TOML file (strict: an unknown key is an error), with
//! every deployment-specific value also settable by flag or environment variable (see
//! [`crate::cli`]), merged and then validated up front. Errors use the fleet file's style,
//! [`ConfigError`] from `vantage_protocol::config`: `file:line: key: problem; fix` for a value
//! from the file, `key: problem; fix` for one from a flag or variable. They never quote the
//! file's line, which may hold the token or a database password.
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
//!
//! [[dynamodb]]
//! table = "rates"
//! canary_key = { pk = "rate#EURUSD" }   # an item that always exists (its whole primary key)
//! # name = "dynamodb-rates"   peers = ["us-east-1"]   heartbeat = true   heartbeat_every = "5s"
//! # partition_key = "pk"      lag_warn = "5s"         lag_fail = "30s"
//! ```

use serde::{Deserialize, Deserializer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use vantage_protocol::config::{redact_userinfo, ConfigText};

mod dynamodb;
pub use dynamodb::{
    DynamoSettings, DynamoTable, DEFAULT_DYNAMODB_LAG_FAIL, DEFAULT_DYNAMODB_LAG_WARN,
    DEFAULT_HEARTBEAT_EVERY, DEFAULT_PARTITION_KEY,
};

pub use vantage_protocol::config::ConfigError;

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
    #[serde(default)]
    pub dynamodb: Vec<DynamoTable>,
    /// The file the values came from, to put errors on its lines (set by [`Config::from_file`]
    /// and [`Config::from_toml`]; public so that `..Default::default()` works outside).
    #[serde(skip)]
    pub file: Option<ConfigText>,
    /// Keys a flag or environment variable set over the file: their errors name no line.
    #[serde(skip)]
    pub overridden: BTreeSet<String>,
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
    pub dynamodb: Vec<DynamoSettings>,
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
        Config::from_text(ConfigText::read(path)?)
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_text(ConfigText::new(text, origin))
    }

    fn from_text(file: ConfigText) -> Result<Config, ConfigError> {
        let mut config: Config = file.parse()?;
        config.file = Some(file);
        Ok(config)
    }

    /// Notes that a flag or environment variable set `key` (`region`, `aurora.writer.url`), so a
    /// problem with it does not point at the file's line.
    pub fn set_overridden(&mut self, key: &str) {
        self.overridden.insert(key.to_owned());
    }

    /// An error at `key`: on its line when the value is the file's.
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        match &self.file {
            Some(file) if !self.overridden.contains(key) => file.invalid_key(key, message),
            _ => ConfigError::Setting {
                key: key.to_owned(),
                message: message.into(),
            },
        }
    }

    /// Checks every value and fills in defaults.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let region = self.region.clone().ok_or_else(|| {
            self.invalid(
                "region",
                "missing: set it in the file, with --region or VANTAGE_REGION",
            )
        })?;
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(self.invalid(
                "region",
                format!("{region:?} is not a Region name (lowercase letters, digits and '-', like eu-west-1)"),
            ));
        }
        let deadline = self.deadline.unwrap_or(DEFAULT_DEADLINE);
        if deadline.is_zero() || deadline > Duration::from_secs(30) {
            return Err(self.invalid("deadline", format!("{deadline:?} must be above 0 and at most 30s (Route 53 waits 2s for the first byte)")));
        }
        let cache_ttl = self.cache_ttl.unwrap_or(DEFAULT_CACHE_TTL);
        if cache_ttl > Duration::from_secs(300) {
            return Err(self.invalid("cache_ttl", format!("{cache_ttl:?} is too long: a cached answer older than a few seconds hides an outage (at most 300s)")));
        }
        if let Some(token) = &self.token {
            if token.len() < 16 {
                return Err(self.invalid("token", "too short: use at least 16 characters"));
            }
        }
        if let Some(url) = &self.aws_endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(self.invalid(
                    "aws_endpoint_url",
                    format!(
                        "{:?} must be an http:// or https:// URL",
                        redact_userinfo(url)
                    ),
                ));
            }
        }
        let timeout = |key: &str, t: Option<Duration>| -> Result<Duration, ConfigError> {
            let t = t.unwrap_or(DEFAULT_CHECK_TIMEOUT.min(deadline));
            if t.is_zero() || t > deadline {
                return Err(self.invalid(
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
                self.invalid(
                    &format!("{section}.url"),
                    "use a postgres://, postgresql://, mysql:// or mariadb:// URL",
                )
            })?;
            let lag_warn = db.lag_warn.unwrap_or(DEFAULT_LAG_WARN);
            let lag_fail = db.lag_fail.unwrap_or(DEFAULT_LAG_FAIL);
            if section.ends_with("writer") && (db.lag_warn.is_some() || db.lag_fail.is_some()) {
                return Err(self.invalid(
                    &format!("{section}.lag_warn"),
                    "lag limits apply to the reader only",
                ));
            }
            if lag_warn > lag_fail {
                return Err(self.invalid(
                    &format!("{section}.lag_warn"),
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
                    return Err(
                        self.invalid("lambda.function", "empty: name the function (or its ARN)")
                    );
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
            self.name_ok(&format!("http[{i}].name"), &h.name, &mut names)?;
            if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                return Err(self.invalid(
                    &format!("http[{i}].url"),
                    format!(
                        "{:?} must be an http:// or https:// URL",
                        redact_userinfo(&h.url)
                    ),
                ));
            }
            timeout(&format!("http[{i}].timeout"), h.timeout)?;
        }
        for (i, t) in self.tcp.iter().enumerate() {
            self.name_ok(&format!("tcp[{i}].name"), &t.name, &mut names)?;
            if t.address
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(self.invalid(
                    &format!("tcp[{i}].address"),
                    format!("{:?} must be host:port", t.address),
                ));
            }
            timeout(&format!("tcp[{i}].timeout"), t.timeout)?;
        }
        let dynamodb = self
            .dynamodb
            .iter()
            .enumerate()
            .map(|(i, t)| self.dynamo(i, t, &region, &timeout))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        for (i, d) in dynamodb.iter().enumerate() {
            self.name_ok(&format!("dynamodb[{i}].name"), &d.name, &mut names)?;
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
            dynamodb,
        })
    }

    fn name_ok<'a>(
        &self,
        key: &str,
        name: &'a str,
        taken: &mut BTreeSet<&'a str>,
    ) -> Result<(), ConfigError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(self.invalid(
                key,
                format!("{name:?}: use lowercase letters, digits, '-' and '_'"),
            ));
        }
        if !taken.insert(name) {
            return Err(self.invalid(key, format!("{name:?} is already used by another check")));
        }
        Ok(())
    }
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
                Err(e @ (ConfigError::Invalid { .. } | ConfigError::Setting { .. })) => {
                    assert_eq!(e.key(), Some(key), "{text}")
                }
                other => panic!("{text}: expected an error on {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_file_and_line_of_the_key() {
        let text = "region = \"eu-west-1\"\n\n[aurora.reader]\nurl = \"postgres://u@db/x\"\nlag_warn = \"5s\"\nlag_fail = \"1s\"\n\n[[tcp]]\nname = \"a\"\naddress = \"h:1\"\n\n[[tcp]]\nname = \"b\"\naddress = \"h\"\n";
        let e = parse(text).unwrap_err().to_string();
        assert!(
            e.starts_with("test.toml:5: aurora.reader.lag_warn: 5s is above"),
            "{e}"
        );
        let fixed = text.replace("lag_warn = \"5s\"", "lag_warn = \"1s\"");
        let e = parse(&fixed).unwrap_err().to_string();
        assert_eq!(e, "test.toml:14: tcp[1].address: \"h\" must be host:port");
        // Not in the file: just the key, as for a flag.
        let e = parse("deadline = \"1s\"").unwrap_err().to_string();
        assert!(e.starts_with("region: missing"), "{e}");
        let mut flagged = Config::from_toml("region = \"EU\"", "test.toml").unwrap();
        flagged.set_overridden("region");
        let e = flagged.validate().unwrap_err().to_string();
        assert!(e.starts_with("region: \"EU\" is not a Region name"), "{e}");
    }

    /// Errors name the file, line and key, never the secret on that line.
    #[test]
    fn errors_never_echo_the_token_or_a_database_password() {
        let good = "region = \"eu-west-1\"\ntoken = \"s3cret-token-value\"\n[aurora.writer]\nurl = \"postgres://health:dsn-pa55word@db.internal/orders\"\n";
        assert!(parse(good).is_ok());
        let broken = [
            // A misspelt key on the token's line: toml's own message would quote the line.
            good.replace("token =", "tokne ="),
            // A syntax error on the password's line.
            good.replace("/orders\"", "/orders"),
            good.replace("url =", "url = = "),
            // The token of the wrong type, a bad value after the secrets.
            good.replace("\"s3cret-token-value\"", "[\"s3cret-token-value\"]"),
            format!("{good}timeout = \"soon\"\n"),
            good.replace("postgres://", "redis://"),
            format!("{good}[[http]]\nname = \"x\"\nurl = \"ftp://u:dsn-pa55word@h/\"\n"),
            good.replace("[aurora.writer]", "[aurora.writer]\nlag_warn = \"1s\""),
        ];
        for text in &broken {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with("test.toml"), "{e}");
            for secret in ["s3cret-token-value", "dsn-pa55word"] {
                assert!(!e.contains(secret), "{secret} in {e:?}");
            }
        }
        let e = parse(&broken[0]).unwrap_err().to_string();
        assert!(
            e.starts_with("test.toml: line 2: unknown field `tokne`"),
            "{e}"
        );
        let e = parse(&broken[5]).unwrap_err().to_string();
        assert!(
            e.starts_with("test.toml:4: aurora.writer.url: use a postgres://"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_is_a_parse_error_with_the_line() {
        let e = parse("region = \"a\"\ncache_ttl = \"soon\"").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("line 2") && text.contains("soon"), "{text}");
    }
}
