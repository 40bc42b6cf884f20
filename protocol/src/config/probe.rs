//! What agents probe and how: [`ProbeSettings`] in three layers (the fleet's `[probe]`, a
//! Region's or the global endpoint's `probe`, the target's own) and the resulting per-target
//! [`TargetPlan`]s. Every setting is optional here so that layers can be overlaid; defaults
//! are applied where settings are compiled into probes, in the agent.

use super::{ByteSize, DurationText, Located};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Probe settings. Every field is optional: a target's settings are the fleet's `[probe]`
/// defaults, overlaid by its Region's `probe`, overlaid by the target's own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    /// Time between probe starts (default 10 s).
    pub interval: Option<DurationText>,
    /// Overall deadline of one probe (default 10 s, at most 60 s).
    pub timeout: Option<DurationText>,
    pub dns_timeout: Option<DurationText>,
    pub connect_timeout: Option<DurationText>,
    pub tls_timeout: Option<DurationText>,
    pub first_byte_timeout: Option<DurationText>,
    pub method: Option<Located<String>>,
    pub headers: Option<BTreeMap<String, Located<String>>>,
    pub body: Option<String>,
    /// Accepted status codes, e.g. `"200-299"`, `"200,204"`, `"2xx,3xx"`.
    pub expect_status: Option<Located<String>>,
    pub expect_body: Option<String>,
    pub expect_body_regex: Option<Located<String>>,
    /// JSON pointer assertions, e.g. `["/status=pass"]`.
    pub expect_json: Option<Vec<Located<String>>>,
    /// Required response headers: name to exact value, or `""` for present with any value.
    pub expect_headers: Option<BTreeMap<String, Located<String>>>,
    pub max_body_bytes: Option<ByteSize>,
    /// `auto`, `1.1` or `2`.
    pub http_version: Option<Located<String>>,
    /// `any`, `4`, `6`, `prefer-4` or `prefer-6`.
    pub ip: Option<Located<String>>,
    pub insecure: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub max_redirects: Option<u8>,
    pub reuse_connection: Option<bool>,
    /// Response header naming the Region that answered (default `x-vantage-region`).
    pub region_header: Option<Located<String>>,
    /// `host:port:addr` overrides, as `--resolve`.
    pub resolve: Option<Vec<Located<String>>>,
}

macro_rules! overlay_fields {
    ($base:expr, $over:expr, $($f:ident),* $(,)?) => {
        ProbeSettings { $($f: $over.$f.clone().or_else(|| $base.$f.clone()),)* }
    };
}

impl ProbeSettings {
    /// `over`'s settings where it has them, `self`'s otherwise.
    pub fn overlay(&self, over: &ProbeSettings) -> ProbeSettings {
        overlay_fields!(
            self,
            over,
            interval,
            timeout,
            dns_timeout,
            connect_timeout,
            tls_timeout,
            first_byte_timeout,
            method,
            headers,
            body,
            expect_status,
            expect_body,
            expect_body_regex,
            expect_json,
            expect_headers,
            max_body_bytes,
            http_version,
            ip,
            insecure,
            ca_file,
            max_redirects,
            reuse_connection,
            region_header,
            resolve,
        )
    }
}

/// Default probe interval.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// What an agent probes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// The global endpoint (CloudFront + Route 53).
    Global,
    /// A Region's shallow `/status`.
    Status,
    /// A Region's `/status/deep`.
    Deep,
    /// The global name resolved in DNS (`[dns]`); its answers are mapped to Regions.
    Dns,
    /// A vantage's own control target (`vantages[].control_url`): tells a vantage's network
    /// problem apart from the Regions'.
    Control,
}

impl TargetKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            TargetKind::Global => "global",
            TargetKind::Status => "status",
            TargetKind::Deep => "deep",
            TargetKind::Dns => "dns",
            TargetKind::Control => "control",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One target with its settings overlaid.
#[derive(Debug, Clone)]
pub struct TargetPlan {
    /// Stable id: `global`, `status:<region>`, `deep:<region>`, `dns`, after `<service>/` in
    /// a file with `[[services]]`.
    pub id: String,
    /// The service the target belongs to (`fleet.name` for a single-API file).
    pub service: String,
    pub kind: TargetKind,
    pub region: Option<String>,
    pub url: Located<String>,
    /// Config key of the URL, for error messages.
    pub url_key: String,
    pub settings: ProbeSettings,
}
