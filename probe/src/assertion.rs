//! Response assertions: what makes an answer count as healthy. Checked in the order status,
//! headers, body, so the outcome code names the first thing that was wrong.

use http::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use vantage_protocol::Outcome;

/// A set of accepted status codes, written like `200,204`, `200-299`, `2xx,301`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<RangeInclusive<u16>>);

impl Default for StatusSet {
    /// 2xx and 3xx, as Route 53's HTTP checks accept.
    fn default() -> Self {
        StatusSet(vec![200..=399])
    }
}

impl StatusSet {
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|r| r.contains(&status))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

/// The status list could not be read.
#[derive(Debug, thiserror::Error)]
#[error("bad status list {0:?}: use codes, ranges or classes like 200,204,300-399,2xx (100..=599)")]
pub struct BadStatusSet(pub String);

impl FromStr for StatusSet {
    type Err = BadStatusSet;
    fn from_str(s: &str) -> Result<Self, BadStatusSet> {
        let bad = || BadStatusSet(s.to_owned());
        let code = |t: &str| -> Result<u16, BadStatusSet> {
            let v: u16 = t.trim().parse().map_err(|_| bad())?;
            if (100..=599).contains(&v) {
                Ok(v)
            } else {
                Err(bad())
            }
        };
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(bad());
            }
            let lower = part.to_ascii_lowercase();
            if lower.len() == 3 && lower.ends_with("xx") {
                let class = code(&format!("{}00", &lower[..1]))?;
                ranges.push(class..=class + 99);
            } else if let Some((a, b)) = part.split_once('-') {
                let (a, b) = (code(a)?, code(b)?);
                if a > b {
                    return Err(bad());
                }
                ranges.push(a..=b);
            } else {
                let c = code(part)?;
                ranges.push(c..=c);
            }
        }
        Ok(StatusSet(ranges))
    }
}

/// A required response header: present, or present with an exact value.
#[derive(Debug, Clone)]
pub struct HeaderAssertion {
    pub name: HeaderName,
    pub value: Option<HeaderValue>,
}

/// A JSON pointer (RFC 6901) into the body that must equal a JSON value.
#[derive(Debug, Clone)]
pub struct JsonPointerAssertion {
    pub pointer: String,
    pub value: serde_json::Value,
}

impl FromStr for JsonPointerAssertion {
    type Err = String;
    /// `/status=pass` or `/checks/0/ok=true`: the right side is JSON, or a bare string.
    fn from_str(s: &str) -> Result<Self, String> {
        let (pointer, value) = s
            .split_once('=')
            .ok_or_else(|| format!("bad JSON assertion {s:?}: expected /pointer=value"))?;
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Err(format!(
                "bad JSON pointer {pointer:?}: it must start with '/'"
            ));
        }
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
        Ok(JsonPointerAssertion {
            pointer: pointer.to_owned(),
            value,
        })
    }
}

/// Every assertion of a target. The default accepts any 2xx/3xx answer.
#[derive(Debug, Clone, Default)]
pub struct Assertions {
    pub status: StatusSet,
    pub body_contains: Option<String>,
    pub body_regex: Option<Regex>,
    pub json_pointer: Vec<JsonPointerAssertion>,
    pub headers: Vec<HeaderAssertion>,
}

/// The first assertion that failed: the outcome code and a line for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionFailure {
    pub outcome: Outcome,
    pub message: String,
}

impl Assertions {
    /// Whether the body must be read at all to check these assertions.
    pub fn needs_body(&self) -> bool {
        self.body_contains.is_some() || self.body_regex.is_some() || !self.json_pointer.is_empty()
    }

