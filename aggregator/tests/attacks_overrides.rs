//! Attacks on the control path, each reproduced over real sockets on loopback against the real
//! API: who may post overrides (only admin keys, whatever the peer), replays, pins that take
//! every Region out, a refused request that used to apply half of itself, the state endpoint's
//! token and what it shows, and the fleet-file settings that opened these holes.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use vantage_aggregator::backend::{
    Backend, BackendError, Change, DesiredState, DryRun, ObservedState,
};
use vantage_aggregator::config::AggregatorConfig;
use vantage_aggregator::overrides::{Caller, OverrideError, OverrideRequest};
use vantage_aggregator::service::{self, Aggregator};
use vantage_protocol::auth;
use vantage_protocol::config::FleetConfig;

const AGENT_KEY: &str = "attacks-agent-key-0123456789";
const ADMIN_KEY: &str = "attacks-admin-key-9876543210";
const TOKEN: &str = "attacks-state-token-abcdefghij";
const REGIONS: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];

/// What the test fleet file holds beyond its fixed parts.
#[derive(Default)]
struct Fleet {
    admin: bool,
    token: bool,
    state_file: Option<std::path::PathBuf>,
}

fn fleet_text(f: &Fleet) -> String {
    let mut aggregator = String::new();
    if let Some(p) = &f.state_file {
        aggregator += &format!("state_file = {:?}\n", p.display().to_string());
    }
    if f.token {
        aggregator += "state_token_env = \"VANTAGE_TEST_ATK_TOKEN\"\n";
    }
    // One agent key for every vantage keeps this file about overrides; attacks_ingest.rs
    // covers per-vantage keys.
    aggregator += &format!(
        "[aggregator.keys]\nk1 = {{ env = \"VANTAGE_TEST_ATK_AGENT\", vantages = {REGIONS:?}, allow_shared = true }}\n"
    );
    if f.admin {
        aggregator += "[aggregator.admin_keys]\nops-alice = { env = \"VANTAGE_TEST_ATK_ADMIN\" }\n";
    }
    let mut t = format!(
        r#"
[fleet]
name = "orders-api"
report_interval = "1s"
[global]
url = "https://api.example.com/status"
[aggregator]
url = "http://127.0.0.1:1"
window = "3s"
evaluate_every = "1s"
{aggregator}[agents.auth]
key_id = "k1"
"#
    );
    for r in REGIONS {
        t += &format!("[[regions]]\nname = \"{r}\"\nstatus_url = \"https://{r}.example.com/status\"\n[[vantages]]\nregion = \"{r}\"\n");
    }
    t
}

fn set_env() {
    // The same values in every test of this binary: setting them races with nothing.
    std::env::set_var("VANTAGE_TEST_ATK_AGENT", AGENT_KEY);
    std::env::set_var("VANTAGE_TEST_ATK_ADMIN", ADMIN_KEY);
    std::env::set_var("VANTAGE_TEST_ATK_TOKEN", TOKEN);
}

fn config(f: &Fleet) -> AggregatorConfig {
    set_env();
    let fleet = FleetConfig::parse(&fleet_text(f), "test fleet").unwrap();
    AggregatorConfig::from_fleet(fleet).unwrap()
}

