//! moto's server, the AWS test double (Route 53, CloudWatch, Lambda, IAM) on a loopback port
//! chosen at run time. Starting it costs about a second, so a test binary starts it once
//! ([`Moto::shared`]) and every test in it uses the same one, each in resources of its own
//! (its own hosted zone, function name). It runs in a directory of its own with `TMPDIR`
//! pointed there, and dies with the test process: the shared guard is never dropped, so the
//! server is started through `setpriv --pdeathsig KILL` from a thread that lives as long as the
//! process. A missing `moto_server` fails the test with the install hint, never skips it.

use crate::error::{KitError, Result};
use crate::http::exchange_blocking;
use crate::process::{free_port, require, ChildGuard};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The IAM role [`Moto::enable_lambda`] creates, for functions to run as.
pub const LAMBDA_ROLE: &str = "arn:aws:iam::123456789012:role/lambda-role";
/// Static credentials moto accepts, for any SDK client's `credentials_provider`.
pub fn credentials() -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new("test", "test", None, None, "vantage-testkit")
}

/// A running moto_server.
pub struct Moto {
    pub port: u16,
    _server: ChildGuard,
}

static SHARED: OnceLock<Moto> = OnceLock::new();

impl Moto {
    /// `moto_server` from `$VANTAGE_VENV` (default: the workspace's `.venv`).
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

    /// The test binary's moto, started on first use, with Lambda enabled. Panics (with the
    /// install hint) when it cannot start: every test that asks for it needs it.
    pub fn shared() -> &'static Moto {
        // get_or_init: tests racing for it wait for the one start instead of starting more.
        SHARED.get_or_init(|| {
            Moto::start()
                .and_then(|m| m.enable_lambda().map(|()| m))
                .unwrap_or_else(|e| panic!("starting moto: {e}"))
        })
    }

    /// A moto of the caller's own (stopped when dropped), for a test that must not share.
    /// Waits (at most 60 s) until it answers; a port taken before moto bound it is retried.
    pub fn start() -> Result<Moto> {
        let moto = Self::moto_server_path()?;
        let home = own_dir()?;
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut cmd = Command::new("setpriv");
            cmd.args(["--pdeathsig", "KILL", "--"])
                .arg(&moto)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .current_dir(&home)
                .env("TMPDIR", &home)
                .env("HOME", &home)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut server = spawn_from_lasting_thread(cmd)?;
            let ready = server.wait_until(Duration::from_secs(60), || {
                exchange_blocking(port, "GET", "/moto-api/", &[], b"").is_ok_and(|r| r.status < 500)
            });
            match ready {
                Ok(()) => {
                    return Ok(Moto {
                        port,
                        _server: server,
                    })
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("five attempts"))
    }

    /// `http://127.0.0.1:PORT`, the endpoint URL for the SDK.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Lambda without Docker (functions are stored, not run) and the [`LAMBDA_ROLE`] role.
    pub fn enable_lambda(&self) -> Result<()> {
        let r = exchange_blocking(
            self.port,
            "POST",
            "/moto-api/config",
            &[("Content-Type", "application/json")],
            br#"{"lambda": {"use_docker": false}}"#,
        )?;
        if r.status >= 300 {
            return Err(refused("moto config", r));
        }
        let policy = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22lambda.amazonaws.com%22%7D%2C%22Action%22%3A%22sts%3AAssumeRole%22%7D%5D%7D";
        let form = format!(
            "Action=CreateRole&Version=2010-05-08&RoleName=lambda-role&AssumeRolePolicyDocument={policy}"
        );
        let r = exchange_blocking(
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
        // A second call on the shared server finds the role there already.
        if r.status >= 300 && !r.body.contains("EntityAlreadyExists") {
            return Err(refused("moto CreateRole", r));
        }
        Ok(())
    }
}

fn refused(what: &str, r: crate::http::RawResponse) -> KitError {
    KitError::SetupRefused {
        what: what.to_owned(),
        status: r.status,
        body: r.body,
    }
}

/// moto's working directory: one per test process, under the system temp dir. The shared
/// server outlives every guard, so instead of removing its own directory on drop, each start
/// removes those whose process has gone.
fn own_dir() -> Result<PathBuf> {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("vantage-moto-")) else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = tmp.join(format!("vantage-moto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(crate::error::io("creating moto's directory"))?;
    Ok(dir)
}

/// Spawns `cmd` from a thread that never exits: `--pdeathsig` fires when the thread that
/// forked the child ends, and a test's own thread ends with the test while the shared server
/// must live on until the process exits.
fn spawn_from_lasting_thread(mut cmd: Command) -> Result<ChildGuard> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("moto-parent".into())
        .spawn(move || {
            let _ = tx.send(ChildGuard::spawn("moto_server", &mut cmd, "TERM"));
            loop {
                std::thread::park();
            }
        })
        .map_err(crate::error::io("spawning moto's parent thread"))?;
    rx.recv().expect("moto's parent thread answers")
}
