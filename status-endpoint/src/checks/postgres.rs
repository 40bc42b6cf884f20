//! Aurora PostgreSQL (and plain PostgreSQL) checks: connect, `SELECT 1`, confirm the role with
//! `SHOW transaction_read_only`, and on a reader measure replication lag — from
//! `aurora_global_db_status()` where that function exists, otherwise from the standby's replay
//! position.
//!
//! One connection per check is kept between rounds (the pool bound is 1); it is dropped, and
//! re-opened next round, after any error or timeout, so a connection that was cut off mid-query
//! is never reused.
//!
//! TLS follows libpq's URL parameters: `sslmode` = `disable`, `prefer` (the default: TLS when
//! the server offers it, without verification; plaintext otherwise or when the handshake
//! fails), `require` (TLS without verification, except that with `sslrootcert` the chain is
//! verified, as libpq does), `verify-ca` (the chain) or `verify-full` (the chain and the host
//! name); `sslrootcert` = the CA bundle (PEM) to trust, or `system` (the default) for the
//! built-in Mozilla roots. Authorised callers see the negotiated TLS version in the check's
//! output.

use super::tls::{self, HandshakeError, PgConnector, Transport, Trust, Verify};
use super::{CheckError, LagLimits, Probe, Role, Status, UrlError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_postgres::SimpleQueryMessage;

/// Lag of a standby, measured properly: a standby that has replayed everything it received is
/// not behind however old its last replayed transaction is (an idle primary writes nothing).
/// NULL when the server is not in recovery (a primary): lag does not apply.
const STANDBY_LAG_SQL: &str = "SELECT CASE \
    WHEN NOT pg_is_in_recovery() THEN NULL \
    WHEN pg_last_wal_receive_lsn() IS NOT NULL \
         AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
    ELSE COALESCE(EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp())), 0) \
    END::float8";

/// Aurora Global Database lag, one row per Region; -1 on the primary Region.
const AURORA_LAG_SQL: &str =
    "SELECT aws_region::text, durability_lag_in_msec::float8 FROM aurora_global_db_status()";

