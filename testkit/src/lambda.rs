//! A stand-in for the Lambda Runtime API (the 2018-06-01 interface a custom runtime's
//! `bootstrap` talks to at `AWS_LAMBDA_RUNTIME_API`), on loopback. It hands out the
//! invocations a test queues, keeps further `next` calls waiting as an idle execution
//! environment does, and records every response, invocation error and init error, so a test
//! (or the cold-start benchmark) can run the real binary as Lambda would.
//!
//! Blocking threads rather than async: callers are synchronous tests that spawn a process and
//! wait for it; the server stops when the [`RuntimeApi`] drops.

use crate::error::{io, Result};
use crate::http::{head_value, read_request};
use std::collections::VecDeque;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

/// The interface version in every path.
const PREFIX: &str = "/2018-06-01/runtime";
/// How often a waiting `next` rechecks whether the stand-in has stopped.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// The ARN handed with each invocation (the account is the documentation example).
const FUNCTION_ARN: &str = "arn:aws:lambda:eu-west-1:123456789012:function:vantage";

/// What the runtime posted back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `POST /invocation/{id}/response`.
    Response,
    /// `POST /invocation/{id}/error`.
    Error,
    /// `POST /init/error`: the runtime failed before asking for work.
    InitError,
}

/// One post from the runtime: which invocation (empty for an init error), how, and the body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub request_id: String,
    pub outcome: Outcome,
    pub body: String,
}

