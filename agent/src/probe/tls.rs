//! TLS client settings for probes: webpki roots plus an optional CA bundle, ALPN by HTTP
//! version, session resumption off (every fresh probe pays the full handshake, as a new client
//! does), and an opt-in verifier that skips certificate checks but still checks the handshake
//! signature. Configurations are built once and shared by every target that uses them.

use super::spec::{HttpVersionPref, SpecError, TlsOptions};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shares client configurations between targets: building one parses ~150 root certificates,
/// which is far more work than a probe.
#[derive(Default)]
pub struct TlsConfigCache {
    configs: Mutex<HashMap<(TlsOptions, HttpVersionPref), Arc<ClientConfig>>>,
}

impl TlsConfigCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(
        &self,
        options: &TlsOptions,
        version: HttpVersionPref,
    ) -> Result<Arc<ClientConfig>, SpecError> {
        let key = (options.clone(), version);
        let mut configs = self.configs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = configs.get(&key) {
            return Ok(c.clone());
        }
        let config = Arc::new(build_client_config(options, version)?);
        configs.insert(key, config.clone());
        Ok(config)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a probe client configuration.
pub fn build_client_config(
    options: &TlsOptions,
    version: HttpVersionPref,
) -> Result<ClientConfig, SpecError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SpecError::Invalid(format!("TLS setup: {e}")))?;
    let mut config = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipCertificateChecks(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &options.ca_file {
            for cert in read_pem_certificates(path)? {
                roots.add(cert).map_err(|e| SpecError::CaCertificate {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.resumption = Resumption::disabled();
    config.alpn_protocols = match version {
        HttpVersionPref::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        HttpVersionPref::Http1 => vec![b"http/1.1".to_vec()],
        HttpVersionPref::Http2 => vec![b"h2".to_vec()],
    };
    Ok(config)
}

fn read_pem_certificates(
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, SpecError> {
    let bytes = std::fs::read(path).map_err(|source| SpecError::CaBundle {
        path: path.to_owned(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| SpecError::CaBundle {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(SpecError::EmptyCaBundle(path.to_owned()));
    }
    Ok(certs)
}

/// `insecure`: accepts any certificate chain and name, but still verifies that the server holds
/// the key of the certificate it sent, so the handshake is real.
#[derive(Debug)]
pub struct SkipCertificateChecks(Arc<CryptoProvider>);

impl SkipCertificateChecks {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        SkipCertificateChecks(provider)
    }
}

impl ServerCertVerifier for SkipCertificateChecks {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The leaf certificate's notAfter, or None if it cannot be parsed.
pub fn certificate_not_after(der: &[u8]) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let secs = cert.validity().not_after.timestamp();
    if secs >= 0 {
        Some(UNIX_EPOCH + Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// Days from `now` until `not_after`; negative once expired.
pub fn days_until(not_after: SystemTime, now: SystemTime) -> f64 {
    match not_after.duration_since(now) {
        Ok(d) => d.as_secs_f64() / 86_400.0,
        Err(e) => -e.duration().as_secs_f64() / 86_400.0,
    }
}

/// A person-readable reason for a TLS failure, and the certificate's notAfter when the error
/// carries it (an expired certificate).
pub fn describe_tls_error(err: &rustls::Error) -> (String, Option<SystemTime>) {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            C::ExpiredContext { not_after, .. } => (
                "certificate expired".into(),
                Some(UNIX_EPOCH + Duration::from_secs(not_after.as_secs())),
            ),
            C::Expired => ("certificate expired".into(), None),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                ("certificate not valid yet".into(), None)
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                ("certificate not valid for the host name".into(), None)
            }
            C::UnknownIssuer => ("certificate issuer not trusted".into(), None),
            C::Revoked => ("certificate revoked".into(), None),
            other => (format!("invalid certificate: {other:?}"), None),
        },
        rustls::Error::AlertReceived(alert) => (format!("server sent TLS alert {alert:?}"), None),
        rustls::Error::NoApplicationProtocol => (
            "server accepted none of the offered ALPN protocols".into(),
            None,
        ),
        other => (other.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_shares_one_config_per_setting() {
        let cache = TlsConfigCache::new();
        let a = cache
            .get(&TlsOptions::default(), HttpVersionPref::Auto)
            .unwrap();
        let b = cache
            .get(&TlsOptions::default(), HttpVersionPref::Auto)
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = cache
            .get(&TlsOptions::default(), HttpVersionPref::Http1)
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn bad_ca_bundles_are_named() {
        let missing = TlsOptions {
            insecure: false,
            ca_file: Some("/nonexistent/ca.pem".into()),
        };
        assert!(matches!(
            build_client_config(&missing, HttpVersionPref::Auto),
            Err(SpecError::CaBundle { .. })
        ));
        let dir = std::env::temp_dir().join(format!("vantage-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let opts = TlsOptions {
            insecure: false,
            ca_file: Some(empty),
        };
        assert!(matches!(
            build_client_config(&opts, HttpVersionPref::Auto),
            Err(SpecError::EmptyCaBundle(_))
        ));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn days_until_is_signed() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(days_until(now + Duration::from_secs(86_400 * 2), now), 2.0);
        assert_eq!(days_until(now - Duration::from_secs(43_200), now), -0.5);
    }
}
