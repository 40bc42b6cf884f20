//! The ARC cluster's data plane as AWS asks it to be used: one client per regional cluster
//! endpoint, and every call tried on the endpoints in a fresh random order, each attempt cut at
//! `timeout_per_endpoint`, moving on after a timeout, a refused or reset connection, a 5xx or a
//! throttle, all within `budget`. An answer that another endpoint would repeat (a safety rule's
//! ConflictException, access denied, a validation error) ends the call at once. Only the cluster
//! API is used here, never the control-config API, which is not built to be up during a
//! failover. Every attempt is counted by endpoint and outcome.

use aws_sdk_route53recoverycluster as cluster;
use cluster::error::{ProvideErrorMetadata, SdkError};
use rand::seq::SliceRandom;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Counter of calls sent to a cluster endpoint, labelled `endpoint` (its URL) and `outcome`
/// (`ok`, `timeout`, `unreachable`, `server_error`, `safety_rule`, `rejected`).
pub const ATTEMPTS_METRIC: &str = "vantage_arc_endpoint_attempts_total";

/// A call no endpoint carried out.
#[derive(Debug, thiserror::Error)]
pub enum ArcCallError {
    /// An ARC safety rule (an assertion or gating rule) refused the change: another endpoint
    /// would refuse it too, so it is not tried elsewhere.
    #[error("{operation}: ConflictException: {message}")]
    SafetyRule {
        operation: &'static str,
        message: String,
    },
    /// ARC answered with an error every endpoint would repeat (access, validation, unknown ARN).
    #[error("{operation}: {code}: {message}")]
    Rejected {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// Every endpoint was tried (or the budget ran out) without an answer.
    #[error("{operation}: no ARC cluster endpoint answered within the {budget:?} budget ({})", .attempts.join("; "))]
    Exhausted {
        operation: &'static str,
        budget: Duration,
        /// `url: outcome` per attempt, in the order tried.
        attempts: Vec<String>,
    },
}

/// One regional cluster endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub client: cluster::Client,
}

/// The cluster endpoints and the time a call may take on them.
#[derive(Debug, Clone)]
pub struct Endpoints {
    endpoints: Vec<Endpoint>,
    timeout_per_endpoint: Duration,
    budget: Duration,
}

/// How one attempt ended.
enum Attempt<T> {
    Done(T),
    /// Final: do not try another endpoint.
    Stop(ArcCallError),
    /// Try the next endpoint; the outcome label says why.
    Next(&'static str, String),
}

impl Endpoints {
    /// A client per `(url, signing Region)` from `sdk` (credentials, HTTP client), each with SDK
    /// retries off (moving to the next endpoint is the retry) and the SDK's own timeouts at
    /// `timeout_per_endpoint` as a second line behind ours.
    pub fn connect(
        sdk: &aws_config::SdkConfig,
        endpoints: &[(String, String)],
        timeout_per_endpoint: Duration,
        budget: Duration,
    ) -> Self {
        let endpoints = endpoints
            .iter()
            .map(|(url, region)| {
                let config = cluster::config::Builder::from(sdk)
                    .endpoint_url(url)
                    .region(cluster::config::Region::new(region.clone()))
                    .retry_config(cluster::config::retry::RetryConfig::disabled())
                    .timeout_config(
                        cluster::config::timeout::TimeoutConfig::builder()
                            .connect_timeout(timeout_per_endpoint)
                            .operation_attempt_timeout(timeout_per_endpoint)
                            .build(),
                    )
                    .build();
                Endpoint {
                    url: url.clone(),
                    client: cluster::Client::from_conf(config),
                }
            })
            .collect();
        Self::from_clients(endpoints, timeout_per_endpoint, budget)
    }

    /// Existing clients (tests with aws-smithy-mocks), used as given.
    pub fn from_clients(
        endpoints: Vec<Endpoint>,
        timeout_per_endpoint: Duration,
        budget: Duration,
    ) -> Self {
        Endpoints {
            endpoints,
            timeout_per_endpoint,
            budget,
        }
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Runs `call` on the endpoints in a random order until one answers, within the budget.
    pub async fn call<T, E, F, Fut>(
        &self,
        operation: &'static str,
        mut call: F,
    ) -> Result<T, ArcCallError>
    where
        F: FnMut(cluster::Client) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, cluster::config::http::HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let deadline = Instant::now() + self.budget;
        let mut order: Vec<&Endpoint> = self.endpoints.iter().collect();
        order.shuffle(&mut rand::rng());
        let mut attempts = Vec::new();
        for endpoint in order {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                attempts.push(format!("{}: not tried, budget spent", endpoint.url));
                continue;
            }
            let limit = left.min(self.timeout_per_endpoint);
            let attempt = match tokio::time::timeout(limit, call(endpoint.client.clone())).await {
                Ok(result) => classify(operation, result),
                Err(_) => Attempt::Next("timeout", format!("no answer within {limit:?}")),
            };
            let outcome = match &attempt {
                Attempt::Done(_) => "ok",
                Attempt::Stop(ArcCallError::SafetyRule { .. }) => "safety_rule",
                Attempt::Stop(_) => "rejected",
                Attempt::Next(outcome, _) => outcome,
            };
            metrics::counter!(ATTEMPTS_METRIC, "endpoint" => endpoint.url.clone(), "outcome" => outcome)
                .increment(1);
            match attempt {
                Attempt::Done(v) => return Ok(v),
                Attempt::Stop(e) => return Err(e),
                Attempt::Next(_, why) => {
                    tracing::warn!(endpoint = %endpoint.url, operation, "ARC cluster endpoint failed ({why}); trying the next");
                    attempts.push(format!("{}: {why}", endpoint.url));
                }
            }
        }
        Err(ArcCallError::Exhausted {
            operation,
            budget: self.budget,
            attempts,
        })
    }
}

/// Whether an SDK result ends the call or sends it to the next endpoint.
fn classify<T, E>(
    operation: &'static str,
    result: Result<T, SdkError<E, cluster::config::http::HttpResponse>>,
) -> Attempt<T>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let err = match result {
        Ok(v) => return Attempt::Done(v),
        Err(e) => e,
    };
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = err.code().unwrap_or("").to_owned();
            let message = err.message().unwrap_or("").to_owned();
            match code.as_str() {
                "ConflictException" => {
                    Attempt::Stop(ArcCallError::SafetyRule { operation, message })
                }
                "ThrottlingException"
                | "InternalServerException"
                | "EndpointTemporarilyUnavailableException" => {
                    Attempt::Next("server_error", format!("{code}: {message}"))
                }
                _ if status >= 500 => {
                    Attempt::Next("server_error", format!("HTTP {status} {code}: {message}"))
                }
                _ => Attempt::Stop(ArcCallError::Rejected {
                    operation,
                    code: if code.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        code
                    },
                    message,
                }),
            }
        }
        SdkError::TimeoutError(_) => Attempt::Next("timeout", "the SDK timed out".into()),
        SdkError::ResponseError(_) => Attempt::Next("unreachable", "unreadable response".into()),
        SdkError::ConstructionFailure(_) => Attempt::Stop(ArcCallError::Rejected {
            operation,
            code: "ConstructionFailure".into(),
            message: vantage_runtime::errors::chain(&err),
        }),
        // Refused, reset, DNS, TLS: the endpoint is not there for us now.
        _ => Attempt::Next("unreachable", vantage_runtime::errors::chain(&err)),
    }
}
