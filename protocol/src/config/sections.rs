//! The fleet file's sections besides `[probe]` and `[route53]`, as serde reads them: which
//! Regions and vantages exist, where agents report and how they authenticate, and the
//! aggregator's policy and weight knobs. Only their shape lives here; cross-checks are in
//! the `validate` module, and the aggregator turns policy numbers into its own types.

use super::{ByteSize, DurationText, Located, ProbeSettings};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// Name of the API being watched; labels metrics and reports.
    pub name: Located<String>,
    /// How often agents send an interval report (default 10 s).
    pub report_interval: Option<DurationText>,
    /// HDR histogram precision, significant digits 1..=5 (default 3).
    pub histogram_precision: Option<Located<u8>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalEndpoint {
    /// The one global name clients use (CloudFront + Route 53).
    pub url: Located<String>,
    #[serde(default)]
    pub probe: ProbeSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// AWS Region code, e.g. `us-east-1`.
    pub name: Located<String>,
    /// The Region's shallow `/status` URL (API Gateway regional endpoint).
    pub status_url: Located<String>,
    /// The Region's `/status/deep` URL, probed as a separate target when set.
    pub deep_url: Option<Located<String>>,
    /// DNS answers (addresses or CNAME targets) that mean this Region, for the `[dns]` target;
    /// empty: the host of `status_url`.
    #[serde(default)]
    pub dns_answers: Vec<Located<String>>,
    #[serde(default)]
    pub probe: ProbeSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vantage {
    /// The AWS Region the agent runs in.
    pub region: Located<String>,
    /// Agent identity in reports (default `vantage-<region>`).
    pub agent_id: Option<Located<String>>,
    /// Key id this vantage's agent signs with (default `agents.auth.key_id`): one key per
    /// vantage, so a stolen key speaks for one vantage only.
    pub key_id: Option<Located<String>>,
    /// A control target this vantage's agent probes beside the Regions (another vantage's
    /// agent, or a stable endpoint outside the fleet): when it fails too, the vantage's own
    /// network is the likeliest cause of what it sees, and its votes stop counting.
    pub control_url: Option<Located<String>>,
}

impl Vantage {
    pub fn agent_id(&self) -> String {
        self.agent_id
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_else(|| format!("vantage-{}", self.region.get_ref()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorSection {
    /// Base URL of the one aggregator; agents POST to `<url>/v1/reports`. Give this or
    /// `replicas`, not both.
    pub url: Option<Located<String>>,
    /// 2 to 5 aggregator replicas in different Regions, each deciding on its own; agents
    /// deliver to every one (see the `replicas` module).
    #[serde(default)]
    pub replicas: Vec<super::ReplicaSection>,
    /// The DynamoDB lease that lets one replica at a time write Route 53 weights.
    pub lease: Option<super::LeaseSection>,
    /// Sliding window the decisions look at (default 30 s).
    pub window: Option<DurationText>,
    /// How often decisions are made and Route 53 reconciled (default 5 s).
    pub evaluate_every: Option<DurationText>,
    /// How often the health signal (the CloudWatch metric behind each Region's health check)
    /// is published even when nothing changed (default 10 s; a change goes out at once).
    pub heartbeat_every: Option<DurationText>,
    /// How often the control plane re-reads what Route 53 holds when nothing was written
    /// (default 5 min; after a write or a failure it reads again at once).
    pub observe_every: Option<DurationText>,
    /// `dry-run` (the default: plan only, state in memory), `route53`, or `arc` (routing
    /// controls for health, `[route53]` records for weights).
    pub backend: Option<Located<String>>,
    /// Where the decision state is persisted so a restart does not forget an outage.
    pub state_file: Option<PathBuf>,
    /// Agent keys the aggregator accepts, by key id, each bound to the vantages it may
    /// report for.
    #[serde(default)]
    pub keys: BTreeMap<String, KeySource>,
    /// While an alert holds it is told again at most this often (default 10m); it is raised
    /// once and resolved once.
    pub alert_repeat: Option<DurationText>,
    /// Largest report body accepted (default 4 MiB).
    pub max_report_bytes: Option<ByteSize>,
    /// Operators' keys, by key id: the only keys that may sign `POST /v1/overrides`. An id
    /// here may never also be an agent key id. Without any, overrides are refused.
    #[serde(default)]
    pub admin_keys: BTreeMap<String, KeySource>,
    /// Names an environment variable holding a bearer token; when given, `GET /v1/state`
    /// needs `Authorization: Bearer <token>`.
    pub state_token_env: Option<Located<String>>,
    /// Removed (agent keys authorised overrides): kept only to refuse it with a pointer to
    /// `admin_keys`, instead of a bare "unknown field".
    #[serde(default)]
    pub override_key_ids: Option<Located<Vec<String>>>,
}

/// One key the aggregator accepts: where the secret comes from (an environment variable or a
/// file) and which vantages it may report for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
    /// Vantage Regions whose reports this key may sign; required (admin keys live apart, in
    /// `[aggregator.admin_keys]`).
    #[serde(default)]
    pub vantages: Vec<Located<String>>,
    /// Lets one key cover more than one vantage. Off by default: one stolen shared key could
    /// report for enough vantages to reach quorum and take a Region out.
    #[serde(default)]
    pub allow_shared: bool,
}

/// The health policy: how vantage observations become Region decisions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Attempts a vantage needs in the window to have an opinion (default 2).
    pub min_attempts: Option<u64>,
    /// A vantage sees a Region down when failures / attempts exceeds this (default 0.5).
    pub max_failure_ratio: Option<f64>,
    /// Quantile for the optional latency limit (default 0.99).
    pub latency_quantile: Option<f64>,
    /// A vantage sees a Region down when that quantile of total latency exceeds this.
    pub max_latency: Option<DurationText>,
    /// Vantages that must agree for a Region to be down: "majority" (default) or a number;
    /// never fewer than 2.
    pub quorum: Option<Located<String>>,
    /// Consecutive down evaluations before a Region is taken out (default 2).
    pub fail_after: Option<u32>,
    /// Consecutive up evaluations before it is put back (default 6).
    pub recover_after: Option<u32>,
    /// Flap damping: penalty added per transition (default 1000).
    pub flap_penalty: Option<f64>,
    /// Half-life of the penalty (default 5m).
    pub flap_half_life: Option<DurationText>,
    /// A Region whose penalty is above this is held out (default 1500).
    pub flap_suppress: Option<f64>,
    /// Regions in service never fall below this (ARC's ATLEAST rule; default 1).
    pub min_healthy: Option<usize>,
    /// At most this many automated transitions per `change_window` (default 4).
    pub max_changes: Option<u32>,
    pub change_window: Option<DurationText>,
    /// Automation holds when at least this share of the Regions (and at least two) turn down
    /// within one window: a correlated failure (default 0.5; 0 turns the rule off).
    pub correlated_fraction: Option<f64>,
}

/// How measured latency becomes Route 53 weights.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsSection {
    /// Latency quantile weights follow (default 0.5).
    pub quantile: Option<f64>,
    /// EWMA smoothing factor of that latency, 0 < alpha <= 1 (default 0.3).
    pub ewma_alpha: Option<f64>,
    /// Smallest weight of a Region in service (default 10).
    pub floor: Option<u8>,
    /// Weight changes smaller than this are not applied (default 8).
    pub dead_band: Option<u8>,
    /// ... nor changes smaller than this share of the current weight (default 0.1).
    pub dead_band_ratio: Option<f64>,
    /// Latency within this of the fastest Region's counts as the fastest (default 5ms), so
    /// 1.0 against 1.2 ms moves no traffic.
    pub latency_tolerance: Option<DurationText>,
    /// At most one batch of weight writes per this interval (default 60 s, about how long a
    /// change takes to reach Route 53's servers); a take-out never waits for it.
    pub min_interval: Option<DurationText>,
}

/// Where an agent's HMAC key comes from. The key itself never sits in the fleet file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Key id sent with every report, so keys can be rotated.
    pub key_id: Located<String>,
    /// Environment variable holding the key (default `VANTAGE_AGENT_KEY`).
    pub key_env: Option<String>,
    /// File holding the key (trailing newline ignored); used when the variable is unset.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SpoolSection {
    /// Directory for unsent reports (default: `vantage-spool` under the system temp dir).
    pub dir: Option<PathBuf>,
    /// Bytes the spool may hold; the oldest reports beyond it are dropped (default 64 MiB).
    pub max_bytes: Option<ByteSize>,
    /// Age after which an unsent report is dropped (default 6 h).
    pub max_age: Option<DurationText>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsSection {
    pub auth: AuthSection,
    #[serde(default)]
    pub spool: SpoolSection,
    /// Lambda mode: how long one invocation probes before flushing (default 50 s, for a
    /// one-minute EventBridge schedule).
    pub lambda_run_for: Option<DurationText>,
}
