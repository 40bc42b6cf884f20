//! The on-disk spool of reports not yet delivered, so an aggregator outage or an agent restart
//! loses nothing that fits the configured bounds.
//!
//! Layout: one directory owned by one agent. Each report is the exact request body in its own
//! file `<seq>.json`, `seq` zero-padded to 20 digits so a directory listing sorts like the
//! sequence numbers. A file's modification time is set to the moment the report was spooled and
//! is what `max_age` is measured against, so ages survive a restart. `high-water-seq` holds the
//! largest sequence number ever spooled (the agent continues after it, so an emptied spool never
//! makes a restarted agent reuse numbers the aggregator would discard as duplicates).
//!
//! Crash safety: every file is written as `<name>.tmp`, flushed with fsync, renamed over its
//! final name and the directory is fsynced, so a scan sees either the whole report or none of
//! it. [`Spool::open`] deletes leftover `*.tmp` files from a crash and indexes the `*.json`
//! files it finds. A report removed after delivery whose file could not be deleted comes back
//! after a restart and is sent again; the aggregator drops it by sequence number
//! (at-least-once delivery).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
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
        fs::create_dir_all(&dir).map_err(|source| SpoolError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let scan_err = |source| SpoolError::Scan {
            path: dir.clone(),
            source,
        };
        let mut entries = BTreeMap::new();
        let mut bytes = 0;
        for item in fs::read_dir(&dir).map_err(scan_err)? {
            let item = item.map_err(scan_err)?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TEMP_SUFFIX) {
                // A write that never reached its rename: the report was not spooled.
                if let Err(e) = fs::remove_file(item.path()) {
                    tracing::warn!(path = %item.path().display(), error = %e, "cannot delete leftover spool temp file");
                }
                continue;
            }
            let Some(seq) = parse_report_name(name) else {
                continue;
            };
            let meta = item.metadata().map_err(scan_err)?;
            if !meta.is_file() {
                continue;
            }
            let entry = Entry {
                bytes: meta.len(),
                spooled_at: meta.modified().unwrap_or_else(|_| SystemTime::now()),
            };
            bytes += entry.bytes;
            entries.insert(seq, entry);
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

    /// The body of a spooled report.
    pub fn read(&self, seq: u64) -> Result<Vec<u8>, SpoolError> {
        let path = self.path_of(seq);
        fs::read(&path).map_err(|source| SpoolError::Read { path, source })
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

fn parse_report_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(REPORT_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn read_high_water(dir: &Path) -> Option<u64> {
    fs::read_to_string(dir.join(HIGH_WATER_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

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
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
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
        assert_eq!(parse_report_name("7.json"), Some(7));
        assert_eq!(parse_report_name(".json"), None);
        assert_eq!(parse_report_name("-1.json"), None);
        assert_eq!(parse_report_name("12.json.tmp"), None);
        assert_eq!(parse_report_name(HIGH_WATER_FILE), None);
    }
}
