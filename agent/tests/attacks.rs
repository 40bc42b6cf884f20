//! The agent's side of the threat model (issue 10, item 7, and the delivery rule), one test
//! per finding, each reproducing the attack against the real code:
//!
//! 1. A spool directory writable by group or others: anyone could plant reports the agent
//!    signs with its key and sends. → refused, with the directory and the fix named.
//! 2. A spool directory owned by another user (pre-created in the shared `/tmp`): its owner
//!    could do the same, or read every report. → refused.
//! 3. A symbolic link planted at a temporary file's name: writing the report would truncate
//!    and overwrite the link's target with the agent's privileges. → not followed.
//! 4. Stray files in the spool (`evil.json`, a short `7.json`, a link at a report's name): all
//!    would have been signed and sent as reports. → ignored, never sent.
//! 5. An agent id of `../../etc`: the default spool directory is named after it, so it could
//!    point the spool anywhere. → refused where the id is parsed, and by the daemon.
//! 6. A misrouted aggregator answering 404 (a load balancer without the route, another
//!    service on its address): the report was dropped as if it were bad. → retried, and
//!    delivered once the aggregator is back.
//!
//! The tests run as root (CI and the dev container), so "another user" is `nobody`.

use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use vantage_agent::daemon::{self, AgentError, AgentSettings};
use vantage_agent::identity::{parse_agent_id, AgentIdError};
use vantage_agent::push::{run_pusher, OutgoingReport, PushConfig, PushSummary};
use vantage_agent::spool::{Spool, SpoolConfig, SpoolError};
use vantage_protocol::config::FleetConfig;
use vantage_testkit::aggregator::{report_body, Mode, StandIn, KEY, KEY_ID};
use vantage_testkit::dirs::temp_dir;

/// `nobody` on Debian and most Linux systems.
const NOBODY: u32 = 65534;

fn spool_config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        max_bytes: 1 << 20,
        max_age: Duration::from_secs(3600),
    }
}

/// Every wait in these tests ends by this, so a bug fails a test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

async fn wait_for(what: &str, done: impl FnMut() -> bool) {
    vantage_testkit::eventually::wait_for(what, PATIENCE, done).await
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    vantage_testkit::eventually::within(what, PATIENCE, f).await
}

fn push_config(stand_in: &StandIn) -> PushConfig {
    PushConfig {
        aggregator: stand_in.url().parse().unwrap(),
        key_id: KEY_ID.into(),
        key: KEY.to_vec(),
        request_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..PushConfig::default()
    }
}

/// Runs a pusher over `spool`, hands it `seqs`, waits until `done`, then stops it.
async fn push(
    stand_in: &StandIn,
    spool: Option<Spool>,
    seqs: &[u64],
    until: impl FnMut() -> bool,
) -> PushSummary {
    let (reports, rx) = mpsc::channel(16);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_pusher(
        push_config(stand_in),
        spool,
        rx,
        stop_rx,
        Duration::from_secs(5),
    ));
    for &seq in seqs {
        let report = OutgoingReport {
            seq,
            body: report_body(seq),
        };
        reports.send(report).await.expect("pusher is running");
    }
    wait_for("the reports to arrive", until).await;
    stop.send(true).unwrap();
    within("the pusher to stop", task).await.unwrap()
}

fn unsafe_problem(err: SpoolError) -> String {
    assert!(matches!(err, SpoolError::Unsafe { .. }), "{err:?}");
    err.to_string()
}

