//! Every Route 53 and CloudWatch call goes through [`RetryPolicy::run`]: the SDK's own retries
//! are off (see `sdk.rs`), so this loop is the only one, which keeps each retry bounded, spread
//! out by the workspace's one [`Backoff`], and counted in [`RETRIES_METRIC`] under its AWS
//! operation. Which errors are worth retrying, and how an AWS error reads in a message, live
//! here too because the loop needs both.

use super::RETRIES_METRIC;
use aws_sdk_route53 as route53;
use route53::config::http::HttpResponse;
use route53::error::{ProvideErrorMetadata, SdkError};
use std::future::Future;
use std::time::Duration;
use vantage_runtime::Backoff;

/// Error codes worth retrying besides 5xx: Route 53's and CloudWatch's throttling, and Route 53's
/// "a change to this zone is still being processed".
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "PriorRequestNotComplete",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalError",
];

/// Bounded, jittered retries of retryable AWS errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// The wait before each retry; retry number `r` (0-based) waits `backoff.delay(r + 1)`.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// Six attempts, so five waits: 250 ms, then up to 0.5, 1, 2 and 4 s (each at least half
    /// of that), about 4 to 7.75 s in all; the 16 s cap only matters for longer policies. Route 53
    /// allows five API requests per second per account, and PriorRequestNotComplete clears once
    /// the previous change is processed.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(16)),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based).
    pub fn delay(&self, retry: u32) -> Duration {
        self.backoff.delay(retry.saturating_add(1))
    }

    /// Runs `call` until it succeeds, fails with a non-retryable error, or runs out of
    /// attempts; every retry is counted under `operation`.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        operation: &'static str,
        mut call: F,
    ) -> Result<T, SdkError<E, HttpResponse>>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(e) if attempt < self.max_attempts.max(1) && is_retryable(&e) => {
                    let delay = self.delay(attempt - 1);
                    metrics::counter!(RETRIES_METRIC, "operation" => operation).increment(1);
                    tracing::warn!(
                        operation,
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        error = %describe(&e),
                        "retrying Route 53 / CloudWatch call"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Throttling, PriorRequestNotComplete, 5xx, timeouts and connection failures.
fn is_retryable<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(f) => f.is_io() || f.is_timeout(),
        SdkError::ResponseError(r) => r.raw().status().is_server_error(),
        SdkError::ServiceError(s) => {
            s.err().code().is_some_and(|c| RETRYABLE_CODES.contains(&c)) || {
                let status = s.raw().status();
                status.is_server_error() || status.as_u16() == 429
            }
        }
        _ => false,
    }
}

/// "Code: message" for service errors (InvalidChangeBatch's list of messages included);
/// otherwise the error with its sources, because the SDK's own text ("dispatch failure") hides
/// the cause in them, followed by its Debug form.
pub(crate) fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err.code() {
        Some(code) => {
            let mut text = format!("{code}: {}", err.message().unwrap_or("(no message)"));
            use route53::operation::change_resource_record_sets::ChangeResourceRecordSetsError as Crrs;
            if let SdkError::ServiceError(s) = err {
                let any: &(dyn std::error::Error + 'static) = s.err();
                if let Some(Crrs::InvalidChangeBatch(batch)) = any.downcast_ref::<Crrs>() {
                    for m in batch.messages() {
                        text.push_str("; ");
                        text.push_str(m);
                    }
                }
            }
            text
        }
        // The Debug form stays after the chain: it holds what the SDK could not parse, such as
        // Route 53's legacy <InvalidChangeBatch> body (smithy-lang/smithy-rs#143), where the
        // chain alone reads "service error: unhandled error: Error".
        None => format!("{} ({err:?})", vantage_runtime::errors::chain(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        };
        // The first retry waits exactly the floor; later ones between half the doubling
        // ceiling and the ceiling, capped at max.
        assert_eq!(p.delay(0), Duration::from_millis(100));
        for retry in 0..40 {
            let d = p.delay(retry);
            let ceiling = (Duration::from_millis(100) * 2u32.pow(retry.min(10))).min(p.backoff.max);
            let floor = (ceiling / 2).max(p.backoff.min);
            assert!(d >= floor && d <= ceiling, "retry {retry}: {d:?}");
        }
    }

    #[test]
    fn default_policy_keeps_its_bounds() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 6);
        assert_eq!(p.delay(0), Duration::from_millis(250));
        let total: Duration = (0..p.max_attempts - 1)
            .map(|r| p.backoff.ceiling(r + 1))
            .sum();
        assert_eq!(total, Duration::from_millis(7750));
    }
}
