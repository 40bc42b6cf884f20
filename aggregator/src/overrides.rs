//! Manual overrides (`POST /v1/overrides`) once the API has checked the admin key's signature:
//! the request is validated whole (every Region known, the nonce well formed, the `force` rule
//! for pins that leave fewer than `min_healthy` Regions able to serve), its nonce is spent, and
//! only then is it applied, under the one overrides lock, so a refused request changes nothing.
//! Then the state file is written (nonces included, so a restart cannot be used to replay), the
//! change goes to the decision log with the key that made it, and the evaluation loop is woken.
//!
//! Nonces are remembered for twice the signature's allowed clock skew: a signed request is
//! only accepted within the skew of its timestamp, so a nonce older than that can never come
//! back with a valid signature. The memory is bounded; when full, overrides are refused (429)
//! rather than a nonce forgotten early.

use crate::backend::Backend;
use crate::config::{AggregatorConfig, ServiceConfig};
use crate::model::{AlertKind, Overrides, Pin, SetBy};
use crate::service::{lock, names, unix_ms, Aggregator};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;
use vantage_protocol::auth::DEFAULT_MAX_SKEW_SECS;

/// Shortest and longest nonce, in characters.
pub const NONCE_CHARS: std::ops::RangeInclusive<usize> = 16..=128;
/// Longest `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 512;
/// How long a spent nonce is remembered: twice the allowed timestamp skew.
pub const NONCE_MEMORY_MS: u64 = 2 * DEFAULT_MAX_SKEW_SECS * 1000;
/// Most nonces remembered at once (one admin request every 150 ms for ten minutes).
pub const MAX_NONCES: usize = 4096;

/// Body of `POST /v1/overrides`; `vantage override` builds and signs it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// Unique per request (16 to 128 printable ASCII characters); a second use is refused.
    pub nonce: String,
    /// Region → "up", "down", or null to unpin. With `[[services]]` a key is a unit
    /// (`payments/eu-west-1`), or a bare Region: that Region in `service`, or in every service
    /// when `service` is absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pin: BTreeMap<String, Option<Pin>>,
    /// The service bare Regions in `pin` belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<bool>,
    /// Needed when the pins would leave fewer than `min_healthy` Regions able to serve.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Why, for the decision log and `GET /v1/state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the pins set by this request expire (RFC 3339, in the future); without it they
    /// hold until lifted. At expiry a pin is removed and its units go back to the normal rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// Why an authenticated override was refused. Nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "these pins leave {eligible} of {regions} Regions able to serve, fewer than \
         min_healthy ({floor}); send \"force\": true to do it anyway (an alert is raised)"
    )]
    ForceRequired {
        eligible: usize,
        regions: usize,
        floor: usize,
    },
    #[error("this nonce was already used: a replay, or a retry of a request that was applied")]
    Replayed,
    #[error("too many overrides in the last {} s; wait and retry", NONCE_MEMORY_MS / 1000)]
    TooMany,
}

impl OverrideError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            OverrideError::Invalid(_) | OverrideError::ForceRequired { .. } => {
                StatusCode::BAD_REQUEST
            }
            OverrideError::Replayed => StatusCode::CONFLICT,
            OverrideError::TooMany => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The `result` label of the overrides counter.
    pub fn label(&self) -> &'static str {
        match self {
            OverrideError::Invalid(_) => "invalid",
            OverrideError::ForceRequired { .. } => "force_required",
            OverrideError::Replayed => "replayed",
            OverrideError::TooMany => "too_many",
        }
    }
}

/// Spent nonces with the Unix time (ms) each was accepted at; persisted with the state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Nonces(BTreeMap<String, u64>);

impl Nonces {
    /// Spends `nonce` at `now_ms`: refused if already spent, or if the memory is full.
    fn spend(&mut self, nonce: &str, now_ms: u64) -> Result<(), OverrideError> {
        self.0
            .retain(|_, at| now_ms.saturating_sub(*at) < NONCE_MEMORY_MS);
        if self.0.contains_key(nonce) {
            return Err(OverrideError::Replayed);
        }
        if self.0.len() >= MAX_NONCES {
            return Err(OverrideError::TooMany);
        }
        self.0.insert(nonce.to_owned(), now_ms);
        Ok(())
    }
}

/// Who asked, for the records: the admin key id and the peer address.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub key_id: &'a str,
    pub peer: SocketAddr,
}