/// Attack 1: a world- or group-writable spool directory.
#[test]
fn a_spool_directory_writable_by_others_is_refused() {
    let tmp = temp_dir("attack-writable");
    for mode in [0o777, 0o770, 0o702] {
        let dir = tmp.path().join(format!("spool-{mode:o}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let text = unsafe_problem(Spool::open(spool_config(&dir)).unwrap_err());
        assert!(text.contains(&dir.display().to_string()), "{text}");
        assert!(text.contains("writable by group or others"), "{text}");
        assert!(text.contains("chmod 700"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}

/// Attack 1, the fix: a directory the agent creates is its own, mode 0700, and usable.
#[test]
fn the_agent_creates_its_spool_directory_private() {
    let tmp = temp_dir("attack-created");
    let dir = tmp.path().join("a").join("spool");
    let mut spool = Spool::open(spool_config(&dir)).unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    spool.put(1, b"{}", SystemTime::now()).unwrap();
    let file_mode = std::fs::metadata(dir.join(format!("{:020}.json", 1)))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(file_mode & 0o077, 0, "report files are the agent's only");
}

/// Attack 2: a spool directory pre-created by another user.
#[test]
fn a_spool_directory_owned_by_another_user_is_refused() {
    let tmp = temp_dir("attack-owner");
    let dir = tmp.path().join("spool");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY))
        .expect("chown needs root: run the agent tests as root, as CI does");
    let text = unsafe_problem(Spool::open(spool_config(&dir)).unwrap_err());
    assert!(text.contains(&dir.display().to_string()), "{text}");
    assert!(text.contains(&format!("owned by uid {NOBODY}")), "{text}");
    assert!(text.contains("chown"), "{text}");
}

/// Attacks 1 and 2 through a link: the spool path itself is a symbolic link.
#[test]
fn a_spool_directory_that_is_a_symbolic_link_is_refused() {
    let tmp = temp_dir("attack-dir-link");
    let real = tmp.path().join("elsewhere");
    std::fs::create_dir(&real).unwrap();
    let dir = tmp.path().join("spool");
    symlink(&real, &dir).unwrap();
    let text = unsafe_problem(Spool::open(spool_config(&dir)).unwrap_err());
    assert!(text.contains("symbolic link"), "{text}");
}

/// Attack 3: a symbolic link planted at the name the next report's temporary file takes.
#[test]
fn a_symlink_at_a_temporary_name_is_not_followed() {
    let tmp = temp_dir("attack-tmp-link");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let dir = tmp.path().join("spool");
    let mut spool = Spool::open(spool_config(&dir)).unwrap();
    // Planted after open, which would otherwise clean leftover temporary names.
    symlink(&victim, dir.join(format!("{:020}.json.tmp", 7))).unwrap();
    symlink(&victim, dir.join("high-water-seq.tmp")).unwrap();
    spool.put(7, b"report seven", SystemTime::now()).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(spool.read(7).unwrap(), b"report seven");
    let written = dir.join(format!("{:020}.json", 7));
    assert!(std::fs::symlink_metadata(&written).unwrap().is_file());
    assert_eq!(Spool::open(spool_config(&dir)).unwrap().max_seq(), Some(7));
}

/// Attack 4: files the spool did not write, named like reports or linked at a report's name.
#[tokio::test]
async fn stray_files_in_the_spool_are_never_sent() {
    let tmp = temp_dir("attack-stray");
    let outside = tmp.path().join("outside.json");
    std::fs::write(&outside, report_body(8)).unwrap();
    let dir = tmp.path().join("spool");
    drop(Spool::open(spool_config(&dir)).unwrap());
    std::fs::write(dir.join("evil.json"), report_body(666)).unwrap();
    std::fs::write(dir.join("7.json"), report_body(7)).unwrap();
    symlink(&outside, dir.join(format!("{:020}.json", 8))).unwrap();

    let stand_in = StandIn::start(Mode::Healthy).await;
    let spool = Spool::open(spool_config(&dir)).unwrap();
    assert!(
        spool.is_empty(),
        "nothing the spool did not write is indexed"
    );
    let summary = push(&stand_in, Some(spool), &[1], || stand_in.stored() == [1]).await;
    assert_eq!(summary.delivered, 1);
    // Give a wrongly indexed file every chance to go out after the legitimate one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(stand_in.received(), [1]);
    assert!(dir.join("evil.json").exists(), "ignored, not deleted");
}

/// Attack 4, at read time: a report file swapped for a link after the scan is not read.
#[test]
fn a_report_swapped_for_a_symlink_is_not_read() {
    let tmp = temp_dir("attack-swap");
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, b"not for the aggregator").unwrap();
    let dir = tmp.path().join("spool");
    let mut spool = Spool::open(spool_config(&dir)).unwrap();
    spool.put(3, b"three", SystemTime::now()).unwrap();
    let name = dir.join(format!("{:020}.json", 3));
    std::fs::remove_file(&name).unwrap();
    symlink(&outside, &name).unwrap();
    assert!(matches!(spool.read(3), Err(SpoolError::Read { .. })));
}

/// Attack 5: an agent id that walks out of the temp directory.
#[test]
fn agent_ids_with_path_characters_are_refused() {
    for id in [
        "../../etc",
        "..",
        ".",
        "a/b",
        "a\\b",
        "",
        "eu west",
        "é",
        "x\n",
    ] {
        let err = parse_agent_id(id).unwrap_err();
        assert_eq!(err.to_string().lines().count(), 1, "{id:?}: {err}");
    }
    assert!(matches!(
        parse_agent_id("../../etc"),
        Err(AgentIdError::Characters(_))
    ));
    assert!(matches!(parse_agent_id(".."), Err(AgentIdError::Dots(_))));
    assert_eq!(parse_agent_id(&"a".repeat(65)), Err(AgentIdError::TooLong));
    for id in ["vantage-eu-west-1", "probe_1.a", "...x", "A-Z.09"] {
        assert_eq!(parse_agent_id(id).unwrap(), id);
    }
}

/// A fleet whose addresses are never reached: these tests stop before the first probe.
fn idle_settings(agent_id: &str, spool: Option<SpoolConfig>) -> AgentSettings {
    let fleet = FleetConfig::parse(
        r#"
[fleet]
name = "attacks"
[global]
url = "http://127.0.0.1:9/status"
[aggregator]
url = "http://127.0.0.1:9"
[agents.auth]
key_id = "k1"
[[regions]]
name = "eu-west-1"
status_url = "http://127.0.0.1:9/status"
[[vantages]]
region = "eu-west-1"
"#,
        "attack fleet",
    )
    .unwrap();
    AgentSettings {
        fleet,
        vantage: "eu-west-1".into(),
        agent_id: agent_id.into(),
        push: PushConfig::new("http://127.0.0.1:9".parse().unwrap(), "k1", KEY.to_vec()),
        replicas: Vec::new(),
        spool,
        metrics_listener: None,
        run_for: Some(Duration::from_millis(1)),
    }
}

/// Attack 5, for library callers: the daemon checks the id before anything starts.
#[test]
fn the_daemon_refuses_a_bad_agent_id() {
    let err = daemon::check(&idle_settings("../../etc", None)).unwrap_err();
    assert!(matches!(err, AgentError::AgentId(_)), "{err:?}");
}

/// Attack 1, end to end: the daemon refuses to start on a spool others can write into,
/// rather than falling back to memory as it does for a full or unwritable disk.
#[tokio::test]
async fn the_daemon_refuses_to_start_on_an_unsafe_spool() {
    let tmp = temp_dir("attack-daemon");
    let dir = tmp.path().join("spool");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_signals, rx) = watch::channel(0u32);
    let settings = idle_settings("vantage-eu-west-1", Some(spool_config(&dir)));
    let err = within("the daemon to refuse", daemon::run(settings, rx))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::Spool(SpoolError::Unsafe { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
}

/// Answers 404 to every request on `addr`: what the aggregator's address says when a load
/// balancer lost its route, or another service took the port. Aborting the task frees it.
async fn misrouted(addr: SocketAddr, answered: Arc<AtomicUsize>) -> JoinHandle<()> {
    let listener = within("the aggregator's port to be free", async {
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    tokio::spawn(async move {
        // Connections live in this set, so aborting the task closes them too.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let answered = answered.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |_request| {
                            answered.fetch_add(1, Ordering::SeqCst);
                            async {
                                Ok::<_, Infallible>(
                                    Response::builder()
                                        .status(StatusCode::NOT_FOUND)
                                        .body(Full::new(bytes::Bytes::from_static(b"no route")))
                                        .unwrap(),
                                )
                            }
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next() => {}
            }
        }
    })
}

/// Attack 6: a misrouted 404 must not lose reports.
#[tokio::test]
async fn a_404_is_retried_and_delivered_when_the_aggregator_is_back() {
    let stand_in = StandIn::start(Mode::Healthy).await;
    let addr: SocketAddr = stand_in
        .url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    stand_in.refuse();
    let answered = Arc::new(AtomicUsize::new(0));
    let wrong = misrouted(addr, answered.clone()).await;

    let tmp = temp_dir("attack-404");
    let spool = Spool::open(spool_config(&tmp.path().join("spool"))).unwrap();
    let (reports, rx) = mpsc::channel(16);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_pusher(
        push_config(&stand_in),
        Some(spool),
        rx,
        stop_rx,
        Duration::from_secs(5),
    ));
    for seq in 1..=3 {
        let body = report_body(seq);
        reports.send(OutgoingReport { seq, body }).await.unwrap();
    }
    wait_for("several 404s", || answered.load(Ordering::SeqCst) >= 5).await;
    assert!(stand_in.stored().is_empty());

    wrong.abort();
    let _ = wrong.await;
    stand_in.recover(Mode::Healthy).await;
    wait_for("every report to be stored", || {
        stand_in.stored() == [1, 2, 3]
    })
    .await;
    stop.send(true).unwrap();
    let summary = within("the pusher to stop", task).await.unwrap();
    assert_eq!(summary.rejected, 0, "{summary:?}");
    assert_eq!(summary.delivered, 3, "{summary:?}");
    assert!(summary.retries >= 5, "{summary:?}");
    assert_eq!(summary.left_in_spool, 0, "{summary:?}");
}
