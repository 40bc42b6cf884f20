//! The aggregator over real HTTP on loopback: signed reports in, decisions and dry-run plans
//! out, state that survives a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use vantage_agent::recorder::IntervalStats;
use vantage_agent::report::{build, ReportIdentity, TargetInterval};
use vantage_aggregator::backend::{Backend, Change, DryRun};
use vantage_aggregator::config::AggregatorConfig;
use vantage_aggregator::service::{self, Aggregator};
use vantage_probe::{PhaseTimings, ProbeResult};
use vantage_protocol::auth;
use vantage_protocol::config::{FleetConfig, TargetKind};
use vantage_protocol::{Outcome, Phase};
use vantage_testkit::fleet::{quoted, FleetToml};

const KEY: &str = "aggregator-test-key-0123456789";
const ADMIN_KEY: &str = "aggregator-test-admin-key-0123456789";
const REGIONS: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];

fn fleet_text(state_file: Option<&std::path::Path>) -> String {
    let mut fleet = FleetToml::new("orders-api")
        .aggregator("window", &quoted("3s"))
        .aggregator("evaluate_every", &quoted("1s"))
        // One key for every vantage keeps these tests short; attacks_ingest.rs covers per-vantage keys.
        .aggregator_key_from_env("k1", "VANTAGE_TEST_AGG_KEY", &REGIONS)
        .extra("[aggregator.admin_keys]\nops = { env = \"VANTAGE_TEST_AGG_ADMIN_KEY\" }\n")
        .extra("[policy]\nfail_after = 2\nrecover_after = 3\n");
    if let Some(path) = state_file {
        fleet = fleet.aggregator("state_file", &quoted(&path.display().to_string()));
    }
    for r in REGIONS {
        fleet = fleet.region_with_vantage(r);
    }
    fleet.build()
}

fn config(state_file: Option<&std::path::Path>) -> AggregatorConfig {
    // One variable, the same value in every test of this binary: setting it races with nothing.
    std::env::set_var("VANTAGE_TEST_AGG_KEY", KEY);
    std::env::set_var("VANTAGE_TEST_AGG_ADMIN_KEY", ADMIN_KEY);
    let fleet = FleetConfig::parse(&fleet_text(state_file), "test fleet").unwrap();
    AggregatorConfig::from_fleet(fleet).unwrap()
}

use vantage_testkit::unix_now_ms as now_ms;

/// Stats of `n` probes of which `failed` failed, ok ones at `latency_ms`.
fn stats_failing_with(n: u64, failed: u64, latency_ms: u64, failure: Outcome) -> IntervalStats {
    let mut s = IntervalStats::new(3);
    for i in 0..n {
        let mut t = PhaseTimings::default();
        t.set(Phase::Connect, Duration::from_millis(1));
        t.set(Phase::Total, Duration::from_millis(latency_ms));
        let outcome = if i < failed { failure } else { Outcome::Ok };
        let mut r = ProbeResult::synthetic(outcome, t);
        if outcome == Outcome::Ok {
            r.status = Some(200);
        }
        s.record(&r, Duration::ZERO);
    }
    s
}

/// A signed report body from `vantage` about every Region: `failing` Regions fail all probes.
fn report(vantage: &str, seq: u64, interval_start_ms: u64, failing: &[&str]) -> Vec<u8> {
    report_failing_with(vantage, seq, interval_start_ms, failing, Outcome::Timeout)
}

fn report_failing_with(
    vantage: &str,
    seq: u64,
    interval_start_ms: u64,
    failing: &[&str],
    failure: Outcome,
) -> Vec<u8> {
    let all: Vec<(String, IntervalStats)> = REGIONS
        .iter()
        .map(|r| {
            let failed = if failing.contains(r) { 10 } else { 0 };
            (r.to_string(), stats_failing_with(10, failed, 20, failure))
        })
        .collect();
    let ids: Vec<String> = REGIONS.iter().map(|r| format!("status:{r}")).collect();
    let targets: Vec<TargetInterval<'_>> = all
        .iter()
        .zip(&ids)
        .map(|((region, s), id)| TargetInterval {
            id,
            kind: TargetKind::Status,
            region: Some(region),
            stats: s,
        })
        .collect();
    let identity = ReportIdentity {
        fleet: "orders-api".into(),
        agent_id: format!("vantage-{vantage}"),
        vantage: vantage.into(),
    };
    serde_json::to_vec(&build(
        &identity,
        seq,
        interval_start_ms,
        Duration::from_secs(1),
        &targets,
    ))
    .unwrap()
}

