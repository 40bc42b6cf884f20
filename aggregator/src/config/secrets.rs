//! Key material the aggregator loads from the environment or files: agent keys, operators'
//! admin keys (never equal to an agent key) and the state endpoint's bearer token. Errors name
//! the key and where it should come from, never the material.

use super::invalid;
use std::collections::HashMap;
use vantage_protocol::auth::{check_key, MIN_KEY_BYTES};
use vantage_protocol::config::{ConfigError, FleetConfig, KeySource};

/// Loads one agent key; `None` when its variable is unset and it has no file.
pub(super) fn load_key(id: &str, source: &KeySource) -> Result<Vec<u8>, String> {
    if let Some(var) = &source.env {
        if let Ok(v) = std::env::var(var) {
            return Ok(v.into_bytes());
        }
    }
    if let Some(path) = &source.file {
        let mut k = std::fs::read(path)
            .map_err(|e| format!("key {id}: reading {}: {e}", path.display()))?;
        while k.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            k.pop();
        }
        return Ok(k);
    }
    Err(match &source.env {
        Some(var) => format!("key {id}: environment variable {var} is not set"),
        None => format!("key {id}: give env = \"VARIABLE\" or file = \"path\""),
    })
}

/// Key material or a token: compared and used, never printed (`Debug` shows its length only).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Admin keys: each loaded, long enough, and none equal to an agent key (an agent holding that
/// key could otherwise sign overrides under the admin id).
pub(super) fn load_admin_keys(
    fleet: &FleetConfig,
    agent_keys: &HashMap<String, Vec<u8>>,
) -> Result<HashMap<String, Secret>, ConfigError> {
    let mut admin = HashMap::new();
    for (id, source) in &fleet.aggregator.admin_keys {
        let key_name = format!("aggregator.admin_keys.{id}");
        let key = load_key(id, source).map_err(|m| invalid(fleet, &key_name, m))?;
        check_key(&key).map_err(|e| invalid(fleet, &key_name, e.to_string()))?;
        if let Some((agent, _)) = agent_keys.iter().find(|(_, k)| **k == key) {
            return Err(invalid(
                fleet,
                &key_name,
                format!(
                    "holds the same key as agent key {agent:?}; give operators a key of their own"
                ),
            ));
        }
        admin.insert(id.clone(), Secret(key));
    }
    Ok(admin)
}

/// The state endpoint's token: the named variable must be set, to at least 16 bytes; a
/// misspelt variable must not leave the state open while the file says it is closed.
pub(super) fn load_state_token(fleet: &FleetConfig, var: &str) -> Result<Secret, ConfigError> {
    let key = "aggregator.state_token_env";
    match std::env::var(var) {
        Ok(token) if token.len() >= MIN_KEY_BYTES => Ok(Secret(token.into_bytes())),
        Ok(token) => Err(invalid(
            fleet,
            key,
            format!(
                "the token in {var} is {} bytes; use at least {MIN_KEY_BYTES}",
                token.len()
            ),
        )),
        Err(_) => Err(invalid(
            fleet,
            key,
            format!("environment variable {var} is not set; set it to the token, or remove state_token_env"),
        )),
    }
}
