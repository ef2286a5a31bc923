//! Garbage in: clear errors, never a panic.

use certs::{
    CertError, inspect_certificate, load_certificate_chain, load_private_key, load_unlock_identity,
    read_certificate_der,
};

use crate::common::{data, write};

fn garbage_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let cert = std::fs::read(data("nkpu-vector-cert.cer")).unwrap();
    let pem = std::fs::read(data("nkpu-vector-cert.pem")).unwrap();
    let mut flipped = cert.clone();
    flipped[200] ^= 0xff;
    vec![
        ("empty", vec![]),
        ("text", b"hello world\n".to_vec()),
        ("zeros", vec![0u8; 4096]),
        ("lone sequence byte", vec![0x30]),
        (
            "huge length",
            vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00],
        ),
        ("truncated der", cert[..cert.len() / 2].to_vec()),
        ("der plus trailing", [cert.clone(), vec![0, 0]].concat()),
        ("flipped der", flipped),
        ("truncated pem", pem[..pem.len() / 2].to_vec()),
        (
            "bad base64",
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_vec(),
        ),
        (
            "pem of junk",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
        ),
        (
            "fake pfx",
            vec![0x30, 0x06, 0x02, 0x01, 0x03, 0x30, 0x01, 0x06],
        ),
        (
            "pfx-shaped junk",
            vec![
                0x30, 0x10, 0x02, 0x01, 0x03, 0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7,
                0x0d, 0x01, 0x07, 0x01,
            ],
        ),
    ]
}

#[test]
fn garbage_certificate_files_give_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in garbage_inputs() {
        let p = write(dir.path(), "in.bin", &bytes);
        let key = data("nkpu-vector-key.pem");
        let err = load_unlock_identity(&p, Some(&key), Some("pw")).unwrap_err();
        assert!(err.to_string().contains("in.bin"), "{name}: {err}");
        assert!(read_certificate_der(&p).is_err(), "{name}");
        assert!(load_certificate_chain(&p).is_err(), "{name}");
        let _ = inspect_certificate(&bytes, time::OffsetDateTime::now_utc()).unwrap_err();
    }
}

#[test]
fn garbage_key_files_give_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cert = data("nkpu-vector-cert.pem");
    for (name, bytes) in garbage_inputs() {
        let p = write(dir.path(), "key.bin", &bytes);
        let err = load_unlock_identity(&cert, Some(&p), None).unwrap_err();
        assert!(err.to_string().contains("key.bin"), "{name}: {err}");
        // load_private_key only checks the framing; it must still not panic.
        let _ = load_private_key(&p);
    }
    // A truncated but well-framed PKCS#8 key.
    let key = std::fs::read(data("nkpu-vector-key.der")).unwrap();
    let mut bad = key.clone();
    bad[300] ^= 0x55;
    let p = write(dir.path(), "flip.der", &bad);
    let err = load_unlock_identity(&cert, Some(&p), None).unwrap_err();
    assert!(
        matches!(
            err,
            CertError::InvalidKey { .. }
                | CertError::NoPrivateKey { .. }
                | CertError::KeyMismatch { .. }
        ),
        "{err}"
    );
}

#[test]
fn encrypted_pkcs8_is_reported_as_no_usable_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "enc.pem",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let err = load_unlock_identity(&data("nkpu-vector-cert.pem"), Some(&p), None).unwrap_err();
    assert!(matches!(err, CertError::NoPrivateKey { .. }), "{err}");
}
