//! The AWS SDK configuration the backend runs on, in one place so the binary and the moto tests
//! talk to AWS the same way: HTTPS through rustls with ring (no aws-lc to build), short connect
//! and attempt timeouts so a pass is never stuck on one call, and SDK retries off because
//! `retry.rs` does every retry itself and counts it.

use std::time::Duration;

/// The SDK configuration the backend uses: credentials from the default chain, `aws_region`
/// (default us-east-1, where the Route 53 control plane lives) for both clients, an optional
/// endpoint override, HTTPS through rustls with ring, and no SDK retries (ours count them).
/// Tests add static credentials to the loader before `load()`.
pub fn sdk_loader(
    endpoint_url: Option<&str>,
    aws_region: Option<&str>,
) -> aws_config::ConfigLoader {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http_client = aws_smithy_http_client::Builder::new()
        .pool_max_idle_per_host(4)
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(
            aws_region.unwrap_or("us-east-1").to_owned(),
        ))
        .http_client(http_client)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .build(),
        );
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader
}
