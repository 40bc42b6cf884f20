//! TLS client settings for probes: webpki roots plus an optional CA bundle, ALPN by HTTP
//! version, session resumption off (every fresh probe pays the full handshake, as a new client
//! does), and an opt-in verifier that skips certificate checks but still checks the handshake
//! signature. Configurations are built once and shared by every target that uses them.

use super::spec::{HttpVersionPref, SpecError, TlsOptions};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_runtime::sync::lock;

/// Shares client configurations between targets: building one parses ~150 root certificates,
/// which is far more work than a probe.
#[derive(Default)]
pub struct TlsConfigCache {
    configs: Mutex<HashMap<ConfigKey, Arc<ClientConfig>>>,
}

/// Options and ALPN: `None` offers no ALPN protocol (TCP targets).
type ConfigKey = (TlsOptions, Option<HttpVersionPref>);

impl TlsConfigCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(
        &self,
        options: &TlsOptions,
        version: HttpVersionPref,
    ) -> Result<Arc<ClientConfig>, SpecError> {
        self.get_with_alpn(options, Some(version))
    }

    /// A configuration that offers no ALPN protocol: a `tcps://` target speaks whatever the
    /// service speaks over TLS, and offering `h2` to it would be a lie some servers reject.
    pub fn get_without_alpn(&self, options: &TlsOptions) -> Result<Arc<ClientConfig>, SpecError> {
        self.get_with_alpn(options, None)
    }

    fn get_with_alpn(
        &self,
        options: &TlsOptions,
        version: Option<HttpVersionPref>,
    ) -> Result<Arc<ClientConfig>, SpecError> {
        let key = (options.clone(), version);
        let mut configs = lock(&self.configs);
        if let Some(c) = configs.get(&key) {
            return Ok(c.clone());
        }
        let mut config = build_client_config(options, version.unwrap_or_default())?;
        if version.is_none() {
            config.alpn_protocols.clear();
        }
        let config = Arc::new(config);
        configs.insert(key, config.clone());
        Ok(config)
    }
}

/// ring's provider, every default suite offered, with AES-128-GCM ahead of AES-256-GCM (as
/// browsers and Go's crypto/tls, blackbox_exporter's, order them on AES-NI hardware). A server
/// that honours the client's order then picks TLS 1.3's SHA-256 suite rather than its SHA-384
/// one: x86-64's SHA extensions cover SHA-256 only, and the key schedule and transcript hashes
/// in SHA-384 were a tenth of a fresh handshake's client CPU (ring, measured in issue 16).
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: the order within each group stays ring's.
    provider
        .cipher_suites
        .sort_by_key(|suite| !is_aes_128_gcm(suite.suite()));
    Arc::new(provider)
}