    pub fn check_head(&self, status: u16, headers: &HeaderMap) -> Result<(), AssertionFailure> {
        if !self.status.contains(status) {
            return Err(AssertionFailure {
                outcome: Outcome::HttpStatus,
                message: format!("status {status}, expected {}", self.status),
            });
        }
        for h in &self.headers {
            match (headers.get(&h.name), &h.value) {
                (None, _) => {
                    return Err(AssertionFailure {
                        outcome: Outcome::HeaderMismatch,
                        message: format!("header {} missing", h.name),
                    })
                }
                (Some(got), Some(want)) if got != want => {
                    return Err(AssertionFailure {
                        outcome: Outcome::HeaderMismatch,
                        message: format!("header {} is {:?}, expected {:?}", h.name, got, want),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `body` is the prefix read (up to the body cap).
    pub fn check_body(&self, body: &[u8]) -> Result<(), AssertionFailure> {
        let mismatch = |message: String| AssertionFailure {
            outcome: Outcome::BodyMismatch,
            message,
        };
        if self.body_contains.is_none() && self.body_regex.is_none() && self.json_pointer.is_empty()
        {
            return Ok(());
        }
        let text = String::from_utf8_lossy(body);
        if let Some(needle) = &self.body_contains {
            if !text.contains(needle.as_str()) {
                return Err(mismatch(format!("body does not contain {needle:?}")));
            }
        }
        if let Some(re) = &self.body_regex {
            if !re.is_match(&text) {
                return Err(mismatch(format!("body does not match /{}/", re.as_str())));
            }
        }
        if !self.json_pointer.is_empty() {
            let doc: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| mismatch(format!("body is not JSON: {e}")))?;
            for a in &self.json_pointer {
                match doc.pointer(&a.pointer) {
                    Some(v) if *v == a.value => {}
                    Some(v) => {
                        return Err(mismatch(format!(
                            "JSON {} is {v}, expected {}",
                            a.pointer, a.value
                        )))
                    }
                    None => return Err(mismatch(format!("JSON {} is missing", a.pointer))),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets_parse_and_match() {
        let s: StatusSet = "200,204, 300-399,5xx".parse().unwrap();
        for ok in [200, 204, 300, 350, 399, 500, 599] {
            assert!(s.contains(ok), "{ok}");
        }
        for no in [201, 299, 400, 404] {
            assert!(!s.contains(no), "{no}");
        }
        assert_eq!(s.to_string(), "200,204,300-399,500-599");
        for bad in ["", "20", "700", "300-200", "abc", "2yy", "200,,201", "6xx"] {
            assert!(bad.parse::<StatusSet>().is_err(), "{bad}");
        }
        assert!(StatusSet::default().contains(302) && !StatusSet::default().contains(404));
    }

    #[test]
    fn body_and_header_assertions() {
        let a = Assertions {
            body_contains: Some("pass".into()),
            body_regex: Some(Regex::new(r#""status"\s*:"#).unwrap()),
            json_pointer: vec!["/status=pass".parse().unwrap(), "/n=3".parse().unwrap()],
            headers: vec![HeaderAssertion {
                name: HeaderName::from_static("content-type"),
                value: Some(HeaderValue::from_static("application/health+json")),
            }],
            ..Default::default()
        };
        assert!(a.check_body(br#"{"status": "pass", "n": 3}"#).is_ok());
        assert_eq!(
            a.check_body(br#"{"status": "fail", "n": 3}"#)
                .unwrap_err()
                .outcome,
            Outcome::BodyMismatch
        );
        assert!(a.check_body(br#"{"status": "pass"}"#).is_err());
        assert!(a.check_body(b"pass but not json \"status\":").is_err());
        let mut h = HeaderMap::new();
        assert_eq!(
            a.check_head(200, &h).unwrap_err().outcome,
            Outcome::HeaderMismatch
        );
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            a.check_head(200, &h).unwrap_err().outcome,
            Outcome::HeaderMismatch
        );
        h.insert(
            "content-type",
            HeaderValue::from_static("application/health+json"),
        );
        assert!(a.check_head(200, &h).is_ok());
        assert_eq!(
            a.check_head(503, &h).unwrap_err().outcome,
            Outcome::HttpStatus
        );
        assert!("status=pass".parse::<JsonPointerAssertion>().is_err());
        assert!("/x".parse::<JsonPointerAssertion>().is_err());
    }
}
