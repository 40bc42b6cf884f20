//! Logs kept in memory: hand a clone of a [`JsonLines`] to the code under test as its `Write`
//! (the aggregator's decision log) and read back the events it wrote, all or of one kind; or
//! install its [`JsonLines::subscriber`] to read back, as text, what the code logged through
//! `tracing`.

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
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// A `tracing` subscriber writing plain lines (INFO and above, no colour) here. Set it as
    /// the default of the test's thread (`tracing::subscriber::set_default`): a current-thread
    /// runtime's tasks log through it too.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let me = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || me.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish()
    }

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
