//! The Region's Lambda function: `Invoke` with `InvocationType=DryRun` (parameters and IAM are
//! checked, the function does not run, 204 expected) and `GetFunction`, whose `State` must be
//! `Active`. Both calls go out at once.
//!
//! The SDK client speaks HTTPS through rustls with ring (no aws-lc), keeps at most two idle
//! connections (one per call of a round) and never retries: the round's deadline is the retry
//! budget, and a retry would only hide a slow dependency.

use super::{CheckError, Observation, Probe, Status};
use aws_sdk_lambda::error::DisplayErrorContext;
use aws_sdk_lambda::types::{InvocationType, State};
use std::time::Duration;

pub struct LambdaCheck {
    client: aws_sdk_lambda::Client,
    function: String,
}

/// AWS SDK configuration for the checks: the Region, an optional endpoint override (moto in
/// tests, VPC endpoints in production), credentials from the default chain (Lambda and ECS
/// environments provide them), no retries, and `timeout` as the per-attempt limit.
pub async fn sdk_config(
    region: &str,
    endpoint_url: Option<&str>,
    timeout: Duration,
) -> aws_config::SdkConfig {
    sdk_loader(region, endpoint_url, timeout).load().await
}

/// The loader behind [`sdk_config`], for callers that add to it (tests set credentials).
pub fn sdk_loader(
    region: &str,
    endpoint_url: Option<&str>,
    timeout: Duration,
) -> aws_config::ConfigLoader {
    vantage_runtime::aws::sdk_loader(vantage_runtime::aws::SdkOptions {
        region,
        endpoint_url,
        connect_timeout: timeout,
        attempt_timeout: timeout,
        max_idle_per_host: 2,
    })
}

impl LambdaCheck {
    pub fn new(sdk: &aws_config::SdkConfig, function: &str) -> Self {
        LambdaCheck {
            client: aws_sdk_lambda::Client::new(sdk),
            function: function.to_owned(),
        }
    }

    pub fn target(&self) -> &str {
        &self.function
    }

    pub async fn run(&self) -> Result<Probe, CheckError> {
        let invoke = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::DryRun)
            .send();
        let get = self
            .client
            .get_function()
            .function_name(&self.function)
            .send();
        let (invoke, get) = tokio::join!(invoke, get);
        let invoke = invoke.map_err(|e| {
            let missing = e
                .as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception());
            self.failure("Invoke (DryRun)", missing, &DisplayErrorContext(&e))
        })?;
        let get = get.map_err(|e| {
            let missing = e
                .as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception());
            self.failure("GetFunction", missing, &DisplayErrorContext(&e))
        })?;
        let mut probe = Probe::pass();
        if invoke.status_code() != 204 {
            probe.raise(
                Status::Fail,
                format!(
                    "Invoke (DryRun) answered {}, expected 204",
                    invoke.status_code()
                ),
            );
        }
        let config = get.configuration();
        let state = config.and_then(|c| c.state()).cloned();
        let reason = config.and_then(|c| c.state_reason()).unwrap_or("");
        let state_status = match &state {
            Some(State::Active) => Status::Pass,
            // Pending: still being created or updated; Inactive: idle long enough that the next
            // invocations are slow while it is reactivated. It still answers.
            Some(State::Pending) | Some(State::Inactive) => Status::Warn,
            _ => Status::Fail,
        };
        let state_name = state.as_ref().map_or("unknown", |s| s.as_str()).to_owned();
        let mut observation =
            Observation::new("state", state_status).value(state_name.clone(), None);
        if state_status != Status::Pass {
            observation.output = Some(format!("function state is {state_name}: {reason}"));
            probe.raise(state_status, format!("function state is {state_name}"));
        }
        probe.extra.push(observation);
        Ok(probe)
    }

    fn failure(&self, call: &str, missing: bool, error: &dyn std::fmt::Display) -> CheckError {
        CheckError::Lambda(if missing {
            format!("{call}: function {} not found", self.function)
        } else {
            format!("{call} failed: {error}")
        })
    }
}
