//! Aurora MySQL (and MySQL / MariaDB) checks: connect, `SELECT 1` with the read-only flags,
//! confirm the role, and on a reader read `SHOW REPLICA STATUS` for replication lag.
//!
//! Aurora readers report `@@innodb_read_only = 1`; a plain MySQL or MariaDB replica is made
//! read-only with `@@read_only`, so either flag marks a read-only endpoint. An Aurora replica is
//! not a binlog replica: `SHOW REPLICA STATUS` is empty there and lag is not reported.
//!
//! One connection per check is kept between rounds (pool bound 1); it is dropped after any
//! error or timeout and re-opened next round.
//!
//! TLS follows the `mysql` client's options as URL parameters: `ssl-mode` = `DISABLED`,
//! `PREFERRED` (the default: TLS without verification when the server offers it, plaintext
//! otherwise), `REQUIRED` (TLS without verification), `VERIFY_CA` (the chain) or
//! `VERIFY_IDENTITY` (the chain and the host name); `ssl-ca` = the CA bundle (PEM) to trust
//! instead of the built-in Mozilla roots. mysql_async's own `require_ssl`, `verify_ca`,
//! `verify_identity` and `built_in_roots` also work (not mixed with `ssl-mode`). The TLS itself
//! is mysql_async's: rustls on ring.

use super::tls::{self, HandshakeError, Session, Transport, Trust};
use super::{CheckError, LagLimits, Observation, Probe, Role, Status, UrlError};
use mysql_async::prelude::Queryable;
use mysql_async::{DriverError, Opts, OptsBuilder, SslOpts};
use std::path::Path;
use std::time::Duration;
use tokio::sync::Mutex;

