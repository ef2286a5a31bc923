//! Reading certificate and key files and telling their formats apart by content, not by name.

use std::path::Path;

use rustls_pki_types::pem::{self, PemObject, SectionKind};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::error::CertError;

/// Reads a whole file into a buffer that is wiped on drop (it may hold a private key).
pub(crate) fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, CertError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| CertError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// True when the bytes look like PEM text (any "-----BEGIN" marker).
pub(crate) fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// One decoded PEM section; the DER is wiped on drop since it may be a private key.
pub(crate) type PemSection = (SectionKind, Zeroizing<Vec<u8>>);

/// All sections of a PEM buffer with their kinds; malformed PEM is an error naming `path`.
pub(crate) fn pem_sections(bytes: &[u8], path: &Path) -> Result<Vec<PemSection>, CertError> {
    let mut out = Vec::new();
    for item in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(bytes) {
        let (kind, der) = item.map_err(|e| pem_error(path, &e))?;
        out.push((kind, Zeroizing::new(der)));
    }
    Ok(out)
}

fn pem_error(path: &Path, e: &pem::Error) -> CertError {
    CertError::InvalidCertificate {
        path: path.to_path_buf(),
        reason: format!("malformed PEM: {e}"),
    }
}

/// Checks that `der` is exactly one parseable X.509 certificate.
pub(crate) fn check_certificate_der(der: &[u8], path: &Path) -> Result<(), CertError> {
    match X509Certificate::from_der(der) {
        Ok(([], _)) => Ok(()),
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

/// Certificates in a PEM buffer, in file order (each checked to parse).
pub(crate) fn pem_certificates(bytes: &[u8], path: &Path) -> Result<Vec<Vec<u8>>, CertError> {
    let mut certs = Vec::new();
    for (kind, der) in pem_sections(bytes, path)? {
        if kind == SectionKind::Certificate {
            check_certificate_der(&der, path)?;
            certs.push(der.to_vec());
        }
    }
    Ok(certs)
}

/// Whether a non-PEM buffer is a DER certificate (as opposed to, say, a PKCS#12 file).
pub(crate) fn is_der_certificate(bytes: &[u8]) -> bool {
    matches!(X509Certificate::from_der(bytes), Ok((rest, _)) if rest.is_empty())
}