fn is_aes_128_gcm(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite::*;
    matches!(
        suite,
        TLS13_AES_128_GCM_SHA256
            | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
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
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| SpecError::Invalid(format!("TLS setup: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RememberVerifiedChains::new(webpki)))
            .with_no_client_auth()
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
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SpecError::CaBundle {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
    if certs.is_empty() {
        return Err(SpecError::EmptyCaBundle(path.to_owned()));
    }
    Ok(certs)
}

/// How long a verified chain is trusted without verifying it again.
pub const VERIFIED_CHAIN_TTL: Duration = Duration::from_secs(300);
/// Chains remembered at most (all are forgotten when full: a fleet has few distinct chains).
const MAX_VERIFIED_CHAINS: usize = 1024;

/// A verified chain: leaf, intermediates and the server name they were verified for.
type ChainKey = (Vec<u8>, Vec<Vec<u8>>, String);

/// Full web PKI verification that remembers chains it accepted: a fresh-TLS probe every few
/// seconds of the same endpoint would otherwise pay a P-256 signature check of the chain each
/// time (a third of a probe's CPU). The handshake signature, which proves the server holds the
/// key, is still checked on every connection. A remembered chain is verified again after
/// [`VERIFIED_CHAIN_TTL`] or once its leaf expires, whichever comes first, so an expired or
/// replaced certificate is noticed; failures are never remembered.
#[derive(Debug)]
pub struct RememberVerifiedChains {
    inner: Arc<WebPkiServerVerifier>,
    /// Chain → trusted until, Unix seconds.
    verified: Mutex<HashMap<ChainKey, u64>>,
}

impl RememberVerifiedChains {
    pub fn new(inner: Arc<WebPkiServerVerifier>) -> Self {
        RememberVerifiedChains {
            inner,
            verified: Mutex::new(HashMap::new()),
        }
    }
}

impl ServerCertVerifier for RememberVerifiedChains {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = (
            end_entity.as_ref().to_vec(),
            intermediates
                .iter()
                .map(|c| c.as_ref().to_vec())
                .collect::<Vec<_>>(),
            server_name.to_str().into_owned(),
        );
        let now_secs = now.as_secs();
        {
            let verified = lock(&self.verified);
            if verified.get(&key).is_some_and(|until| now_secs < *until) {
                return Ok(ServerCertVerified::assertion());
            }
        }
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let expires = certificate_not_after(end_entity.as_ref())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let until = (now_secs + VERIFIED_CHAIN_TTL.as_secs()).min(expires);
        let mut verified = lock(&self.verified);
        if verified.len() >= MAX_VERIFIED_CHAINS {
            verified.clear();
        }
        verified.insert(key, until);
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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
    fn aes_128_gcm_is_offered_first_and_no_suite_is_dropped() {
        let ours: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let mut ring: Vec<_> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let first_tls12 = ours
            .iter()
            .find(|s| format!("{s:?}").starts_with("TLS_ECDHE"))
            .copied();
        assert_eq!(
            first_tls12,
            Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
        );
        let mut sorted = ours.clone();
        sorted.sort_by_key(|s| u16::from(*s));
        ring.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted, ring);
        let config = build_client_config(&TlsOptions::default(), HttpVersionPref::Auto).unwrap();
        assert_eq!(
            config.crypto_provider().cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
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
    fn verified_chains_are_remembered_until_the_ttl_or_the_leaf_expires() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let day = Duration::from_secs(86_400);
        let start = SystemTime::now();
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.not_before = (start - day).into();
        ca.not_after = (start + 30 * day).into();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = CertificateParams::new(vec!["api.test".to_owned()]).unwrap();
        leaf.not_before = (start - day).into();
        // Expires in ten minutes: longer than the TTL, so both limits can be seen.
        leaf.not_after = (start + Duration::from_secs(600)).into();
        let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap();

        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        let v = RememberVerifiedChains::new(webpki);
        let name = ServerName::try_from("api.test").unwrap();
        let other = ServerName::try_from("other.test").unwrap();
        let at = |offset: u64| {
            UnixTime::since_unix_epoch(
                start.duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(offset),
            )
        };
        let check = |n: &ServerName<'_>, t| v.verify_server_cert(leaf.der(), &[], n, &[], t);
        assert!(check(&name, at(0)).is_ok());
        assert_eq!(v.verified.lock().unwrap().len(), 1);
        assert!(check(&name, at(299)).is_ok(), "remembered within the TTL");
        // Another name with the same chain is verified on its own, and fails.
        assert!(check(&other, at(1)).is_err());
        assert_eq!(
            v.verified.lock().unwrap().len(),
            1,
            "failures are not remembered"
        );
        // After the TTL the chain is verified again (still valid), and once the leaf has
        // expired the remembered entry no longer counts.
        assert!(check(&name, at(301)).is_ok());
        assert!(matches!(
            check(&name, at(601)),
            Err(rustls::Error::InvalidCertificate(_))
        ));
    }

    #[test]
    fn days_until_is_signed() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(days_until(now + Duration::from_secs(86_400 * 2), now), 2.0);
        assert_eq!(days_until(now - Duration::from_secs(43_200), now), -0.5);
    }
}