/// The `mysql` client's `--ssl-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl SslMode {
    /// Case-insensitive, as the `mysql` client.
    pub fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value.to_ascii_uppercase().as_str() {
            "DISABLED" => SslMode::Disabled,
            "PREFERRED" => SslMode::Preferred,
            "REQUIRED" => SslMode::Required,
            "VERIFY_CA" => SslMode::VerifyCa,
            "VERIFY_IDENTITY" => SslMode::VerifyIdentity,
            _ => {
                return Err(format!(
                    "ssl-mode={value:?}: use DISABLED, PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disabled => "DISABLED",
            SslMode::Preferred => "PREFERRED",
            SslMode::Required => "REQUIRED",
            SslMode::VerifyCa => "VERIFY_CA",
            SslMode::VerifyIdentity => "VERIFY_IDENTITY",
        }
    }
}

/// mysql_async's own TLS URL parameters.
const NATIVE_TLS_PARAMS: [&str; 4] = [
    "require_ssl",
    "verify_ca",
    "verify_identity",
    "built_in_roots",
];

/// The TLS side of a MySQL check: the options to connect with TLS (none when disabled) and
/// without it (`PREFERRED` falls back to them when the server offers no TLS).
struct MyTls {
    mode: SslMode,
    secure: Option<Opts>,
    plain: Opts,
    /// Where the trust anchors come from, for messages.
    trust: String,
    /// "ssl-mode=VERIFY_IDENTITY", for messages.
    label: String,
}

pub struct MysqlCheck {
    role: Role,
    tls: MyTls,
    target: String,
    lag: Option<LagLimits>,
    conn: Mutex<Option<(mysql_async::Conn, Transport)>>,
}

impl MysqlCheck {
    /// `url`: `mysql://` or `mariadb://user:password@host:port/db`, with
    /// `?ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/bundle.pem` (or mysql_async's own parameters).
    /// The CA bundle is read here, once.
    pub fn new(role: Role, url: &str, lag: Option<LagLimits>) -> Result<Self, UrlError> {
        // mysql_async asks rustls for the process's default provider; make that ring even if
        // some other crate ever enables aws-lc-rs too (installing twice is harmless).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_owned(),
        };
        let (url, params) = tls::take_params(&url, &["ssl-mode", "ssl_mode", "ssl-ca", "ssl_ca"]);
        let native = tls::take_params(&url, &NATIVE_TLS_PARAMS).1;
        let mut mode = None;
        let mut ca = None;
        for (key, value) in params {
            if key.starts_with("ssl-mode") || key.starts_with("ssl_mode") {
                mode = Some(SslMode::parse(&value).map_err(UrlError)?);
            } else {
                ca = Some(value);
            }
        }
        if mode.is_some() && !native.is_empty() {
            return Err(UrlError(format!(
                "use either ssl-mode or mysql_async's {}, not both",
                native
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join("/")
            )));
        }
        let opts = Opts::from_url(&url).map_err(|e| UrlError(tls::chain(&e)))?;
        let trust = match ca.as_deref() {
            Some(path) => {
                Trust::from_file(Path::new(path)).map_err(|e| UrlError(format!("ssl-ca: {e}")))?
            }
            None => Trust::built_in(),
        };
        let roots = |ssl: SslOpts| match &trust.pem {
            Some(pem) => ssl
                .with_root_certs(vec![pem.clone().into()])
                .with_disable_built_in_roots(true),
            None => ssl,
        };
        let (mode, ssl) = if native.is_empty() {
            let mode = mode.unwrap_or(SslMode::Preferred);
            let ssl = match mode {
                SslMode::Disabled => None,
                SslMode::Preferred | SslMode::Required => {
                    Some(SslOpts::default().with_danger_accept_invalid_certs(true))
                }
                // Note: mysql_async 0.37.1 still checks the name here (its rustls path
                // matches the name error by text that rustls no longer renders; upstream
                // issue #404, fixed after 0.37.1).
                SslMode::VerifyCa => Some(roots(
                    SslOpts::default().with_danger_skip_domain_validation(true),
                )),
                SslMode::VerifyIdentity => Some(roots(SslOpts::default())),
            };
            (mode, ssl)
        } else {
            // mysql_async's parameters as it parsed them, plus our CA bundle.
            let ssl = opts.ssl_opts().cloned();
            let mode = match &ssl {
                None => SslMode::Disabled,
                Some(s) if s.accept_invalid_certs() => SslMode::Required,
                Some(s) if s.skip_domain_validation() => SslMode::VerifyCa,
                Some(_) => SslMode::VerifyIdentity,
            };
            let ssl = ssl.map(|s| match &trust.pem {
                Some(pem) => s.with_root_certs(vec![pem.clone().into()]),
                None => s,
            });
            (mode, ssl)
        };
        let target = format!(
            "{}:{}/{}",
            opts.ip_or_hostname(),
            opts.tcp_port(),
            opts.db_name().unwrap_or("")
        );
        // Never mysql_async's default switch to the server's Unix socket after connecting to
        // 127.0.0.1: the check is of the network endpoint, and the socket carries no TLS.
        let opts: Opts = OptsBuilder::from_opts(opts).prefer_socket(false).into();
        let plain: Opts = OptsBuilder::from_opts(opts.clone())
            .ssl_opts(None::<SslOpts>)
            .into();
        let secure = ssl.map(|ssl| OptsBuilder::from_opts(opts).ssl_opts(ssl).into());
        Ok(MysqlCheck {
            role,
            tls: MyTls {
                mode,
                secure,
                plain,
                trust: trust.source,
                label: format!("ssl-mode={}", mode.as_str()),
            },
            target,
            lag,
            conn: Mutex::new(None),
        })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// The TLS mode this check connects with.
    pub fn ssl_mode(&self) -> SslMode {
        self.tls.mode
    }

    pub async fn run(&self) -> Result<Probe, CheckError> {
        let mut slot = self.conn.lock().await;
        let (mut conn, transport) = match slot.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let mut probe = self.probe(&mut conn).await?;
        probe.note(transport.describe(&self.tls.label));
        *slot = Some((conn, transport));
        Ok(probe)
    }

    async fn connect(&self) -> Result<(mysql_async::Conn, Transport), CheckError> {
        let Some(secure) = &self.tls.secure else {
            let conn = mysql_async::Conn::new(self.tls.plain.clone())
                .await
                .map_err(|e| self.connect_error(&e))?;
            return Ok((conn, Transport::Plain("TLS not requested".to_owned())));
        };
        match mysql_async::Conn::new(secure.clone()).await {
            Ok(mut conn) => {
                let session = server_session(&mut conn).await;
                Ok((conn, Transport::Tls(session)))
            }
            Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer))
                if self.tls.mode == SslMode::Preferred =>
            {
                let conn = mysql_async::Conn::new(self.tls.plain.clone())
                    .await
                    .map_err(|e| self.connect_error(&e))?;
                Ok((
                    conn,
                    Transport::Plain("the server does not offer TLS".to_owned()),
                ))
            }
            Err(e) => Err(self.connect_error(&e)),
        }
    }

    /// A failed connection attempt as a check error: a TLS failure says which host and why;
    /// anything else carries its whole cause chain and the TLS mode.
    fn connect_error(&self, e: &mysql_async::Error) -> CheckError {
        let host = self.tls.plain.ip_or_hostname().to_owned();
        let label = &self.tls.label;
        if let mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) = e {
            return CheckError::Tls(format!(
                "TLS with {host} failed: the server does not offer TLS ({label})"
            ));
        }
        if let Some(r) = tls::find_in_chain::<rustls::Error>(e) {
            let h = HandshakeError {
                host,
                detail: tls::describe_rustls(r, &self.tls.trust, "ssl-ca"),
            };
            let name_mismatch = matches!(
                r,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. }
                )
            );
            if name_mismatch && self.tls.mode == SslMode::VerifyCa {
                return CheckError::Tls(format!(
                    "{h} ({label}: mysql_async 0.37.1 checks the name even then, upstream issue \
                     blackbeam/mysql_async#404; connect by a name in the certificate)"
                ));
            }
            return CheckError::Tls(format!("{h} ({label})"));
        }
        CheckError::Connect(format!("{} ({label})", tls::chain(e)))
    }

    async fn probe(&self, conn: &mut mysql_async::Conn) -> Result<Probe, CheckError> {
        let row: Option<(i64, i64, i64)> = conn
            .query_first("SELECT 1, @@innodb_read_only, @@read_only")
            .await
            .map_err(|e| CheckError::Query(tls::chain(&e)))?;
        let (_, innodb_ro, ro) =
            row.ok_or_else(|| CheckError::Query("SELECT 1 returned no row".into()))?;
        let read_only = innodb_ro != 0 || ro != 0;
        let mut probe = Probe::pass();
        match (self.role, read_only) {
            (Role::Writer, true) => probe.raise(
                Status::Fail,
                format!("writer endpoint is read-only (innodb_read_only = {innodb_ro}, read_only = {ro})"),
            ),
            (Role::Reader, false) => probe.raise(
                Status::Warn,
                "reader endpoint is the writer (innodb_read_only = 0, read_only = 0): no replica answered",
            ),
            _ => {}
        }
        if let (Role::Reader, Some(limits)) = (self.role, self.lag) {
            if let Some(o) = replica_lag(conn, limits).await? {
                probe.extra.push(o);
            }
        }
        Ok(probe)
    }
}

