//! TLS for the database checks, on rustls with ring (as every other TLS client in vantage):
//! trust anchors (a CA bundle file such as the Amazon RDS global bundle, or the built-in Mozilla
//! roots), how much of the server's certificate is verified, the PostgreSQL connector
//! ([`PgConnector`], a `tokio_postgres::tls::MakeTlsConnect` over tokio-rustls), and turning a
//! failed handshake into one line an operator can act on:
//! "TLS handshake with db.example failed: certificate not valid for name …".
//!
//! MySQL's TLS is done inside mysql_async (same rustls, same ring); this module only supplies
//! its trust anchors and explains its errors.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// The crypto provider of every database TLS session: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How much of the server's certificate is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Nothing: encryption without authentication (libpq `require`, MySQL `REQUIRED`). The
    /// handshake signatures are still checked against the presented certificate.
    Nothing,
    /// The chain up to a trusted root, not the host name (`verify-ca`, `VERIFY_CA`).
    Chain,
    /// The chain and the host name (`verify-full`, `VERIFY_IDENTITY`).
    Full,
}

/// Trust anchors for verifying a server certificate.
#[derive(Clone)]
pub struct Trust {
    pub store: Arc<RootCertStore>,
    /// The CA bundle as read (PEM), when it came from a file.
    pub pem: Option<Vec<u8>>,
    /// For messages: "the CAs in <file>" or "the built-in Mozilla roots".
    pub source: String,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Trust({}, {} roots)", self.source, self.store.len())
    }
}

impl Trust {
    /// The Mozilla root program's CAs (webpki-roots). Amazon RDS certificates do not chain to
    /// these: use [`Trust::from_file`] with the RDS bundle.
    pub fn built_in() -> Trust {
        Trust {
            store: Arc::new(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
            pem: None,
            source: "the built-in Mozilla roots".to_owned(),
        }
    }

    /// Every certificate of a PEM bundle (the RDS global bundle holds one per Region and CA
    /// generation). Read once, when the check is built: a missing or empty file is a
    /// configuration error at startup, not a failing check.
    pub fn from_file(path: &Path) -> Result<Trust, String> {
        let pem = std::fs::read(path)
            .map_err(|e| format!("reading CA bundle {}: {e}", path.display()))?;
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
            store
                .add(cert)
                .map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
        }
        if store.is_empty() {
            return Err(format!(
                "CA bundle {} holds no PEM certificate",
                path.display()
            ));
        }
        Ok(Trust {
            store: Arc::new(store),
            pem: Some(pem),
            source: format!("the CAs in {}", path.display()),
        })
    }
}

/// A rustls client configuration (ring, TLS 1.2 and 1.3) verifying `verify` of the server's
/// certificate against `trust`, offering `alpn`.
pub fn client_config(
    verify: Verify,
    trust: &Trust,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Nothing => Arc::new(vantage_probe::tls::SkipCertificateChecks::new(Arc::clone(
            &provider,
        ))),
        Verify::Chain | Verify::Full => {
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::clone(&trust.store),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| format!("trust anchors from {}: {e}", trust.source))?;
            if verify == Verify::Full {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Full WebPKI verification, except that a certificate for another name passes. webpki checks
/// the chain before the name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// What an established TLS session negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// "TLS 1.3", or the server's own name for it ("TLSv1.3").
    pub version: String,
    pub cipher: Option<String>,
}

impl Session {
    fn of(conn: &rustls::ClientConnection) -> Session {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => "TLS".to_owned(),
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()));
        Session { version, cipher }
    }
}

/// How a database connection is carried: what the health answer tells authorised callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tls(Session),
    /// Plaintext, and why.
    Plain(String),
}

impl Transport {
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// "TLS 1.3 (TLS13_AES_256_GCM_SHA384), sslmode=verify-full" or
    /// "no TLS, sslmode=prefer: the server does not offer TLS".
    pub fn describe(&self, mode: &str) -> String {
        match self {
            Transport::Tls(Session {
                version,
                cipher: Some(cipher),
            }) => format!("{version} ({cipher}), {mode}"),
            Transport::Tls(Session { version, .. }) => format!("{version}, {mode}"),
            Transport::Plain(why) => format!("no TLS, {mode}: {why}"),
        }
    }
}

