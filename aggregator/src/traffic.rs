//! Where traffic goes, layer by layer: the Region header of the global endpoint's HTTP answers
//! (where connections landed) and the DNS target's answers mapped to Regions (where Route 53
//! sends clients). Pure: it takes the window's two [`LayerTraffic`] sums and returns, per
//! Region, each layer's share, the layers that show traffic going there and when each last did,
//! so `GET /v1/state` can say "traffic left eu-west-1: DNS confirms since 12:00:10, HTTP since
//! 12:00:20" — a weight change is only proven once the layer clients use agrees.

use crate::window::LayerTraffic;
use serde::Serialize;
use std::collections::BTreeMap;

/// Layer names as `/v1/state` writes them.
pub const HTTP_LAYER: &str = "http";
pub const DNS_LAYER: &str = "dns";

/// What the layers show for one Region over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionTraffic {
    /// Share of the global endpoint's HTTP answers (by Region header); `null` when no answer
    /// carried the header in the window.
    pub http_share: Option<f64>,
    /// Share of the DNS answer records (unmatched ones included in the whole); `null` when the
    /// DNS target answered nothing in the window (or the fleet has no `[dns]`).
    pub dns_share: Option<f64>,
    /// The layers whose answers send traffic to this Region, `http` and/or `dns`; empty means
    /// every layer with data shows the traffic gone elsewhere.
    pub confirmed_by: Vec<&'static str>,
    /// Start (Unix ms) of the latest interval in which the global endpoint answered from it.
    pub http_last_ms: Option<u64>,
    /// Start (Unix ms) of the latest interval in which a DNS answer mapped to it.
    pub dns_last_ms: Option<u64>,
    /// The layers that answered in a later interval than their last answer from this Region
    /// (or that never answered from it in the window): they confirm traffic has moved away,
    /// since `http_last_ms` / `dns_last_ms`.
    pub moved_away: Vec<&'static str>,
}

/// The traffic evidence of the window: per configured Region, and the DNS answers that named
/// no Region (a record the fleet file does not know: a new endpoint, or a misconfiguration).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrafficEvidence {
    pub regions: BTreeMap<String, RegionTraffic>,
    pub dns_unmatched: u64,
}

impl TrafficEvidence {
    /// Each Region's view from both layers.
    pub fn of(regions: &[String], http: &LayerTraffic, dns: &LayerTraffic) -> Self {
        let http_all: u64 = http.counts.values().sum();
        let dns_all: u64 = dns
            .counts
            .values()
            .sum::<u64>()
            .saturating_add(dns.unmatched);
        let share = |layer: &LayerTraffic, all: u64, region: &str| {
            (all > 0).then(|| layer.counts.get(region).copied().unwrap_or(0) as f64 / all as f64)
        };
        let regions = regions
            .iter()
            .map(|r| {
                let http_share = share(http, http_all, r);
                let dns_share = share(dns, dns_all, r);
                let confirmed_by = [(HTTP_LAYER, http_share), (DNS_LAYER, dns_share)]
                    .into_iter()
                    .filter(|(_, s)| s.is_some_and(|s| s > 0.0))
                    .map(|(layer, _)| layer)
                    .collect();
                let (http_last_ms, dns_last_ms) = (
                    http.last_interval_ms.get(r).copied(),
                    dns.last_interval_ms.get(r).copied(),
                );
                let moved_away = [
                    (HTTP_LAYER, http, http_last_ms),
                    (DNS_LAYER, dns, dns_last_ms),
                ]
                .into_iter()
                .filter(|(_, layer, last)| layer.latest_ms.is_some() && layer.latest_ms > *last)
                .map(|(name, _, _)| name)
                .collect();
                let traffic = RegionTraffic {
                    http_share,
                    dns_share,
                    confirmed_by,
                    http_last_ms,
                    dns_last_ms,
                    moved_away,
                };
                (r.clone(), traffic)
            })
            .collect();
        TrafficEvidence {
            regions,
            dns_unmatched: dns.unmatched,
        }
    }
}

/// A layer that has just stopped sending traffic to a Region taken out of service: the
/// `traffic_moved` evidence of the decision log, one per (Region, layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub region: String,
    pub layer: &'static str,
    /// Start of the last interval in which this layer still sent traffic there.
    pub last_ms: Option<u64>,
}

