//! A new fleet file while the aggregator runs (SIGHUP, or `--watch-config` seeing the file
//! change): checked whole, exactly as at start, then swapped in, or refused with the old
//! configuration kept and one error line naming the file, the line and the key.
//!
//! What a reload applies: Regions added (decided from the next evaluation, starting as at a
//! first start) and removed (their decision state, pins and window series are dropped and
//! they leave the desired state at the next evaluation; their Route 53 objects are left as
//! they are), agent and admin keys (from the next request), `[policy]`, `[weights]` but
//! `min_interval`, the quantiles and `state_token_env` (from the next evaluation or request).
//! The decision state of Regions that stay is not touched: streaks, penalties, in or out.
//!
//! What it refuses, because the process built it once at start ([`RESTART_KEYS`]): the
//! backend and `[route53]` (the backend object holds the record and health-check ids), the
//! replicas and the lease, the window, the evaluation and plane periods, the state file, the
//! report interval, the histogram precision, the report size cap, and the `[[notify]]` sinks
//! and `notifications.status_url`. `[[maintenance]]` windows reload.

use crate::backend::Backend;
use crate::config::AggregatorConfig;
use crate::service::{lock, unix_ms, Aggregator};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;
use vantage_protocol::config::{ConfigError, FleetConfig};
use vantage_runtime::reload::ReloadTrigger;

/// Reloads counted by result (`ok`, `error`).
pub const CONFIG_RELOADS_TOTAL: &str = "vantage_aggregator_config_reloads_total";

/// Keys the process reads once at start; a reload that changes one is refused whole.
pub const RESTART_KEYS: &[&str] = &[
    "fleet.name",
    "fleet.report_interval",
    "fleet.histogram_precision",
    "aggregator.backend",
    "aggregator.replicas",
    "aggregator.lease",
    "aggregator.state_file",
    "aggregator.window",
    "aggregator.evaluate_every",
    "aggregator.heartbeat_every",
    "aggregator.observe_every",
    "aggregator.max_report_bytes",
    "weights.min_interval",
    "route53",
    // The notification sinks (clients, secrets) and their link base are built at start;
    // `[[maintenance]]` and the other `[notifications]` keys are read at every decision.
    "notify",
    "notifications.status_url",
];

/// A new fleet file that cannot be put in force; the configuration in use stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{origin}: {keys} changed: restart the aggregator to apply it (nothing of this file was applied)")]
    RestartNeeded { origin: String, keys: String },
}

/// What a reload changed. Keys by id only, never their material.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadSummary {
    pub regions_added: Vec<String>,
    pub regions_removed: Vec<String>,
    pub keys_added: Vec<String>,
    pub keys_removed: Vec<String>,
    /// Same id, other key material or other vantages.
    pub keys_changed: Vec<String>,
    pub admin_keys_added: Vec<String>,
    pub admin_keys_removed: Vec<String>,
    pub admin_keys_changed: Vec<String>,
    pub policy_changed: bool,
    pub weights_changed: bool,
    /// Services added, removed, or with other Regions, policy or weights (`[[services]]`);
    /// every other service's decision state is untouched.
    pub services_added: Vec<String>,
    pub services_removed: Vec<String>,
    pub services_changed: Vec<String>,
}

/// With a backend that moves traffic, the records and health checks of every service are
/// built into it at start: a service whose `[services.route53]` is new, gone or different
/// needs a restart (named in the refusal). The dry-run backend takes any change.
fn records_changed(old: &AggregatorConfig, new: &AggregatorConfig) -> Option<String> {
    if old.backend == crate::config::BackendKind::DryRun || !new.fleet.has_named_services() {
        return None;
    }
    let records = |c: &AggregatorConfig| -> Vec<(String, String)> {
        c.fleet
            .services()
            .iter()
            .map(|s| {
                let r53 = s
                    .fleet
                    .route53
                    .as_ref()
                    .map(|r| format!("{:?}", r.settings()));
                (s.name.clone(), r53.unwrap_or_default())
            })
            .collect()
    };
    let (a, b) = (records(old), records(new));
    if a == b {
        return None;
    }
    let differing: Vec<String> = b
        .iter()
        .filter(|entry| !a.contains(entry))
        .map(|(name, _)| name.clone())
        .chain(
            a.iter()
                .filter(|(name, _)| !b.iter().any(|(n, _)| n == name))
                .map(|(name, _)| name.clone()),
        )
        .collect();
    Some(format!(
        "the Route 53 records of service(s) {} (services[].route53)",
        differing.join(", ")
    ))
}

/// Where the running aggregator rereads its fleet file, as which replica, and what asks it to.
pub struct ConfigReload {
    pub path: PathBuf,
    pub replica: Option<String>,
    pub trigger: ReloadTrigger,
}

/// Reads and checks a fleet file exactly as the aggregator does at start: every section
/// checked, every key loaded.
pub fn load(path: &Path, replica: Option<&str>) -> Result<AggregatorConfig, ConfigError> {
    AggregatorConfig::from_fleet(FleetConfig::load(path)?)?.for_replica(replica)
}

/// Ids added, removed and changed between two maps.
fn id_diff<V: PartialEq>(
    old: &HashMap<String, V>,
    new: &HashMap<String, V>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .cloned()
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
        .map(|(k, _)| k.clone())
        .collect();
    (sorted(added), sorted(removed), sorted(changed))
}

