//! MariaDB for tests: a fresh server (`mariadb-install-db`, then `mariadbd`) on a loopback port
//! chosen at run time, stopped when dropped. Both programs get `--no-defaults` first (no
//! /etc/mysql option files) and every path of their own inside the server's temp directory:
//! `--datadir`, `--tmpdir`, `--socket`, `--pid-file`, the error log. Bootstrapping into the
//! shared /tmp let two servers delete each other's `#sql-temptable-*` files (a fresh-clone run
//! failed with `Error on delete of '/tmp/#sql-temptable-…MAI' (Errcode: 2)`); with a tmpdir of
//! its own each server only sees its own.

use crate::ca::TestCa;
use crate::dirs::{shared_temp_dir, TempDir};
use crate::error::{io, Result};
use crate::process::{free_port, require, run_checked, with_log, ChildGuard};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const MARIADBD: &str = "/usr/sbin/mariadbd";
pub const MARIADB_INSTALL_DB: &str = "/usr/bin/mariadb-install-db";

/// A MariaDB server, run as root (which MariaDB allows with `--user=root`). Without TLS it has
/// no grant tables, so any user name connects.
pub struct Mariadb {
    pub port: u16,
    server: ChildGuard,
    // Dropped after the server (field order).
    _dir: TempDir,
}

/// The paths one server owns, all inside its temp directory.
struct Paths {
    data: PathBuf,
    tmp: PathBuf,
    socket: PathBuf,
    pid: PathBuf,
    log: PathBuf,
}

impl Paths {
    fn in_dir(dir: &Path) -> Result<Paths> {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(io("creating MariaDB's tmpdir"))?;
        Ok(Paths {
            data: dir.join("data"),
            tmp,
            socket: dir.join("mariadb.sock"),
            pid: dir.join("mariadb.pid"),
            log: dir.join("error.log"),
        })
    }

    /// The options both programs take: `--no-defaults` must come first.
    fn common_args(&self) -> Vec<String> {
        vec![
            "--no-defaults".to_owned(),
            format!("--datadir={}", self.data.display()),
            format!("--tmpdir={}", self.tmp.display()),
            format!("--socket={}", self.socket.display()),
            format!("--pid-file={}", self.pid.display()),
            "--user=root".to_owned(),
        ]
    }
}

impl Mariadb {
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// With `ca`: TLS with a certificate from `ca` for `localhost` and `127.0.0.1`, and
    /// `require_secure_transport = ON` (plaintext connections are refused). That server keeps
    /// its grant tables (`root` without a password), since `--skip-grant-tables` also skips
    /// the secure-transport check, which MariaDB makes while authenticating.
    pub fn start_with(ca: Option<&TestCa>) -> Result<Self> {
        let mariadbd = require(Path::new(MARIADBD), "MariaDB server (mariadbd)")?;
        let install = require(Path::new(MARIADB_INSTALL_DB), "mariadb-install-db")?;
        let dir = shared_temp_dir("mariadb")?;
        let paths = Paths::in_dir(dir.path())?;
        run_checked(
            Command::new(install)
                .args(paths.common_args())
                .args(["--skip-test-db", "--auth-root-authentication-method=normal"])
                .args(["--skip-name-resolve", "--skip-networking"])
                .env("TMPDIR", &paths.tmp),
            "mariadb-install-db",
        )?;
        let mut tls_args = Vec::new();
        if let Some(ca) = ca {
            let cert = ca.server_cert("mariadb", &["localhost", "127.0.0.1"])?;
            tls_args.push(format!("--ssl-cert={}", cert.cert.display()));
            tls_args.push(format!("--ssl-key={}", cert.key.display()));
            tls_args.push(format!("--ssl-ca={}", ca.ca_file().display()));
            tls_args.push("--require-secure-transport=ON".to_owned());
        } else {
            tls_args.push("--skip-grant-tables".to_owned());
        }
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut server = ChildGuard::spawn(
                "mariadbd",
                Command::new(&mariadbd)
                    .args(paths.common_args())
                    .arg(format!("--log-error={}", paths.log.display()))
                    .args(["--skip-networking=0", "--bind-address=127.0.0.1"])
                    .arg(format!("--port={port}"))
                    .args(["--innodb-buffer-pool-size=16M", "--skip-log-bin"])
                    .arg("--innodb-flush-log-at-trx-commit=0")
                    .args(&tls_args)
                    .env("TMPDIR", &paths.tmp)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
                "TERM",
            )?;
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let ready = server.wait_until(Duration::from_secs(30), || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            match ready {
                Ok(()) => {
                    return Ok(Mariadb {
                        port,
                        server,
                        _dir: dir,
                    })
                }
                Err(e) => {
                    let text = std::fs::read_to_string(&paths.log).unwrap_or_default();
                    last_error = Some(with_log(e, &paths.log));
                    if !text.contains("Can't start server") && !text.contains("in use") {
                        break;
                    }
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// `mysql://root@127.0.0.1:PORT/mysql`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/mysql", self.port)
    }

    /// Stops the server now (it stays down until the test ends).
    pub fn kill(&mut self) {
        self.server.stop();
    }
}
