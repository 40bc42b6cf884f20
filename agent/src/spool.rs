//! The on-disk spool of reports not yet delivered, so an aggregator outage or an agent restart
//! loses nothing that fits the configured bounds.
//!
//! Layout: one directory owned by one agent, or with `aggregator.replicas` one subdirectory
//! `<dir>/<replica id>/` per replica ([`SpoolConfig::for_replica`]), each a spool of its own
//! with the same bounds, inside a parent that is checked like a spool ([`open_parent`]). Each report is the exact request body in its own
//! file `<seq>.json`, `seq` zero-padded to 20 digits so a directory listing sorts like the
//! sequence numbers. A file's modification time is set to the moment the report was spooled and
//! is what `max_age` is measured against, so ages survive a restart. `high-water-seq` holds the
//! largest sequence number ever spooled (the agent continues after it, so an emptied spool never
//! makes a restarted agent reuse numbers the aggregator would discard as duplicates).
//!
//! Trust: whatever is in the directory gets signed with the agent's key and sent, so the
//! directory must be this agent's alone. [`Spool::open`] creates it with mode 0700 and refuses
//! ([`SpoolError::Unsafe`]) one that is a symbolic link, is owned by another user or is
//! writable by group or others. Only names of the spool's own pattern are read (anything else
//! is ignored, with one warning per scan); files are opened with `O_NOFOLLOW`, so a symbolic
//! link is never read or written through, and temporary files are created with `O_EXCL`.
//!
//! Crash safety: every file is written as `<name>.tmp`, flushed with fsync, renamed over its
//! final name and the directory is fsynced, so a scan sees either the whole report or none of
//! it. [`Spool::open`] deletes leftover temporary files of its own names from a crash and
//! indexes the report files it finds. A report removed after delivery whose file could not be deleted comes back
//! after a restart and is sent again; the aggregator drops it by sequence number
//! (at-least-once delivery).

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use vantage_protocol::config::SpoolSection;

/// Default bound on the spool's size.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default age after which an unsent report is dropped.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(6 * 3600);
const REPORT_SUFFIX: &str = ".json";
const TEMP_SUFFIX: &str = ".tmp";
const HIGH_WATER_FILE: &str = "high-water-seq";
/// Digits of a report file's sequence number: `u64::MAX` has 20.
const SEQ_DIGITS: usize = 20;
/// How many stray names one warning quotes.
const STRAY_NAMES_LOGGED: usize = 5;

/// Where the spool lives and how much it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Directory for report files; created if missing. One agent per directory.
    pub dir: PathBuf,
    /// Sum of report sizes the spool may hold; the oldest reports beyond it are dropped.
    pub max_bytes: u64,
    /// Age (since spooling) after which an unsent report is dropped.
    pub max_age: Duration,
}

impl SpoolConfig {
    /// The fleet file's `[agents.spool]` section with its documented defaults.
    pub fn from_section(section: &SpoolSection) -> SpoolConfig {
        SpoolConfig {
            dir: section
                .dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("vantage-spool")),
            max_bytes: section.max_bytes.map_or(DEFAULT_MAX_BYTES, |b| b.0),
            max_age: section.max_age.as_ref().map_or(DEFAULT_MAX_AGE, |d| d.0),
        }
    }
}

impl SpoolConfig {
    /// The spool of aggregator replica `id`: `<dir>/<id>/`, with the same `max_bytes` and
    /// `max_age`, which bound each replica's spool on its own. `id` must be a plain file-name
    /// component ([`check_replicas`](crate::push::check_replicas) makes sure).
    pub fn for_replica(&self, id: &str) -> SpoolConfig {
        SpoolConfig {
            dir: self.dir.join(id),
            ..self.clone()
        }
    }
}

