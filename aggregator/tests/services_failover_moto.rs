//! Issue 12's end-to-end case through the whole aggregator on moto's Route 53 and CloudWatch:
//! two services sharing us-east-1, eu-west-1 and ap-southeast-1, signed reports from three
//! vantages ingested, decided per service, handed to the planes and reconciled. payments fails
//! in eu-west-1: its record there goes to weight 0 and its health metric to 0, while every
//! orders record keeps its weight and a further pass writes nothing.

mod reports;
mod support;

use reports::{ingest, stats, Sender};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{AwsMoto as _, Moto, SeedRecord};
use vantage_agent::report::TargetInterval;
use vantage_aggregator::backend::route53::{Route53Backend, ServiceRecords};
use vantage_aggregator::backend::{Backend, Change};
use vantage_aggregator::ingest::Ingested;
use vantage_aggregator::reload;
use vantage_aggregator::service::Aggregator;
use vantage_protocol::config::TargetKind;

const KEY: &str = "aggregator-svc-failover-key-0123456789";
const REGIONS: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];
const SERVICES: [&str; 2] = ["orders", "payments"];
const FLEET: &str = "svc-e2e";

fn record_name(service: &str) -> String {
    format!("{service}-origin.example.com.")
}

fn set_id(service: &str, region: &str) -> String {
    format!("{FLEET}-{service}-{region}")
}

/// Both services in every Region, on the route53 backend against moto; weights may move on
/// every pass (`min_interval` 1 ms) so the test needs no clock.
fn fleet_text(moto: &Moto, zone: &str, state_file: &Path) -> String {
    let mut t = format!(
        r#"[fleet]
name = "{FLEET}"
report_interval = "1s"
[policy]
fail_after = 2
recover_after = 3
[weights]
min_interval = "1ms"
[aggregator]
backend = "route53"
url = "http://127.0.0.1:1"
window = "3s"
evaluate_every = "1s"
state_file = {state:?}
[aggregator.keys.k1]
env = "VANTAGE_TEST_SVC_FAILOVER_KEY"
vantages = ["ap-southeast-1", "eu-west-1", "us-east-1"]
allow_shared = true
[agents.auth]
key_id = "k1"
[route53]
hosted_zone_id = "{zone}"
endpoint_url = "{endpoint}"
"#,
        state = state_file.display().to_string(),
        endpoint = moto.endpoint(),
    );
    for v in REGIONS {
        t += &format!("[[vantages]]\nregion = \"{v}\"\n");
    }
    for s in SERVICES {
        t += &format!(
            "[[services]]\nname = \"{s}\"\nglobal = {{ url = \"https://{s}.example.com/status\" }}\n"
        );
        for r in REGIONS {
            t += &format!(
                "[[services.regions]]\nname = \"{r}\"\nstatus_url = \"https://{s}-{r}.example.com/status\"\n"
            );
        }
        t += &format!("[services.route53]\nrecord_name = \"{}\"\n", record_name(s));
        for r in REGIONS {
            t += &format!(
                "[services.route53.regions.{r}]\nset_identifier = \"{}\"\n",
                set_id(s, r)
            );
        }
    }
    t
}

/// The aggregator and the interval its next reports are about.
struct Run {
    agg: Aggregator<Route53Backend>,
    next_ms: u64,
    seq: u64,
}

impl Run {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.next_ms + 1_200)
    }

    /// Every vantage reports one interval about both services' status targets (`failing`
    /// lists `service/region` units whose probes time out), then the aggregator decides and
    /// both control planes run once.
    async fn interval(&mut self, failing: &[&str]) {
        let mut units = Vec::new();
        for s in SERVICES {
            for r in REGIONS {
                let failed = failing.contains(&format!("{s}/{r}").as_str());
                units.push((format!("{s}/status:{r}"), r, stats(failed)));
            }
        }
        let targets: Vec<TargetInterval<'_>> = units
            .iter()
            .map(|(id, region, s)| TargetInterval {
                id,
                kind: TargetKind::Status,
                region: Some(region),
                stats: s,
            })
            .collect();
        for v in REGIONS {
            self.seq += 1;
            let sender = Sender {
                fleet: FLEET,
                vantage: v,
                key_id: "k1",
                key: KEY.as_bytes(),
            };
            let r = ingest(
                &self.agg,
                &sender,
                self.seq,
                self.next_ms,
                &targets,
                self.now(),
            );
            assert!(matches!(r, Ok(Ingested::Accepted { .. })), "{v}: {r:?}");
        }
        self.agg.decide(self.now());
        self.next_ms += 1_000;
        self.agg.heartbeat_now().await.expect("heartbeat");
        let result = self.agg.reconcile_now().await;
        assert!(result.ok, "{result:?}");
    }
}

