//! Temporary directories for tests, from `tempfile`: each test server and each test gets a
//! directory of its own (removed when the guard drops, even when the test panics), so no two
//! servers share a data, socket or temp directory and nothing lands in a system-wide place.

use crate::error::{io, Result};
use std::os::unix::fs::PermissionsExt as _;
pub use tempfile::TempDir;

/// A fresh private directory named `vantage-<tag>-…` under the system temp dir.
pub fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("vantage-{tag}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temp dir for {tag}: {e}"))
}

/// A fresh directory under `/tmp` that other users may traverse (mode 0755): servers that
/// run as `nobody` (PostgreSQL refuses root) must reach their data directory inside it.
pub fn shared_temp_dir(tag: &str) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("vantage-{tag}-"))
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempdir_in("/tmp")
        .map_err(io(format!("creating a temp dir for {tag}")))
}