/// The request's pins by unit key: a unit as given, a bare Region in `service` or in every
/// service that runs there. Unknown names are refused with the valid ones.
fn pins_by_unit(
    request: &OverrideRequest,
    config: &AggregatorConfig,
) -> Result<BTreeMap<String, Option<Pin>>, OverrideError> {
    let units = config.units();
    if let Some(name) = &request.service {
        if !config.services.iter().any(|s| &s.name == name) {
            let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
            return Err(OverrideError::Invalid(format!(
                "unknown service {name:?}; the fleet has {names:?}"
            )));
        }
    }
    let mut out = BTreeMap::new();
    for (key, pin) in &request.pin {
        let matched: Vec<String> = if key.contains('/') || !config.fleet.has_named_services() {
            units.iter().filter(|u| *u == key).cloned().collect()
        } else {
            config
                .services
                .iter()
                .filter(|s| request.service.as_ref().is_none_or(|n| *n == s.name))
                .filter(|s| s.regions.contains(key))
                .map(|s| s.unit(key))
                .collect()
        };
        if matched.is_empty() {
            return Err(OverrideError::Invalid(format!(
                "unknown Region(s) [{key:?}]; the fleet has {units:?}"
            )));
        }
        for unit in matched {
            out.insert(unit, *pin);
        }
    }
    Ok(out)
}

/// Checks what can be checked without the current overrides.
fn check_shape(request: &OverrideRequest) -> Result<(), OverrideError> {
    let n = request.nonce.chars().count();
    if !NONCE_CHARS.contains(&n) || !request.nonce.chars().all(|c| c.is_ascii_graphic()) {
        return Err(OverrideError::Invalid(format!(
            "nonce: use {} to {} printable ASCII characters, new for every request (vantage \
             override makes one)",
            NONCE_CHARS.start(),
            NONCE_CHARS.end()
        )));
    }
    if request
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS || r.chars().any(char::is_control))
    {
        return Err(OverrideError::Invalid(format!(
            "reason: at most {MAX_REASON_CHARS} characters, one line"
        )));
    }
    if let Some(until) = &request.until {
        if vantage_protocol::config::parse_rfc3339_ms(until).is_none() {
            return Err(OverrideError::Invalid(
                "until: use RFC 3339, e.g. \"2026-12-03T02:00:00Z\"".into(),
            ));
        }
        if !request.pin.values().any(Option::is_some) {
            return Err(OverrideError::Invalid(
                "until: only pins expire; give \"pin\" with \"up\" or \"down\"".into(),
            ));
        }
    }
    if request.pin.is_empty() && request.freeze.is_none() {
        return Err(OverrideError::Invalid(
            "nothing to change: give \"pin\" and/or \"freeze\"".into(),
        ));
    }
    Ok(())
}

/// The overrides after `request` (its pins by unit in `pins`), and whether it needed `force`:
/// the floor is each service's own `min_healthy` over its own Regions.
fn next_overrides(
    current: &Overrides,
    request: &OverrideRequest,
    pins: &BTreeMap<String, Option<Pin>>,
    services: &[ServiceConfig],
    set_by: &SetBy,
) -> Result<(Overrides, bool), OverrideError> {
    let mut next = current.clone();
    let until_ms = request
        .until
        .as_deref()
        .and_then(vantage_protocol::config::parse_rfc3339_ms);
    for (region, pin) in pins {
        match pin {
            Some(p) => {
                next.pinned.insert(region.clone(), *p);
                let mut by = set_by.clone();
                by.until_ms = until_ms;
                next.pinned_by.insert(region.clone(), by);
            }
            None => {
                next.pinned.remove(region);
                next.pinned_by.remove(region);
            }
        }
    }
    if let Some(f) = request.freeze {
        next.frozen = f;
        next.frozen_by = Some(set_by.clone());
    }
    // Only pins lower the decision core's floor (it never puts a Region pinned down back), so
    // the pins alone say whether `min_healthy` can still be met. Lifting pins never needs force.
    let mut forced = false;
    for service in services {
        let units = service.units();
        let floor = service.policy.min_healthy.min(units.len());
        let eligible = units
            .iter()
            .filter(|u| next.pinned.get(*u) != Some(&Pin::Down))
            .count();
        let pins_down = units.iter().any(|u| pins.get(u) == Some(&Some(Pin::Down)));
        if pins_down && eligible < floor {
            if !request.force {
                return Err(OverrideError::ForceRequired {
                    eligible,
                    regions: units.len(),
                    floor,
                });
            }
            forced = true;
        }
    }
    if forced {
        for (region, pin) in pins {
            if pin.is_some() {
                if let Some(s) = next.pinned_by.get_mut(region) {
                    s.forced = true;
                }
            }
        }
    }
    Ok((next, forced))
}