/// A spool operation that failed, with the path it was working on.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("creating spool directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing spool file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading spool file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("removing spool file {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("scanning spool directory {path}: {source}")]
    Scan {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The directory could be tampered with by someone else: the agent will not use it.
    #[error("spool directory {path} {problem}; {fix}")]
    Unsafe {
        path: PathBuf,
        problem: String,
        fix: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    spooled_at: SystemTime,
}

/// The index of a spool directory. Not shared: one pusher owns it.
#[derive(Debug)]
pub struct Spool {
    config: SpoolConfig,
    /// Reports on disk by sequence number, so the first key is the oldest.
    entries: BTreeMap<u64, Entry>,
    /// Sum of `entries[..].bytes`.
    bytes: u64,
    /// Largest sequence number ever spooled here, including delivered ones.
    high_water: Option<u64>,
}

impl Spool {
    /// Opens (creating if needed) the spool directory, deletes leftover temporary files and
    /// indexes the reports already there, so a restarted agent resumes where it stopped.
    pub fn open(config: SpoolConfig) -> Result<Spool, SpoolError> {
        let dir = config.dir.clone();
        // 0700 for every directory created here; umask can only take bits away.
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| SpoolError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        check_private(&dir)?;
        let scan_err = |source| SpoolError::Scan {
            path: dir.clone(),
            source,
        };
        let mut entries = BTreeMap::new();
        let mut bytes = 0;
        let mut stray = Vec::new();
        for item in fs::read_dir(&dir).map_err(scan_err)? {
            let item = item.map_err(scan_err)?;
            let os_name = item.file_name();
            let Some(name) = os_name.to_str() else {
                stray.push(os_name.to_string_lossy().into_owned());
                continue;
            };
            if name == HIGH_WATER_FILE {
                continue;
            }
            if is_own_temp_name(name) {
                // A write that never reached its rename: the report was not spooled. Removing
                // a symbolic link removes the link, never its target.
                if let Err(e) = fs::remove_file(item.path()) {
                    tracing::warn!(path = %item.path().display(), error = %e, "cannot delete leftover spool temp file");
                }
                continue;
            }
            let Some(seq) = parse_report_name(name) else {
                stray.push(name.to_owned());
                continue;
            };
            // The entry's own type: a symbolic link is not followed, and is not a report.
            let meta = item.metadata().map_err(scan_err)?;
            if !meta.is_file() {
                stray.push(name.to_owned());
                continue;
            }
            let entry = Entry {
                bytes: meta.len(),
                spooled_at: meta.modified().unwrap_or_else(|_| SystemTime::now()),
            };
            bytes += entry.bytes;
            entries.insert(seq, entry);
        }
        if !stray.is_empty() {
            tracing::warn!(
                dir = %dir.display(),
                count = stray.len(),
                names = ?&stray[..stray.len().min(STRAY_NAMES_LOGGED)],
                "ignoring files in the spool directory that the spool did not write"
            );
        }
        let high_water = read_high_water(&dir);
        tracing::debug!(dir = %dir.display(), reports = entries.len(), bytes, "spool opened");
        Ok(Spool {
            config,
            entries,
            bytes,
            high_water,
        })
    }

    /// The configuration the spool was opened with.
    pub fn config(&self) -> &SpoolConfig {
        &self.config
    }

    /// Stores a report durably, then drops the oldest reports until the spool fits `max_bytes`
    /// again and returns their sequence numbers (oldest first). A report larger than
    /// `max_bytes` on its own is not written and comes back as the only dropped one. On error
    /// nothing was stored and nothing was dropped.
    pub fn put(&mut self, seq: u64, body: &[u8], now: SystemTime) -> Result<Vec<u64>, SpoolError> {
        let len = body.len() as u64;
        if len > self.config.max_bytes {
            return Ok(vec![seq]);
        }
        let path = self.path_of(seq);
        write_atomically(&path, body, Some(now))?;
        if let Some(old) = self.entries.insert(
            seq,
            Entry {
                bytes: len,
                spooled_at: now,
            },
        ) {
            self.bytes -= old.bytes;
        }
        self.bytes += len;
        if self.high_water.is_none_or(|h| seq > h) {
            // The report itself is already durable, and `open` also derives the high-water
            // mark from the report files, so a failure here only matters once this report is
            // delivered and removed; it is logged rather than failing the put.
            match write_atomically(
                &self.config.dir.join(HIGH_WATER_FILE),
                seq.to_string().as_bytes(),
                None,
            ) {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "cannot record the spool's high-water seq"),
            }
            self.high_water = Some(seq);
        }
        let mut dropped = Vec::new();
        while self.bytes > self.config.max_bytes {
            let Some(oldest) = self.oldest() else { break };
            self.forget(oldest);
            dropped.push(oldest);
        }
        Ok(dropped)
    }

    /// Drops every report spooled more than `max_age` before `now` and returns their sequence
    /// numbers, oldest first. A report stamped in the future (the clock went back) is kept.
    pub fn expire(&mut self, now: SystemTime) -> Vec<u64> {
        let max_age = self.config.max_age;
        let old: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                now.duration_since(e.spooled_at)
                    .is_ok_and(|age| age > max_age)
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &old {
            self.forget(*seq);
        }
        old
    }

    /// The oldest (smallest) sequence number waiting.
    pub fn oldest(&self) -> Option<u64> {
        self.entries.keys().next().copied()
    }

    /// The body of a spooled report. A symbolic link at its name is refused, not followed,
    /// and no more than `max_bytes` is read.
    pub fn read(&self, seq: u64) -> Result<Vec<u8>, SpoolError> {
        let path = self.path_of(seq);
        read_no_follow(&path, self.config.max_bytes)
            .map_err(|source| SpoolError::Read { path, source })
    }

    /// Forgets a report (delivered, or rejected by the aggregator) and deletes its file. The
    /// report leaves the index even when the deletion fails; its file then comes back after a
    /// restart and is sent again, which the aggregator discards as a duplicate.
    pub fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        if let Some(e) = self.entries.remove(&seq) {
            self.bytes -= e.bytes;
        }
        let path = self.path_of(seq);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SpoolError::Remove { path, source }),
        }
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of the sizes of the reports waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The largest sequence number ever spooled in this directory, including reports already
    /// delivered and removed; a restarted agent numbers its next report after it.
    pub fn max_seq(&self) -> Option<u64> {
        let newest = self.entries.keys().next_back().copied();
        self.high_water.max(newest)
    }

    /// Whether a report is waiting in the spool.
    pub fn contains(&self, seq: u64) -> bool {
        self.entries.contains_key(&seq)
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.config.dir.join(format!("{seq:020}{REPORT_SUFFIX}"))
    }

    /// Drops a report because of a bound; a failed deletion is logged, not returned, since
    /// the bound is about what the agent keeps trying to send.
    fn forget(&mut self, seq: u64) {
        if let Err(e) = self.remove(seq) {
            tracing::warn!(seq, error = %e, "cannot delete dropped spool file");
        }
    }
}