/// The layers that newly confirm traffic left an out-of-service Region: in `moved_away` now,
/// not at the `previous` evaluation (so each is logged once per move).
pub fn moved(previous: &TrafficEvidence, next: &TrafficEvidence, out: &[&str]) -> Vec<Moved> {
    let mut found = Vec::new();
    for region in out {
        let Some(now) = next.regions.get(*region) else {
            continue;
        };
        let before = previous.regions.get(*region);
        for layer in &now.moved_away {
            if before.is_some_and(|b| b.moved_away.contains(layer)) {
                continue;
            }
            found.push(Moved {
                region: (*region).to_owned(),
                layer,
                last_ms: if *layer == HTTP_LAYER {
                    now.http_last_ms
                } else {
                    now.dns_last_ms
                },
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(counts: &[(&str, u64, u64)], unmatched: u64) -> LayerTraffic {
        LayerTraffic {
            counts: counts.iter().map(|(r, n, _)| (r.to_string(), *n)).collect(),
            unmatched,
            last_interval_ms: counts.iter().map(|(r, _, t)| (r.to_string(), *t)).collect(),
            latest_ms: counts.iter().map(|(_, _, t)| *t).max(),
        }
    }

    #[test]
    fn each_layer_has_its_share_and_says_where_traffic_goes() {
        let regions = ["us-east-1", "eu-west-1", "ap-south-1"].map(String::from);
        let http = layer(&[("us-east-1", 6, 20_000), ("eu-west-1", 2, 10_000)], 0);
        let dns = layer(&[("us-east-1", 3, 20_000)], 1);
        let e = TrafficEvidence::of(&regions, &http, &dns);
        let use1 = &e.regions["us-east-1"];
        assert_eq!(use1.http_share, Some(0.75));
        assert_eq!(
            use1.dns_share,
            Some(0.75),
            "unmatched answers count in the whole"
        );
        assert_eq!(use1.confirmed_by, ["http", "dns"]);
        assert_eq!(
            (use1.http_last_ms, use1.dns_last_ms),
            (Some(20_000), Some(20_000))
        );
        let euw1 = &e.regions["eu-west-1"];
        assert_eq!(
            euw1.confirmed_by,
            ["http"],
            "DNS already sends nobody there"
        );
        assert_eq!(euw1.dns_share, Some(0.0));
        let aps1 = &e.regions["ap-south-1"];
        assert!(aps1.confirmed_by.is_empty());
        assert_eq!(e.dns_unmatched, 1);

        let none = TrafficEvidence::of(&regions, &http, &LayerTraffic::default());
        assert_eq!(
            none.regions["us-east-1"].dns_share, None,
            "no DNS data is not 0 %"
        );
        assert_eq!(none.regions["us-east-1"].confirmed_by, ["http"]);
    }

    #[test]
    fn a_layer_confirms_the_move_once_it_answers_later_without_the_region() {
        let regions = ["us-east-1", "eu-west-1"].map(String::from);
        let both = [("us-east-1", 2, 1_000), ("eu-west-1", 2, 1_000)];
        let before = TrafficEvidence::of(&regions, &layer(&both, 0), &layer(&both, 0));
        assert!(before.regions["eu-west-1"].moved_away.is_empty());
        // DNS answers us-east-1 only from 2 000 on; HTTP still lands in eu-west-1 as well.
        let http = [("us-east-1", 4, 2_000), ("eu-west-1", 4, 2_000)];
        let dns = [("us-east-1", 3, 2_000), ("eu-west-1", 1, 1_000)];
        let dns_moved = TrafficEvidence::of(&regions, &layer(&http, 0), &layer(&dns, 0));
        assert_eq!(dns_moved.regions["eu-west-1"].moved_away, ["dns"]);
        assert_eq!(
            moved(&before, &dns_moved, &["eu-west-1"]),
            [Moved {
                region: "eu-west-1".into(),
                layer: "dns",
                last_ms: Some(1_000)
            }]
        );
        assert!(
            moved(&before, &dns_moved, &[]).is_empty(),
            "only Regions taken out"
        );
        assert!(
            moved(&dns_moved, &dns_moved, &["eu-west-1"]).is_empty(),
            "logged once"
        );
        let http = [("us-east-1", 6, 3_000), ("eu-west-1", 4, 2_000)];
        let both_moved = TrafficEvidence::of(&regions, &layer(&http, 0), &layer(&dns, 0));
        let found = moved(&dns_moved, &both_moved, &["eu-west-1"]);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].layer, found[0].last_ms), ("http", Some(2_000)));
        // No data is no evidence.
        let silent =
            TrafficEvidence::of(&regions, &LayerTraffic::default(), &LayerTraffic::default());
        assert!(moved(&before, &silent, &["eu-west-1"]).is_empty());
    }
}