impl<B: Backend> Aggregator<B> {
    /// Applies an authenticated override request whole, or nothing of it; see the module
    /// documentation for the order of checks.
    pub fn set_overrides(
        &self,
        caller: Caller<'_>,
        request: OverrideRequest,
        now: SystemTime,
    ) -> Result<Overrides, OverrideError> {
        let config = self.config();
        check_shape(&request)?;
        let pins = pins_by_unit(&request, &config)?;
        let now_ms = unix_ms(now);
        let set_by = SetBy {
            by: caller.key_id.to_owned(),
            at_ms: now_ms,
            reason: request.reason.clone(),
            forced: false,
            until_ms: None,
        };
        if let Some(until) = request
            .until
            .as_deref()
            .and_then(vantage_protocol::config::parse_rfc3339_ms)
        {
            if until <= now_ms {
                return Err(OverrideError::Invalid(format!(
                    "until: {} is not in the future (now {})",
                    request.until.as_deref().unwrap_or_default(),
                    vantage_protocol::config::format_rfc3339_ms(now_ms)
                )));
            }
        }
        let (next, forced) = {
            let mut current = lock(&self.overrides);
            let (next, forced) =
                next_overrides(&current, &request, &pins, &config.services, &set_by)?;
            lock(&self.nonces).spend(&request.nonce, now_ms)?;
            *current = next.clone();
            (next, forced)
        };
        self.persist_state();
        tracing::warn!(
            target: "vantage::overrides",
            by = caller.key_id, peer = %caller.peer, forced,
            "overrides changed: {}", serde_json::to_string(&request).unwrap_or_default()
        );
        self.log_event(serde_json::json!({
            "event": "overrides", "at_ms": now_ms, "by": caller.key_id,
            "peer": caller.peer.to_string(), "request": request, "overrides": next,
        }));
        self.notify_override(
            now_ms,
            request.service.as_deref(),
            override_summary(&request),
            caller.key_id,
            &request.nonce,
        );
        if forced {
            let down: Vec<&String> = next
                .pinned
                .iter()
                .filter(|(_, p)| **p == Pin::Down)
                .map(|(r, _)| r)
                .collect();
            metrics::counter!(names::ALERTS_TOTAL, "kind" => format!("{:?}", AlertKind::Forced))
                .increment(1);
            self.log_event(serde_json::json!({
                "event": "alert", "at_ms": now_ms, "kind": AlertKind::Forced, "region": null,
                "by": caller.key_id,
                "reason": format!(
                    "{} forced pins below min_healthy ({}): pinned down {down:?}{}",
                    caller.key_id, config.policy.min_healthy,
                    request.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                ),
            }));
        }
        self.wake.notify_one();
        Ok(next)
    }
}

/// What an override did, in one line for people: pins, freeze, reason.
fn override_summary(request: &OverrideRequest) -> String {
    let mut parts: Vec<String> = request
        .pin
        .iter()
        .map(|(r, p)| match p {
            Some(Pin::Down) => format!("{r} pinned down"),
            Some(Pin::Up) => format!("{r} pinned up"),
            None => format!("{r} unpinned"),
        })
        .collect();
    if let Some(f) = request.freeze {
        parts.push(if f {
            "automation frozen".into()
        } else {
            "freeze lifted".into()
        });
    }
    if request.force {
        parts.push("forced below min_healthy".into());
    }
    let mut s = parts.join(", ");
    if let Some(r) = &request.reason {
        s.push_str(&format!(": {r}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_spent_once_remembered_for_twice_the_skew_and_bounded() {
        let mut n = Nonces::default();
        n.spend("aaaaaaaaaaaaaaaa", 1_000).unwrap();
        assert!(matches!(
            n.spend("aaaaaaaaaaaaaaaa", 1_000 + NONCE_MEMORY_MS - 1),
            Err(OverrideError::Replayed)
        ));
        // Past the memory no signature over it can still be valid: it is forgotten.
        n.spend("aaaaaaaaaaaaaaaa", 1_000 + NONCE_MEMORY_MS)
            .unwrap();

        let mut n = Nonces::default();
        for i in 0..MAX_NONCES {
            n.spend(&format!("nonce-{i:012}"), 5).unwrap();
        }
        assert!(matches!(
            n.spend("one-too-many-nonce", 5),
            Err(OverrideError::TooMany)
        ));
        assert_eq!(n.0.len(), MAX_NONCES);
    }
}