impl Answer {
    /// The body as JSON, `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

struct Invocation {
    request_id: String,
    deadline_ms: u64,
    event: String,
}

#[derive(Default)]
struct State {
    queued: VecDeque<Invocation>,
    next_calls: Vec<Instant>,
    handed_out: Vec<String>,
    answers: Vec<Answer>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stopped: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking handler thread must not hide what was recorded before it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running stand-in; stops accepting when dropped.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl RuntimeApi {
    /// Listens on 127.0.0.1 with a port chosen at run time.
    pub fn start() -> Result<Self> {
        let what = "the Lambda Runtime API stand-in's listener on 127.0.0.1:0";
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io(what))?;
        let addr = listener.local_addr().map_err(io(what))?;
        listener.set_nonblocking(true).map_err(io(what))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stopped: AtomicBool::new(false),
        });
        let accept = shared.clone();
        thread::spawn(move || accept_loop(listener, accept));
        Ok(Self { addr, shared })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API` (host:port, no scheme).
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// The environment Lambda gives a `provided.al2023` function's bootstrap, pointing at this
    /// stand-in; `handler` is the function's Handler setting (`_HANDLER`).
    pub fn lambda_env(&self, handler: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.address().as_str()),
            ("_HANDLER", handler),
            ("AWS_LAMBDA_FUNCTION_NAME", "vantage"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/vantage"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "stand-in"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Queues one invocation of `event` that must finish by `deadline_ms` (Unix ms); returns
    /// its request id.
    pub fn invoke(&self, event: &serde_json::Value, deadline_ms: u64) -> String {
        let mut state = self.shared.lock();
        let request_id = format!("req-{}", state.handed_out.len() + state.queued.len() + 1);
        state.queued.push_back(Invocation {
            request_id: request_id.clone(),
            deadline_ms,
            event: event.to_string(),
        });
        self.shared.changed.notify_all();
        request_id
    }

    /// How many times the runtime asked for work (`GET /invocation/next`).
    pub fn next_calls(&self) -> usize {
        self.shared.lock().next_calls.len()
    }

    /// When each `next` call arrived (the cold-start benchmark's end of init).
    pub fn next_call_times(&self) -> Vec<Instant> {
        self.shared.lock().next_calls.clone()
    }

    /// The request ids handed out so far, in order.
    pub fn handed_out(&self) -> Vec<String> {
        self.shared.lock().handed_out.clone()
    }

    /// Everything the runtime posted back, in order.
    pub fn answers(&self) -> Vec<Answer> {
        self.shared.lock().answers.clone()
    }

    /// Waits (at most `limit`) for the answer to `request_id`, or for an init error.
    pub fn wait_for_answer(&self, request_id: &str, limit: Duration) -> Option<Answer> {
        let deadline = std::time::SystemTime::now() + limit;
        let mut state = self.shared.lock();
        loop {
            if let Some(a) = state
                .answers
                .iter()
                .find(|a| a.request_id == request_id || a.outcome == Outcome::InitError)
            {
                return Some(a.clone());
            }
            let left = deadline
                .duration_since(std::time::SystemTime::now())
                .ok()
                .filter(|d| !d.is_zero())?;
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = shared.clone();
                thread::spawn(move || serve(stream, shared));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(IDLE_POLL / 5),
            Err(_) => thread::sleep(IDLE_POLL),
        }
    }
}

/// One keep-alive connection from the runtime: requests until it closes.
fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nonblocking(false);
    while let Some((head, body)) = read_request(&mut stream) {
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        let path = request_line.split_whitespace().nth(1).unwrap_or_default();
        let Some(route) = path.strip_prefix(PREFIX) else {
            let _ = write!(
                stream,
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
            );
            return;
        };
        let written = if route == "/invocation/next" {
            match wait_for_invocation(&shared) {
                Some(inv) => write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     lambda-runtime-aws-request-id: {}\r\nlambda-runtime-deadline-ms: {}\r\n\
                     lambda-runtime-invoked-function-arn: {FUNCTION_ARN}\r\n\
                     lambda-runtime-trace-id: Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0\r\n\
                     content-length: {}\r\n\r\n{}",
                    inv.request_id,
                    inv.deadline_ms,
                    inv.event.len(),
                    inv.event
                ),
                // Stopped while idle: drop the connection, as a frozen environment would.
                None => return,
            }
        } else if let Some(answer) = answer_for(route, &body) {
            let mut state = shared.lock();
            state.answers.push(answer);
            shared.changed.notify_all();
            drop(state);
            write!(stream, "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
        } else {
            write!(
                stream,
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
            )
        };
        let closing =
            head_value(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if written.is_err() || closing {
            return;
        }
    }
}

/// Blocks a `next` call until an invocation is queued; `None` once the stand-in stops.
fn wait_for_invocation(shared: &Shared) -> Option<Invocation> {
    let mut state = shared.lock();
    state.next_calls.push(Instant::now());
    shared.changed.notify_all();
    loop {
        if shared.stopped.load(Ordering::SeqCst) {
            return None;
        }
        if let Some(inv) = state.queued.pop_front() {
            state.handed_out.push(inv.request_id.clone());
            return Some(inv);
        }
        state = shared
            .changed
            .wait_timeout(state, IDLE_POLL)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// The answer a POST to `route` records, or `None` for a path the API does not have.
fn answer_for(route: &str, body: &[u8]) -> Option<Answer> {
    let body = String::from_utf8_lossy(body).into_owned();
    if route == "/init/error" {
        return Some(Answer {
            request_id: String::new(),
            outcome: Outcome::InitError,
            body,
        });
    }
    let rest = route.strip_prefix("/invocation/")?;
    let (request_id, kind) = rest.split_once('/')?;
    let outcome = match kind {
        "response" => Outcome::Response,
        "error" => Outcome::Error,
        _ => return None,
    };
    Some(Answer {
        request_id: request_id.to_owned(),
        outcome,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::exchange_blocking;

    #[test]
    fn hands_out_a_queued_invocation_and_records_its_response() {
        let api = RuntimeApi::start().unwrap();
        let id = api.invoke(&serde_json::json!({"k": 1}), 42);
        let port = api.addr.port();
        let next =
            exchange_blocking(port, "GET", &format!("{PREFIX}/invocation/next"), &[], b"").unwrap();
        assert_eq!(next.status, 200);
        assert_eq!(
            next.header("lambda-runtime-aws-request-id"),
            Some(id.as_str())
        );
        assert_eq!(next.header("lambda-runtime-deadline-ms"), Some("42"));
        assert_eq!(next.json()["k"], 1);
        let posted = exchange_blocking(
            port,
            "POST",
            &format!("{PREFIX}/invocation/{id}/response"),
            &[],
            b"{\"ok\":true}",
        )
        .unwrap();
        assert_eq!(posted.status, 202);
        let answer = api.wait_for_answer(&id, Duration::from_secs(5)).unwrap();
        assert_eq!(answer.outcome, Outcome::Response);
        assert_eq!(answer.json()["ok"], true);
        assert_eq!((api.next_calls(), api.handed_out()), (1, vec![id]));
    }

    #[test]
    fn errors_and_unknown_paths_are_told_apart() {
        let api = RuntimeApi::start().unwrap();
        let post = |path: &str| {
            exchange_blocking(
                api.addr.port(),
                "POST",
                &format!("{PREFIX}{path}"),
                &[],
                b"boom",
            )
            .unwrap()
            .status
        };
        assert_eq!(post("/invocation/req-9/error"), 202);
        assert_eq!(post("/init/error"), 202);
        assert_eq!(post("/invocation/req-9/elsewhere"), 404);
        let outcomes: Vec<_> = api.answers().into_iter().map(|a| a.outcome).collect();
        assert_eq!(outcomes, [Outcome::Error, Outcome::InitError]);
    }

    #[test]
    fn next_waits_while_nothing_is_queued() {
        let api = RuntimeApi::start().unwrap();
        let port = api.addr.port();
        let waiting = thread::spawn(move || {
            exchange_blocking(port, "GET", &format!("{PREFIX}/invocation/next"), &[], b"")
        });
        crate::eventually::wait_for_blocking("the idle next call", Duration::from_secs(5), || {
            api.next_calls() == 1
        });
        assert!(!waiting.is_finished(), "next answered with nothing queued");
        let id = api.invoke(&serde_json::json!({}), 1);
        let next = waiting.join().unwrap().unwrap();
        assert_eq!(
            next.header("lambda-runtime-aws-request-id"),
            Some(id.as_str())
        );
    }
}
