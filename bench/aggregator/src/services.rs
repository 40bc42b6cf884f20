//! The synthetic fleet of the multi-service run: a fleet file of S `[[services]]` (`svc-000`,
//! `svc-001`, ...), each with its global URL and the same R Regions (each with a status and a
//! deep URL), V vantages, 1 s reports and probes; and the [`Layout`] of the reports every
//! vantage sends: per service its global target and each Region's status and deep target
//! (`svc-007/status:eu-west-1`), in the order the agent plans them.

use crate::fleet::{vantage_name, Layout, Target, FLEET, KEY_ENV, KEY_ID};
use std::time::Duration;
use vantage_protocol::config::TargetKind;

/// Reports (and probes) every second.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Region names: real ones first, then `region-N`.
pub fn region_name(i: usize) -> String {
    const NAMES: [&str; 6] = [
        "us-east-1",
        "eu-west-1",
        "ap-southeast-1",
        "us-west-2",
        "eu-central-1",
        "ap-northeast-1",
    ];
    NAMES
        .get(i)
        .map_or_else(|| format!("region-{i}"), |n| (*n).to_owned())
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i:03}")
}

/// One unit (service in Region) in a hundred fails most probes from every vantage, status and
/// deep alike; at most one per service while there are fewer than a hundred Regions, so every
/// service keeps Regions in and the decision has take-outs to work through.
pub fn is_down(service: usize, region: usize, regions: usize) -> bool {
    (service * regions + region) % 100 == 37
}

/// The fleet file: `[[services]]` with shared defaults, as an operator would write it.
pub fn fleet_toml(services: usize, regions: usize, vantages: usize) -> String {
    // One key signs for every vantage: the bench measures ingest, not key handling.
    let names: Vec<String> = (0..vantages).map(vantage_name).collect();
    let mut t = format!(
        r#"[fleet]
name = "{FLEET}"
report_interval = "1s"

[probe]
interval = "1s"
timeout = "1s"

[aggregator]
url = "http://127.0.0.1:1"

[aggregator.keys]
{KEY_ID} = {{ env = "{KEY_ENV}", allow_shared = true, vantages = {names:?} }}

[agents.auth]
key_id = "{KEY_ID}"
"#
    );
    for s in 0..services {
        let svc = service_name(s);
        t += &format!(
            "\n[[services]]\nname = \"{svc}\"\nglobal = {{ url = \"https://{svc}.api.example.com/status\" }}\n"
        );
        for r in 0..regions {
            let region = region_name(r);
            t += &format!(
                "\n[[services.regions]]\nname = \"{region}\"\n\
                 status_url = \"https://{svc}.{region}.example.com/status\"\n\
                 deep_url = \"https://{svc}.{region}.example.com/status/deep\"\n"
            );
        }
    }
    for name in &names {
        t += &format!("\n[[vantages]]\nregion = \"{name}\"\n");
    }
    t
}

/// Every report's targets: per service its global target (answered by its first Region that is
/// up), then each Region's status and deep target.
pub fn layout(services: usize, regions: usize) -> Layout {
    let mut targets = Vec::with_capacity(services * (1 + 2 * regions));
    for s in 0..services {
        let svc = service_name(s);
        let answering = (0..regions).find(|r| !is_down(s, *r, regions)).unwrap_or(0);
        targets.push(Target {
            id: format!("{svc}/global"),
            kind: TargetKind::Global,
            region: None,
            answered_by: region_name(answering),
            down: false,
        });
        for r in 0..regions {
            let region = region_name(r);
            for kind in [TargetKind::Status, TargetKind::Deep] {
                targets.push(Target {
                    id: format!("{svc}/{}:{region}", kind.as_str()),
                    kind,
                    region: Some(region.clone()),
                    answered_by: region.clone(),
                    down: is_down(s, r, regions),
                });
            }
        }
    }
    Layout {
        targets,
        interval: INTERVAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet;
    use std::collections::BTreeSet;
    use vantage_aggregator::backend::DryRun;
    use vantage_aggregator::service::{Aggregator, Ingested};

    #[test]
    fn layout_matches_the_targets_the_fleet_plans() {
        let config = fleet::parse(&fleet_toml(4, 3, 2)).expect("the fleet file parses");
        assert_eq!(config.services.len(), 4);
        assert_eq!(config.units().len(), 12);
        let layout = layout(4, 3);
        let ids: BTreeSet<&str> = layout.targets.iter().map(|t| t.id.as_str()).collect();
        let planned: BTreeSet<&str> = config.targets.keys().map(String::as_str).collect();
        assert_eq!(ids, planned);
        assert_eq!(layout.targets.len(), 4 * 7);
        assert!(ids.contains("svc-002/deep:ap-southeast-1"));
    }

    #[test]
    fn at_most_one_unit_per_service_is_down() {
        let (services, regions) = (200, 3);
        let mut down = 0;
        for s in 0..services {
            let n = (0..regions).filter(|r| is_down(s, *r, regions)).count();
            assert!(n <= 1, "service {s} has {n} Regions down");
            down += n;
        }
        assert_eq!(down, 6);
    }

    #[test]
    fn every_report_is_accepted_whole() {
        let config = fleet::parse(&fleet_toml(3, 2, 2)).expect("the fleet file parses");
        let layout = layout(3, 2);
        let built = fleet::reports(&config, &layout, 2, 1, 7, 1);
        assert_eq!(built.reports.len(), 2 * fleet::INTERVALS as usize);
        let agg = Aggregator::new(config, DryRun::new(), None).expect("an aggregator");
        let now = fleet::now(INTERVAL);
        for r in &built.reports {
            match agg.ingest(|n| r.header(n), &r.body, now) {
                Ok(Ingested::Accepted { targets }) => assert_eq!(targets, 15),
                other => panic!("vantage {} interval {}: {other:?}", r.vantage, r.interval),
            }
        }
    }
}
