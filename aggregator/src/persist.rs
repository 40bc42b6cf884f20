//! The state file: the decision state, the overrides, the override nonces spent recently and
//! each agent's highest accepted report sequence number, written after every evaluation and
//! every override and read back at start, so a restart resumes where the last run stopped (a
//! Region that was out stays out until it has earned its way back, and a replayed report or
//! override is still refused). Writes go to a temp file that is synced and
//! renamed over the old one, so a crash mid-write leaves the previous state, never half of one.

use crate::model::{ModelState, Overrides};
use crate::overrides::Nonces;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// What is persisted between runs.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Persisted {
    pub(crate) model: ModelState,
    pub(crate) overrides: Overrides,
    /// Agent id → highest accepted `seq`. Absent from state files written before it existed.
    #[serde(default)]
    pub(crate) highest_seq: BTreeMap<String, u64>,
    /// Override nonces spent recently, so a restart does not reopen their replay.
    #[serde(default)]
    pub(crate) nonces: Nonces,
}

/// Reads the state file. A missing file is a first start (the default state); an unreadable or
/// malformed one is an error: starting from scratch would bring failed Regions back.
pub(crate) fn load(path: &Path) -> Result<Persisted, std::io::Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("state file {}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(e) => Err(e),
    }
}

/// Replaces the state file with `state` (temp file, sync, rename).
pub(crate) fn save(path: &Path, state: &Persisted) -> Result<(), std::io::Error> {
    let tmp: PathBuf = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Pin, RegionState};
    use std::time::Duration;

    /// A fresh directory of this test's own (tests run in parallel, in one process or many).
    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "vantage-persist-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample() -> Persisted {
        let mut model = ModelState::default();
        model.regions.insert(
            "us-east-1".into(),
            RegionState {
                in_service: false,
                down_streak: 4,
                up_streak: 0,
                penalty: 1.75,
                penalty_at: Duration::from_millis(1_700_000_123_456),
                smoothed_latency: Some(0.0625),
                weight: 0,
                since: Duration::from_secs(1_700_000_000),
                down_since: Some(Duration::from_secs(1_699_999_990)),
            },
        );
        model.regions.insert(
            "eu-west-1".into(),
            RegionState {
                in_service: true,
                down_streak: 0,
                up_streak: 9,
                penalty: 0.0,
                penalty_at: Duration::ZERO,
                smoothed_latency: None,
                weight: 180,
                since: Duration::ZERO,
                down_since: None,
            },
        );
        model
            .recent_transitions
            .push_back(Duration::from_secs(1_700_000_000));
        let mut overrides = Overrides::default();
        overrides.pinned.insert("eu-west-1".into(), Pin::Up);
        overrides.frozen = true;
        Persisted {
            model,
            overrides,
            highest_seq: BTreeMap::from([("vantage-eu-west-1".to_owned(), 1_700_000_000_001)]),
            nonces: Nonces::default(),
        }
    }

    #[test]
    fn round_trip_keeps_everything_and_leaves_no_temp_file() {
        let d = dir("round-trip");
        let path = d.join("state.json");
        let state = sample();
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        assert!(!path.with_extension("tmp").exists());

        // A second save replaces the first whole.
        let empty = Persisted::default();
        save(&path, &empty).unwrap();
        assert_eq!(load(&path).unwrap(), empty);
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn a_state_file_without_sequence_numbers_still_loads() {
        let d = dir("old");
        let path = d.join("state.json");
        let mut old = serde_json::to_value(sample()).unwrap();
        old.as_object_mut().unwrap().remove("highest_seq");
        std::fs::write(&path, old.to_string()).unwrap();
        let loaded = load(&path).unwrap();
        assert!(loaded.highest_seq.is_empty());
        assert_eq!(loaded.model, sample().model);
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn a_file_from_before_admin_keys_still_loads() {
        // No nonces, no `pinned_by`: written by the version that trusted loopback callers.
        let d = dir("older");
        let path = d.join("state.json");
        std::fs::write(
            &path,
            br#"{"model": {"regions": {}, "recent_transitions": []},
                "overrides": {"pinned": {"eu-west-1": "down"}, "frozen": true}}"#,
        )
        .unwrap();
        let p = load(&path).unwrap();
        assert_eq!(p.overrides.pinned.get("eu-west-1"), Some(&Pin::Down));
        assert!(p.overrides.frozen && p.overrides.pinned_by.is_empty());
        assert_eq!(p.nonces, Nonces::default());
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn a_missing_file_is_a_first_start() {
        let d = dir("missing");
        assert_eq!(load(&d.join("state.json")).unwrap(), Persisted::default());
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_it() {
        let d = dir("malformed");
        let path = d.join("state.json");
        std::fs::write(&path, b"{\"model\": 3").unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("state.json"), "{e}");
        std::fs::remove_dir_all(d).ok();
    }
}
