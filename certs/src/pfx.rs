//! PKCS#12 (.pfx/.p12) reading, as exported by Windows (PBES2/AES or legacy 3DES/RC2).

use std::path::Path;

use p12_keystore::Pkcs12Archive;
use p12_keystore::error::Error as P12Error;
use zeroize::Zeroizing;

use crate::error::CertError;

/// What a PKCS#12 file held: private keys (PKCS#8 DER) and certificates (DER), in file order.
pub(crate) struct PfxContents {
    pub(crate) keys: Vec<Zeroizing<Vec<u8>>>,
    pub(crate) certs: Vec<Vec<u8>>,
}

/// True when the bytes parse as a PFX structure at all (before any password is involved).
/// Checks the outer shape: SEQUENCE { INTEGER 3, ContentInfo SEQUENCE { OID pkcs7-data|signedData, ... }, ... }.
pub(crate) fn looks_like_pfx(bytes: &[u8]) -> bool {
    use crate::der::{TAG_OID, TAG_SEQUENCE, read_tlv};
    const PKCS7: [u8; 8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07];
    let Some((outer, _)) = read_tlv(bytes) else {
        return false;
    };
    if outer.tag != TAG_SEQUENCE {
        return false;
    }
    let Some((version, rest)) = read_tlv(outer.content) else {
        return false;
    };
    if version.tag != 0x02 || version.content != [3] {
        return false;
    }
    let Some((auth_safe, _)) = read_tlv(rest) else {
        return false;
    };
    if auth_safe.tag != TAG_SEQUENCE {
        return false;
    }
    matches!(read_tlv(auth_safe.content), Some((oid, _)) if oid.tag == TAG_OID && oid.content.starts_with(&PKCS7))
}

/// Opens a PKCS#12 file; `password` None means the empty password.
pub(crate) fn open(
    bytes: &[u8],
    password: Option<&str>,
    path: &Path,
) -> Result<PfxContents, CertError> {
    let archive =
        Pkcs12Archive::from_pkcs12(bytes, password.unwrap_or("")).map_err(|e| match e {
            // A MAC mismatch or a failed decryption/unpadding is what a wrong password produces.
            P12Error::MacError(_) | P12Error::UnpadError | P12Error::Pkcs5Error(_) => {
                CertError::PfxPassword {
                    path: path.to_path_buf(),
                }
            }
            other => CertError::Pfx {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        })?;
    let keys = archive
        .keys
        .iter()
        .map(|bag| Zeroizing::new(bag.key.as_der().to_vec()))
        .collect();
    let certs = archive
        .certs
        .iter()
        .map(|bag| bag.cert.as_der().to_vec())
        .collect();
    Ok(PfxContents { keys, certs })
}
