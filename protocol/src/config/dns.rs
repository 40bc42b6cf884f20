//! The `[dns]` section: the DNS target. Each agent resolves the global name every interval
//! and maps every answer record to the Region it belongs to, so reports show where DNS sends
//! clients, beside where the global endpoint's HTTP answers came from.
//!
//! The mapping is explicit and checked when the file loads: a Region's `dns_answers` lists the
//! addresses (for `A`/`AAAA`) or names (CNAME targets, e.g. the Region's API Gateway domain)
//! that mean "this Region"; without it, the host of the Region's `status_url` stands for it.
//! One answer may name one Region only. [`DnsPlan`] is the checked result agents use.

use super::{ConfigError, DurationText, FleetConfig, Located, Problem};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Default time between resolutions (the probe default).
pub const DEFAULT_DNS_INTERVAL: Duration = Duration::from_secs(10);
/// Default limit of one resolution, retries included.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// `[dns]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// The name to resolve (default: the host of `global.url`).
    pub name: Option<Located<String>>,
    /// `A` (default), `AAAA` or `CNAME`.
    pub record_type: Option<Located<String>>,
    /// Resolvers to ask, `ip:port`; empty (the default) uses the system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub resolvers: Vec<Located<String>>,
    /// Time between resolutions (default 10 s).
    pub interval: Option<DurationText>,
    /// Limit of one resolution (default 5 s).
    pub timeout: Option<DurationText>,
}

/// The record type the DNS target asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsRecordType {
    A,
    Aaaa,
    Cname,
}

impl DnsRecordType {
    pub const fn as_str(self) -> &'static str {
        match self {
            DnsRecordType::A => "A",
            DnsRecordType::Aaaa => "AAAA",
            DnsRecordType::Cname => "CNAME",
        }
    }
}

/// The checked DNS target: what to resolve, where, and which answer means which Region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPlan {
    /// Fully qualified, lower case, without the trailing dot.
    pub name: String,
    pub record_type: DnsRecordType,
    /// Empty: the system's resolvers.
    pub resolvers: Vec<SocketAddr>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Normalised answer ([`normalize_answer`]) → Region.
    pub answers: BTreeMap<String, String>,
}

/// An answer as the mapping compares it: an address in its canonical text, a name in lower
/// case without the trailing dot.
pub fn normalize_answer(text: &str) -> String {
    match text.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => text.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// A host name as DNS carries it: labels of 1..=63 letters, digits, '-' and '_', 253 at most.
fn valid_dns_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// The host of an absolute URL (already checked by `check_url`), brackets removed.
pub(super) fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    host_port.split(':').next().unwrap_or("")
}

impl FleetConfig {
    /// The DNS target, when `[dns]` is present. Infallible after loading (validated then).
    pub fn dns_plan(&self) -> Option<DnsPlan> {
        self.dns.as_ref().map(|_| {
            self.build_dns_plan()
                .expect("the [dns] section was validated when the file loaded")
        })
    }

    pub(super) fn validate_dns(&self) -> Result<(), ConfigError> {
        if self.dns.is_none() {
            if let Some((i, r)) = self
                .regions
                .iter()
                .enumerate()
                .find(|(_, r)| !r.dns_answers.is_empty())
            {
                return Err(self.invalid(
                    &r.dns_answers[0],
                    &format!("regions[{i}].dns_answers"),
                    "is used by the DNS target only: add a [dns] section, or delete it",
                ));
            }
            return Ok(());
        }
        self.build_dns_plan().map(|_| ())
    }

    fn build_dns_plan(&self) -> Result<DnsPlan, ConfigError> {
        let dns = self.dns.clone().unwrap_or_default();
        let (name, name_at, name_key) = match (&dns.name, &self.global) {
            (Some(n), _) => (n.get_ref().clone(), n, "dns.name"),
            (None, Some(global)) => (
                url_host(global.url.get_ref()).to_owned(),
                &global.url,
                "global.url",
            ),
            (None, None) => {
                return Err(self.section_error("dns.name", "name the record to resolve"));
            }
        };
        if !valid_dns_name(&name) || name.parse::<IpAddr>().is_ok() {
            return Err(self.invalid(
                name_at,
                name_key,
                format!(
                    "{name:?} is not a DNS name to resolve; set [dns] name = \"api.example.com\""
                ),
            ));
        }
        let record_type = match dns.record_type.as_ref() {
            None => DnsRecordType::A,
            Some(t) => match t.get_ref().to_ascii_uppercase().as_str() {
                "A" => DnsRecordType::A,
                "AAAA" => DnsRecordType::Aaaa,
                "CNAME" => DnsRecordType::Cname,
                other => {
                    return Err(self.invalid(
                        t,
                        "dns.record_type",
                        format!("{other:?} is not supported; use A, AAAA or CNAME"),
                    ))
                }
            },
        };
        let mut resolvers = Vec::with_capacity(dns.resolvers.len());
        for (i, r) in dns.resolvers.iter().enumerate() {
            let addr = r.get_ref().parse::<SocketAddr>().map_err(|_| {
                self.invalid(
                    r,
                    &format!("dns.resolvers[{i}]"),
                    format!(
                        "{:?} is not ip:port; write it like \"10.0.0.2:53\"",
                        r.get_ref()
                    ),
                )
            })?;
            resolvers.push(addr);
        }
        let interval = dns.interval.map_or(DEFAULT_DNS_INTERVAL, |d| d.0);
        if interval < Duration::from_millis(100) {
            return Err(self.place(Problem::key("dns.interval", "the minimum is 100ms")));
        }
        let timeout = dns.timeout.map_or(DEFAULT_DNS_TIMEOUT, |d| d.0);
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(self.place(Problem::key("dns.timeout", "must be between 1ms and 60s")));
        }
        let mut answers: BTreeMap<String, String> = BTreeMap::new();
        for (i, r) in self.regions.iter().enumerate() {
            let region = r.name.get_ref();
            let key = format!("regions[{i}].dns_answers");
            let listed: Vec<(String, &Located<String>, String)> = if r.dns_answers.is_empty() {
                vec![(
                    url_host(r.status_url.get_ref()).to_owned(),
                    &r.status_url,
                    format!("regions[{i}].status_url"),
                )]
            } else {
                r.dns_answers
                    .iter()
                    .map(|a| (a.get_ref().clone(), a, key.clone()))
                    .collect()
            };
            for (text, at, key) in listed {
                let is_ip = text.parse::<IpAddr>().is_ok();
                if !is_ip && !valid_dns_name(&text) {
                    return Err(self.invalid(
                        at,
                        &key,
                        format!("{text:?} is neither an IP address nor a DNS name"),
                    ));
                }
                if is_ip && record_type == DnsRecordType::Cname {
                    return Err(self.invalid(
                        at,
                        &key,
                        format!(
                            "{text:?} is an address but dns.record_type is CNAME, whose answers \
                             are names: list the CNAME target (e.g. the Region's API domain)"
                        ),
                    ));
                }
                let normalized = normalize_answer(&text);
                if let Some(other) = answers.get(&normalized) {
                    if other != region {
                        return Err(self.invalid(
                            at,
                            &key,
                            format!(
                                "{text:?} already stands for Region {other:?}; an answer can \
                                 map to one Region only"
                            ),
                        ));
                    }
                }
                answers.insert(normalized, region.clone());
            }
        }
        Ok(DnsPlan {
            name: normalize_answer(&name),
            record_type,
            resolvers,
            interval,
            timeout,
            answers,
        })
    }
}