/// Creates (mode 0700) the directory that holds the replicas' spools and refuses it on the same
/// grounds as a spool directory ([`SpoolError::Unsafe`]): whoever can rename entries in it
/// chooses what the agent signs and sends.
pub fn open_parent(dir: &Path) -> Result<(), SpoolError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| SpoolError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    check_private(dir)
}

/// Hands the reports a single-aggregator run left at the top of `dir` (now the parent of the
/// replicas' spools) to every spool in `spools`, oldest first and with their original spooling
/// time, then deletes them: they never reached an aggregator the agent still reports to, and
/// every replica must get them. Returns how many reports were adopted. A report that cannot be
/// read stays where it is (and is not adopted); one that a spool cannot take stops the
/// adoption with that error, leaving the rest for the next start.
pub fn adopt_legacy(dir: &Path, spools: &mut [&mut Spool]) -> Result<u64, SpoolError> {
    let scan_err = |source| SpoolError::Scan {
        path: dir.to_owned(),
        source,
    };
    let mut legacy = Vec::new();
    for item in fs::read_dir(dir).map_err(scan_err)? {
        let item = item.map_err(scan_err)?;
        let Some(seq) = item.file_name().to_str().and_then(parse_report_name) else {
            continue;
        };
        let meta = item.metadata().map_err(scan_err)?;
        if meta.is_file() {
            legacy.push((seq, item.path(), meta.modified().ok()));
        }
    }
    legacy.sort_unstable_by_key(|(seq, ..)| *seq);
    let limit = spools.iter().map(|s| s.config.max_bytes).max().unwrap_or(0);
    let mut adopted = 0;
    for (seq, path, modified) in legacy {
        let body = match read_no_follow(&path, limit) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a report left by a single-aggregator run");
                continue;
            }
        };
        let at = modified.unwrap_or_else(SystemTime::now);
        for spool in spools.iter_mut() {
            spool.put(seq, &body, at)?;
        }
        fs::remove_file(&path).map_err(|source| SpoolError::Remove { path, source })?;
        adopted += 1;
    }
    Ok(adopted)
}

