//! A stand-in aggregator for the delivery tests: a real hyper server on 127.0.0.1 that checks
//! each report's HMAC with the protocol's own `verify`, parses it, stores it once per seq (like
//! the aggregator's idempotent ingest) and misbehaves on demand: 503s, a closed port (re-bound
//! on the same port to recover), slow answers, answers lost after storing, 400 for chosen seqs.

#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use vantage_protocol::auth::{self, DEFAULT_MAX_SKEW_SECS};
use vantage_protocol::report::{IntervalReport, REPORTS_PATH, WIRE_VERSION};

pub const KEY_ID: &str = "agent-key-1";
pub const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
/// Every wait in the tests ends by this, so a bug fails a test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How the stand-in answers a report that passed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Store it (once per seq) and answer 200, or 409 for a seq already stored.
    Healthy,
    /// Answer 503 without storing.
    Failing,
    /// Wait this long, then behave as `Healthy`.
    Slow(Duration),
    /// Store a new seq and drop the connection without answering, so the agent cannot know
    /// and sends it again; a seq already stored gets its 409 as usual.
    LoseFirstAnswer,
}

#[derive(Debug, Default)]
struct Log {
    /// Seqs in the order first stored: what the aggregator's window would see.
    stored: Vec<u64>,
    stored_set: HashSet<u64>,
    /// Every authenticated request's seq, duplicates included.
    received: Vec<u64>,
    /// Requests refused for authentication.
    bad_auth: usize,
    /// Seqs answered 400.
    rejected: Vec<u64>,
    /// Requests that were not well-formed JSON posts to the reports path.
    malformed: usize,
}

struct State {
    mode: Mutex<Mode>,
    poisoned: Mutex<HashSet<u64>>,
    log: Mutex<Log>,
    requests: AtomicUsize,
}

/// The stand-in. Dropping it stops the server.
pub struct StandIn {
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl StandIn {
    pub async fn start(mode: Mode) -> StandIn {
        StandIn::start_with(mode, None).await
    }

    /// Serves over TLS with the given server configuration.
    pub async fn start_with(mode: Mode, tls: Option<rustls::ServerConfig>) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let stand_in = StandIn {
            addr,
            tls: tls.map(|c| TlsAcceptor::from(Arc::new(c))),
            state: Arc::new(State {
                mode: Mutex::new(mode),
                poisoned: Mutex::new(HashSet::new()),
                log: Mutex::new(Log::default()),
                requests: AtomicUsize::new(0),
            }),
            server: Mutex::new(None),
        };
        stand_in.serve(listener);
        stand_in
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Answers 400 to this seq from now on.
    pub fn poison(&self, seq: u64) {
        self.state.poisoned.lock().unwrap().insert(seq);
    }

    /// Closes the listening socket and every open connection: connections are refused.
    pub fn refuse(&self) {
        if let Some(task) = self.server.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again, on the same port, and behaves as `mode`.
    pub async fn recover(&self, mode: Mode) {
        self.refuse();
        self.set_mode(mode);
        let deadline = Instant::now() + PATIENCE;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("re-binding {}: {e}; trying again", self.addr);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot re-bind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let tls = self.tls.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the accept task closes them too.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let state = state.clone();
                        let tls = tls.clone();
                        connections.spawn(async move {
                            match tls {
                                None => serve_connection(TokioIo::new(tcp), state).await,
                                Some(acceptor) => {
                                    if let Ok(stream) = acceptor.accept(tcp).await {
                                        serve_connection(TokioIo::new(stream), state).await;
                                    }
                                }
                            }
                        });
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        *self.server.lock().unwrap() = Some(task);
    }

    /// Seqs stored, in the order they first arrived.
    pub fn stored(&self) -> Vec<u64> {
        self.state.log.lock().unwrap().stored.clone()
    }

    /// Seqs of every authenticated request, duplicates included.
    pub fn received(&self) -> Vec<u64> {
        self.state.log.lock().unwrap().received.clone()
    }

    pub fn bad_auth(&self) -> usize {
        self.state.log.lock().unwrap().bad_auth
    }

    pub fn rejected(&self) -> Vec<u64> {
        self.state.log.lock().unwrap().rejected.clone()
    }

    pub fn malformed(&self) -> usize {
        self.state.log.lock().unwrap().malformed
    }

    /// Requests of any kind that reached the handler.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.refuse();
    }
}

async fn serve_connection<I>(io: I, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let state = state.clone();
        async move { handle(request, state).await }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

/// The error that makes hyper close the connection without answering.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("answer lost on purpose")
    }
}

impl std::error::Error for DropConnection {}

fn reply(status: StatusCode, text: &str) -> Result<Response<Full<Bytes>>, DropConnection> {
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(text.to_owned())))
        .expect("response"))
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Err(DropConnection);
    };
    let well_formed = parts.method == http::Method::POST
        && parts.uri.path() == REPORTS_PATH
        && parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v == "application/json");
    if !well_formed {
        state.log.lock().unwrap().malformed += 1;
        return reply(StatusCode::NOT_FOUND, "not a report");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let verified = auth::verify(
        |name| parts.headers.get(name).and_then(|v| v.to_str().ok()),
        |id| (id == KEY_ID).then_some(KEY),
        &body,
        now,
        DEFAULT_MAX_SKEW_SECS,
    );
    if let Err(e) = verified {
        state.log.lock().unwrap().bad_auth += 1;
        return reply(StatusCode::UNAUTHORIZED, &e.to_string());
    }
    let report: IntervalReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            state.log.lock().unwrap().malformed += 1;
            return reply(StatusCode::BAD_REQUEST, &format!("not a report: {e}"));
        }
    };
    let seq = report.seq;
    state.log.lock().unwrap().received.push(seq);
    if state.poisoned.lock().unwrap().contains(&seq) {
        state.log.lock().unwrap().rejected.push(seq);
        return reply(
            StatusCode::BAD_REQUEST,
            &format!("report {seq}: poisoned for the test"),
        );
    }
    let mode = *state.mode.lock().unwrap();
    match mode {
        Mode::Failing => return reply(StatusCode::SERVICE_UNAVAILABLE, "down for the test"),
        Mode::Slow(delay) => tokio::time::sleep(delay).await,
        Mode::Healthy | Mode::LoseFirstAnswer => {}
    }
    let mut log = state.log.lock().unwrap();
    if !log.stored_set.insert(seq) {
        return reply(StatusCode::CONFLICT, "already stored");
    }
    log.stored.push(seq);
    drop(log);
    if mode == Mode::LoseFirstAnswer {
        return Err(DropConnection);
    }
    reply(StatusCode::OK, "stored")
}

/// The JSON of a valid report with this seq.
pub fn report_body(seq: u64) -> Bytes {
    let report = IntervalReport {
        version: WIRE_VERSION,
        fleet: "delivery-test".into(),
        agent_id: "vantage-test".into(),
        vantage: "eu-west-1".into(),
        seq,
        interval_start_ms: 1_700_000_000_000 + seq * 10_000,
        interval_ms: 10_000,
        targets: Vec::new(),
    };
    Bytes::from(serde_json::to_vec(&report).expect("report JSON"))
}

/// Polls `done` every 10 ms until it holds; panics with `what` after [`PATIENCE`].
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `f`, panicking with `what` after [`PATIENCE`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vantage-delivery-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Seqs of the report files in a spool directory, sorted.
pub fn spooled_seqs(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut seqs: Vec<u64> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    seqs.sort_unstable();
    seqs
}
