//! A throwaway certificate authority for tests (rcgen, P-256): its certificate written as PEM
//! to a temporary directory of its own (removed on drop) for clients to trust, leaves in memory
//! for the fake servers' rustls configurations, and server certificates written as PEM files
//! for the real servers (PostgreSQL, MariaDB) that read them from disk.

use crate::dirs::{shared_temp_dir, TempDir};
use crate::error::{io, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const DAY: Duration = Duration::from_secs(86_400);

/// A certificate authority of its own. Each has a distinct name, so two test CAs are never
/// mistaken for one another by a verifier that looks issuers up by name.
pub struct TestCa {
    dir: TempDir,
    ca_file: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A CA valid from yesterday for a year. Panics only if the machine cannot generate a key
    /// or write a temp file, which no test could recover from.
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("vantage test CA {}-{n}", std::process::id()),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - DAY).into();
        params.not_after = (now + 365 * DAY).into();
        let cert = params.self_signed(&key).expect("CA certificate");
        // Traversable by others: servers running as `nobody` read certificates from here.
        let dir = shared_temp_dir("ca").expect("CA temp dir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, cert.pem()).expect("write CA PEM");
        TestCa {
            dir,
            ca_file,
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM: what `--cacert`, `sslrootcert=` and `ssl-ca=` name.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A P-256 leaf signed by this CA for `names` (DNS names or IP literals).
    pub fn leaf(&self, names: &[&str], not_before: SystemTime, not_after: SystemTime) -> Leaf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let cert = self
            .sign(&key, names, not_before, not_after)
            .expect("leaf certificate");
        Leaf {
            cert: cert.der().clone(),
            key: key.serialize_der(),
            not_after,
        }
    }

    fn sign(
        &self,
        key: &KeyPair,
        names: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<rcgen::Certificate> {
        self.sign_for(
            key,
            names,
            not_before,
            not_after,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn sign_for(
        &self,
        key: &KeyPair,
        names: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<rcgen::Certificate> {
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        Ok(params.signed_by(key, &self.issuer)?)
    }

    /// Valid for `localhost` and `127.0.0.1`, from yesterday for 30 days.
    pub fn valid_leaf(&self) -> Leaf {
        let now = SystemTime::now();
        self.leaf(&["localhost", "127.0.0.1"], now - DAY, now + 30 * DAY)
    }

    /// Right names, but its notAfter was yesterday.
    pub fn expired_leaf(&self) -> Leaf {
        let now = SystemTime::now();
        self.leaf(&["localhost", "127.0.0.1"], now - 30 * DAY, now - DAY)
    }

    /// Currently valid, but only for `other.example`.
    pub fn wrong_host_leaf(&self) -> Leaf {
        let now = SystemTime::now();
        self.leaf(&["other.example"], now - DAY, now + 30 * DAY)
    }

    /// A server certificate for `names`, valid from yesterday for 30 days, written as
    /// `<tag>.crt` / `<tag>.key` (PEM) beside the CA.
    pub fn server_cert(&self, tag: &str, names: &[&str]) -> Result<ServerCert> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = SystemTime::now();
        let cert = self.sign(&key, names, now - DAY, now + 30 * DAY)?;
        let out = ServerCert {
            cert: self.dir.path().join(format!("{tag}.crt")),
            key: self.dir.path().join(format!("{tag}.key")),
        };
        std::fs::write(&out.cert, cert.pem()).map_err(io("writing a test certificate"))?;
        std::fs::write(&out.key, key.serialize_pem()).map_err(io("writing a test key"))?;
        Ok(out)
    }
}

impl TestCa {
    /// A client certificate (extended key usage clientAuth) named `tag`, valid from yesterday
    /// for 30 days, written as `<tag>.crt` / `<tag>.key` (PEM) beside the CA: what an agent
    /// presents to an aggregator that requires mTLS.
    pub fn client_cert(&self, tag: &str) -> Result<ServerCert> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = SystemTime::now();
        let cert = self.sign_for(
            &key,
            &[tag],
            now - DAY,
            now + 30 * DAY,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let out = ServerCert {
            cert: self.dir.path().join(format!("{tag}.crt")),
            key: self.dir.path().join(format!("{tag}.key")),
        };
        std::fs::write(&out.cert, cert.pem()).map_err(io("writing a test certificate"))?;
        std::fs::write(&out.key, key.serialize_pem()).map_err(io("writing a test key"))?;
        Ok(out)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A server certificate and its key, as PEM files.
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A server certificate and its key, in memory.
#[derive(Clone)]
pub struct Leaf {
    pub cert: CertificateDer<'static>,
    key: Vec<u8>,
    /// notAfter as requested (the certificate holds it to the second).
    pub not_after: SystemTime,
}

impl Leaf {
    /// `tls12_only` pins the server to TLS 1.2; otherwise it speaks 1.2 and 1.3.
    pub fn server_config(&self, alpn: &[Vec<u8>], tls12_only: bool) -> ServerConfig {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider);
        let builder = if tls12_only {
            builder.with_protocol_versions(&[&rustls::version::TLS12])
        } else {
            builder.with_safe_default_protocol_versions()
        };
        let mut config = builder
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .expect("server certificate");
        config.alpn_protocols = alpn.to_vec();
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_certificates_are_written_beside_the_ca_and_removed_with_it() {
        let ca = TestCa::new();
        let cert = ca.server_cert("db", &["localhost", "127.0.0.1"]).unwrap();
        let pem = std::fs::read_to_string(&cert.cert).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        assert!(std::fs::read_to_string(&cert.key)
            .unwrap()
            .contains("PRIVATE KEY"));
        let dir = ca.ca_file().parent().unwrap().to_owned();
        drop(ca);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn two_cas_have_different_names() {
        let (a, b) = (TestCa::new(), TestCa::new());
        let (a, b) = (
            std::fs::read(a.ca_file()).unwrap(),
            std::fs::read(b.ca_file()).unwrap(),
        );
        assert_ne!(a, b);
    }
}
