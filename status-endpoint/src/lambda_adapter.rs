//! Lambda mode: the same router behind API Gateway (REST or HTTP API) or an ALB, through
//! `lambda_http`. Chosen at start-up when the Lambda runtime API is in the environment, so one
//! build serves ECS and Lambda. The check cache lives as long as the execution environment, so
//! warm invocations share rounds just as requests to a server do.
//!
//! A REST API event's path carries the stage (`/prod/status`); lambda_http keeps the path as
//! the client sent it (`/status`) beside it, and that is what is routed, so the routes are the
//! same under every stage name.

use axum::http::uri::{PathAndQuery, Uri};
use lambda_http::{RequestExt as _, Service as _};

/// Set by the Lambda service in every execution environment.
pub const RUNTIME_API_VAR: &str = "AWS_LAMBDA_RUNTIME_API";

/// Whether this process runs inside Lambda.
pub fn in_lambda() -> bool {
    std::env::var_os(RUNTIME_API_VAR).is_some()
}

/// Serves Lambda invocations with `app`'s routes until the runtime stops the process.
pub async fn run(app: crate::router::App) -> Result<(), lambda_http::Error> {
    let router = app.routes().clone();
    lambda_http::run(lambda_http::service_fn(
        move |request: lambda_http::Request| {
            let mut router = router.clone();
            async move {
                let response: Result<_, lambda_http::Error> = Ok(router
                    .call(without_stage(request))
                    .await
                    .unwrap_or_else(|never| match never {}));
                response
            }
        },
    ))
    .await
}

/// The request with its URI path replaced by the path without the API Gateway stage.
fn without_stage(mut request: lambda_http::Request) -> lambda_http::Request {
    let raw = request.raw_http_path();
    if raw.is_empty() || raw == request.uri().path() {
        return request;
    }
    let path_and_query = match request.uri().query() {
        Some(q) => format!("{raw}?{q}"),
        None => raw.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse::<PathAndQuery>() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}
