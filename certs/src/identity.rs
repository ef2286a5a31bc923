//! The Network Unlock identity: certificate + RSA-2048 private key, validated and loaded once.

use std::fmt;
use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::PrivateDecryptingKey;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{CertError, in_memory};
use crate::key::{decrypting_key, rsa_pkcs8_from_bytes};
use crate::pfx;
use crate::source::{is_der_certificate, looks_like_pem, pem_certificates, read_file};
use crate::thumbprint::thumbprint;

/// A Network Unlock certificate with its RSA-2048 private key, loaded once.
pub struct UnlockIdentity {
    cert_der: Vec<u8>,
    thumbprint: [u8; 20],
    subject: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    key: PrivateDecryptingKey,
}

impl fmt::Debug for UnlockIdentity {
    // Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockIdentity")
            .field("thumbprint", &hex::encode(self.thumbprint))
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl UnlockIdentity {
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
    pub fn thumbprint(&self) -> [u8; 20] {
        self.thumbprint
    }
    pub fn thumbprint_hex(&self) -> String {
        hex::encode(self.thumbprint)
    }
    pub fn subject(&self) -> &str {
        &self.subject
    }
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
    pub fn decrypting_key(&self) -> &PrivateDecryptingKey {
        &self.key
    }

    /// Builds an identity from a DER certificate and a PKCS#8 DER RSA key; checks RSA-2048 and that
    /// the key belongs to the certificate.
    pub fn from_der_parts(cert_der: Vec<u8>, key_pkcs8_der: &[u8]) -> Result<Self, CertError> {
        build(cert_der, key_pkcs8_der, &in_memory(), &in_memory())
    }
}

/// Describes a public key for error messages and inspection ("RSA 3072-bit", "EC 256-bit").
pub(crate) fn describe_public_key(spki: &SubjectPublicKeyInfo<'_>) -> (String, Option<usize>) {
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => ("RSA".into(), Some(rsa.key_size())),
        Ok(PublicKey::EC(point)) => ("EC".into(), Some(point.key_size())),
        Ok(PublicKey::DSA(_)) => ("DSA".into(), None),
        Ok(PublicKey::GostR3410(_)) | Ok(PublicKey::GostR3410_2012(_)) => ("GOST".into(), None),
        Ok(PublicKey::Unknown(_)) | Err(_) => (spki.algorithm.algorithm.to_id_string(), None),
    }
}

/// The RSA modulus without leading zero octets, if the key is RSA-2048.
fn rsa2048_modulus(spki: &SubjectPublicKeyInfo<'_>) -> Result<Vec<u8>, String> {
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() == 2048 => Ok(strip_zeros(rsa.modulus).to_vec()),
        _ => {
            let (alg, bits) = describe_public_key(spki);
            Err(match bits {
                Some(b) => format!("an {alg} {b}-bit key"),
                None => format!("a {alg} key"),
            })
        }
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

fn build(
    cert_der: Vec<u8>,
    key_pkcs8_der: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<UnlockIdentity, CertError> {
    let (subject, not_before, not_after, cert_modulus) = {
        let cert = parse_cert(&cert_der, cert_path)?;
        let modulus =
            rsa2048_modulus(cert.public_key()).map_err(|found| CertError::NotRsa2048 {
                path: cert_path.to_path_buf(),
                found,
            })?;
        let validity = cert.validity();
        (
            cert.subject().to_string(),
            asn1_time(validity.not_before.timestamp(), cert_path)?,
            asn1_time(validity.not_after.timestamp(), cert_path)?,
            modulus,
        )
    };
    let key = decrypting_key(key_pkcs8_der, key_path)?;
    if key.key_size_bits() != 2048 {
        return Err(CertError::NotRsa2048 {
            path: key_path.to_path_buf(),
            found: format!("an RSA {}-bit private key", key.key_size_bits()),
        });
    }
    if key_modulus(&key, key_path)? != cert_modulus {
        return Err(CertError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        });
    }
    Ok(UnlockIdentity {
        thumbprint: thumbprint(&cert_der),
        cert_der,
        subject,
        not_before,
        not_after,
        key,
    })
}

pub(crate) fn parse_cert<'a>(der: &'a [u8], path: &Path) -> Result<X509Certificate<'a>, CertError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CertError::InvalidCertificate {
            path: path.to_path_buf(),
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(CertError::InvalidCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

pub(crate) fn asn1_time(ts: i64, path: &Path) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(ts).map_err(|e| CertError::InvalidCertificate {
        path: path.to_path_buf(),
        reason: format!("validity date out of range: {e}"),
    })
}

