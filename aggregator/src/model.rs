//! The decision core's vocabulary: policy, per-evaluation observations, the state carried from
//! one evaluation to the next, overrides and the decision. Plain data; the logic that turns
//! observations into a decision is [`crate::decide`], a pure function of these types and the
//! current time.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How many vantages must agree that a Region is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quorum {
    /// More than half of the vantages that have data, and at least 2.
    Majority,
    /// At least this many (never fewer than 2).
    AtLeast(usize),
}

/// Health policy (see DESIGN.md, "The decision core").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Attempts a vantage needs in the window to have an opinion; fewer is `Unknown`.
    pub min_attempts: u64,
    /// Vantage says down when failures / attempts is above this.
    pub max_failure_ratio: f64,
    /// Vantage says down when its latency quantile is above this (if set).
    pub max_latency: Option<Duration>,
    pub quorum: Quorum,
    /// Consecutive down evaluations before a Region is taken out.
    pub fail_after: u32,
    /// Consecutive up evaluations before it is put back (longer than `fail_after`).
    pub recover_after: u32,
    /// Penalty added per transition of a Region.
    pub flap_penalty: f64,
    /// The penalty halves every `flap_half_life`.
    pub flap_half_life: Duration,
    /// While the penalty is above this, the Region is held out of service.
    pub flap_suppress: f64,
    /// Never fewer Regions in service than this (unless fewer exist).
    pub min_healthy: usize,
    /// At most this many automated transitions in any `change_window`.
    pub max_changes: u32,
    pub change_window: Duration,
    /// When at least this share of the Regions (and at least two) turned down within
    /// `correlated_window`, automation holds: the likeliest cause is the monitoring, the path
    /// to the Regions or a shared dependency, none of which moving traffic fixes. Above 1.0:
    /// never.
    #[serde(default = "default_correlated_fraction")]
    pub correlated_fraction: f64,
    /// How close together the Regions must turn down to count as one correlated failure (the
    /// aggregator's window).
    #[serde(default = "default_correlated_window")]
    pub correlated_window: Duration,
}

fn default_correlated_fraction() -> f64 {
    0.5
}

fn default_correlated_window() -> Duration {
    Duration::from_secs(30)
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_attempts: 2,
            max_failure_ratio: 0.5,
            max_latency: None,
            quorum: Quorum::Majority,
            fail_after: 2,
            recover_after: 6,
            flap_penalty: 1000.0,
            flap_half_life: Duration::from_secs(300),
            flap_suppress: 1500.0,
            min_healthy: 1,
            max_changes: 4,
            change_window: Duration::from_secs(600),
            correlated_fraction: default_correlated_fraction(),
            correlated_window: default_correlated_window(),
        }
    }
}

/// How latency becomes weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightPolicy {
    /// EWMA factor for the Region's latency, 0 < alpha <= 1.
    pub ewma_alpha: f64,
    /// Smallest weight of a Region in service.
    pub floor: u8,
    /// Weight changes smaller than this keep the previous weight.
    pub dead_band: u8,
    /// ... and so do changes smaller than this share of the previous weight.
    #[serde(default)]
    pub dead_band_ratio: f64,
    /// Regions whose smoothed latency is within this many seconds of the fastest one's weigh
    /// as much as it: 1.0 against 1.2 ms is noise, not a reason to move traffic.
    #[serde(default)]
    pub latency_tolerance: f64,
}

impl Default for WeightPolicy {
    fn default() -> Self {
        WeightPolicy {
            ewma_alpha: 0.3,
            floor: 10,
            dead_band: 8,
            dead_band_ratio: 0.1,
            latency_tolerance: 0.005,
        }
    }
}

/// What one vantage saw of one Region over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VantageSample {
    pub vantage: String,
    pub attempts: u64,
    /// Attempts whose outcome was not `ok`.
    pub failures: u64,
    /// The policy's latency quantile of total latency (for `max_latency`), if any sample.
    pub limit_latency: Option<Duration>,
    /// The weights' latency quantile of total latency, if any sample.
    pub weight_latency: Option<Duration>,
}

/// How the targets of one kind (a unit's `/status`, or its `/status/deep`) fared over the
/// window, summed over the vantages that vote: evidence for an alert, not a verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindTotals {
    pub attempts: u64,
    pub failures: u64,
    /// The failed attempts by outcome.
    pub failed: BTreeMap<vantage_protocol::Outcome, u64>,
}

/// Everything observed of one Region in the window, one entry per vantage that reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionObservation {
    pub region: String,
    pub vantages: Vec<VantageSample>,
}

/// One vantage's (or a Region's quorum) opinion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Up,
    Down,
    /// Too little data to say.
    Unknown,
}

/// A manual override of one Region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pin {
    Up,
    Down,
}

