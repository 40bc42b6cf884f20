//! Server TLS through the shared server loop, with rcgen certificates: a valid chain, an
//! expired server certificate, a client trusting another CA, mTLS with and without a client
//! certificate, and a certificate replaced on disk while the server runs.

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use vantage_runtime::http_server::{serve, Limits};
use vantage_runtime::tls_server::{ServerTls, TlsFiles};

const DAY: Duration = Duration::from_secs(86_400);

struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

fn leaf(ca: &Ca, client: bool, not_after: SystemTime) -> Leaf {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "leaf");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    params.not_before = (SystemTime::now() - 30 * DAY).into();
    params.not_after = not_after.into();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

fn valid(ca: &Ca, client: bool) -> Leaf {
    leaf(ca, client, SystemTime::now() + 30 * DAY)
}

fn write_pair(dir: &Path, leaf: &Leaf) -> TlsFiles {
    let files = TlsFiles {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
        client_ca_file: None,
    };
    std::fs::write(&files.cert_file, &leaf.cert_pem).unwrap();
    std::fs::write(&files.key_file, &leaf.key_pem).unwrap();
    files
}

async fn start(tls: &ServerTls) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let make = |_peer| {
        service_fn(|_request| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        })
    };
    let acceptor = tls.acceptor();
    tokio::spawn(async move {
        serve(
            listener,
            make,
            Limits::API,
            Some(acceptor),
            std::future::pending(),
        )
        .await
        .unwrap()
    });
    addr
}

fn client(trust: &Ca, identity: Option<&Leaf>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(trust.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(l) => builder
            .with_client_auth_cert(
                vec![l.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(l.key_der.clone())),
            )
            .unwrap(),
    };
    // Every connection does a full handshake, so it shows the certificate served now.
    let mut config = config;
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// A GET over TLS: the server certificate seen and the answer, or the error that stopped it.
async fn get(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> Result<(CertificateDer<'static>, String), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let seen = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    // With TLS 1.3 a refused client certificate surfaces on the first read.
    tls.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).to_string();
    if text.is_empty() {
        return Err("closed without an answer".into());
    }
    Ok((seen, text))
}

#[tokio::test]
async fn a_valid_chain_is_served_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("vantage test CA");
    let other = ca_named_other();
    let good = valid(&ca, false);
    let tls = ServerTls::load(write_pair(dir.path(), &good)).unwrap();
    let addr = start(&tls).await;

    let (seen, answer) = get(addr, &client(&ca, None)).await.unwrap();
    assert_eq!(seen, good.der);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A client that trusts another CA refuses the server.
    let refused = get(addr, &client(&other, None)).await.unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    // An expired server certificate is refused by the client.
    let dir2 = tempfile::tempdir().unwrap();
    let expired = leaf(&ca, false, SystemTime::now() - DAY);
    let tls = ServerTls::load(write_pair(dir2.path(), &expired)).unwrap();
    let addr = start(&tls).await;
    let refused = get(addr, &client(&ca, None)).await.unwrap_err();
    assert!(refused.contains("certificate expired"), "{refused}");
}

fn ca_named_other() -> Ca {
    new_ca("some other CA")
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_its_certificates_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("vantage test CA");
    let agents = new_ca("agents CA");
    let other = ca_named_other();
    let mut files = write_pair(dir.path(), &valid(&ca, false));
    let agents_file = dir.path().join("agents-ca.pem");
    std::fs::write(&agents_file, &agents.pem).unwrap();
    files.client_ca_file = Some(agents_file);
    let tls = ServerTls::load(files).unwrap();
    let addr = start(&tls).await;

    let agent = valid(&agents, true);
    let (_, answer) = get(addr, &client(&ca, Some(&agent))).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let refused = get(addr, &client(&ca, None)).await.unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    let stranger = valid(&other, true);
    let refused = get(addr, &client(&ca, Some(&stranger))).await.unwrap_err();
    assert!(refused.contains("UnknownCA"), "{refused}");
}

#[tokio::test]
async fn a_changed_certificate_is_served_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("vantage test CA");
    let first = valid(&ca, false);
    let files = write_pair(dir.path(), &first);
    let tls = ServerTls::load(files.clone()).unwrap();
    let addr = start(&tls).await;
    let (_hangup, hangups) = tokio::sync::watch::channel(0u64);
    tokio::spawn(
        tls.clone()
            .watch(hangups, Duration::from_millis(50), std::future::pending()),
    );
    let connector = client(&ca, None);
    assert_eq!(get(addr, &connector).await.unwrap().0, first.der);

    // mtimes have at least 10 ms resolution on every filesystem we run on.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = valid(&ca, false);
    write_pair(dir.path(), &second);
    let mut seen = first.der.clone();
    for _ in 0..100 {
        seen = get(addr, &connector).await.unwrap().0;
        if seen == second.der {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, second.der, "the new certificate is served");

    // A key that does not belong to the certificate: the reload fails, the old pair stays.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let third = valid(&ca, false);
    std::fs::write(&files.cert_file, &third.cert_pem).unwrap();
    assert!(tls.reload().is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(addr, &connector).await.unwrap().0, second.der);
}