fn admin() -> Fleet {
    Fleet {
        admin: true,
        ..Fleet::default()
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

use vantage_testkit::log::JsonLines as Log;

struct Server<B: Backend> {
    addr: std::net::SocketAddr,
    agg: Arc<Aggregator<B>>,
    log: Log,
    _stop: watch::Sender<bool>,
}

async fn start_with<B: Backend>(config: AggregatorConfig, backend: B) -> Server<B> {
    let log = Log::default();
    let agg = Arc::new(Aggregator::new(config, backend, Some(Box::new(log.clone()))).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(service::serve(agg.clone(), listener, rx));
    Server {
        addr,
        agg,
        log,
        _stop: stop,
    }
}

async fn start(config: AggregatorConfig) -> Server<DryRun> {
    start_with(config, DryRun::new()).await
}

/// A signed request as sent: the headers' lines and the body.
struct Signed {
    headers: String,
    body: Vec<u8>,
}

fn sign(key_id: &str, key: &str, body: serde_json::Value) -> Signed {
    let body = body.to_string().into_bytes();
    let ts = now_s();
    Signed {
        headers: format!(
            "{}: {key_id}\r\n{}: {ts}\r\n{}: {}\r\n",
            auth::HEADER_KEY_ID,
            auth::HEADER_TIMESTAMP,
            auth::HEADER_SIGNATURE,
            auth::sign(key.as_bytes(), ts, &body)
        ),
        body,
    }
}

fn nonce(n: u32) -> String {
    format!("test-nonce-{n:08}-{}", std::process::id())
}

impl<B: Backend> Server<B> {
    /// One HTTP/1.1 request on its own connection; the status and the JSON answer.
    async fn request(
        &self,
        method: &str,
        path: &str,
        extra: &str,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n{extra}\r\n",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    async fn post(&self, s: &Signed) -> (u16, serde_json::Value) {
        self.request("POST", "/v1/overrides", &s.headers, &s.body)
            .await
    }

    async fn admin(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.post(&sign("ops-alice", ADMIN_KEY, body)).await
    }

    /// The overrides the next evaluation honours.
    async fn overrides_now(&self) -> serde_json::Value {
        let s = self.agg.evaluate(SystemTime::now()).await;
        serde_json::to_value(&s.overrides).unwrap()
    }
}

fn no_overrides() -> serde_json::Value {
    serde_json::json!({"pinned": {}, "frozen": false, "pinned_by": {}, "frozen_by": null})
}

#[tokio::test]
async fn unsigned_override_from_loopback_is_401() {
    // Attack: behind a TLS sidecar every caller is loopback, and loopback callers used to need
    // no signature: `{"pin": every Region down, "freeze": true}` took the API out.
    let server = start(config(&admin())).await;
    let body = serde_json::json!({
        "nonce": nonce(1), "freeze": true, "force": true,
        "pin": {"us-east-1": "down", "eu-west-1": "down", "ap-southeast-1": "down"},
    });
    let (status, answer) = server
        .request("POST", "/v1/overrides", "", body.to_string().as_bytes())
        .await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("admin_keys"),
        "{answer}"
    );
    // A stale signature from an admin key is no better.
    let mut s = sign("ops-alice", ADMIN_KEY, body);
    let old = now_s() - auth::DEFAULT_MAX_SKEW_SECS - 60;
    s.headers = format!(
        "{}: ops-alice\r\n{}: {old}\r\n{}: {}\r\n",
        auth::HEADER_KEY_ID,
        auth::HEADER_TIMESTAMP,
        auth::HEADER_SIGNATURE,
        auth::sign(ADMIN_KEY.as_bytes(), old, &s.body)
    );
    assert_eq!(server.post(&s).await.0, 401);
    assert_eq!(server.overrides_now().await, no_overrides());
}

#[tokio::test]
async fn agent_key_cannot_override_403() {
    // Attack: an agent's key (on every agent host) signs an override.
    let server = start(config(&admin())).await;
    let body = serde_json::json!({"nonce": nonce(2), "pin": {"eu-west-1": "down"}});
    let (status, answer) = server.post(&sign("k1", AGENT_KEY, body.clone())).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("agent key"),
        "{answer}"
    );
    // ... or claims the admin key id with the agent key's bytes: the signature fails.
    let (status, _) = server.post(&sign("ops-alice", AGENT_KEY, body)).await;
    assert_eq!(status, 401);
    assert_eq!(server.overrides_now().await, no_overrides());
}

#[tokio::test]
async fn without_admin_keys_overrides_are_refused_403() {
    // Attack: a fleet file with no admin keys must not fall back to any other key or peer.
    let server = start(config(&Fleet::default())).await;
    let body = serde_json::json!({"nonce": nonce(3), "pin": {"eu-west-1": "down"}});
    let (status, answer) = server.post(&sign("k1", AGENT_KEY, body)).await;
    assert_eq!(status, 403, "{answer}");
    let reason = answer["reason"].as_str().unwrap();
    assert!(
        reason.contains("[aggregator.admin_keys.<id>]") && reason.contains("vantage override"),
        "{reason}"
    );
}

#[tokio::test]
async fn replayed_nonce_is_409_even_after_a_restart() {
    // Attack: a captured signed request sent again (within the timestamp skew), before and
    // after the aggregator restarts.
    let dir = std::env::temp_dir().join(format!("vantage-attacks-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fleet = Fleet {
        admin: true,
        state_file: Some(dir.join("state.json")),
        ..Fleet::default()
    };
    let server = start(config(&fleet)).await;
    let captured = sign(
        "ops-alice",
        ADMIN_KEY,
        serde_json::json!({"nonce": nonce(4), "pin": {"eu-west-1": "down"}}),
    );
    let (status, answer) = server.post(&captured).await;
    assert_eq!(status, 200, "{answer}");
    // The operator lifts the pin; the attacker replays the captured request.
    let (status, _) = server
        .admin(serde_json::json!({"nonce": nonce(5), "pin": {"eu-west-1": null}}))
        .await;
    assert_eq!(status, 200);
    let (status, answer) = server.post(&captured).await;
    assert_eq!(status, 409, "{answer}");
    // Re-signed with a fresh timestamp, the same nonce is still spent.
    let (status, _) = server
        .admin(serde_json::json!({"nonce": nonce(4), "freeze": true}))
        .await;
    assert_eq!(status, 409);

    drop(server);
    let server = start(config(&fleet)).await;
    let (status, answer) = server.post(&captured).await;
    assert_eq!(
        status, 409,
        "a restart must not reopen the replay: {answer}"
    );
    assert_eq!(
        server.overrides_now().await["pinned"],
        serde_json::json!({})
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn all_down_needs_force_and_force_raises_an_alert() {
    // Attack: pins bypassed min_healthy, so pinning every Region down took the API out with
    // no alert.
    let server = start(config(&admin())).await;
    let all_down =
        serde_json::json!({"us-east-1": "down", "eu-west-1": "down", "ap-southeast-1": "down"});
    let (status, answer) = server
        .admin(serde_json::json!({"nonce": nonce(6), "pin": all_down, "freeze": true}))
        .await;
    assert_eq!(status, 400, "{answer}");
    let reason = answer["reason"].as_str().unwrap();
    assert!(
        reason.contains("\"force\": true") && reason.contains("min_healthy"),
        "{reason}"
    );
    assert_eq!(server.overrides_now().await, no_overrides());
    assert!(server.log.events_of("alert").is_empty());

    // Two of three down leaves one: min_healthy 1 is met, no force needed.
    let (status, _) = server
        .admin(serde_json::json!({"nonce": nonce(7), "pin": {"us-east-1": "down", "eu-west-1": "down"}}))
        .await;
    assert_eq!(status, 200);

    let (status, answer) = server
        .admin(serde_json::json!({
            "nonce": nonce(8), "pin": {"ap-southeast-1": "down"}, "force": true,
            "reason": "INC-7: full maintenance",
        }))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pinned_by"]["ap-southeast-1"]["forced"], true);
    let alerts = server.log.events_of("alert");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["kind"], "forced");
    assert_eq!(alerts[0]["by"], "ops-alice");
    assert!(
        alerts[0]["reason"]
            .as_str()
            .unwrap()
            .contains("INC-7: full maintenance"),
        "{alerts:?}"
    );
    let s = server.agg.evaluate(SystemTime::now()).await;
    assert!(s.decision.regions.iter().all(|r| !r.in_service));
}

#[test]
fn forced_override_counts_in_the_alerts_metric() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let agg = Aggregator::new(config(&admin()), DryRun::new(), None).unwrap();
    let caller = Caller {
        key_id: "ops-alice",
        peer: "127.0.0.1:9".parse().unwrap(),
    };
    let request = |n: u32, force: bool| OverrideRequest {
        nonce: nonce(n),
        pin: REGIONS
            .iter()
            .map(|r| (r.to_string(), Some(vantage_aggregator::model::Pin::Down)))
            .collect(),
        force,
        ..OverrideRequest::default()
    };
    metrics::with_local_recorder(&recorder, || {
        let refused = agg.set_overrides(caller, request(9, false), SystemTime::now());
        assert!(matches!(
            refused,
            Err(OverrideError::ForceRequired {
                eligible: 0,
                regions: 3,
                floor: 1
            })
        ));
        agg.set_overrides(caller, request(10, true), SystemTime::now())
            .unwrap();
    });
    let forced: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| {
            k.key().name() == "vantage_aggregator_alerts_total"
                && k.key()
                    .labels()
                    .any(|l| l.key() == "kind" && l.value() == "Forced")
        })
        .map(|(.., v)| match v {
            DebugValue::Counter(c) => c,
            _ => 0,
        })
        .sum();
    assert_eq!(forced, 1);
}

#[tokio::test]
async fn a_refused_request_changes_nothing() {
    // Attack (or accident): pins were written one by one, so a request that named an unknown
    // Region after a real one applied its first half before it was refused.
    let server = start(config(&admin())).await;
    let (status, answer) = server
        .admin(serde_json::json!({
            "nonce": nonce(11), "pin": {"eu-west-1": "down", "mars-north-1": "up"}, "freeze": true,
        }))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("mars-north-1"),
        "{answer}"
    );
    assert_eq!(server.overrides_now().await, no_overrides());
    assert!(server.log.events_of("overrides").is_empty());
    // A bad nonce or a bad value: refused whole as well.
    for body in [
        serde_json::json!({"nonce": "short", "pin": {"eu-west-1": "down"}}),
        serde_json::json!({"pin": {"eu-west-1": "down"}}),
        serde_json::json!({"nonce": nonce(12), "pin": {"eu-west-1": "sideways"}}),
        serde_json::json!({"nonce": nonce(13)}),
    ] {
        let (status, answer) = server.admin(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    assert_eq!(server.overrides_now().await, no_overrides());
    // The refusals spent no nonce: the corrected request goes through.
    let (status, _) = server
        .admin(serde_json::json!({"nonce": nonce(11), "pin": {"eu-west-1": "down"}}))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_log_and_the_state_say_who_set_each_pin() {
    let server = start(config(&admin())).await;
    let (status, _) = server
        .admin(serde_json::json!({
            "nonce": nonce(14), "pin": {"eu-west-1": "down"}, "freeze": true, "reason": "INC-9",
        }))
        .await;
    assert_eq!(status, 200);
    let events = server.log.events_of("overrides");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["by"], "ops-alice");
    assert_eq!(events[0]["request"]["pin"]["eu-west-1"], "down");
    assert!(events[0]["peer"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    server.agg.evaluate(SystemTime::now()).await;
    let (status, state) = server.request("GET", "/v1/state", "", b"").await;
    assert_eq!(status, 200);
    let by = &state["overrides"]["pinned_by"]["eu-west-1"];
    assert_eq!(
        (by["by"].as_str(), by["reason"].as_str()),
        (Some("ops-alice"), Some("INC-9"))
    );
    assert_eq!(state["overrides"]["frozen_by"]["by"], "ops-alice");
}

/// Fails every read with an AWS error whose message names an account and a role.
struct Denied;

const DENIED_TEXT: &str =
    "User: arn:aws:sts::123456789012:assumed-role/vantage-prod/i-0abc is not authorized";

impl Backend for Denied {
    fn name(&self) -> &'static str {
        "denied"
    }
    async fn observe(&self) -> Result<ObservedState, BackendError> {
        Err(BackendError::Observe(format!(
            "ListResourceRecordSets: AccessDenied: {DENIED_TEXT}"
        )))
    }
    async fn apply(&self, _: &[Change], _: &DesiredState) -> Result<(), BackendError> {
        Ok(())
    }
}

#[tokio::test]
async fn state_needs_the_token_and_shows_aws_error_codes_only() {
    // Attack: anyone who reaches the API read the state, AWS error text (account ids, role
    // names) included.
    let fleet = Fleet {
        admin: true,
        token: true,
        ..Fleet::default()
    };
    let server = start_with(config(&fleet), Denied).await;
    server.agg.evaluate(SystemTime::now()).await;
    let (status, answer) = server.request("GET", "/v1/state", "", b"").await;
    assert_eq!(status, 401, "{answer}");
    for wrong in [
        "Bearer attacks-state-token-abcdefghiX",
        "Bearer attacks-state-token",
        "Basic attacks-state-token-abcdefghij",
        TOKEN,
    ] {
        let (status, _) = server
            .request(
                "GET",
                "/v1/state",
                &format!("authorization: {wrong}\r\n"),
                b"",
            )
            .await;
        assert_eq!(status, 401, "{wrong}");
    }
    let (status, state) = server
        .request(
            "GET",
            "/v1/state",
            &format!("authorization: bearer {TOKEN}\r\n"),
            b"",
        )
        .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["reconcile"]["error"], "AccessDenied");
    let text = state.to_string();
    assert!(
        !text.contains("123456789012") && !text.contains("not authorized"),
        "{text}"
    );
    // The operator's own decision log keeps the whole text.
    let failed = server.log.events_of("plan_failed");
    assert!(failed[0]["error"].as_str().unwrap().contains(DENIED_TEXT));
}

#[test]
fn fleet_file_holes_are_refused_with_the_fix() {
    set_env();
    let base = fleet_text(&admin());
    // min_healthy = 0 let automation take every Region out: what check-config refuses.
    let e = FleetConfig::parse(&format!("{base}[policy]\nmin_healthy = 0\n"), "fleet.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("policy.min_healthy") && e.contains("use 1 or more"),
        "{e}"
    );

    // The old list that let agent keys override.
    let old = base.replace(
        "[aggregator.keys]",
        "override_key_ids = [\"k1\"]\n[aggregator.keys]",
    );
    let e = FleetConfig::parse(&old, "fleet.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("aggregator.override_key_ids") && e.contains("admin_keys"),
        "{e}"
    );

    // An admin key holding an agent's key bytes: an agent could sign as the admin.
    std::env::set_var("VANTAGE_TEST_ATK_SAME", AGENT_KEY);
    let same = base.replace("VANTAGE_TEST_ATK_ADMIN", "VANTAGE_TEST_ATK_SAME");
    let fleet = FleetConfig::parse(&same, "fleet.toml").unwrap();
    let e = AggregatorConfig::from_fleet(fleet).unwrap_err().to_string();
    assert!(
        e.contains("aggregator.admin_keys.ops-alice") && e.contains("same key"),
        "{e}"
    );
    assert!(!e.contains(AGENT_KEY), "{e}");

    // A state token variable that is named but unset must not leave the state open.
    let unset = fleet_text(&Fleet {
        admin: true,
        token: true,
        ..Fleet::default()
    })
    .replace("VANTAGE_TEST_ATK_TOKEN", "VANTAGE_TEST_ATK_UNSET");
    let fleet = FleetConfig::parse(&unset, "fleet.toml").unwrap();
    let e = AggregatorConfig::from_fleet(fleet).unwrap_err().to_string();
    assert!(
        e.contains("aggregator.state_token_env") && e.contains("not set"),
        "{e}"
    );
}
