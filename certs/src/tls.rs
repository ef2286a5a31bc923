//! TLS material for the escrow HTTPS endpoint and agents: ECDSA P-256 via rcgen + aws-lc-rs, and
//! PEM loading through rustls-pki-types (not the unmaintained rustls-pemfile).

use std::path::Path;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::error::CertError;
use crate::generate::{check_common_name, gen_err, random_serial, validity};
use crate::source::{check_certificate_der, looks_like_pem, pem_sections, read_file};

/// A generated TLS certificate and its ECDSA P-256 key.
pub struct GeneratedTlsCert {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pkcs8_der: Zeroizing<Vec<u8>>,
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for GeneratedTlsCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedTlsCert")
            .field("sha256", &crate::sha256_fingerprint_hex(&self.cert_der))
            .finish_non_exhaustive()
    }
}

fn sign(mut params: CertificateParams, validity_days: u32) -> Result<GeneratedTlsCert, CertError> {
    let (not_before, not_after) = validity(validity_days)?;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| gen_err(format!("ECDSA P-256 key generation failed: {e}")))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| gen_err(format!("cannot sign the certificate: {e}")))?;
    Ok(GeneratedTlsCert {
        cert_der: cert.der().to_vec(),
        cert_pem: cert.pem(),
        key_pkcs8_der: Zeroizing::new(key.serialize_der()),
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

/// Self-signed server certificate; `subject_alt_names` may be DNS names or IP literals. The first
/// name is also the subject CN.
pub fn generate_tls_server_certificate(
    subject_alt_names: &[String],
    validity_days: u32,
) -> Result<GeneratedTlsCert, CertError> {
    let first = subject_alt_names
        .first()
        .ok_or_else(|| CertError::InvalidParameter {
            what: "subject alternative names".into(),
            reason: "give at least one DNS name or IP address".into(),
        })?;
    check_common_name(first)?;
    for name in subject_alt_names {
        if name.parse::<std::net::IpAddr>().is_err() && !is_dns_name(name) {
            return Err(CertError::InvalidParameter {
                what: "subject alternative names".into(),
                reason: format!("{name:?} is neither a DNS name nor an IP address"),
            });
        }
    }
    let mut params = CertificateParams::new(subject_alt_names.to_vec()).map_err(|e| {
        CertError::InvalidParameter {
            what: "subject alternative names".into(),
            reason: format!("{e} (names must be DNS names or IP addresses)"),
        }
    })?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, first.as_str());
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign(params, validity_days)
}

/// The names a server certificate answers to, as [`generate_tls_server_certificate`] takes them:
/// its DNS names and IP addresses (text), and whether it signed itself (issuer = subject), which
/// is what tells a certificate this appliance generated from one a CA issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCertNames {
    pub names: Vec<String>,
    pub self_signed: bool,
}

/// Reads the subject alternative names of a DER certificate.
pub fn server_certificate_names(cert_der: &[u8]) -> Result<ServerCertNames, CertError> {
    use x509_parser::extensions::GeneralName;
    let path = crate::error::in_memory();
    let cert = crate::identity::parse_cert(cert_der, &path)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::InvalidCertificate {
            path: path.clone(),
            reason: format!("subject alternative names: {e}"),
        })?;
    let mut names = Vec::new();
    for n in san
        .map(|s| s.value.general_names.iter())
        .into_iter()
        .flatten()
    {
        match n {
            GeneralName::DNSName(d) => names.push((*d).to_owned()),
            GeneralName::IPAddress(b) => {
                if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                    names.push(std::net::Ipv4Addr::from(v4).to_string());
                } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                    names.push(std::net::Ipv6Addr::from(v6).to_string());
                }
            }
            _ => {}
        }
    }
    Ok(ServerCertNames {
        names,
        self_signed: cert.issuer() == cert.subject(),
    })
}

/// A DNS name as clients will match it: labels of letters, digits and '-', optionally a leading "*.".
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Self-signed client certificate (EKU clientAuth) for an escrow agent.
pub fn generate_client_certificate(
    common_name: &str,
    validity_days: u32,
) -> Result<GeneratedTlsCert, CertError> {
    check_common_name(common_name)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(params, validity_days)
}

/// All certificates of a PEM file (leaf first, as written). A DER file yields its one certificate.
pub fn load_certificate_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = read_file(path)?;
    if !looks_like_pem(&bytes) {
        check_certificate_der(&bytes, path).map_err(|_| CertError::NoCertificate {
            path: path.to_path_buf(),
        })?;
        return Ok(vec![CertificateDer::from(bytes.to_vec())]);
    }
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let cert = item.map_err(|e| CertError::InvalidCertificate {
            path: path.to_path_buf(),
            reason: format!("malformed PEM: {e}"),
        })?;
        check_certificate_der(&cert, path)?;
        chain.push(cert);
    }
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1), or a PKCS#8 DER file.
/// Permissions are not checked here; call [`crate::check_private_key_permissions`] first.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let bytes = read_file(path)?;
    if !looks_like_pem(&bytes) {
        return match crate::der::read_tlv(&bytes) {
            Some((t, rest)) if t.tag == crate::der::TAG_SEQUENCE && rest.is_empty() => Ok(
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes.to_vec())),
            ),
            _ => Err(CertError::NoPrivateKey {
                path: path.to_path_buf(),
            }),
        };
    }
    for (kind, der) in pem_sections(&bytes, path)? {
        if matches!(
            kind,
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
        ) {
            return PrivateKeyDer::from_pem(kind, der.to_vec()).ok_or_else(|| {
                CertError::NoPrivateKey {
                    path: path.to_path_buf(),
                }
            });
        }
    }
    Err(CertError::NoPrivateKey {
        path: path.to_path_buf(),
    })
}
