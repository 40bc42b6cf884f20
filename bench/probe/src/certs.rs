//! A throwaway CA and an ECDSA P-256 leaf for the loopback servers.

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub struct Certs {
    pub ca_pem: PathBuf,
    pub ca_der: Vec<u8>,
    pub leaf_pem: PathBuf,
    pub leaf_key: PathBuf,
    pub leaf_der: Vec<u8>,
    pub leaf_key_der: Vec<u8>,
}

/// Writes ca.pem, leaf.pem and leaf.key into `dir`; the leaf names `localhost` and every
/// address in `ips` (IP SANs, so no side does DNS).
pub fn generate(dir: &Path, ips: &[String]) -> anyhow::Result<Certs> {
    const DAY: Duration = Duration::from_secs(86_400);
    let now = SystemTime::now();

    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "vantage bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = (now - DAY).into();
    ca.not_after = (now + 30 * DAY).into();
    let ca_cert = ca.self_signed(&ca_key).context("CA certificate")?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut names = vec!["localhost".to_owned()];
    names.extend(ips.iter().cloned());
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = (now - DAY).into();
    leaf.not_after = (now + 30 * DAY).into();
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .context("leaf certificate")?;

    let certs = Certs {
        ca_pem: dir.join("ca.pem"),
        ca_der: ca_cert.der().to_vec(),
        leaf_pem: dir.join("leaf.pem"),
        leaf_key: dir.join("leaf.key"),
        leaf_der: leaf_cert.der().to_vec(),
        leaf_key_der: leaf_key.serialize_der(),
    };
    std::fs::write(&certs.ca_pem, ca_cert.pem())?;
    std::fs::write(&certs.leaf_pem, leaf_cert.pem())?;
    std::fs::write(&certs.leaf_key, leaf_key.serialize_pem())?;
    Ok(certs)
}