/// A failed TLS handshake, described for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeError {
    pub host: String,
    pub detail: String,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TLS handshake with {} failed: {}",
            self.host, self.detail
        )
    }
}

impl StdError for HandshakeError {}

/// Why a handshake failed, from rustls' error: which certificate check failed and, for an
/// untrusted issuer, what was trusted and which URL parameter names the CA bundle.
pub fn describe_rustls(e: &rustls::Error, trust: &str, ca_param: &str) -> String {
    use rustls::Error as E;
    use CertificateError as C;
    let invalid = |what: &str| format!("certificate {what}");
    match e {
        E::InvalidCertificate(C::UnknownIssuer) => format!(
            "certificate not trusted: its issuer is not among {trust} \
             (name the server's CA bundle with {ca_param}=<path>)"
        ),
        E::InvalidCertificate(C::BadSignature) => invalid("has a bad signature"),
        E::InvalidCertificate(C::Expired) => invalid("expired"),
        E::InvalidCertificate(C::NotValidYet) => invalid("not valid yet"),
        E::InvalidCertificate(C::Revoked) => invalid("revoked"),
        E::InvalidCertificate(C::BadEncoding) => invalid("is malformed"),
        E::InvalidCertificate(C::NotValidForName) => invalid("not valid for this host name"),
        E::InvalidCertificate(C::InvalidPurpose) => invalid("not issued for TLS servers"),
        // The rest render well: "certificate not valid for name \"db\"; certificate is only
        // valid for …", "certificate expired: verification time …".
        E::InvalidCertificate(other) => other.to_string(),
        E::AlertReceived(rustls::AlertDescription::ProtocolVersion) => {
            "no TLS version in common: the server refused TLS 1.2 and 1.3 (protocol_version alert)"
                .to_owned()
        }
        E::AlertReceived(rustls::AlertDescription::HandshakeFailure) => {
            "the server refused the handshake: no cipher suite or signature scheme in common \
             (handshake_failure alert)"
                .to_owned()
        }
        E::AlertReceived(alert) => format!("the server refused the handshake ({alert:?} alert)"),
        other => other.to_string(),
    }
}

/// Describes an I/O error from a TLS handshake: rustls' verdict if there is one inside.
pub fn describe_io(e: &io::Error, trust: &str, ca_param: &str) -> String {
    if let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return describe_rustls(r, trust, ca_param);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "the server closed the connection".to_owned(),
        _ => e.to_string(),
    }
}

/// The first error of type `T` in `e`'s chain of sources, looking inside `io::Error`s (whose
/// `source()` skips the error they wrap).
pub fn find_in_chain<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if let Some(t) = find_in_chain::<T>(inner) {
                return Some(t);
            }
        }
        next = e.source();
    }
    None
}

pub use vantage_runtime::errors::chain;

/// The query parameters of `url` named in `keys` (percent-decoded, in order), and the URL
/// without them; every other parameter is left exactly as written.
pub fn take_params(url: &str, keys: &[&str]) -> (String, Vec<(String, String)>) {
    let (head, fragment) = match url.split_once('#') {
        Some((h, f)) => (h, Some(f)),
        None => (url, None),
    };
    let Some((base, query)) = head.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k);
        if keys.contains(&key.as_str()) {
            taken.push((key, percent_decode(v)));
        } else {
            kept.push(pair);
        }
    }
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    (out, taken)
}

/// `%XX` escapes decoded (not `+`: libpq and mysql_async keep it as a plus).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// PostgreSQL's TLS connector: tokio-rustls with our client configuration, recording the
/// negotiated session (so the check can say whether the connection is encrypted) and
/// describing handshake failures with the host name.
#[derive(Clone)]
pub struct PgConnector {
    config: Arc<ClientConfig>,
    trust: Arc<str>,
    /// Set by a completed handshake; reset for every connection attempt.
    session: Arc<Mutex<Option<Session>>>,
}

impl PgConnector {
    pub fn new(config: Arc<ClientConfig>, trust: &str) -> Self {
        PgConnector {
            config,
            trust: trust.into(),
            session: Arc::new(Mutex::new(None)),
        }
    }

    /// The session of the last connection attempt, if it completed a TLS handshake.
    pub fn session(&self) -> Option<Session> {
        self.session.lock().ok()?.clone()
    }
}