/// Manual overrides: they beat automation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    pub pinned: BTreeMap<String, Pin>,
    /// Freeze all automation: nothing changes except by pins.
    pub frozen: bool,
    /// Who set each pin in `pinned` (by Region), for `GET /v1/state` and audits. The decision
    /// core does not read it.
    #[serde(default)]
    pub pinned_by: BTreeMap<String, SetBy>,
    /// Who last set or lifted the freeze.
    #[serde(default)]
    pub frozen_by: Option<SetBy>,
}

/// Which admin key made a manual change, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetBy {
    /// The admin key id that signed the request.
    pub by: String,
    /// Unix time of the change, in milliseconds.
    pub at_ms: u64,
    /// The operator's `reason`, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// True when the change needed `force` (it left fewer than `min_healthy` eligible).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// When the pin expires (Unix ms; the request's `until`); never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

/// What the core remembers of a Region between evaluations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionState {
    pub in_service: bool,
    /// Consecutive evaluations whose quorum verdict was down / up.
    pub down_streak: u32,
    pub up_streak: u32,
    /// Flap penalty as of `penalty_at` (time since the epoch of `now`).
    pub penalty: f64,
    pub penalty_at: Duration,
    /// EWMA of the Region's latency in seconds, if ever measured.
    pub smoothed_latency: Option<f64>,
    /// Weight last decided.
    pub weight: u8,
    /// When `in_service` last changed.
    pub since: Duration,
    /// When the current run of down verdicts began (`None` while not down).
    #[serde(default)]
    pub down_since: Option<Duration>,
}

/// State carried from one evaluation to the next; serialisable so a restart can resume it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelState {
    pub regions: BTreeMap<String, RegionState>,
    /// Times of recent automated transitions, for `max_changes` (of a single-API fleet's
    /// service, or of the one service a slice is about).
    pub recent_transitions: VecDeque<Duration>,
    /// The same per named service (`[[services]]`): each service has its own change budget.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services_recent: BTreeMap<String, VecDeque<Duration>>,
}

/// The decision about one Region, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionDecision {
    /// The service this decision is about (`fleet.name` for a single-API fleet); empty from
    /// the decision core, filled in by the evaluation that runs it per service.
    #[serde(default)]
    pub service: String,
    pub region: String,
    /// The quorum verdict of this evaluation.
    pub verdict: Verdict,
    /// Each vantage's verdict, for the reason and the status page.
    pub vantages: BTreeMap<String, Verdict>,
    pub in_service: bool,
    pub weight: u8,
    /// The rule that settled `in_service`; `reason` tells the same in words, with the figures.
    pub cause: Cause,
    /// Why: which vantages, what figures, which rule held or changed it.
    pub reason: String,
}

/// Which rule settled a Region in one evaluation: the typed counterpart of the reason text,
/// for code and dashboards that must not parse prose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// No rule asked for a change: the streaks are below their thresholds (or the verdict is
    /// unknown), so the Region stays as it was.
    Steady,
    /// Taken out: down by quorum for `fail_after` consecutive evaluations.
    QuorumDown,
    /// Put back: up for `recover_after` consecutive evaluations, flap penalty low enough.
    Recovered,
    /// Would be put back, but held out while the flap penalty is above `flap_suppress`.
    FlapSuppressed,
    /// A transition held back because automation is frozen.
    Frozen,
    /// A transition held back by `max_changes`.
    ChangeLimit,
    /// Kept in, or put back, so that at least `min_healthy` Regions stay in service.
    FailOpen,
    /// A take-out held because too many Regions turned down at once (a correlated failure).
    CorrelatedHold,
    /// A manual pin decided, whatever the measurements say.
    Pinned,
}

/// A Region going out of or back into service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// As [`RegionDecision::service`].
    #[serde(default)]
    pub service: String,
    pub region: String,
    pub in_service: bool,
    /// One of `QuorumDown`, `Recovered`, `FailOpen` (always a put-back) or `Pinned`.
    pub cause: Cause,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Taking Regions out would leave fewer than `min_healthy`: kept in (fail-open).
    FailOpen,
    /// Too many Regions turned down at once: automation holds, every Region in stays in.
    CorrelatedFailure,
    /// A transition was held back by `max_changes`.
    ChangeLimit,
    /// A transition was held back because automation is frozen.
    Frozen,
    /// A pin overrides what the measurements say.
    PinnedAgainstMeasurements,
    /// An operator forced pins that leave fewer than `min_healthy` Regions able to serve.
    Forced,
    /// An ARC safety rule refused a routing-control change (ARC agreeing with `min_healthy`).
    ArcSafetyRule,
    /// A vantage looks broken itself (its control target fails, or it alone sees everything
    /// down): its votes do not count. `region` names the vantage.
    VantageSuspect,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub kind: AlertKind,
    /// As [`RegionDecision::service`]; empty for an alert about no one service.
    #[serde(default)]
    pub service: String,
    pub region: Option<String>,
    pub message: String,
}

/// The output of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at: Duration,
    /// Every configured Region, in name order.
    pub regions: Vec<RegionDecision>,
    pub transitions: Vec<Transition>,
    pub alerts: Vec<Alert>,
}
