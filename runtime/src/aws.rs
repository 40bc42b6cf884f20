//! The AWS SDK's configuration, one way for every vantage process: rustls on ring (the crypto
//! provider the rest of vantage uses, so no second TLS stack is linked), the SDK's own retries
//! off (each caller retries with [`crate::backoff::Backoff`] and its own budget: a failover must
//! not wait out the SDK's retry schedule), and explicit connect and per-attempt timeouts.

use std::time::Duration;

/// How one set of clients talks to AWS.
#[derive(Debug, Clone, Copy)]
pub struct SdkOptions<'a> {
    pub region: &'a str,
    /// Another endpoint than AWS's (moto in tests, a VPC endpoint).
    pub endpoint_url: Option<&'a str>,
    pub connect_timeout: Duration,
    /// The bound of one attempt of one call.
    pub attempt_timeout: Duration,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
}

/// The loader for `options`; callers may add to it (tests set credentials) before `load()`.
pub fn sdk_loader(options: SdkOptions<'_>) -> aws_config::ConfigLoader {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http_client = aws_smithy_http_client::Builder::new()
        .pool_max_idle_per_host(options.max_idle_per_host)
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(options.region.to_owned()))
        .http_client(http_client)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(options.connect_timeout)
                .operation_attempt_timeout(options.attempt_timeout)
                .build(),
        );
    if let Some(url) = options.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader
}
