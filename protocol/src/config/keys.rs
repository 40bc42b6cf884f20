//! Which key may speak for which vantage. Every agent key in `[aggregator.keys]` lists the
//! vantage Regions it may report for, so the aggregator can refuse a report signed by one
//! vantage's key on behalf of another: with one key per vantage (the default this module
//! enforces), a stolen key is one vantage, and quorum needs at least two. A key covering several
//! vantages needs `allow_shared = true`, and `check-config` warns about it.

use super::{ConfigError, ConfigText, FleetConfig, Vantage};
use std::collections::{BTreeMap, BTreeSet};

impl FleetConfig {
    /// The key id the agent of `vantage` signs with: its own `key_id`, else `agents.auth.key_id`.
    pub fn agent_key_id<'a>(&'a self, vantage: &'a Vantage) -> &'a str {
        vantage
            .key_id
            .as_ref()
            .unwrap_or(&self.agents.auth.key_id)
            .get_ref()
    }

    /// Key id → the vantages it may report for. Without `[aggregator.keys]`, the agents' key
    /// (`agents.auth.key_id`) covers every vantage, which validation allows only for a fleet of
    /// one vantage.
    pub fn key_vantages(&self) -> BTreeMap<String, BTreeSet<String>> {
        if self.aggregator.keys.is_empty() {
            let all = self
                .vantages
                .iter()
                .map(|v| v.region.get_ref().clone())
                .collect();
            return BTreeMap::from([(self.agents.auth.key_id.get_ref().clone(), all)]);
        }
        self.aggregator
            .keys
            .iter()
            .map(|(id, k)| {
                let covered = k.vantages.iter().map(|v| v.get_ref().clone()).collect();
                (id.clone(), covered)
            })
            .collect()
    }

    /// What `check-config` prints as warnings: keys allowed to speak for several vantages.
    pub fn warnings(&self) -> Vec<String> {
        self.aggregator
            .keys
            .iter()
            .filter(|(_, k)| k.allow_shared && k.vantages.len() > 1)
            .map(|(id, k)| {
                let names: Vec<&str> = k.vantages.iter().map(|v| v.get_ref().as_str()).collect();
                format!(
                    "aggregator.keys.{id}: one key reports for {} vantages ({}); if it is stolen, \
                     its reports alone could reach quorum and take a Region out. Give each \
                     vantage its own key.",
                    names.len(),
                    names.join(", ")
                )
            })
            .collect()
    }

    pub(super) fn validate_keys(&self) -> Result<(), ConfigError> {
        let text = ConfigText::new(&self.source, &self.origin);
        let known: BTreeSet<&str> = self
            .vantages
            .iter()
            .map(|v| v.region.get_ref().as_str())
            .collect();
        if self.aggregator.keys.is_empty() {
            if self.vantages.len() > 1 {
                return Err(self.invalid(
                    &self.agents.auth.key_id,
                    "agents.auth.key_id",
                    format!(
                        "one key for {} vantages: add [aggregator.keys.<key id>] with \
                         vantages = [\"<region>\"] for each vantage's own key (and key_id in \
                         its [[vantages]] entry)",
                        self.vantages.len()
                    ),
                ));
            }
            return Ok(());
        }
        for (id, k) in &self.aggregator.keys {
            let key = format!("aggregator.keys.{id}");
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(text.invalid_key(
                    "aggregator.keys",
                    format!("key id {id:?}: use printable ASCII without spaces"),
                ));
            }
            let mut seen = BTreeSet::new();
            for v in &k.vantages {
                if !known.contains(v.get_ref().as_str()) {
                    return Err(self.invalid(
                        v,
                        &format!("{key}.vantages"),
                        format!(
                            "{:?} is not a [[vantages]] region; known: {}",
                            v.get_ref(),
                            known.iter().copied().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                if !seen.insert(v.get_ref()) {
                    return Err(self.invalid(
                        v,
                        &format!("{key}.vantages"),
                        format!("{:?} is listed twice", v.get_ref()),
                    ));
                }
            }
            if k.vantages.is_empty() {
                return Err(text.invalid_key(
                    &key,
                    "list the vantages this agent key may report for: vantages = [\"eu-west-1\"]",
                ));
            }
            if k.vantages.len() > 1 && !k.allow_shared {
                return Err(text.invalid_key(
                    &key,
                    format!(
                        "one key for {} vantages: one stolen key could reach quorum; give each \
                         vantage its own key, or set allow_shared = true to accept the risk",
                        k.vantages.len()
                    ),
                ));
            }
        }
        // Admin keys share the key-source shape but never report.
        for (id, k) in &self.aggregator.admin_keys {
            if !k.vantages.is_empty() || k.allow_shared {
                return Err(text.invalid_key(
                    &format!("aggregator.admin_keys.{id}"),
                    "an admin key reports for no vantage: remove vantages and allow_shared",
                ));
            }
        }
        // Each agent's own key must exist and cover it, or every report it sends is refused.
        for (i, v) in self.vantages.iter().enumerate() {
            let id = self.agent_key_id(v);
            let covers = self
                .aggregator
                .keys
                .get(id)
                .is_some_and(|k| k.vantages.iter().any(|r| r.get_ref() == v.region.get_ref()));
            if !covers {
                let at = v.key_id.as_ref().unwrap_or(&v.region);
                return Err(self.invalid(
                    at,
                    &format!("vantages[{i}].key_id"),
                    format!(
                        "vantage {:?} signs with key {id:?}, which no [aggregator.keys.{id}] \
                         lists it under: add {:?} to that key's vantages, or set key_id to the \
                         vantage's own key",
                        v.region.get_ref(),
                        v.region.get_ref()
                    ),
                ));
            }
        }
        Ok(())
    }
}
