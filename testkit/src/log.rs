//! A JSON-lines log kept in memory: hand a clone to the code under test as its `Write` (the
//! aggregator's decision log), then read back the events it wrote, all or of one kind.

use std::sync::{Arc, Mutex};

/// Shared bytes written as JSON lines; clones write to the same buffer.
#[derive(Clone, Default)]
pub struct JsonLines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for JsonLines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl JsonLines {
    /// Every line written so far, parsed; a line that is not JSON fails the test.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8(bytes)
            .expect("the log is UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }

    /// The events whose `event` field is `kind`.
    pub fn events_of(&self, kind: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }
}
