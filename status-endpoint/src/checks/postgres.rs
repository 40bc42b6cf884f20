//! Aurora PostgreSQL (and plain PostgreSQL) checks: connect, `SELECT 1`, confirm the role with
//! `SHOW transaction_read_only`, and on a reader measure replication lag — from
//! `aurora_global_db_status()` where that function exists, otherwise from the standby's replay
//! position.
//!
//! One connection per check is kept between rounds (the pool bound is 1); it is dropped, and
//! re-opened next round, after any error or timeout, so a connection that was cut off mid-query
//! is never reused.

use super::{CheckError, LagLimits, Probe, Role, Status};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_postgres::{NoTls, SimpleQueryMessage};

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

pub struct PostgresCheck {
    role: Role,
    config: tokio_postgres::Config,
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
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl PostgresCheck {
    pub fn new(
        role: Role,
        url: &str,
        region: &str,
        lag: Option<LagLimits>,
    ) -> Result<Self, tokio_postgres::Error> {
        let mut config: tokio_postgres::Config = url.parse()?;
        config.application_name("vantage-status-endpoint");
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
        let probe = self.probe(&conn.client).await?;
        *slot = Some(conn);
        Ok(probe)
    }

    async fn connect(&self) -> Result<Connection, CheckError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| CheckError::Connect(e.to_string()))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection closed");
            }
        });
        Ok(Connection { client, driver })
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
        .map_err(|e| CheckError::Query(e.to_string()))?;
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