struct Api {
    base: String,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
}

impl Api {
    async fn post(&self, path: &str, body: Vec<u8>, key: &str) -> (u16, serde_json::Value) {
        self.post_as(path, body, "k1", key).await
    }

    /// Signed with the admin key, as `vantage override` sends it.
    async fn post_override(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.post_as(
            "/v1/overrides",
            body.to_string().into_bytes(),
            "ops",
            ADMIN_KEY,
        )
        .await
    }

    async fn post_as(
        &self,
        path: &str,
        body: Vec<u8>,
        key_id: &str,
        key: &str,
    ) -> (u16, serde_json::Value) {
        let ts = now_ms() / 1000;
        let sig = auth::sign(key.as_bytes(), ts, &body);
        let req = http::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header(auth::HEADER_KEY_ID, key_id)
            .header(auth::HEADER_TIMESTAMP, ts.to_string())
            .header(auth::HEADER_SIGNATURE, sig)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        self.send(req).await
    }

    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let req = http::Request::get(format!("{}{path}", self.base))
            .body(http_body_util::Full::default())
            .unwrap();
        self.send(req).await
    }

    async fn send(
        &self,
        req: http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> (u16, serde_json::Value) {
        use http_body_util::BodyExt;
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }
}

async fn start(aggregator: Arc<Aggregator<DryRun>>) -> (Api, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = watch::channel(false);
    tokio::spawn(service::serve(aggregator, listener, rx));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    (Api { base, client }, stop)
}

use vantage_testkit::log::JsonLines as Log;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_accepts_good_reports_and_refuses_bad_ones_with_reasons() {
    let agg = Arc::new(Aggregator::new(config(None), DryRun::new(), None).unwrap());
    let (api, _stop) = start(agg.clone()).await;
    let interval = now_ms() / 1000 * 1000 - 1000;

    let (status, body) = api
        .post("/v1/reports", report("eu-west-1", 1, interval, &[]), KEY)
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    assert_eq!(body["targets"], 3);
    let (status, body) = api
        .post("/v1/reports", report("eu-west-1", 1, interval, &[]), KEY)
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (409, Some("duplicate")),
        "replays are idempotent"
    );

    let (status, body) = api
        .post(
            "/v1/reports",
            report("eu-west-1", 2, interval, &[]),
            "a-different-key-0123456789",
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["reason"].as_str().unwrap().contains("signature"));

    let (status, body) = api.post("/v1/reports", b"{not json".to_vec(), KEY).await;
    assert_eq!(status, 400);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed report"),
        "{body}"
    );

    let bad_hist = String::from_utf8(report("eu-west-1", 3, interval, &[])).unwrap();
    let start = bad_hist.find("HIST").unwrap();
    let bad_hist = format!("{}AAAA{}", &bad_hist[..start], &bad_hist[start + 8..]);
    let (status, body) = api.post("/v1/reports", bad_hist.into_bytes(), KEY).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("histogram"),
        "{body}"
    );
    // The refused report's sequence number is not burnt: a corrected resend is accepted.
    let (status, _) = api
        .post("/v1/reports", report("eu-west-1", 3, interval, &[]), KEY)
        .await;
    assert_eq!(status, 200);

    let (status, body) = api
        .post("/v1/reports", report("mars-north-1", 1, interval, &[]), KEY)
        .await;
    assert_eq!(status, 400);
    assert!(
        body["reason"].as_str().unwrap().contains("mars-north-1"),
        "{body}"
    );

    let (status, body) = api
        .post(
            "/v1/reports",
            report("us-east-1", 1, interval - 600_000, &[]),
            KEY,
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("stale")),
        "{body}"
    );

    let huge = vec![b' '; 5 << 20];
    let (status, _) = api.post("/v1/reports", huge, KEY).await;
    assert_eq!(status, 413);

    let (status, _) = api.get("/v1/nothing").await;
    assert_eq!(status, 404);
    let (status, body) = api.get("/v1/state").await;
    assert_eq!(status, 503, "no evaluation yet: {body}");
}

