//! The DNS probe: resolves the global name once, timed, and maps every answer record to the
//! Region it stands for (the fleet file's checked [`DnsPlan`]). This is what steers clients:
//! the HTTP probes of the global endpoint show where one connection landed, the DNS answers
//! show where Route 53 sends everyone.
//!
//! It uses hickory-resolver, with the system's resolvers (`/etc/resolv.conf`) by default or the
//! ones `[dns] resolvers` names. The resolver's cache is on, by design: a vantage then sees
//! what a client behind a TTL-respecting resolver sees, so a record change shows after the old
//! answer's TTL ran out, not before, and the TTLs reported are the remaining ones. A cached
//! answer resolves in microseconds; the resolution-time histogram shows the cache's share too.
//! Failures map to the outcome codes the HTTP probes use: `dns` when the name does not exist,
//! has no record of the type or the resolver refused, `timeout` when no answer came in time.

use crate::result::{Failure, ProbeResult};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{Name, ResolveError, TokioResolver};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;
use vantage_protocol::config::{normalize_answer, DnsPlan, DnsRecordType};
use vantage_protocol::{Outcome, Phase};

/// Why a DNS probe could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    #[error("reading the system's resolver configuration (/etc/resolv.conf): {0}")]
    SystemConfig(#[source] ResolveError),
    #[error("{0:?} is not a DNS name")]
    Name(String),
}

/// One answer record: its data as text (an address, or a CNAME target without the trailing
/// dot), its remaining TTL, and the Region it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    pub value: String,
    pub ttl: u32,
    pub region: Option<String>,
}

/// What one resolution answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsObservation {
    pub answers: Vec<DnsAnswer>,
}

impl DnsObservation {
    /// Answer records per Region, and how many mapped to none.
    pub fn by_region(&self) -> (BTreeMap<&str, u64>, u64) {
        let mut regions = BTreeMap::new();
        let mut unmatched = 0;
        for a in &self.answers {
            match &a.region {
                Some(r) => *regions.entry(r.as_str()).or_default() += 1,
                None => unmatched += 1,
            }
        }
        (regions, unmatched)
    }
}

/// Resolves one name on every call, through one long-lived resolver (and its cache).
pub struct DnsProber {
    resolver: TokioResolver,
    name: Name,
    record_type: RecordType,
    timeout: Duration,
    answers: BTreeMap<String, String>,
}

impl DnsProber {
    pub fn new(plan: &DnsPlan) -> Result<Self, DnsSetupError> {
        let mut builder = if plan.resolvers.is_empty() {
            TokioResolver::builder_tokio().map_err(DnsSetupError::SystemConfig)?
        } else {
            let mut config = ResolverConfig::new();
            for addr in &plan.resolvers {
                config.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
                // Answers too large for UDP come back truncated and are asked again over TCP.
                config.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = plan.timeout;
        opts.attempts = 1;
        // A CNAME chain's records stay in the answer, so CNAME targets can map to Regions
        // even when the question is A or AAAA.
        opts.preserve_intermediates = true;
        opts.cache_size = 32;
        // The name must reach DNS, not a hosts file entry.
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        // Fully qualified: no search domains are tried.
        let name = Name::from_ascii(format!("{}.", plan.name))
            .map_err(|_| DnsSetupError::Name(plan.name.clone()))?;
        Ok(DnsProber {
            resolver: builder.build(),
            name,
            record_type: match plan.record_type {
                DnsRecordType::A => RecordType::A,
                DnsRecordType::Aaaa => RecordType::AAAA,
                DnsRecordType::Cname => RecordType::CNAME,
            },
            timeout: plan.timeout,
            answers: plan.answers.clone(),
        })
    }

    /// One resolution: outcome, its time (`dns` and `total` phases) and the answers.
    pub async fn probe(&self) -> ProbeResult {
        let start = Instant::now();
        let lookup = tokio::time::timeout(
            self.timeout,
            self.resolver.lookup(self.name.clone(), self.record_type),
        )
        .await;
        let elapsed = start.elapsed();
        let mut result = ProbeResult::new();
        result.timings.set(Phase::Dns, elapsed);
        let fail = |mut r: ProbeResult, outcome, message: String| {
            r.outcome = outcome;
            r.failure = Some(Failure {
                phase: Some(Phase::Dns),
                message,
            });
            r
        };
        match lookup {
            Err(_) => fail(
                result,
                Outcome::Timeout,
                format!("no DNS answer within {:?}", self.timeout),
            ),
            Ok(Err(e)) => {
                let outcome = classify(&e);
                fail(result, outcome, format!("resolving {}: {e}", self.name))
            }
            Ok(Ok(lookup)) => {
                let answers = lookup
                    .record_iter()
                    .filter_map(|r| {
                        let value = match r.data() {
                            RData::A(a) => a.0.to_string(),
                            RData::AAAA(a) => a.0.to_string(),
                            RData::CNAME(c) => c.0.to_ascii(),
                            _ => return None,
                        };
                        let value = normalize_answer(&value);
                        let region = self.answers.get(&value).cloned();
                        Some(DnsAnswer {
                            value,
                            ttl: r.ttl(),
                            region,
                        })
                    })
                    .collect();
                result.timings.set(Phase::Total, elapsed);
                result.dns = Some(DnsObservation { answers });
                result
            }
        }
    }
}

/// The outcome code of a failed lookup: `timeout` when the resolver gave up waiting, `dns`
/// for every answer that says no (NXDOMAIN, no records, SERVFAIL, refused).
fn classify(e: &ResolveError) -> Outcome {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::Timeout) => Outcome::Timeout,
        _ => Outcome::Dns,
    }
}
