//! The pusher's HTTP(S) client: one long-lived, pooled hyper client for the aggregator, with
//! TLS set up by the probe engine's `build_client_config` (webpki roots plus an optional CA
//! file) but, unlike a probe, resuming sessions and keeping connections alive.

use super::config::{ClientCertFiles, PushConfig, PushError};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use std::sync::Arc;
use std::time::Duration;
use vantage_probe::spec::{HttpVersionPref, TlsOptions};
use vantage_probe::tls::build_client_config;
use vantage_runtime::tls_server::{read_certified_key, TlsLoadError};

pub(super) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client `config` asks for, or why it cannot be built (an unreadable CA file).
pub(super) fn build_client(config: &PushConfig) -> Result<HttpClient, PushError> {
    let options = TlsOptions {
        insecure: config.insecure,
        ca_file: config.ca_file.clone(),
    };
    let mut tls = build_client_config(&options, HttpVersionPref::Auto).map_err(PushError::Tls)?;
    // Unlike a probe, the pusher is one long-lived client: resuming sessions is what we want.
    tls.resumption = rustls::client::Resumption::default();
    if let Some(files) = &config.client_cert {
        tls.client_auth_cert_resolver = Arc::new(FixedClientCert(load_client_cert(files)?));
    }
    // The connector builder sets ALPN itself and refuses a config that already has it.
    tls.alpn_protocols.clear();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.request_timeout));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https))
}

/// Reads the chain and key once, at start-up, with the same loader as the aggregator's own
/// certificate: a bad file fails `check` rather than the first delivery, and the key's bytes
/// never reach an error message.
fn load_client_cert(files: &ClientCertFiles) -> Result<Arc<CertifiedKey>, PushError> {
    let provider = rustls::crypto::ring::default_provider();
    read_certified_key(&files.cert_file, &files.key_file, &provider)
        .map(Arc::new)
        .map_err(|e| match e {
            TlsLoadError::Key { cert, key, source } => PushError::ClientCert(format!(
                "the key in {} does not match the certificate in {} (or cannot sign): {source}",
                key.display(),
                cert.display()
            )),
            other => PushError::ClientCert(other.to_string()),
        })
}

/// Presents the one configured certificate whenever the aggregator asks for one.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
