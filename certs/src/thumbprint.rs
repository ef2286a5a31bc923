//! Certificate fingerprints. The NKPU thumbprint is SHA-1 over the exact DER the clients hold,
//! so callers must never re-encode a certificate before hashing it.

use aws_lc_rs::digest;

/// SHA-1 of the certificate DER: the thumbprint Windows shows and NKPU requests carry.
pub fn thumbprint(cert_der: &[u8]) -> [u8; 20] {
    let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
    let mut out = [0u8; 20];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lowercase 40-character hex form of [`thumbprint`].
pub fn thumbprint_hex(cert_der: &[u8]) -> String {
    hex::encode(thumbprint(cert_der))
}

/// Lowercase 64-character hex SHA-256 of the certificate DER (used to bind agent client certificates).
pub fn sha256_fingerprint_hex(cert_der: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, cert_der).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_of_empty_input() {
        assert_eq!(
            thumbprint_hex(b""),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            sha256_fingerprint_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
