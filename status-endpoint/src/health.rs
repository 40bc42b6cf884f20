//! The `application/health+json` answer (draft-inadarei-api-health-check-06), built from a
//! [`Round`] for one caller: which checks it excluded, whether it asked for `?verbose`, and
//! whether it holds the token.
//!
//! What a caller sees:
//! - everyone: the overall `status`, `serviceId`, `version`, `region`, and under `checks` every
//!   check's name (`component:measurement`) with its `status`;
//! - `?verbose`: also `componentType`, `observedValue`, `observedUnit` and `time`;
//! - with the token (`Authorization: Bearer <token>`): everything, including `componentId`
//!   (host, database, function) and `output` (error text), which help an attacker and so stay
//!   hidden from everyone else. No token configured means nobody sees detail.
//!
//! A failing non-critical check makes the answer `warn`, not `fail`; `?exclude=NAME` (repeatable,
//! a component name like `aurora-reader`) leaves a check out of the answer and its status.

use crate::checks::{Round, Status};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

pub const CONTENT_TYPE: &str = "application/health+json";

/// Who is asking, and what for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub verbose: bool,
    pub authorized: bool,
    pub exclude: BTreeSet<String>,
}

impl View {
    /// Reads `verbose` and `exclude` from a raw query string, as Kubernetes' /readyz does:
    /// `?verbose`, `?verbose=1|true`, `?exclude=a&exclude=b` (also `exclude=a,b`).
    pub fn from_query(query: Option<&str>, authorized: bool) -> View {
        let mut view = View {
            authorized,
            ..View::default()
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "verbose" => view.verbose = !matches!(value, "0" | "false" | "no"),
                "exclude" => view.exclude.extend(
                    percent_decode(value)
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned),
                ),
                _ => {}
            }
        }
        view
    }
}

/// Fixed parts of every answer.
#[derive(Debug, Clone)]
pub struct ServiceMeta {
    pub service_id: String,
    pub version: String,
    pub region: String,
}

/// The overall status for this view: the worst effective status of the checks not excluded.
pub fn overall(round: &Round, view: &View) -> Status {
    round
        .results
        .iter()
        .filter(|r| !view.exclude.contains(&r.name))
        .map(|r| r.effective_status())
        .max()
        .unwrap_or(Status::Pass)
}

/// The deep answer's status and body.
pub fn render(meta: &ServiceMeta, round: &Round, view: &View) -> (Status, Value) {
    let status = overall(round, view);
    let detail = view.authorized;
    let measured = view.verbose || detail;
    let mut checks = Map::new();
    let mut not_passing = Vec::new();
    for result in round
        .results
        .iter()
        .filter(|r| !view.exclude.contains(&r.name))
    {
        if result.status() != Status::Pass {
            not_passing.push(format!("{} {}", result.name, result.status().as_str()));
        }
        let time = rfc3339(result.time);
        for o in &result.observations {
            let mut entry = Map::new();
            if detail {
                entry.insert("componentId".into(), json!(result.component_id));
            }
            if measured {
                entry.insert("componentType".into(), json!(result.component_type));
                if let Some(v) = &o.value {
                    entry.insert("observedValue".into(), v.clone());
                }
                if let Some(u) = o.unit {
                    entry.insert("observedUnit".into(), json!(u));
                }
            }
            entry.insert("status".into(), json!(o.status));
            if measured {
                entry.insert("time".into(), json!(time));
            }
            if detail {
                if let Some(out) = &o.output {
                    entry.insert("output".into(), json!(out));
                }
            }
            let key = format!("{}:{}", result.name, o.measurement);
            match checks.get_mut(&key) {
                Some(Value::Array(list)) => list.push(Value::Object(entry)),
                _ => {
                    checks.insert(key, Value::Array(vec![Value::Object(entry)]));
                }
            }
        }
    }
    let mut body = Map::new();
    body.insert("status".into(), json!(status));
    body.insert("version".into(), json!(meta.version));
    body.insert("serviceId".into(), json!(meta.service_id));
    body.insert(
        "description".into(),
        json!("vantage status endpoint: deep readiness"),
    );
    body.insert("region".into(), json!(meta.region));
    if status != Status::Pass {
        // Names and statuses only: they are public anyway.
        body.insert("output".into(), json!(not_passing.join(", ")));
    }
    body.insert("checks".into(), Value::Object(checks));
    (status, Value::Object(body))
}

/// The liveness answer (no dependency touched).
pub fn liveness(meta: &ServiceMeta) -> Value {
    json!({
        "status": Status::Pass,
        "version": meta.version,
        "serviceId": meta.service_id,
        "description": "vantage status endpoint: liveness",
        "region": meta.region,
    })
}

