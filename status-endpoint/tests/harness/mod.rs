//! Real dependencies for the status endpoint's tests, each on loopback ports chosen at run
//! time and stopped when dropped (even when a test fails): PostgreSQL primary and streaming
//! replica (run as `nobody`, since PostgreSQL refuses root), MariaDB, moto for Lambda, a
//! black-hole TCP listener, and our own server. A missing tool fails with an install hint.
//! [`TestCa`] issues server certificates so PostgreSQL and MariaDB can speak (and demand) TLS.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use vantage_status_endpoint::config::{Config, Settings};
use vantage_status_endpoint::router;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const MARIADBD: &str = "/usr/sbin/mariadbd";
pub const MARIADB_INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const INSTALL_HINT: &str =
    "run ./scripts/test.sh, or: apt-get install -y postgresql mariadb-server \
     && python3 -m venv .venv && .venv/bin/pip install 'moto[server]==5.*'";

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn require(path: &Path, what: &str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path.to_owned())
    } else {
        Err(format!("{what} not found at {}: {INSTALL_HINT}", path.display()).into())
    }
}

/// A directory under /tmp that `nobody` can traverse, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let dir =
            PathBuf::from("/tmp").join(format!("vantage-se-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(TempDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process stopped when dropped: `signal` first, SIGKILL after five seconds.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    signal: &'static str,
}

impl ChildGuard {
    pub fn new(name: &str, child: Child, signal: &'static str) -> Self {
        ChildGuard {
            name: name.to_owned(),
            child: Some(child),
            signal,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                return Err(format!("{} exited early ({status})", self.name).into());
            }
        }
        Ok(())
    }

    /// Sends a signal by name (std only knows SIGKILL).
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args([&format!("-{}", self.signal), &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port: bind port 0, note it, release it. Servers that fail to bind (another
/// test took the port in between) are retried by their starters.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `ready` every 50 ms until it returns true, the child dies, or `limit` passes.
fn wait_until(
    what: &str,
    limit: Duration,
    child: &mut ChildGuard,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        child.check_running()?;
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{what} not ready after {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A command run as `nobody` (PostgreSQL refuses to run as root).
fn as_nobody(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(program);
    c
}

fn chown_nobody(path: &Path) -> Result<()> {
    run_checked(
        Command::new("chown")
            .arg("-R")
            .arg("nobody:nogroup")
            .arg(path),
        "chown",
    )?;
    Ok(())
}

const DAY: Duration = Duration::from_secs(86_400);

/// A throwaway certificate authority (rcgen, P-256) and one server certificate it issued, all
/// written as PEM to a directory of their own (removed on drop).
pub struct TestCa {
    dir: TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A server certificate and key, as PEM files.
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        // A name of its own: two test CAs must not be mistaken for one another.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("vantage status-endpoint test CA {}-{n}", std::process::id()),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = std::time::SystemTime::now();
        params.not_before = (now - DAY).into();
        params.not_after = (now + 30 * DAY).into();
        let cert = params.self_signed(&key)?;
        let dir = TempDir::new("ca")?;
        std::fs::write(dir.path().join("ca.pem"), cert.pem())?;
        Ok(TestCa {
            dir,
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM): what `sslrootcert=` / `ssl-ca=` name.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `names` (DNS names or IP literals), written as
    /// `<tag>.crt` / `<tag>.key` beside the CA.
    pub fn server_cert(&self, tag: &str, names: &[&str]) -> Result<ServerCert> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose};
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = std::time::SystemTime::now();
        params.not_before = (now - DAY).into();
        params.not_after = (now + 30 * DAY).into();
        let cert = params.signed_by(&key, &self.issuer)?;
        let out = ServerCert {
            cert: self.dir.path().join(format!("{tag}.crt")),
            key: self.dir.path().join(format!("{tag}.key")),
        };
        std::fs::write(&out.cert, cert.pem())?;
        std::fs::write(&out.key, key.serialize_pem())?;
        Ok(out)
    }
}

/// TLS for a test PostgreSQL server: `ssl = on` with a certificate from `ca` for `localhost`
/// and `127.0.0.1`, and optionally `pg_hba.conf` rules of the test's own (e.g. `hostssl` only).
pub struct PgTls<'a> {
    pub ca: &'a TestCa,
    pub hba: Option<&'a str>,
    /// More `postgresql.conf` lines (e.g. a TLS version limit).
    pub conf: &'a str,
}

/// One PostgreSQL server (primary or streaming replica).
pub struct Postgres {
    pub port: u16,
    pub log: PathBuf,
    server: ChildGuard,
    // Dropped after the server: field order.
    _dir: TempDir,
}

impl Postgres {
    /// A fresh primary (`initdb`, trust authentication, superuser `postgres`), logging every
    /// statement so tests can count what the checks sent.
    pub fn primary() -> Result<Self> {
        Self::primary_with(None)
    }

    /// A fresh primary, with TLS as `tls` says.
    pub fn primary_with(tls: Option<PgTls<'_>>) -> Result<Self> {
        let initdb = require(&Path::new(PG_BIN).join("initdb"), "PostgreSQL initdb")?;
        let dir = TempDir::new("pg")?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        chown_nobody(dir.path())?;
        run_checked(
            as_nobody(&initdb)
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-N",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                .env("HOME", dir.path()),
            "initdb",
        )?;
        if let Some(tls) = tls {
            let cert = tls
                .ca
                .server_cert("postgres", &["localhost", "127.0.0.1"])?;
            std::fs::copy(&cert.cert, data.join("server.crt"))?;
            std::fs::copy(&cert.key, data.join("server.key"))?;
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))?;
            writeln!(
                conf,
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n{}",
                tls.conf
            )?;
            if let Some(hba) = tls.hba {
                std::fs::write(data.join("pg_hba.conf"), hba)?;
            }
            chown_nobody(dir.path())?;
            // PostgreSQL refuses a key others can read.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )?;
        }
        Self::start(dir, data)
    }

    /// A streaming replica of `primary` (`pg_basebackup -R`).
    pub fn replica(primary: &Postgres) -> Result<Self> {
        let basebackup = require(&Path::new(PG_BIN).join("pg_basebackup"), "pg_basebackup")?;
        let dir = TempDir::new("pg-replica")?;
        chown_nobody(dir.path())?;
        let data = dir.path().join("data");
        run_checked(
            as_nobody(&basebackup)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &primary.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .arg("-D")
                .arg(&data)
                .args(["-R", "-X", "stream", "-c", "fast"]),
            "pg_basebackup",
        )?;
        Self::start(dir, data)
    }

    fn start(dir: TempDir, data: PathBuf) -> Result<Self> {
        let postgres = require(&Path::new(PG_BIN).join("postgres"), "PostgreSQL server")?;
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let log = dir.path().join(format!("postgres-{port}.log"));
            let child = as_nobody(&postgres)
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "unix_socket_directories="])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "shared_buffers=16MB"])
                .args(["-c", "max_connections=40", "-c", "log_statement=all"])
                .args(["-c", "wal_receiver_status_interval=1s"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()?;
            // SIGQUIT: immediate shutdown; tests need no clean checkpoint.
            let mut server = ChildGuard::new("postgres", child, "QUIT");
            let ready = wait_until("postgres", Duration::from_secs(30), &mut server, || {
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
                    last_error = Some(format!("{e}: {text}"));
                    if !text.contains("could not bind") && !text.contains("in use") {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_default().into())
    }

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

pub fn psql_port(port: u16, sql: &str) -> Result<String> {
    let psql = require(&Path::new(PG_BIN).join("psql"), "psql")?;
    run_checked(
        Command::new(psql)
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
            .env("PGCONNECT_TIMEOUT", "2"),
        "psql",
    )
    .map(|s| s.trim().to_owned())
}

/// A MariaDB server (as root, which MariaDB allows with `--user=root`); without TLS it has no
/// grant tables, so any user name connects.
pub struct Mariadb {
    pub port: u16,
    server: ChildGuard,
    _dir: TempDir,
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
        let mariadbd = require(Path::new(MARIADBD), "MariaDB server")?;
        let install = require(Path::new(MARIADB_INSTALL_DB), "mariadb-install-db")?;
        let dir = TempDir::new("mariadb")?;
        let data = dir.path().join("data");
        run_checked(
            Command::new(install)
                .arg(format!("--datadir={}", data.display()))
                .args([
                    "--user=root",
                    "--skip-test-db",
                    "--auth-root-authentication-method=normal",
                ])
                .arg("--skip-name-resolve"),
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
            let log = dir.path().join("error.log");
            let child = Command::new(&mariadbd)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", dir.path().join("sock").display()))
                .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                .arg(format!("--log-error={}", log.display()))
                .args(["--user=root", "--bind-address=127.0.0.1"])
                .arg(format!("--port={port}"))
                .args([
                    "--innodb-buffer-pool-size=16M",
                    "--skip-log-bin",
                    "--innodb-flush-log-at-trx-commit=0",
                ])
                .args(&tls_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let mut server = ChildGuard::new("mariadbd", child, "TERM");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            match wait_until("mariadbd", Duration::from_secs(30), &mut server, || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }) {
                Ok(()) => {
                    return Ok(Mariadb {
                        port,
                        server,
                        _dir: dir,
                    })
                }
                Err(e) => {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    last_error = Some(format!("{e}: {text}"));
                    if !text.contains("Can't start server") && !text.contains("in use") {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_default().into())
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/mysql", self.port)
    }
}

/// moto's server, with Lambda running without Docker and one IAM role for functions.
pub struct Moto {
    pub port: u16,
    server: ChildGuard,
}

pub const LAMBDA_ROLE: &str = "arn:aws:iam::123456789012:role/lambda-role";

impl Moto {
    pub fn moto_server_path() -> Result<PathBuf> {
        let venv = std::env::var_os("VANTAGE_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .expect("workspace root")
                    .join(".venv")
            });
        require(&venv.join("bin/moto_server"), "moto_server")
    }

    pub fn start() -> Result<Self> {
        let moto = Self::moto_server_path()?;
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let child = Command::new(&moto)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let mut server = ChildGuard::new("moto_server", child, "TERM");
            let ready = wait_until("moto_server", Duration::from_secs(60), &mut server, || {
                http_raw(port, "GET", "/moto-api/", &[], b"").is_ok_and(|(s, _)| s < 500)
            });
            match ready {
                Ok(()) => {
                    let moto = Moto { port, server };
                    moto.setup()?;
                    return Ok(moto);
                }
                Err(e) => last_error = Some(e.to_string()),
            }
        }
        Err(last_error.unwrap_or_default().into())
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn setup(&self) -> Result<()> {
        let (status, body) = http_raw(
            self.port,
            "POST",
            "/moto-api/config",
            &[("Content-Type", "application/json")],
            br#"{"lambda": {"use_docker": false}}"#,
        )?;
        if status >= 300 {
            return Err(format!("moto config: {status} {body}").into());
        }
        let policy = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22lambda.amazonaws.com%22%7D%2C%22Action%22%3A%22sts%3AAssumeRole%22%7D%5D%7D";
        let form = format!(
            "Action=CreateRole&Version=2010-05-08&RoleName=lambda-role&AssumeRolePolicyDocument={policy}"
        );
        let (status, body) = http_raw(
            self.port,
            "POST",
            "/",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
                ),
            ],
            form.as_bytes(),
        )?;
        if status >= 300 {
            return Err(format!("moto CreateRole: {status} {body}").into());
        }
        Ok(())
    }

    /// SDK configuration pointing at moto with test credentials.
    pub async fn sdk_config(&self, region: &str) -> aws_config::SdkConfig {
        vantage_status_endpoint::checks::lambda::sdk_loader(
            region,
            Some(&self.endpoint()),
            Duration::from_secs(5),
        )
        .credentials_provider(aws_sdk_lambda::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await
    }

    /// Creates a Python function named `name` in `region`.
    pub async fn create_function(&self, region: &str, name: &str) -> Result<()> {
        let client = aws_sdk_lambda::Client::new(&self.sdk_config(region).await);
        client
            .create_function()
            .function_name(name)
            .runtime(aws_sdk_lambda::types::Runtime::Python312)
            .role(LAMBDA_ROLE)
            .handler("index.handler")
            .code(
                aws_sdk_lambda::types::FunctionCode::builder()
                    .zip_file(aws_sdk_lambda::primitives::Blob::new(empty_zip()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                format!(
                    "CreateFunction: {}",
                    aws_sdk_lambda::error::DisplayErrorContext(&e)
                )
            })?;
        Ok(())
    }
}

/// The smallest valid zip archive: an end-of-central-directory record and nothing else.
fn empty_zip() -> Vec<u8> {
    let mut z = vec![0x50, 0x4b, 0x05, 0x06];
    z.extend_from_slice(&[0; 18]);
    z
}

/// A listener that accepts TCP connections and never says a word: a hung dependency.
pub struct BlackHole {
    pub port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(BlackHole {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A blocking HTTP/1.1 exchange (Connection: close); returns the status and body.
pub fn http_raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed response: {text:.200}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// An answer from our server.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    pub elapsed: Duration,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `status` of the first entry under `checks[key]`.
    pub fn check(&self, key: &str) -> &str {
        self.body["checks"][key][0]["status"]
            .as_str()
            .unwrap_or("absent")
    }
}

/// Our status endpoint, served in this process on a loopback port.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Validates `toml` and serves it; `aws` is used for the Lambda check.
    pub async fn start(toml: &str, aws: Option<aws_config::SdkConfig>) -> Result<Self> {
        let settings: Settings = Config::from_toml(toml, "test")?.validate()?;
        let checks = router::build_checks(&settings, aws).await?;
        let app = router::router(&settings, checks);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = router::run(app, listener, async {
                let _ = rx.await;
            })
            .await;
        });
        Ok(Server {
            addr,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// GET `path` with extra headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Answer> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let started = Instant::now();
        let mut s = tokio::net::TcpStream::connect(self.addr).await?;
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw)).await??;
        let elapsed = started.elapsed();
        let text = String::from_utf8(raw)?;
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or("bad status line")?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let body = if path.starts_with("/metrics") {
            serde_json::Value::String(body.to_owned())
        } else {
            serde_json::from_str(body)?
        };
        Ok(Answer {
            status,
            headers,
            body,
            elapsed,
        })
    }

    pub async fn deep(&self, query: &str, token: Option<&str>) -> Result<Answer> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        self.get(&format!("/status/deep{query}"), &headers).await
    }

    pub async fn metrics(&self) -> Result<String> {
        let a = self.get("/metrics", &[]).await?;
        Ok(a.body.as_str().unwrap_or_default().to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The health+json schema committed with the crate.
pub fn health_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/health.schema.json"),
    )
    .expect("schema file");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("valid schema")
}

pub fn assert_schema(body: &serde_json::Value) {
    let validator = health_schema();
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "schema violations {errors:?} in {body:#}"
    );
}

/// Polls `probe` every 100 ms until it returns Some, or fails after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
