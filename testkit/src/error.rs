//! The one error type of the kit: what went wrong while starting or talking to a test
//! dependency, named for the operation. Tests mostly `unwrap` it, so each message says which
//! tool, which command or which port, and for a missing tool how to install it.

use std::path::PathBuf;
use std::time::Duration;

/// Every fallible kit operation returns this.
pub type Result<T> = std::result::Result<T, KitError>;

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// A binary the test drives is not installed: the message carries the install hint.
    #[error("{what} not found at {path}: {hint}")]
    ToolMissing {
        what: String,
        path: PathBuf,
        hint: &'static str,
    },
    /// A set-up command (initdb, mariadb-install-db, chown, ...) could not run or failed.
    #[error("{what} failed ({status}): {output}")]
    CommandFailed {
        what: String,
        status: String,
        output: String,
    },
    /// A server process did not come up in time (its log, when it has one, follows).
    #[error("{what} not ready after {limit:?}{log}")]
    NotReady {
        what: String,
        limit: Duration,
        log: String,
    },
    /// A server process exited while we waited for it.
    #[error("{what} exited early ({status}){log}")]
    ExitedEarly {
        what: String,
        status: String,
        log: String,
    },
    /// A raw HTTP exchange with a test server failed or its answer was not HTTP.
    #[error("HTTP exchange with {target}: {reason}")]
    HttpExchange { target: String, reason: String },
    /// A set-up request to a started server was refused.
    #[error("{what}: {status} {body}")]
    SetupRefused {
        what: String,
        status: u16,
        body: String,
    },
    /// Creating, writing or reading a file or socket of the kit's own.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Issuing a test certificate.
    #[error("issuing a test certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KitError {
    let what = what.into();
    move |source| KitError::Io { what, source }
}