/// Constant-time comparison of a presented bearer token with the configured one.
pub fn token_matches(header: Option<&[u8]>, token: Option<&str>) -> bool {
    let (Some(header), Some(token)) = (header, token) else {
        return false;
    };
    let Some(presented) = header.strip_prefix(b"Bearer ") else {
        return false;
    };
    // `ct_eq` answers false at once for a different length: the token's length is no secret
    // worth hiding (it is fixed by configuration), its bytes are.
    bool::from(presented.ct_eq(token.as_bytes()))
}

/// `%XX` decoding (component names are plain ASCII; anything malformed is kept as is).
fn percent_decode(s: &str) -> String {
    // Form encoding: a literal `+` is a space; an escaped one (`%2B`) stays a plus.
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// RFC 3339 UTC with milliseconds, e.g. `2024-05-01T12:00:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{CheckResult, ComponentType, Observation};
    use std::time::Duration;

    fn result(name: &str, critical: bool, status: Status) -> CheckResult {
        CheckResult {
            name: name.into(),
            critical,
            component_type: ComponentType::Datastore,
            component_id: "db.internal:5432/app".into(),
            time: UNIX_EPOCH + Duration::from_secs(1_714_564_800),
            elapsed: Duration::from_millis(3),
            observations: vec![Observation::new("responseTime", status)
                .value(3.2, Some("ms"))
                .output("secret host db.internal refused")],
        }
    }

    fn meta() -> ServiceMeta {
        ServiceMeta {
            service_id: "svc".into(),
            version: "0.1.0".into(),
            region: "eu-west-1".into(),
        }
    }

    fn round(results: Vec<CheckResult>) -> Round {
        Round {
            results,
            elapsed: Duration::from_millis(5),
        }
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_714_564_800_123)),
            "2024-05-01T12:00:00.123Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn non_critical_failure_only_warns() {
        let r = round(vec![
            result("aurora-writer", true, Status::Pass),
            result("cache", false, Status::Fail),
        ]);
        assert_eq!(overall(&r, &View::default()), Status::Warn);
        let r = round(vec![result("aurora-writer", true, Status::Fail)]);
        assert_eq!(overall(&r, &View::default()), Status::Fail);
    }

    #[test]
    fn exclude_drops_the_check() {
        let r = round(vec![
            result("aurora-writer", true, Status::Pass),
            result("aurora-reader", true, Status::Fail),
        ]);
        let view = View::from_query(Some("exclude=aurora-reader"), false);
        let (status, body) = render(&meta(), &r, &view);
        assert_eq!(status, Status::Pass);
        assert!(body["checks"].get("aurora-reader:responseTime").is_none());
        assert!(body.get("output").is_none());
    }

    #[test]
    fn detail_needs_the_token() {
        let r = round(vec![result("aurora-writer", true, Status::Fail)]);
        let anonymous = render(&meta(), &r, &View::from_query(Some("verbose"), false)).1;
        let text = anonymous.to_string();
        assert!(!text.contains("db.internal"), "{text}");
        let entry = &anonymous["checks"]["aurora-writer:responseTime"][0];
        assert_eq!(entry["status"], "fail");
        assert_eq!(entry["observedUnit"], "ms");
        assert!(entry.get("output").is_none() && entry.get("componentId").is_none());
        let quiet = render(&meta(), &r, &View::from_query(None, false)).1;
        let entry = &quiet["checks"]["aurora-writer:responseTime"][0];
        assert_eq!(entry.as_object().unwrap().len(), 1, "{entry}");
        let authorized = render(&meta(), &r, &View::from_query(None, true)).1;
        let entry = &authorized["checks"]["aurora-writer:responseTime"][0];
        assert_eq!(entry["componentId"], "db.internal:5432/app");
        assert!(entry["output"].as_str().unwrap().contains("refused"));
    }

    #[test]
    fn query_parsing() {
        let v = View::from_query(Some("verbose&exclude=a&exclude=b%2Cc"), false);
        assert!(v.verbose);
        assert_eq!(v.exclude, ["a", "b", "c"].map(String::from).into());
        assert!(!View::from_query(Some("verbose=false"), false).verbose);
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn token_comparison() {
        let t = Some("0123456789abcdef");
        assert!(token_matches(Some(b"Bearer 0123456789abcdef"), t));
        assert!(!token_matches(Some(b"Bearer 0123456789abcdeX"), t));
        assert!(!token_matches(Some(b"0123456789abcdef"), t));
        assert!(!token_matches(None, t));
        assert!(!token_matches(Some(b"Bearer "), None));
    }
}
