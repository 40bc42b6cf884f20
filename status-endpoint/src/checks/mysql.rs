//! Aurora MySQL (and MySQL / MariaDB) checks: connect, `SELECT 1` with the read-only flags,
//! confirm the role, and on a reader read `SHOW REPLICA STATUS` for replication lag.
//!
//! Aurora readers report `@@innodb_read_only = 1`; a plain MySQL or MariaDB replica is made
//! read-only with `@@read_only`, so either flag marks a read-only endpoint. An Aurora replica is
//! not a binlog replica: `SHOW REPLICA STATUS` is empty there and lag is not reported.
//!
//! One connection per check is kept between rounds (pool bound 1); it is dropped after any
//! error or timeout and re-opened next round.

use super::{CheckError, LagLimits, Observation, Probe, Role, Status};
use mysql_async::prelude::Queryable;
use std::time::Duration;
use tokio::sync::Mutex;

pub struct MysqlCheck {
    role: Role,
    opts: mysql_async::Opts,
    target: String,
    lag: Option<LagLimits>,
    conn: Mutex<Option<mysql_async::Conn>>,
}

impl MysqlCheck {
    /// `url`: `mysql://` or `mariadb://user:password@host:port/db`.
    pub fn new(
        role: Role,
        url: &str,
        lag: Option<LagLimits>,
    ) -> Result<Self, mysql_async::UrlError> {
        let url = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_owned(),
        };
        let opts = mysql_async::Opts::from_url(&url)?;
        let target = format!(
            "{}:{}/{}",
            opts.ip_or_hostname(),
            opts.tcp_port(),
            opts.db_name().unwrap_or("")
        );
        Ok(MysqlCheck {
            role,
            opts,
            target,
            lag,
            conn: Mutex::new(None),
        })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub async fn run(&self) -> Result<Probe, CheckError> {
        let mut slot = self.conn.lock().await;
        let mut conn = match slot.take() {
            Some(c) => c,
            None => mysql_async::Conn::new(self.opts.clone())
                .await
                .map_err(|e| CheckError::Connect(e.to_string()))?,
        };
        let probe = self.probe(&mut conn).await?;
        *slot = Some(conn);
        Ok(probe)
    }

    async fn probe(&self, conn: &mut mysql_async::Conn) -> Result<Probe, CheckError> {
        let row: Option<(i64, i64, i64)> = conn
            .query_first("SELECT 1, @@innodb_read_only, @@read_only")
            .await
            .map_err(|e| CheckError::Query(e.to_string()))?;
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
