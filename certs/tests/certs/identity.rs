//! Loading identities: round trips, mismatches, wrong key types.

use aws_lc_rs::rsa::KeySize;
use certs::{CertError, UnlockIdentity, generate_unlock_certificate, load_unlock_identity};

use crate::common::{data, ec_cert, pem, rsa_cert, write};

#[test]
fn generate_write_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let g = generate_unlock_certificate("BitLocker Network Unlock certificate", 365).unwrap();
    let files = certs::write_unlock_files(dir.path(), "nu", &g).unwrap();
    for cert in [&files.cert_pem, &files.cert_cer] {
        let id = load_unlock_identity(cert, Some(&files.key), None).unwrap();
        assert_eq!(id.thumbprint(), g.thumbprint);
        assert_eq!(id.cert_der(), g.cert_der.as_slice());
        assert_eq!(id.subject(), "CN=BitLocker Network Unlock certificate");
    }
}

#[test]
fn combined_pem_needs_no_key_path_but_plain_certificate_does() {
    let dir = tempfile::tempdir().unwrap();
    let g = generate_unlock_certificate("combined", 30).unwrap();
    let combined = write(
        dir.path(),
        "both.pem",
        format!("{}{}", g.cert_pem, *g.key_pkcs8_pem).as_bytes(),
    );
    let id = load_unlock_identity(&combined, None, None).unwrap();
    assert_eq!(id.thumbprint(), g.thumbprint);

    let cert_only = write(dir.path(), "cert.pem", g.cert_pem.as_bytes());
    let err = load_unlock_identity(&cert_only, None, None).unwrap_err();
    assert!(matches!(err, CertError::KeyRequired { .. }), "{err}");
    assert!(err.to_string().contains("cert.pem"), "{err}");
}

#[test]
fn mismatched_key_is_refused() {
    let a = generate_unlock_certificate("a", 30).unwrap();
    let b = generate_unlock_certificate("b", 30).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "a.pem", a.cert_pem.as_bytes());
    let key = write(dir.path(), "b.key", b.key_pkcs8_pem.as_bytes());
    let err = load_unlock_identity(&cert, Some(&key), None).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("a.pem") && msg.contains("b.key"), "{msg}");

    // The vector key against a generated certificate, through the in-memory API.
    let vec_key = std::fs::read(data("nkpu-vector-key.der")).unwrap();
    let err = UnlockIdentity::from_der_parts(a.cert_der.clone(), &vec_key).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
}

#[test]
fn rsa_3072_is_refused() {
    let (cert, key) = rsa_cert(KeySize::Rsa3072, -1, 30);
    let err = UnlockIdentity::from_der_parts(cert.clone(), &key).unwrap_err();
    assert!(matches!(err, CertError::NotRsa2048 { .. }), "{err}");
    assert!(err.to_string().contains("RSA 3072-bit"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let c = write(dir.path(), "c.pem", pem("CERTIFICATE", &cert).as_bytes());
    let k = write(dir.path(), "k.pem", pem("PRIVATE KEY", &key).as_bytes());
    let err = load_unlock_identity(&c, Some(&k), None).unwrap_err();
    assert!(matches!(err, CertError::NotRsa2048 { .. }), "{err}");

    // A 2048-bit certificate with a 3072-bit key.
    let vec_cert = std::fs::read(data("nkpu-vector-cert.cer")).unwrap();
    let err = UnlockIdentity::from_der_parts(vec_cert, &key).unwrap_err();
    assert!(matches!(err, CertError::NotRsa2048 { .. }), "{err}");
}

#[test]
fn ec_certificate_and_ec_key_are_refused() {
    let (cert, key) = ec_cert();
    let err = UnlockIdentity::from_der_parts(cert, &key).unwrap_err();
    assert!(matches!(err, CertError::NotRsa2048 { .. }), "{err}");
    assert!(err.to_string().contains("EC"), "{err}");

    let vec_cert = std::fs::read(data("nkpu-vector-cert.cer")).unwrap();
    let err = UnlockIdentity::from_der_parts(vec_cert, &key).unwrap_err();
    assert!(matches!(err, CertError::NotRsa2048 { .. }), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let k = write(
        dir.path(),
        "ec.pem",
        pem("EC PRIVATE KEY", b"\x30\x03\x02\x01\x01").as_bytes(),
    );
    let err = load_unlock_identity(&data("nkpu-vector-cert.pem"), Some(&k), None).unwrap_err();
    assert!(matches!(err, CertError::NotRsa2048 { .. }), "{err}");
}

#[test]
fn missing_files_name_the_path() {
    let err =
        load_unlock_identity(std::path::Path::new("/nonexistent/nu.pem"), None, None).unwrap_err();
    assert!(matches!(err, CertError::Read { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/nu.pem"), "{err}");
    let err = load_unlock_identity(
        &data("nkpu-vector-cert.pem"),
        Some(std::path::Path::new("/nonexistent/nu.key")),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/nu.key"), "{err}");
}