/// Refuses a spool directory someone else could write into: a symbolic link (whoever made it
/// chose where reports go), another user's directory, or one writable by group or others.
fn check_private(dir: &Path) -> Result<(), SpoolError> {
    let unsafe_dir = |problem: String, fix: &'static str| SpoolError::Unsafe {
        path: dir.to_owned(),
        problem,
        fix,
    };
    let meta = fs::symlink_metadata(dir).map_err(|source| SpoolError::Scan {
        path: dir.to_owned(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir(
            "is a symbolic link".into(),
            "give the directory's real path (--spool-dir or agents.spool.dir)",
        ));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir(
            "is not a directory".into(),
            "give a directory (--spool-dir or agents.spool.dir)",
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(
            format!("is owned by uid {}, not by this agent's uid {me}", meta.uid()),
            "remove it so the agent creates its own, chown it to the agent's user, or use another --spool-dir",
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(
            format!("is writable by group or others (mode {mode:04o})"),
            "chmod 700 it (the agent creates its spool directory with mode 0700)",
        ));
    }
    Ok(())
}

/// The sequence number of a report file name: exactly [`SEQ_DIGITS`] digits and `.json`, as
/// [`Spool`] writes them; anything else was not written by the spool.
fn parse_report_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(REPORT_SUFFIX)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` is a temporary file the spool itself writes (of a report or the high-water
/// mark), so deleting it after a crash deletes nothing else.
fn is_own_temp_name(name: &str) -> bool {
    name.strip_suffix(TEMP_SUFFIX).is_some_and(|final_name| {
        final_name == HIGH_WATER_FILE || parse_report_name(final_name).is_some()
    })
}

/// Reads a file that must not be a symbolic link, at most `limit` bytes.
fn read_no_follow(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW)
        .open(path)?;
    let mut body = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut body)?;
    if body.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the spool's max_bytes ({limit})"),
        ));
    }
    Ok(body)
}

fn read_high_water(dir: &Path) -> Option<u64> {
    let text = read_no_follow(&dir.join(HIGH_WATER_FILE), 64).ok()?;
    std::str::from_utf8(&text).ok()?.trim().parse().ok()
}

/// `O_NOFOLLOW` for [`OpenOptionsExt::custom_flags`]: opening a symbolic link fails (ELOOP).
const O_NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// Writes `path` so that it is either absent/unchanged or complete, even across a crash:
/// temporary file, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, body: &[u8], mtime: Option<SystemTime>) -> Result<(), SpoolError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TEMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let write_err = |source| SpoolError::Write {
        path: path.to_owned(),
        source,
    };
    let result = (|| {
        let mut file = match create_new(&tmp) {
            // Left by a write that failed to clean up, or planted: the name is ours, so
            // remove what is there (a link, not its target) and create the file afresh.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&tmp)?;
                create_new(&tmp)?
            }
            other => other?,
        };
        file.write_all(body)?;
        if let Some(t) = mtime {
            file.set_modified(t)?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
    }
    Ok(())
}

/// Creates a file that did not exist (`O_EXCL`), never through a symbolic link, readable and
/// writable by the agent only.
fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "vantage-spool-unit-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn config(dir: &Path, max_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.join("spool"),
            max_bytes,
            max_age: Duration::from_secs(3600),
        }
    }

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    #[test]
    fn reports_come_back_oldest_first_and_survive_a_reopen() {
        let tmp = TempDir::new();
        let mut spool = Spool::open(config(&tmp.0, 1 << 20)).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.max_seq(), None);
        for seq in [3, 1, 2] {
            assert!(spool
                .put(seq, format!("r{seq}").as_bytes(), at(seq))
                .unwrap()
                .is_empty());
        }
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.bytes(), 6);
        assert_eq!(spool.oldest(), Some(1));
        assert_eq!(spool.read(2).unwrap(), b"r2");
        spool.remove(1).unwrap();
        spool.remove(1).unwrap(); // removing twice is harmless
        assert_eq!(spool.oldest(), Some(2));
        drop(spool);

        let mut spool = Spool::open(config(&tmp.0, 1 << 20)).unwrap();
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.bytes(), 4);
        assert_eq!(spool.oldest(), Some(2));
        assert_eq!(spool.read(3).unwrap(), b"r3");
        assert_eq!(spool.max_seq(), Some(3));
        // Ages come back from the files.
        assert_eq!(spool.expire(at(2) + Duration::from_secs(3601)), vec![2]);
        assert_eq!(spool.oldest(), Some(3));
    }

    #[test]
    fn max_seq_survives_an_emptied_spool() {
        let tmp = TempDir::new();
        let mut spool = Spool::open(config(&tmp.0, 1 << 20)).unwrap();
        spool.put(41, b"x", at(0)).unwrap();
        spool.put(42, b"y", at(0)).unwrap();
        spool.remove(41).unwrap();
        spool.remove(42).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.max_seq(), Some(42));
        drop(spool);
        let spool = Spool::open(config(&tmp.0, 1 << 20)).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.max_seq(), Some(42));
    }

    #[test]
    fn max_bytes_drops_the_oldest_first() {
        let tmp = TempDir::new();
        let mut spool = Spool::open(config(&tmp.0, 25)).unwrap();
        for seq in 1..=2 {
            assert!(spool.put(seq, &[b'a'; 10], at(0)).unwrap().is_empty());
        }
        assert_eq!(spool.put(3, &[b'a'; 10], at(0)).unwrap(), vec![1]);
        assert_eq!(spool.put(4, &[b'a'; 20], at(0)).unwrap(), vec![2, 3]);
        assert_eq!(
            (spool.len(), spool.bytes(), spool.oldest()),
            (1, 20, Some(4))
        );
        // Too big on its own: not written, nothing else dropped.
        assert_eq!(spool.put(5, &[b'a'; 26], at(0)).unwrap(), vec![5]);
        assert_eq!((spool.len(), spool.bytes()), (1, 20));
        // Replacing a report does not count it twice.
        assert!(spool.put(4, &[b'b'; 5], at(0)).unwrap().is_empty());
        assert_eq!((spool.len(), spool.bytes()), (1, 5));
        drop(spool);
        let spool = Spool::open(config(&tmp.0, 25)).unwrap();
        assert_eq!((spool.len(), spool.bytes()), (1, 5));
        assert_eq!(spool.read(4).unwrap(), b"bbbbb");
    }

    #[test]
    fn max_age_drops_what_is_older_and_keeps_future_stamps() {
        let tmp = TempDir::new();
        let mut spool = Spool::open(config(&tmp.0, 1 << 20)).unwrap();
        spool.put(1, b"a", at(0)).unwrap();
        spool.put(2, b"b", at(1000)).unwrap();
        spool.put(3, b"c", at(5000)).unwrap();
        assert!(spool.expire(at(3600)).is_empty());
        assert_eq!(spool.expire(at(4601)), vec![1, 2]);
        assert_eq!((spool.len(), spool.bytes()), (1, 1));
        // A clock that went back leaves everything in place.
        assert!(spool.expire(at(0)).is_empty());
    }

    #[test]
    fn a_scan_sees_no_partial_write() {
        let tmp = TempDir::new();
        let mut spool = Spool::open(config(&tmp.0, 1 << 20)).unwrap();
        spool.put(1, b"whole", at(0)).unwrap();
        let dir = spool.config().dir.clone();
        drop(spool);
        // A crash between write and rename leaves only the temporary file behind.
        fs::write(dir.join(format!("{:020}.json.tmp", 2)), b"half").unwrap();
        fs::write(dir.join("notes.txt"), b"not a report").unwrap();
        let spool = Spool::open(config(&tmp.0, 1 << 20)).unwrap();
        assert_eq!(spool.len(), 1);
        assert_eq!(spool.oldest(), Some(1));
        assert_eq!(spool.max_seq(), Some(1));
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        // Successful writes leave no temporary file either.
        assert!(names.contains(&format!("{:020}.json", 1)), "{names:?}");
    }

    #[test]
    fn errors_name_the_operation_and_path() {
        let tmp = TempDir::new();
        fs::create_dir_all(&tmp.0).unwrap();
        let file = tmp.0.join("a-file");
        fs::write(&file, b"").unwrap();
        let err = Spool::open(SpoolConfig {
            dir: file.join("spool"),
            max_bytes: 10,
            max_age: Duration::from_secs(1),
        })
        .unwrap_err();
        assert!(matches!(err, SpoolError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains("a-file"), "{err}");

        let mut spool = Spool::open(config(&tmp.0, 1 << 20)).unwrap();
        let dir = spool.config().dir.clone();
        fs::remove_dir_all(&dir).unwrap();
        fs::write(&dir, b"now a file").unwrap();
        let err = spool.put(1, b"x", at(0)).unwrap_err();
        assert!(matches!(err, SpoolError::Write { .. }), "{err:?}");
        assert!(spool.is_empty());
        assert!(matches!(spool.read(1), Err(SpoolError::Read { .. })));
    }

    #[test]
    fn report_names_parse_strictly() {
        assert_eq!(parse_report_name("00000000000000000042.json"), Some(42));
        assert_eq!(
            parse_report_name("7.json"),
            None,
            "not a name the spool writes"
        );
        assert_eq!(parse_report_name("evil.json"), None);
        assert_eq!(parse_report_name("000000000000000000042.json"), None);
        assert_eq!(parse_report_name(".json"), None);
        assert_eq!(parse_report_name("-1.json"), None);
        assert_eq!(parse_report_name("12.json.tmp"), None);
        assert_eq!(parse_report_name(HIGH_WATER_FILE), None);
        assert!(is_own_temp_name("00000000000000000042.json.tmp"));
        assert!(is_own_temp_name("high-water-seq.tmp"));
        assert!(!is_own_temp_name("notes.tmp"));
    }
}