/// libpq's `sslmode` (`allow` is not supported: it prefers plaintext).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported (it tries plaintext first): \
                            use prefer, require or verify-full"
                        .to_owned(),
                )
            }
            other => {
                return Err(format!(
                    "sslmode={other:?}: use disable, prefer, require, verify-ca or verify-full"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What of the server certificate is verified; `require` verifies the chain when a CA
    /// bundle is named, as libpq does.
    pub fn verify(self, has_root_cert: bool) -> Verify {
        match self {
            SslMode::VerifyFull => Verify::Full,
            SslMode::VerifyCa => Verify::Chain,
            SslMode::Require if has_root_cert => Verify::Chain,
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Verify::Nothing,
        }
    }

    fn driver(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// The TLS side of a PostgreSQL check.
struct PgTls {
    mode: SslMode,
    client: Arc<rustls::ClientConfig>,
    /// Where the trust anchors came from, for messages.
    trust: String,
    /// "sslmode=verify-full", for messages.
    label: String,
}

pub struct PostgresCheck {
    role: Role,
    config: tokio_postgres::Config,
    tls: PgTls,
    target: String,
    /// The Region this endpoint serves: picks its row of `aurora_global_db_status()`.
    region: String,
    lag: Option<LagLimits>,
    conn: Mutex<Option<Connection>>,
}

/// A client and the task driving its socket; dropping it closes the socket.
struct Connection {
    client: tokio_postgres::Client,
    driver: JoinHandle<()>,
    transport: Transport,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl PostgresCheck {
    /// `url`: `postgres://user@host:port/db?sslmode=verify-full&sslrootcert=/path/bundle.pem`
    /// (any other parameter tokio-postgres knows, too). The CA bundle is read here, once.
    pub fn new(
        role: Role,
        url: &str,
        region: &str,
        lag: Option<LagLimits>,
    ) -> Result<Self, UrlError> {
        let (url, params) = tls::take_params(url, &["sslmode", "sslrootcert"]);
        let mut mode = SslMode::Prefer;
        let mut root_cert = None;
        for (key, value) in params {
            match key.as_str() {
                "sslmode" => mode = SslMode::parse(&value).map_err(UrlError)?,
                _ => root_cert = Some(value),
            }
        }
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| UrlError(tls::chain(&e)))?;
        config.application_name("vantage-status-endpoint");
        config.ssl_mode(mode.driver());
        let trust = match root_cert.as_deref() {
            None | Some("system") => Trust::built_in(),
            Some(path) => Trust::from_file(Path::new(path))
                .map_err(|e| UrlError(format!("sslrootcert: {e}")))?,
        };
        let client = tls::client_config(
            mode.verify(root_cert.is_some()),
            &trust,
            // PostgreSQL 17's direct TLS (sslnegotiation=direct) requires it; older servers
            // ignore it.
            &[b"postgresql"],
        )
        .map_err(UrlError)?;
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let target = format!(
            "{}:{}/{}",
            hosts.join(","),
            port,
            config.get_dbname().unwrap_or("")
        );
        Ok(PostgresCheck {
            role,
            config,
            tls: PgTls {
                mode,
                client,
                trust: trust.source,
                label: format!("sslmode={}", mode.as_str()),
            },
            target,
            region: region.to_owned(),
            lag,
            conn: Mutex::new(None),
        })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub async fn run(&self) -> Result<Probe, CheckError> {
        let mut slot = self.conn.lock().await;
        let conn = match slot.take() {
            Some(c) if !c.client.is_closed() => c,
            _ => self.connect().await?,
        };
        let mut probe = self.probe(&conn.client).await?;
        probe.note(conn.transport.describe(&self.tls.label));
        *slot = Some(conn);
        Ok(probe)
    }

    /// The TLS mode this check connects with.
    pub fn ssl_mode(&self) -> SslMode {
        self.tls.mode
    }

    async fn connect(&self) -> Result<Connection, CheckError> {
        match self.connect_with(&self.config).await {
            Ok(c) => Ok(c),
            Err(e) => {
                let handshake = tls::find_in_chain::<HandshakeError>(&e).cloned();
                match handshake {
                    // libpq: `prefer` falls back to plaintext when the handshake fails.
                    Some(h) if self.tls.mode == SslMode::Prefer => {
                        let mut plain = self.config.clone();
                        plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
                        let mut c = self
                            .connect_with(&plain)
                            .await
                            .map_err(|e| self.connect_error(&e))?;
                        c.transport = Transport::Plain(format!("{h}"));
                        Ok(c)
                    }
                    _ => Err(self.connect_error(&e)),
                }
            }
        }
    }

    async fn connect_with(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<Connection, tokio_postgres::Error> {
        let tls = PgConnector::new(Arc::clone(&self.tls.client), &self.tls.trust);
        let (client, connection) = config.connect(tls.clone()).await?;
        let transport = match tls.session() {
            Some(session) => Transport::Tls(session),
            None if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable => {
                Transport::Plain("TLS not requested".to_owned())
            }
            None => Transport::Plain("the server does not offer TLS".to_owned()),
        };
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection closed");
            }
        });
        Ok(Connection {
            client,
            driver,
            transport,
        })
    }

    /// A failed connection attempt as a check error: a TLS failure says which host and why;
    /// anything else carries its whole cause chain and the TLS mode.
    fn connect_error(&self, e: &tokio_postgres::Error) -> CheckError {
        match tls::find_in_chain::<HandshakeError>(e) {
            Some(h) => CheckError::Tls(format!("{h} ({})", self.tls.label)),
            None => CheckError::Connect(format!("{} ({})", tls::chain(e), self.tls.label)),
        }
    }

    async fn probe(&self, client: &tokio_postgres::Client) -> Result<Probe, CheckError> {
        // One round trip: liveness, role, and whether the Aurora lag function exists.
        let rows = simple(
            client,
            "SELECT 1; SHOW transaction_read_only; \
             SELECT to_regproc('aurora_global_db_status') IS NOT NULL",
        )
        .await?;
        let read_only = rows.get(1).and_then(|r| r.first()).map(String::as_str) == Some("on");
        let has_aurora = rows.get(2).and_then(|r| r.first()).map(String::as_str) == Some("t");
        let mut probe = Probe::pass();
        match (self.role, read_only) {
            (Role::Writer, true) => probe.raise(
                Status::Fail,
                "writer endpoint is read-only (transaction_read_only = on)",
            ),
            (Role::Reader, false) => probe.raise(
                Status::Warn,
                "reader endpoint is the writer (transaction_read_only = off): no replica answered",
            ),
            _ => {}
        }
        if let (Role::Reader, Some(limits)) = (self.role, self.lag) {
            if let Some(observation) = self.lag(client, has_aurora, limits).await? {
                probe.extra.push(observation);
            }
        }
        Ok(probe)
    }

    async fn lag(
        &self,
        client: &tokio_postgres::Client,
        has_aurora: bool,
        limits: LagLimits,
    ) -> Result<Option<super::Observation>, CheckError> {
        if has_aurora {
            let rows = simple(client, AURORA_LAG_SQL).await?;
            let rows: Vec<(String, f64)> = rows
                .into_iter()
                .filter_map(|r| Some((r.first()?.clone(), r.get(1)?.parse().ok()?)))
                .collect();
            let ours = rows
                .iter()
                .find(|(region, _)| region == &self.region)
                .map(|(_, lag)| *lag);
            // Our Region's row; failing that (a Region name mismatch), the worst secondary.
            let lag_ms = ours.or_else(|| rows.iter().map(|(_, l)| *l).reduce(f64::max));
            return Ok(match lag_ms {
                // -1: this Region is the primary; lag does not apply.
                Some(ms) if ms >= 0.0 => Some(limits.observe(
                    Duration::from_secs_f64(ms / 1000.0),
                    "aurora_global_db_status()",
                )),
                _ => None,
            });
        }
        let rows = simple(client, STANDBY_LAG_SQL).await?;
        let seconds = rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse::<f64>().ok());
        Ok(seconds.map(|s| {
            limits.observe(
                Duration::from_secs_f64(s.max(0.0)),
                "pg_last_xact_replay_timestamp()",
            )
        }))
    }
}

/// Runs a simple-protocol query (one round trip, no prepared statements) and returns every row
/// of every statement in order, as text; NULL reads as "".
async fn simple(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<Vec<String>>, CheckError> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| CheckError::Query(tls::chain(&e)))?;
    let mut out = Vec::new();
    for m in messages {
        if let SimpleQueryMessage::Row(row) = m {
            let cols = (0..row.len())
                .map(|i| row.get(i).unwrap_or("").to_owned())
                .collect();
            out.push(cols);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_sets_what_is_verified() {
        let verify = |mode: &str, ca: bool| SslMode::parse(mode).unwrap().verify(ca);
        assert_eq!(verify("prefer", true), Verify::Nothing);
        assert_eq!(verify("require", false), Verify::Nothing);
        // libpq: require with a root certificate verifies the chain.
        assert_eq!(verify("require", true), Verify::Chain);
        assert_eq!(verify("verify-ca", false), Verify::Chain);
        assert_eq!(verify("verify-full", false), Verify::Full);
        assert!(SslMode::parse("allow")
            .unwrap_err()
            .contains("not supported"));
        assert!(SslMode::parse("VERIFY-FULL").is_err());
    }

    #[test]
    fn url_parameters_pick_the_mode() {
        let check = |url: &str| PostgresCheck::new(Role::Writer, url, "eu-west-1", None);
        assert_eq!(
            check("postgres://u@h/db").unwrap().ssl_mode(),
            SslMode::Prefer
        );
        let c =
            check("postgresql://u@h/db?sslmode=verify-full&sslrootcert=system&connect_timeout=2")
                .unwrap();
        assert_eq!(c.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(
            c.config.get_connect_timeout(),
            Some(&Duration::from_secs(2))
        );
        let e = check("postgres://u@h/db?sslrootcert=/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let e = check("postgres://u@h/db?sslcert=/x.pem").err().unwrap();
        assert!(e.to_string().contains("sslcert"), "{e}");
    }
}
