//! Private key decoding: PKCS#8 PEM, PKCS#1 PEM, PKCS#8 DER or PKCS#1 DER, always normalised to
//! PKCS#8 DER so the rest of the crate has one form to handle.

use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, PrivateDecryptingKey};
use rustls_pki_types::pem::SectionKind;
use zeroize::Zeroizing;

use crate::error::CertError;
use crate::source::{looks_like_pem, pem_sections};

/// Decodes an RSA private key from file contents and returns it as PKCS#8 DER.
pub(crate) fn rsa_pkcs8_from_bytes(
    bytes: &[u8],
    path: &Path,
) -> Result<Zeroizing<Vec<u8>>, CertError> {
    if looks_like_pem(bytes) {
        for (kind, der) in pem_sections(bytes, path)? {
            match kind {
                SectionKind::PrivateKey => return Ok(der),
                SectionKind::RsaPrivateKey => return pkcs1_to_pkcs8(&der, path),
                SectionKind::EcPrivateKey => {
                    return Err(CertError::NotRsa2048 {
                        path: path.to_path_buf(),
                        found: "an EC private key".into(),
                    });
                }
                _ => {}
            }
        }
        return Err(CertError::NoPrivateKey {
            path: path.to_path_buf(),
        });
    }
    if PrivateDecryptingKey::from_pkcs8(bytes).is_ok() {
        return Ok(Zeroizing::new(bytes.to_vec()));
    }
    if KeyPair::from_der(bytes).is_ok() {
        return pkcs1_to_pkcs8(bytes, path);
    }
    if looks_like_pkcs8_sequence(bytes) {
        // Structurally PKCS#8 but not an acceptable RSA key: let the caller report why.
        return Ok(Zeroizing::new(bytes.to_vec()));
    }
    Err(CertError::NoPrivateKey {
        path: path.to_path_buf(),
    })
}

fn looks_like_pkcs8_sequence(bytes: &[u8]) -> bool {
    matches!(crate::der::read_tlv(bytes), Some((t, rest)) if t.tag == crate::der::TAG_SEQUENCE && rest.is_empty())
}

/// PKCS#1 RSAPrivateKey → PKCS#8 PrivateKeyInfo, via aws-lc-rs (which accepts RFC 8017 DER).
fn pkcs1_to_pkcs8(pkcs1: &[u8], path: &Path) -> Result<Zeroizing<Vec<u8>>, CertError> {
    let pair = KeyPair::from_der(pkcs1).map_err(|e| CertError::InvalidKey {
        path: path.to_path_buf(),
        reason: format!("PKCS#1 RSA key rejected: {e}"),
    })?;
    let der = pair.as_der().map_err(|_| CertError::InvalidKey {
        path: path.to_path_buf(),
        reason: "cannot re-encode the PKCS#1 key as PKCS#8".into(),
    })?;
    Ok(Zeroizing::new(der.as_ref().to_vec()))
}

/// Parses PKCS#8 DER into the RSA decrypting key, with an operator-readable reason on failure.
pub(crate) fn decrypting_key(pkcs8: &[u8], path: &Path) -> Result<PrivateDecryptingKey, CertError> {
    PrivateDecryptingKey::from_pkcs8(pkcs8).map_err(|e| {
        let reason = e.to_string();
        if is_non_rsa_pkcs8(pkcs8) {
            CertError::NotRsa2048 {
                path: path.to_path_buf(),
                found: "a non-RSA private key".into(),
            }
        } else {
            CertError::InvalidKey {
                path: path.to_path_buf(),
                reason,
            }
        }
    })
}

/// PKCS#8 whose AlgorithmIdentifier is not rsaEncryption (1.2.840.113549.1.1.1).
fn is_non_rsa_pkcs8(pkcs8: &[u8]) -> bool {
    use crate::der::{TAG_OID, TAG_SEQUENCE, read_all, read_tlv};
    let Some((outer, _)) = read_tlv(pkcs8) else {
        return false;
    };
    let Some(fields) = read_all(outer.content) else {
        return false;
    };
    let Some(alg) = fields.get(1).filter(|f| f.tag == TAG_SEQUENCE) else {
        return false;
    };
    match read_tlv(alg.content) {
        Some((oid, _)) if oid.tag == TAG_OID => {
            oid.content != [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]
        }
        _ => false,
    }
}
