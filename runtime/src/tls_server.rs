//! Server-side TLS for [`crate::http_server`]: a rustls configuration (ring, TLS 1.2 and 1.3,
//! ALPN h2 and http/1.1) whose certificate and key come from PEM files and can be replaced
//! while connections are served. [`ServerTls::watch`] reloads them on SIGHUP (the process's one
//! count, [`crate::reload`]) and whenever a
//! file's modification time changes; a reload that fails (unreadable, half-written, key not
//! matching the certificate) keeps the certificate in use and logs why. With a client CA,
//! every client must present a certificate signed by it (mTLS) or the handshake is refused.

use crate::reload::ReloadTrigger;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

/// How often [`ServerTls::watch`] looks at the files' modification times by default.
pub const RELOAD_POLL: Duration = Duration::from_secs(5);

/// Where the server's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs (PEM).
    pub client_ca_file: Option<PathBuf>,
}

/// Loading the TLS material failed; names the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsLoadError {
    #[error("TLS: reading {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("TLS: {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS: the key in {key} cannot be used with the certificate in {cert}: {source}")]
    Key {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS: client CA {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS: building the server configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The server configuration and the certificate slot behind it.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    config: Arc<ServerConfig>,
    current: Arc<Current>,
}

impl ServerTls {
    /// Reads the certificate, key and (if given) client CA; fails on anything unusable.
    pub fn load(files: TlsFiles) -> Result<Self, TlsLoadError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = read_certified_key(&files.cert_file, &files.key_file, &provider)?;
        let current = Arc::new(Current {
            key: RwLock::new(Arc::new(key)),
        });
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsLoadError::Config)?;
        let builder = match &files.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let ca_err = |reason: String| TlsLoadError::ClientCa {
                    path: path.clone(),
                    reason,
                };
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| ca_err(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            files,
            config: Arc::new(config),
            current,
        })
    }

    /// The acceptor for [`crate::http_server::serve`]; it always presents the current pair.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// Rereads the certificate and key; on failure the pair in use stays.
    pub fn reload(&self) -> Result<(), TlsLoadError> {
        let key = read_certified_key(
            &self.files.cert_file,
            &self.files.key_file,
            self.config.crypto_provider(),
        )?;
        *self.current.key.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Reloads on every SIGHUP counted by `hangups` (see [`crate::reload::hangup_count`]) and
    /// when the certificate's or key's modification time changes (looked at every `poll`),
    /// until `shutdown` resolves.
    pub async fn watch(
        self,
        hangups: tokio::sync::watch::Receiver<u64>,
        poll: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let files = vec![self.files.cert_file.clone(), self.files.key_file.clone()];
        let mut trigger = ReloadTrigger::new(hangups).watching(files, poll);
        tokio::pin!(shutdown);
        loop {
            let why = tokio::select! {
                () = &mut shutdown => return,
                why = trigger.next() => why,
            };
            match self.reload() {
                Ok(()) => {
                    tracing::info!(cert = %self.files.cert_file.display(), %why, "TLS certificate reloaded")
                }
                Err(e) => {
                    tracing::warn!(error = %e, %why, "TLS reload failed; keeping the certificate in use")
                }
            }
        }
    }
}

/// The pair presented to every new handshake.
#[derive(Debug)]
struct Current {
    key: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    let read_err = |reason: String| TlsLoadError::Read {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsLoadError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A PEM certificate chain and its PEM private key as one signing identity, checked to belong
/// together: the server's pair here, and the agent's client certificate for mTLS. Errors name
/// the files, never the key's bytes.
pub fn read_certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsLoadError> {
    let chain = read_certs(cert_file)?;
    // The key's own parse error could quote key material; only the file is named.
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|_| TlsLoadError::Read {
        path: key_file.to_owned(),
        reason: "no readable PEM private key".into(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsLoadError::Key {
        cert: cert_file.to_owned(),
        key: key_file.to_owned(),
        source,
    })
}