impl<B: Backend> Aggregator<B> {
    /// Puts `new` (checked by [`load`]) in force, or refuses it whole when it changes a key
    /// only a restart applies. Flags the process started with (`--backend`, `--state-file`)
    /// keep applying.
    pub fn reload_config(&self, mut new: AggregatorConfig) -> Result<ReloadSummary, ReloadError> {
        let _turn = lock(&self.config_turn);
        let old = self.config();
        let restart = old.fleet.changed_keys(&new.fleet, RESTART_KEYS);
        if !restart.is_empty() {
            return Err(ReloadError::RestartNeeded {
                origin: new.fleet.origin.clone(),
                keys: restart.join(", "),
            });
        }
        if let Some(key) = records_changed(&old, &new) {
            return Err(ReloadError::RestartNeeded {
                origin: new.fleet.origin.clone(),
                keys: key,
            });
        }
        new.backend = old.backend;
        new.state_file = old.state_file.clone();

        // Units: one service in one Region (bare Regions for a single-API fleet).
        let old_units = old.units();
        let new_units = new.units();
        let before: BTreeSet<&String> = old_units.iter().collect();
        let after: BTreeSet<&String> = new_units.iter().collect();
        let by_name = |c: &AggregatorConfig| -> HashMap<String, crate::config::ServiceConfig> {
            c.services
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect()
        };
        let (old_services, new_services) = (by_name(&old), by_name(&new));
        let (services_added, services_removed, services_changed) =
            id_diff(&old_services, &new_services);
        let (keys_added, keys_removed, mut keys_changed) = id_diff(&old.keys, &new.keys);
        let (_, _, vantages_changed) = id_diff(&old.key_vantages, &new.key_vantages);
        keys_changed.extend(vantages_changed);
        keys_changed.sort();
        keys_changed.dedup();
        let (admin_keys_added, admin_keys_removed, admin_keys_changed) =
            id_diff(&old.admin_keys, &new.admin_keys);
        let summary = ReloadSummary {
            regions_added: after.difference(&before).map(|r| (*r).clone()).collect(),
            regions_removed: before.difference(&after).map(|r| (*r).clone()).collect(),
            keys_added,
            keys_removed,
            keys_changed,
            admin_keys_added,
            admin_keys_removed,
            admin_keys_changed,
            policy_changed: old.policy != new.policy
                || old.latency_quantile != new.latency_quantile,
            weights_changed: old.weights != new.weights
                || old.weight_quantile != new.weight_quantile,
            services_added,
            services_removed,
            services_changed,
        };

        // Only what belongs to removed Regions and targets goes; everything else is untouched.
        let removed = &summary.regions_removed;
        if !removed.is_empty() {
            lock(&self.model)
                .regions
                .retain(|r, _| !removed.contains(r));
            let mut overrides = lock(&self.overrides);
            overrides.pinned.retain(|r, _| !removed.contains(r));
            overrides.pinned_by.retain(|r, _| !removed.contains(r));
        }
        if !summary.services_removed.is_empty() {
            lock(&self.model)
                .services_recent
                .retain(|name, _| !summary.services_removed.contains(name));
        }
        lock(&self.window).forget_targets(|t| new.targets.contains_key(t));
        for region in removed {
            tracing::warn!(
                region,
                "Region removed from the fleet file: no longer decided; its Route 53 record and health check are left as they are"
            );
        }
        self.set_config(new);
        Ok(summary)
    }

    /// Rereads `path` and puts it in force, or keeps the configuration in use; either way one
    /// log line and one count, and on success a `config_reloaded` decision-log line.
    pub fn reload_from(&self, path: &Path, replica: Option<&str>, why: &str) -> bool {
        let result = load(path, replica)
            .map_err(ReloadError::from)
            .and_then(|c| self.reload_config(c));
        match result {
            Ok(summary) => {
                metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => "ok").increment(1);
                let mut event = serde_json::to_value(&summary).unwrap_or_default();
                event["event"] = "config_reloaded".into();
                event["at_ms"] = unix_ms(SystemTime::now()).into();
                event["why"] = why.into();
                self.log_event(event);
                self.persist_state();
                true
            }
            Err(e) => {
                metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => "error").increment(1);
                tracing::error!(
                    why,
                    "fleet file reload refused, the configuration in use stays: {e}"
                );
                false
            }
        }
    }

    /// Reloads whenever `reload`'s trigger asks, until `stop` turns true.
    pub async fn run_reloads(
        self: Arc<Self>,
        mut reload: ConfigReload,
        mut stop: watch::Receiver<bool>,
    ) {
        metrics::describe_counter!(
            CONFIG_RELOADS_TOTAL,
            metrics::Unit::Count,
            "Fleet file reloads (SIGHUP or --watch-config), by result: ok (applied) or error (refused; the configuration in use stays)."
        );
        for result in ["ok", "error"] {
            metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(0);
        }
        loop {
            let why = tokio::select! {
                why = reload.trigger.next() => why,
                _ = stop.wait_for(|s| *s) => return,
            };
            self.reload_from(&reload.path, reload.replica.as_deref(), why.as_str());
        }
    }
}
