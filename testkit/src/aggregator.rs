//! A stand-in aggregator: a real hyper server on 127.0.0.1 (plain or TLS) that checks each
//! report's HMAC with the protocol's own `verify`, parses and validates it, stores it once per
//! seq (like the aggregator's idempotent ingest) and misbehaves on demand: 503s, a closed port
//! (re-bound on the same port to recover), slow answers, answers lost after storing, 400 for
//! chosen seqs. The agent's delivery, daemon and command-line tests all post to this one.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use vantage_protocol::auth::{self, DEFAULT_MAX_SKEW_SECS};
use vantage_protocol::report::{IntervalReport, REPORTS_PATH, WIRE_VERSION};

/// The key the stand-in accepts unless told otherwise.
pub const KEY_ID: &str = "agent-key-1";
pub const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
/// How long [`StandIn::recover`] keeps trying to re-bind its port.
const REBIND_PATIENCE: Duration = Duration::from_secs(30);
/// The most of a request body the stand-in buffers, as the real aggregator bounds it too.
const MAX_BODY: usize = 4 << 20;

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
    /// Reports in the order first stored: what the aggregator's window would see.
    stored: Vec<IntervalReport>,
    stored_set: HashSet<u64>,
    /// Every authenticated request's seq, duplicates included.
    received: Vec<u64>,
    /// Requests refused for authentication.
    bad_auth: usize,
    /// Seqs answered 400.
    rejected: Vec<u64>,
    /// Requests that were not posts of a valid report to the reports path.
    malformed: usize,
}

struct State {
    key_id: String,
    key: Vec<u8>,
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

/// Builds a [`StandIn`]: [`KEY_ID`] / [`KEY`], plain HTTP, [`Mode::Healthy`] unless told.
pub struct StandInBuilder {
    key_id: String,
    key: Vec<u8>,
    mode: Mode,
    tls: Option<rustls::ServerConfig>,
}

impl StandInBuilder {
    /// Accept reports signed with this key (and no other).
    pub fn key(mut self, key_id: &str, key: &[u8]) -> Self {
        self.key_id = key_id.to_owned();
        self.key = key.to_vec();
        self
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Serve over TLS with this server configuration.
    pub fn tls(mut self, config: rustls::ServerConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Binds 127.0.0.1:0 and serves (needs a Tokio runtime).
    pub async fn start(self) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let stand_in = StandIn {
            addr,
            tls: self.tls.map(|c| TlsAcceptor::from(Arc::new(c))),
            state: Arc::new(State {
                key_id: self.key_id,
                key: self.key,
                mode: Mutex::new(self.mode),
                poisoned: Mutex::new(HashSet::new()),
                log: Mutex::new(Log::default()),
                requests: AtomicUsize::new(0),
            }),
            server: Mutex::new(None),
        };
        stand_in.serve(listener);
        stand_in
    }
}

impl StandIn {
    pub fn builder() -> StandInBuilder {
        StandInBuilder {
            key_id: KEY_ID.to_owned(),
            key: KEY.to_vec(),
            mode: Mode::Healthy,
            tls: None,
        }
    }

    /// A plain-HTTP stand-in with the default key.
    pub async fn start(mode: Mode) -> StandIn {
        StandIn::builder().mode(mode).start().await
    }

    /// Serves over TLS with the given server configuration (the default key).
    pub async fn start_with(mode: Mode, tls: Option<rustls::ServerConfig>) -> StandIn {
        let builder = StandIn::builder().mode(mode);
        match tls {
            Some(config) => builder.tls(config).start().await,
            None => builder.start().await,
        }
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
        let deadline = Instant::now() + REBIND_PATIENCE;
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
        self.state
            .log
            .lock()
            .unwrap()
            .stored
            .iter()
            .map(|r| r.seq)
            .collect()
    }

    /// The reports stored, in the order they first arrived.
    pub fn reports(&self) -> Vec<IntervalReport> {
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
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let Ok(body) = limited.collect().await.map(|b| b.to_bytes()) else {
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
        |id| (id == state.key_id).then_some(state.key.as_slice()),
        &body,
        now,
        DEFAULT_MAX_SKEW_SECS,
    );
    if let Err(e) = verified {
        state.log.lock().unwrap().bad_auth += 1;
        return reply(StatusCode::UNAUTHORIZED, &e.to_string());
    }
    let parsed = serde_json::from_slice::<IntervalReport>(&body)
        .map_err(|e| e.to_string())
        .and_then(|r| r.validate().map(|()| r).map_err(|e| e.to_string()));
    let report = match parsed {
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
    log.stored.push(report);
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
