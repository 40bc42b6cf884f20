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
    vantage_runtime::aws::sdk_loader(vantage_runtime::aws::SdkOptions {
        region: aws_region.unwrap_or("us-east-1"),
        endpoint_url,
        connect_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(10),
        max_idle_per_host: 4,
    })
}
