//! A stand-in for an ARC (Route 53 Application Recovery Controller) cluster's regional
//! endpoints, on loopback: moto has no ARC. Each endpoint behaves as the test says: it answers
//! (HTTP/1.1, the awsJson1_0 protocol the SDK sends: `X-Amz-Target:
//! ToggleCustomerAPI.<Operation>`, a JSON body, errors as `__type`), hangs (accepts, never
//! answers), refuses (a closed port) or resets the connection. The answering endpoints share one
//! cluster state: the routing controls' On/Off and an assertion rule "at least `min_on` On" that
//! refuses a batch with a ConflictException, as ARC's safety rules do. Every request an
//! answering endpoint reads is kept for the test to inspect.

use crate::server::{black_hole, closed_port, reset_server, Stub};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The most a request body may hold.
const MAX_BODY: usize = 1 << 20;
/// The AWS Regions the endpoints are signed for, in order (a real cluster has five).
const REGIONS: [&str; 5] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "ap-northeast-1",
    "ap-southeast-2",
];

/// How one endpoint behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Answer,
    /// Accepts the connection and never answers.
    Hang,
    /// Nothing listens: connection refused.
    Refuse,
    /// Reads the request, then resets the connection.
    Reset,
}

/// One request an answering endpoint read.
#[derive(Debug, Clone)]
pub struct ArcRequest {
    /// The endpoint's URL.
    pub endpoint: String,
    /// `X-Amz-Target`.
    pub target: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Debug, Default)]
struct ClusterState {
    /// Routing control ARN → On.
    controls: BTreeMap<String, bool>,
    /// The assertion rule: at least this many controls On after a batch.
    min_on: usize,
    requests: Vec<ArcRequest>,
}

/// The running endpoints; they stop when this drops.
pub struct ArcCluster {
    endpoints: Vec<(String, Behaviour)>,
    state: Arc<Mutex<ClusterState>>,
    stubs: Vec<Stub>,
    tasks: Vec<JoinHandle<()>>,
}

impl ArcCluster {
    /// One endpoint per behaviour, in order; every control in `controls` starts On and no
    /// safety rule applies until [`Self::set_min_on`].
    pub async fn start(behaviours: &[Behaviour], controls: &[&str]) -> Self {
        let state = Arc::new(Mutex::new(ClusterState {
            controls: controls.iter().map(|c| (c.to_string(), true)).collect(),
            ..ClusterState::default()
        }));
        let mut cluster = ArcCluster {
            endpoints: Vec::new(),
            state: state.clone(),
            stubs: Vec::new(),
            tasks: Vec::new(),
        };
        for b in behaviours {
            let url = match b {
                Behaviour::Answer => {
                    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                    let url = format!("http://{}", listener.local_addr().expect("addr"));
                    cluster
                        .tasks
                        .push(tokio::spawn(answer(listener, url.clone(), state.clone())));
                    url
                }
                Behaviour::Hang => cluster.stub(black_hole().await),
                Behaviour::Reset => cluster.stub(reset_server().await),
                Behaviour::Refuse => format!("http://127.0.0.1:{}", closed_port()),
            };
            cluster.endpoints.push((url, *b));
        }
        cluster
    }

    fn stub(&mut self, stub: Stub) -> String {
        let url = format!("http://{}", stub.addr());
        self.stubs.push(stub);
        url
    }

    /// `(url, signing Region)` per endpoint, as `[arc] cluster_endpoints` lists them.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.endpoints
            .iter()
            .zip(REGIONS.iter().cycle())
            .map(|((url, _), region)| (url.clone(), region.to_string()))
            .collect()
    }

    /// The URL of each endpoint with behaviour `b`.
    pub fn urls(&self, b: Behaviour) -> Vec<String> {
        self.endpoints
            .iter()
            .filter(|(_, have)| *have == b)
            .map(|(url, _)| url.clone())
            .collect()
    }

    /// The safety rule: a batch that would leave fewer than `n` controls On is refused.
    pub fn set_min_on(&self, n: usize) {
        self.state.lock().unwrap().min_on = n;
    }

    /// A control's state: `Some(true)` On.
    pub fn control(&self, arn: &str) -> Option<bool> {
        self.state.lock().unwrap().controls.get(arn).copied()
    }

    pub fn set_control(&self, arn: &str, on: bool) {
        self.state
            .lock()
            .unwrap()
            .controls
            .insert(arn.to_owned(), on);
    }

    /// Every request the answering endpoints read, in order.
    pub fn requests(&self) -> Vec<ArcRequest> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for ArcCluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn answer(listener: TcpListener, url: String, state: Arc<Mutex<ClusterState>>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (url, state) = (url.clone(), state.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let (url, state) = (url.clone(), state.clone());
                async move { Ok::<_, Infallible>(respond(request, &url, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn error(status: StatusCode, kind: &str, message: &str, resource: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({"__type": kind, "message": message, "resourceId": resource, "resourceType": "RoutingControl"}),
    )
}

async fn respond(
    request: Request<Incoming>,
    url: &str,
    state: &Mutex<ClusterState>,
) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (target, content_type) = (header("x-amz-target"), header("content-type"));
    let Ok(body) = Limited::new(request.into_body(), MAX_BODY).collect().await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValidationException",
            "body too large",
            "",
        );
    };
    let body: Value = serde_json::from_slice(&body.to_bytes()).unwrap_or(Value::Null);
    let mut state = state.lock().unwrap();
    state.requests.push(ArcRequest {
        endpoint: url.to_owned(),
        target: target.clone(),
        content_type,
        body: body.clone(),
    });
    match target.as_str() {
        "ToggleCustomerAPI.GetRoutingControlState" => {
            let arn = body["RoutingControlArn"].as_str().unwrap_or("");
            match state.controls.get(arn) {
                Some(on) => reply(
                    StatusCode::OK,
                    json!({"RoutingControlArn": arn, "RoutingControlState": if *on { "On" } else { "Off" }}),
                ),
                None => error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFoundException",
                    "no such routing control",
                    arn,
                ),
            }
        }
        "ToggleCustomerAPI.UpdateRoutingControlStates" => {
            let mut next = state.controls.clone();
            let entries = body["UpdateRoutingControlStateEntries"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for e in &entries {
                let arn = e["RoutingControlArn"].as_str().unwrap_or("");
                if !next.contains_key(arn) {
                    return error(
                        StatusCode::NOT_FOUND,
                        "ResourceNotFoundException",
                        "no such routing control",
                        arn,
                    );
                }
                next.insert(arn.to_owned(), e["RoutingControlState"] == "On");
            }
            if next.values().filter(|on| **on).count() < state.min_on {
                let message = format!(
                    "Cannot update routing control state: safety rule at-least-{}-on would be violated",
                    state.min_on
                );
                return error(
                    StatusCode::CONFLICT,
                    "ConflictException",
                    &message,
                    "assertion-rule",
                );
            }
            state.controls = next;
            reply(StatusCode::OK, json!({}))
        }
        other => error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            &format!("unknown target {other:?}"),
            "",
        ),
    }
}