impl<S> MakeTlsConnect<S> for PgConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = HandshakeError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PgTlsConnect, HandshakeError> {
        if let Ok(mut s) = self.session.lock() {
            *s = None;
        }
        let name = ServerName::try_from(domain.to_owned()).map_err(|e| HandshakeError {
            host: domain.to_owned(),
            detail: format!("{domain:?} is not a host name TLS can verify: {e}"),
        })?;
        Ok(PgTlsConnect {
            connector: tokio_rustls::TlsConnector::from(Arc::clone(&self.config)),
            name,
            host: domain.to_owned(),
            trust: Arc::clone(&self.trust),
            session: Arc::clone(&self.session),
        })
    }
}

/// One handshake with one host.
pub struct PgTlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    host: String,
    trust: Arc<str>,
    session: Arc<Mutex<Option<Session>>>,
}

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<PgTlsStream<S>, HandshakeError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = self
                .connector
                .connect(self.name, stream)
                .await
                .map_err(|e| HandshakeError {
                    host: self.host.clone(),
                    detail: describe_io(&e, &self.trust, "sslrootcert"),
                })?;
            if let Ok(mut s) = self.session.lock() {
                *s = Some(Session::of(tls.get_ref().1));
            }
            Ok(PgTlsStream(tls))
        })
    }
}

/// A TLS stream to PostgreSQL, with `tls-server-end-point` channel binding for
/// SCRAM-SHA-256-PLUS.
pub struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> tokio_postgres::tls::TlsStream for PgTlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn channel_binding(&self) -> ChannelBinding {
        let (_, conn) = self.0.get_ref();
        conn.peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| server_end_point(cert))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// RFC 5929 `tls-server-end-point`: the hash of the server certificate with the hash of its
/// signature algorithm (MD5 and SHA-1 upgraded to SHA-256); none for other algorithms.
fn server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest as _;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    match oid.as_str() {
        // md5/sha1/sha256 WithRSAEncryption, ecdsa-with-SHA1/SHA256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2" => Some(sha2::Sha256::digest(der).to_vec()),
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Some(sha2::Sha384::digest(der).to_vec()),
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Some(sha2::Sha512::digest(der).to_vec()),
        _ => None,
    }
}

impl<S> AsyncRead for PgTlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for PgTlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_params_removes_only_the_named_keys() {
        let (url, taken) = take_params(
            "postgres://u:p%3Fw@h:5432/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Frds.pem&connect_timeout=2",
            &["sslmode", "sslrootcert"],
        );
        assert_eq!(
            url,
            "postgres://u:p%3Fw@h:5432/db?application_name=x&connect_timeout=2"
        );
        assert_eq!(
            taken,
            [
                ("sslmode".to_owned(), "verify-full".to_owned()),
                ("sslrootcert".to_owned(), "/etc/rds.pem".to_owned())
            ]
        );
        let (url, taken) = take_params("mysql://h/db?ssl-mode=REQUIRED", &["ssl-mode"]);
        assert_eq!(url, "mysql://h/db");
        assert_eq!(taken[0].1, "REQUIRED");
        let (url, taken) = take_params("mysql://h/db", &["ssl-mode"]);
        assert_eq!((url.as_str(), taken.len()), ("mysql://h/db", 0));
    }

    #[test]
    fn chain_joins_sources_without_repeating() {
        let inner = io::Error::other("inner");
        assert_eq!(chain(&inner), "inner");
        let e = HandshakeError {
            host: "db".into(),
            detail: "x".into(),
        };
        assert_eq!(chain(&e), "TLS handshake with db failed: x");
    }

    #[test]
    fn rustls_errors_read_well() {
        let e = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let text = describe_rustls(&e, "/etc/ca.pem", "sslrootcert");
        assert!(
            text.contains("not trusted") && text.contains("/etc/ca.pem"),
            "{text}"
        );
        let io = io::Error::new(io::ErrorKind::InvalidData, e);
        assert!(describe_io(&io, "t", "ssl-ca").contains("ssl-ca=<path>"));
        assert!(find_in_chain::<rustls::Error>(&io).is_some());
    }

    #[test]
    fn built_in_roots_are_not_empty() {
        assert!(Trust::built_in().store.len() > 50);
        let e = Trust::from_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