fn key_modulus(key: &PrivateDecryptingKey, key_path: &Path) -> Result<Vec<u8>, CertError> {
    let invalid = |reason: String| CertError::InvalidKey {
        path: key_path.to_path_buf(),
        reason,
    };
    let spki_der = key
        .public_key()
        .as_der()
        .map_err(|_| invalid("cannot encode its public key".into()))?;
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der.as_ref())
        .map_err(|e| invalid(format!("cannot parse its public key: {e}")))?;
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => Ok(strip_zeros(rsa.modulus).to_vec()),
        _ => Err(invalid("its public key is not RSA".into())),
    }
}

/// Loads the Network Unlock certificate and key.
///
/// `cert_path`: PEM or DER certificate (then `key_path` is required: PKCS#8 PEM, PKCS#1 PEM or
/// PKCS#8 DER), or a PKCS#12 .pfx/.p12 (detected by content; key inside; `pfx_password` used,
/// None = empty). If a PEM `cert_path` also holds the key and `key_path` is None, that key is used.
/// File permissions are not checked here; call [`crate::check_private_key_permissions`] first.
pub fn load_unlock_identity(
    cert_path: &Path,
    key_path: Option<&Path>,
    pfx_password: Option<&str>,
) -> Result<UnlockIdentity, CertError> {
    let bytes = read_file(cert_path)?;
    if looks_like_pem(&bytes) {
        let cert = pem_certificates(&bytes, cert_path)?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::NoCertificate {
                path: cert_path.to_path_buf(),
            })?;
        return with_key_file(cert, cert_path, key_path, Some(&bytes));
    }
    if is_der_certificate(&bytes) {
        return with_key_file(bytes.to_vec(), cert_path, key_path, None);
    }
    if pfx::looks_like_pfx(&bytes) {
        return from_pfx(&bytes, cert_path, pfx_password);
    }
    Err(CertError::NoCertificate {
        path: cert_path.to_path_buf(),
    })
}

fn with_key_file(
    cert_der: Vec<u8>,
    cert_path: &Path,
    key_path: Option<&Path>,
    cert_pem: Option<&[u8]>,
) -> Result<UnlockIdentity, CertError> {
    let (key_bytes, key_path) = match key_path {
        Some(p) => (read_file(p)?, p),
        None => match cert_pem {
            // A combined PEM (certificate + key in one file) is accepted without a separate key path.
            Some(pem) if pem.windows(16).any(|w| w == b"PRIVATE KEY-----") => {
                (zeroize::Zeroizing::new(pem.to_vec()), cert_path)
            }
            _ => {
                return Err(CertError::KeyRequired {
                    path: cert_path.to_path_buf(),
                });
            }
        },
    };
    let pkcs8 = rsa_pkcs8_from_bytes(&key_bytes, key_path)?;
    build(cert_der, &pkcs8, cert_path, key_path)
}

fn from_pfx(
    bytes: &[u8],
    path: &Path,
    password: Option<&str>,
) -> Result<UnlockIdentity, CertError> {
    let contents = pfx::open(bytes, password, path)?;
    // Pair each key with the certificate carrying its public key, not with bag order or local key IDs,
    // which exporters fill in inconsistently.
    let mut first_err = None;
    for key in &contents.keys {
        for cert in &contents.certs {
            match build(cert.clone(), key, path, path) {
                Ok(id) => return Ok(id),
                Err(e @ CertError::NotRsa2048 { .. }) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {}
            }
        }
    }
    Err(first_err.unwrap_or_else(|| CertError::PfxNoKey {
        path: path.to_path_buf(),
    }))
}
