//! PostgreSQL for tests: a fresh primary (`initdb`) and its streaming replica
//! (`pg_basebackup -R`), each on a loopback port chosen at run time, run as `nobody` (PostgreSQL
//! refuses root) and stopped when dropped. Each server has its own directory: data (`-D`),
//! configuration (`config_file`, `hba_file` and `ident_file` inside it, never /etc), socket
//! directory (`-k`) and `PGSYSCONFDIR`, so nothing system-wide is read and nothing is shared
//! with another server. Optional TLS uses a certificate from the [`TestCa`].

use crate::ca::TestCa;
use crate::dirs::{shared_temp_dir, TempDir};
use crate::error::{io, Result};
use crate::process::ChildGuard;
use crate::process::{as_nobody, chown_nobody, free_port, require, run_checked, with_log};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Debian's PostgreSQL 15 binaries (`apt-get install postgresql`).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// TLS for a test server: `ssl = on` with a certificate from `ca` for `localhost` and
/// `127.0.0.1`, and optionally `pg_hba.conf` rules of the test's own (e.g. `hostssl` only).
pub struct PgTls<'a> {
    pub ca: &'a TestCa,
    pub hba: Option<&'a str>,
    /// More `postgresql.conf` lines (e.g. a TLS version limit).
    pub conf: &'a str,
}

/// One PostgreSQL server (primary or streaming replica).
pub struct Postgres {
    pub port: u16,
    /// stderr of the server, every statement included (`log_statement = all`).
    pub log: PathBuf,
    server: ChildGuard,
    // Dropped after the server (field order).
    _dir: TempDir,
}

fn tool(name: &str) -> Result<PathBuf> {
    require(&Path::new(PG_BIN).join(name), &format!("PostgreSQL {name}"))
}

/// A PostgreSQL tool with no system-wide configuration: `PGSYSCONFDIR` and `HOME` point into
/// the server's own directory.
fn pg_command(program: &Path, own: &Path, nobody: bool) -> Command {
    let mut c = if nobody {
        as_nobody(program)
    } else {
        Command::new(program)
    };
    c.env("PGSYSCONFDIR", own).env("HOME", own);
    c
}

impl Postgres {
    /// A fresh primary (trust authentication, superuser `postgres`), logging every statement
    /// so tests can count what the checks sent.
    pub fn primary() -> Result<Self> {
        Self::primary_with(None)
    }

    /// A fresh primary, with TLS as `tls` says.
    pub fn primary_with(tls: Option<PgTls<'_>>) -> Result<Self> {
        let initdb = tool("initdb")?;
        let dir = shared_temp_dir("pg")?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(io("creating the PostgreSQL data dir"))?;
        chown_nobody(dir.path())?;
        run_checked(
            pg_command(&initdb, dir.path(), true)
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-N", "-E", "UTF8"])
                .arg("--locale=C"),
            "initdb",
        )?;
        if let Some(tls) = tls {
            Self::configure_tls(dir.path(), &data, tls)?;
        }
        Self::start(dir, data)
    }

    fn configure_tls(dir: &Path, data: &Path, tls: PgTls<'_>) -> Result<()> {
        let cert = tls
            .ca
            .server_cert("postgres", &["localhost", "127.0.0.1"])?;
        let copy = |from: &Path, to: &str| {
            std::fs::copy(from, data.join(to)).map_err(io(format!("copying {to}")))
        };
        copy(&cert.cert, "server.crt")?;
        copy(&cert.key, "server.key")?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(io("opening postgresql.conf"))?;
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n{}",
            tls.conf
        )
        .map_err(io("writing postgresql.conf"))?;
        if let Some(hba) = tls.hba {
            std::fs::write(data.join("pg_hba.conf"), hba).map_err(io("writing pg_hba.conf"))?;
        }
        chown_nobody(dir)?;
        // PostgreSQL refuses a key others can read.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .map_err(io("restricting server.key"))
    }

    /// A streaming replica of `primary` (`pg_basebackup -R`).
    pub fn replica(primary: &Postgres) -> Result<Self> {
        let basebackup = tool("pg_basebackup")?;
        let dir = shared_temp_dir("pg-replica")?;
        chown_nobody(dir.path())?;
        let data = dir.path().join("data");
        run_checked(
            pg_command(&basebackup, dir.path(), true)
                .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
                .args(["-U", "postgres", "-D"])
                .arg(&data)
                .args(["-R", "-X", "stream", "-c", "fast"]),
            "pg_basebackup",
        )?;
        Self::start(dir, data)
    }

    fn start(dir: TempDir, data: PathBuf) -> Result<Self> {
        let postgres = tool("postgres")?;
        let sockets = dir.path().join("sockets");
        std::fs::create_dir_all(&sockets).map_err(io("creating the socket dir"))?;
        chown_nobody(&sockets)?;
        let own = |file: &str| format!("{}={}", file, data.join(own_file(file)).display());
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let log = dir.path().join(format!("postgres-{port}.log"));
            let stderr = std::fs::File::create(&log).map_err(io("creating the server log"))?;
            let mut server = ChildGuard::spawn(
                "postgres",
                pg_command(&postgres, dir.path(), true)
                    .arg("-D")
                    .arg(&data)
                    .arg("-k")
                    .arg(&sockets)
                    .args(["-p", &port.to_string()])
                    .args(["-c", &own("config_file"), "-c", &own("hba_file")])
                    .args(["-c", &own("ident_file")])
                    .args(["-c", "listen_addresses=127.0.0.1"])
                    .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                    .args(["-c", "full_page_writes=off", "-c", "shared_buffers=16MB"])
                    .args(["-c", "max_connections=40", "-c", "log_statement=all"])
                    .args(["-c", "wal_receiver_status_interval=1s"])
                    .stdout(Stdio::null())
                    .stderr(stderr),
                // SIGQUIT: immediate shutdown; tests need no clean checkpoint.
                "QUIT",
            )?;
            let ready = server.wait_until(Duration::from_secs(30), || {
                psql_port(port, "SELECT 1").is_ok()
            });
            match ready {
                Ok(()) => {
                    return Ok(Postgres {
                        port,
                        log,
                        server,
                        _dir: dir,
                    })
                }
                Err(e) => {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    last_error = Some(with_log(e, &log));
                    if !text.contains("could not bind") && !text.contains("in use") {
                        break;
                    }
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL with psql and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> Result<String> {
        psql_port(self.port, sql)
    }

    /// Immediate shutdown (the server is down until the test ends).
    pub fn kill(&mut self) {
        self.server.stop();
    }

    /// How many times the server logged a statement containing `needle`.
    pub fn statements_containing(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("statement:") && l.contains(needle))
            .count()
    }
}

/// The file a `*_file` setting names, inside the data directory.
fn own_file(setting: &str) -> &'static str {
    match setting {
        "hba_file" => "pg_hba.conf",
        "ident_file" => "pg_ident.conf",
        _ => "postgresql.conf",
    }
}

/// Runs SQL with psql against the server on `port` (no psqlrc, no service file).
pub fn psql_port(port: u16, sql: &str) -> Result<String> {
    let psql = tool("psql")?;
    let own = std::env::temp_dir();
    run_checked(
        pg_command(&psql, &own, false)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args([
                "-d",
                "postgres",
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "2")
            .env("PGSERVICEFILE", "/dev/null")
            .env("PGPASSFILE", "/dev/null"),
        "psql",
    )
    .map(|s| s.trim().to_owned())
}
