//! Generated Network Unlock certificates.

use certs::{UnlockIdentity, generate_unlock_certificate, thumbprint};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};

#[test]
fn generated_key_is_rsa_2048_pkcs8_and_matches() {
    let g = generate_unlock_certificate("BitLocker Network Unlock certificate", 365).unwrap();
    assert_eq!(thumbprint(&g.cert_der), g.thumbprint);
    assert!(g.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let key = PrivateKeyDer::from_pem_slice(g.key_pkcs8_pem.as_bytes()).unwrap();
    let PrivateKeyDer::Pkcs8(pkcs8) = key else {
        panic!("not PKCS#8")
    };
    let id = UnlockIdentity::from_der_parts(g.cert_der.clone(), pkcs8.secret_pkcs8_der()).unwrap();
    assert_eq!(id.decrypting_key().key_size_bits(), 2048);
    // Two runs give two different keys and certificates.
    let g2 = generate_unlock_certificate("BitLocker Network Unlock certificate", 365).unwrap();
    assert_ne!(g.thumbprint, g2.thumbprint);
    assert_ne!(*g.key_pkcs8_pem, *g2.key_pkcs8_pem);
    assert!(!format!("{g:?}").contains("PRIVATE"));
}

#[test]
fn bad_common_names_are_refused() {
    for cn in ["", "   ", "line\nbreak", &"x".repeat(65)] {
        assert!(generate_unlock_certificate(cn, 10).is_err(), "{cn:?}");
    }
}