/// The TLS version and cipher as the server sees them (one query, once per connection).
async fn server_session(conn: &mut mysql_async::Conn) -> Session {
    let rows: Vec<(String, String)> = conn
        .query("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
        .await
        .unwrap_or_default();
    let value = |name: &str| {
        rows.iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    Session {
        version: value("Ssl_version").unwrap_or_else(|| "TLS".to_owned()),
        cipher: value("Ssl_cipher"),
    }
}

/// Lag from `SHOW REPLICA STATUS`: none when the server is not a binlog replica; `fail` when it
/// is one whose SQL thread is not running (Seconds_Behind_* is NULL).
async fn replica_lag(
    conn: &mut mysql_async::Conn,
    limits: LagLimits,
) -> Result<Option<Observation>, CheckError> {
    let rows: Vec<mysql_async::Row> = match conn.query("SHOW REPLICA STATUS").await {
        Ok(rows) => rows,
        // Missing privilege (REPLICATION CLIENT / SLAVE MONITOR): say so rather than fail.
        Err(e) => {
            return Ok(Some(
                Observation::new("replicationLag", Status::Warn)
                    .output(format!("SHOW REPLICA STATUS failed: {e}")),
            ))
        }
    };
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let column = ["Seconds_Behind_Source", "Seconds_Behind_Master"]
        .into_iter()
        .find(|c| row.columns_ref().iter().any(|col| col.name_str() == *c));
    let seconds: Option<u64> = column.and_then(|c| row.get_opt::<Option<u64>, _>(c)?.ok()?);
    Ok(Some(match seconds {
        Some(s) => limits.observe(Duration::from_secs(s), "SHOW REPLICA STATUS"),
        None => Observation::new("replicationLag", Status::Fail)
            .output("replication is not running (Seconds_Behind_Source is NULL)"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_mode_parses_like_the_mysql_client() {
        assert_eq!(
            SslMode::parse("verify_identity"),
            Ok(SslMode::VerifyIdentity)
        );
        assert_eq!(SslMode::parse("DISABLED"), Ok(SslMode::Disabled));
        assert!(SslMode::parse("ON").unwrap_err().contains("PREFERRED"));
    }

    #[test]
    fn url_parameters_pick_the_mode() {
        let mode = |url: &str| MysqlCheck::new(Role::Writer, url, None).map(|c| c.ssl_mode());
        assert_eq!(mode("mysql://u@h/db").unwrap(), SslMode::Preferred);
        assert_eq!(
            mode("mariadb://u@h/db?ssl_mode=required").unwrap(),
            SslMode::Required
        );
        assert_eq!(
            mode("mysql://u@h/db?require_ssl=true").unwrap(),
            SslMode::VerifyIdentity
        );
        assert_eq!(
            mode("mysql://u@h/db?require_ssl=true&verify_identity=false").unwrap(),
            SslMode::VerifyCa
        );
        assert_eq!(
            mode("mysql://u@h/db?require_ssl=true&verify_ca=false").unwrap(),
            SslMode::Required
        );
        assert_eq!(
            mode("mysql://u@h/db?require_ssl=false").unwrap(),
            SslMode::Disabled
        );
        assert!(mode("mysql://u@h/db?ssl-mode=REQUIRED&verify_ca=false").is_err());
        let e = mode("mysql://u@h/db?tls=1").unwrap_err();
        assert!(e.to_string().contains("tls"), "{e}");
    }
}
