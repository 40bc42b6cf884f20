//! Lambda mode: the same router behind API Gateway (REST or HTTP API) or an ALB, through
//! `lambda_http`. Chosen at start-up when the Lambda runtime API is in the environment, so one
//! build serves ECS and Lambda. The check cache lives as long as the execution environment, so
//! warm invocations share rounds just as requests to a server do.

/// Set by the Lambda service in every execution environment.
pub const RUNTIME_API_VAR: &str = "AWS_LAMBDA_RUNTIME_API";

/// Whether this process runs inside Lambda.
pub fn in_lambda() -> bool {
    std::env::var_os(RUNTIME_API_VAR).is_some()
}

/// Serves Lambda invocations with `router` until the runtime stops the process.
pub async fn run(router: axum::Router) -> Result<(), lambda_http::Error> {
    lambda_http::run(router).await
}