/// Drives evaluations directly (time is an argument) with reports for intervals at that time.
async fn feed_and_evaluate(
    agg: &Aggregator<DryRun>,
    api: &Api,
    seq: &mut u64,
    at_ms: u64,
    down_by: &[(&str, &[&str])],
) -> service::Snapshot {
    for v in REGIONS {
        let failing: &[&str] = down_by
            .iter()
            .find(|(vantage, _)| *vantage == v)
            .map_or(&[], |(_, f)| f);
        *seq += 1;
        let (status, body) = api
            .post("/v1/reports", report(v, *seq, at_ms - 1000, failing), KEY)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    agg.evaluate(UNIX_EPOCH + Duration::from_millis(at_ms))
        .await
}

fn in_service(s: &service::Snapshot) -> BTreeMap<String, (bool, u8)> {
    s.decision
        .regions
        .iter()
        .map(|r| (r.region.clone(), (r.in_service, r.weight)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_takes_a_region_out_one_vantage_never_does_and_a_restart_keeps_it_out() {
    let dir = vantage_testkit::dirs::temp_dir("agg-state");
    let state_file = dir.path().join("state.json");
    let _ = std::fs::remove_file(&state_file);
    let log = Log::default();
    let agg = Arc::new(
        Aggregator::new(
            config(Some(&state_file)),
            DryRun::new(),
            Some(Box::new(log.clone())),
        )
        .unwrap(),
    );
    let (api, _stop) = start(agg.clone()).await;
    let mut seq = 0;
    let mut t = now_ms() / 1000 * 1000;

    // One vantage sees us-east-1 down, for many evaluations: nothing happens.
    for _ in 0..5 {
        t += 1000;
        let s = feed_and_evaluate(&agg, &api, &mut seq, t, &[("eu-west-1", &["us-east-1"])]).await;
        assert!(in_service(&s)["us-east-1"].0, "{:#?}", s.decision);
    }
    // Two of three agree. The 3 s window still holds ap-southeast-1's earlier good intervals,
    // so its failure ratio crosses 0.5 on the second evaluation (20 of 30 failed); then
    // fail_after = 2 down evaluations: out on the third.
    let both: &[(&str, &[&str])] = &[
        ("eu-west-1", &["us-east-1"]),
        ("ap-southeast-1", &["us-east-1"]),
    ];
    for expected_in in [true, true] {
        t += 1000;
        let s = feed_and_evaluate(&agg, &api, &mut seq, t, both).await;
        assert_eq!(
            in_service(&s)["us-east-1"].0,
            expected_in,
            "{:#?}",
            s.decision
        );
    }
    t += 1000;
    let s = feed_and_evaluate(&agg, &api, &mut seq, t, both).await;
    assert_eq!(in_service(&s)["us-east-1"], (false, 0), "{:#?}", s.decision);
    assert!(s.reconcile.ok);
    assert!(s.reconcile.changes.contains(&Change::Health {
        region: "us-east-1".into(),
        in_service: false
    }));
    let observed = agg.backend().observe().await.unwrap();
    assert_eq!(observed["us-east-1"].in_service, Some(false));
    // The take-out is the health change; its weight (0) waits for weights.min_interval (60 s
    // since the first batch), as every weight write does.
    assert!(
        s.reconcile
            .deferred
            .iter()
            .any(|c| matches!(c, Change::Weight { region, to: 0, .. } if region == "us-east-1")),
        "{:?}",
        s.reconcile
    );
    let events = log.events();
    let out = events
        .iter()
        .find(|e| e["event"] == "region_out")
        .expect("region_out logged");
    assert_eq!(out["region"], "us-east-1");
    assert_eq!(out["cause"], "quorum_down", "{out}");
    assert!(out["reason"].as_str().unwrap().contains("quorum"), "{out}");
    assert!(events.iter().any(|e| e["event"] == "plan_applied"));

    // A second pass with no change writes nothing.
    let applied_before = agg.backend().applied().len();
    t += 1000;
    let s = feed_and_evaluate(&agg, &api, &mut seq, t, both).await;
    assert!(s.reconcile.changes.is_empty());
    assert_eq!(agg.backend().applied().len(), applied_before);

    // GET /v1/state shows it with its reason.
    let (status, state) = api.get("/v1/state").await;
    assert_eq!(status, 200);
    let use1 = state["decision"]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == "us-east-1")
        .unwrap();
    assert_eq!(use1["in_service"], false);

    // Restart during the outage, with no reports yet: us-east-1 stays out.
    drop(agg);
    let agg = Arc::new(Aggregator::new(config(Some(&state_file)), DryRun::new(), None).unwrap());
    let s = agg
        .evaluate(UNIX_EPOCH + Duration::from_millis(t + 1000))
        .await;
    assert!(
        !in_service(&s)["us-east-1"].0,
        "a restart must not bring a failed Region back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_pin_and_freeze_signed_with_an_admin_key() {
    let agg = Arc::new(Aggregator::new(config(None), DryRun::new(), None).unwrap());
    let (api, _stop) = start(agg.clone()).await;
    let (status, body) = api
        .post_override(
            serde_json::json!({"nonce": "ingest-nonce-000001", "pin": {"eu-west-1": "down"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pinned"]["eu-west-1"], "down");
    assert_eq!(body["pinned_by"]["eu-west-1"]["by"], "ops");
    let s = agg.evaluate(SystemTime::now()).await;
    assert_eq!(in_service(&s)["eu-west-1"], (false, 0));
    let (status, body) = api
        .post_override(
            serde_json::json!({"nonce": "ingest-nonce-000002", "pin": {"nowhere-1": "up"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .post_override(serde_json::json!({
            "nonce": "ingest-nonce-000003", "pin": {"eu-west-1": null}, "freeze": true,
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["frozen"], true);
    assert!(body["pinned"].as_object().unwrap().is_empty());
    let (status, _) = api.post_override(serde_json::json!({"pin": 3})).await;
    assert_eq!(status, 400);
    // Signed with the agents' key, from loopback: refused.
    let pin = br#"{"nonce": "ingest-nonce-000004", "pin": {"eu-west-1": "down"}}"#.to_vec();
    let (status, _) = api.post("/v1/overrides", pin, KEY).await;
    assert_eq!(status, 403);
}

/// A gRPC target's `not_serving` arrives in a version 3 report, is accepted, and counts as a
/// failure like any other code: a quorum of vantages seeing it takes the Region out. The same
/// report labelled version 2 is refused with a 400 that names the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_outcomes_arrive_in_version_3_and_count_as_failures() {
    let agg = Arc::new(Aggregator::new(config(None), DryRun::new(), None).unwrap());
    let (api, _stop) = start(agg.clone()).await;
    let mut t = now_ms() / 1000 * 1000;
    let mut seq = 0;

    let body = report_failing_with(
        "eu-west-1",
        1,
        t - 1000,
        &["us-east-1"],
        Outcome::NotServing,
    );
    let mut v2: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v2["version"], 3);
    v2["version"] = 2.into();
    let (status, reason) = api
        .post("/v1/reports", v2.to_string().into_bytes(), KEY)
        .await;
    assert_eq!(status, 400, "{reason}");
    assert!(reason.to_string().contains("version 3"), "{reason}");

    let mut out = false;
    for _ in 0..6 {
        t += 1000;
        for v in REGIONS {
            seq += 1;
            let body = report_failing_with(v, seq, t - 1000, &["us-east-1"], Outcome::NotServing);
            let (status, reason) = api.post("/v1/reports", body, KEY).await;
            assert_eq!(status, 200, "{reason}");
        }
        let s = agg.evaluate(UNIX_EPOCH + Duration::from_millis(t)).await;
        assert!(in_service(&s)["eu-west-1"].0, "{:#?}", s.decision);
        if !in_service(&s)["us-east-1"].0 {
            out = true;
            break;
        }
    }
    assert!(out, "us-east-1 was never taken out");
}