/// Every record's weight, by (service, Region), read back from moto.
async fn weights(moto: &Moto, zone: &str) -> BTreeMap<(String, String), i64> {
    let r53 = moto.route53().await;
    let mut out = BTreeMap::new();
    for s in SERVICES {
        let records = support::read_records_named(&r53, zone, &record_name(s))
            .await
            .expect("read back");
        for r in REGIONS {
            let weight = records[&set_id(s, r)].weight().expect("weighted");
            out.insert((s.to_owned(), r.to_owned()), weight);
        }
    }
    out
}

#[tokio::test]
async fn one_service_fails_in_eu_west_1_and_only_its_record_changes() {
    let moto = Moto::shared();
    let r53 = moto.route53().await;
    let zone = support::create_zone(&r53).await.expect("zone");
    for s in SERVICES {
        let records: Vec<SeedRecord> = REGIONS
            .iter()
            .map(|r| SeedRecord {
                set_identifier: set_id(s, r),
                weight: 100,
                value: format!("{s}.{r}.origin.example.net"),
                health_check_id: None,
            })
            .collect();
        support::create_records_named(&r53, &zone, &record_name(s), &records)
            .await
            .expect("records");
    }
    let dir = vantage_testkit::dirs::temp_dir("agg-svc-failover");
    let path = dir.path().join("fleet.toml");
    std::env::set_var("VANTAGE_TEST_SVC_FAILOVER_KEY", KEY);
    std::fs::write(
        &path,
        fleet_text(moto, &zone, &dir.path().join("state.json")),
    )
    .unwrap();
    let config = reload::load(&path, None).expect("fleet file");
    let services = ServiceRecords::of_fleet(&config.fleet).expect("records per service");
    let backend = Route53Backend::connect_services_with(&moto.sdk_config().await, services)
        .await
        .expect("connect");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut run = Run {
        agg: Aggregator::new(config, backend, None).unwrap(),
        next_ms: now.as_millis() as u64 / 1000 * 1000 - 60_000,
        seq: 1,
    };

    // Healthy: every unit in service, the weights the decision wants written once.
    run.interval(&[]).await;
    let healthy = weights(moto, &zone).await;
    assert!(healthy.values().all(|w| *w > 0), "{healthy:?}");

    // payments fails in eu-west-1 (two down evaluations take it out).
    for _ in 0..3 {
        run.interval(&["payments/eu-west-1"]).await;
    }
    let after = weights(moto, &zone).await;
    for ((s, r), weight) in &after {
        match (s.as_str(), r.as_str()) {
            ("payments", "eu-west-1") => assert_eq!(*weight, 0, "payments/eu-west-1 is out"),
            ("orders", _) => assert_eq!(
                *weight,
                healthy[&(s.clone(), r.clone())],
                "orders/{r} untouched"
            ),
            _ => assert!(*weight > 0, "{s}/{r} still serves"),
        }
    }
    let observed = run.agg.backend().observe().await.expect("observe");
    assert_eq!(observed["payments/eu-west-1"].in_service, Some(false));
    assert_eq!(observed["orders/eu-west-1"].in_service, Some(true));

    // Converged: a further pass changes nothing in Route 53.
    let writes = run.agg.backend().write_calls();
    let result = run.agg.reconcile_now().await;
    let weight_changes: Vec<&Change> = result
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Weight { .. }))
        .collect();
    assert!(weight_changes.is_empty(), "{result:?}");
    assert_eq!(weights(moto, &zone).await, after);
    assert!(
        run.agg.backend().write_calls() - writes <= 1,
        "at most a health re-publish while CloudWatch catches up"
    );
}
