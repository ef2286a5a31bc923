//! The ms-nkpu.md §5.4 test-vector certificate and key.

use certs::{UnlockIdentity, load_unlock_identity, thumbprint_hex};

use crate::common::{VECTOR_THUMBPRINT, data};

#[test]
fn vector_thumbprint_from_pem_and_der() {
    let id = load_unlock_identity(
        &data("nkpu-vector-cert.pem"),
        Some(&data("nkpu-vector-key.pem")),
        None,
    )
    .unwrap();
    assert_eq!(id.thumbprint_hex(), VECTOR_THUMBPRINT);
    assert_eq!(hex::encode(id.thumbprint()), VECTOR_THUMBPRINT);
    assert_eq!(thumbprint_hex(id.cert_der()), VECTOR_THUMBPRINT);
    assert_eq!(
        id.subject(),
        "CN=NKPU Test Vector Network Unlock certificate"
    );
    assert_eq!(id.not_after().year(), 2050);
    assert_eq!(id.decrypting_key().key_size_bits(), 2048);
    let der = std::fs::read(data("nkpu-vector-cert.cer")).unwrap();
    assert_eq!(id.cert_der(), der.as_slice());
}

#[test]
fn vector_key_decrypts_the_section_5_4_kp() {
    // KP of §5.4 decrypts (PKCS#1 v1.5) to CK||SK of §5.3 — proves the loaded key is the right one.
    let id = load_unlock_identity(
        &data("nkpu-vector-cert.pem"),
        Some(&data("nkpu-vector-key.pem")),
        None,
    )
    .unwrap();
    let kp = hex::decode(concat!(
        "13568f3b4016b71c83b76c957519dc9aafac1fde3ec6deeca2118821fb5b1f95",
        "6a2ebc5818662ecc4017402973a349c48b61172ba2c41a5c5e437b1ce474aa55",
        "72a2ce08aca74865103c52b4c2934068b1201d1b030a715af0ba9b8428c705fd",
        "47e7bf404ff402d011bafd2169ee082472d4d4918ff1fcc2d3c59659591de17e",
        "349899a7ace686caad27e974644e984e90ccaf67bb755b1cdab0c4b79f45bc7f",
        "8db5ad6bb1d32912570a234c1e4369ca32e3b0cfa7d78e1bc6c7a520f0bdf2ef",
        "ca5939ba537737089952e401da063faec22b92e1b1b10ef818dee0334459f085",
        "6dcef96d1e0cd81ede97055460b473233047164b739e9f32e95749e2d13080e6"
    ))
    .unwrap();
    let key = aws_lc_rs::rsa::Pkcs1PrivateDecryptingKey::new(id.decrypting_key().clone()).unwrap();
    let mut out = vec![0u8; 256];
    let plain = key.decrypt(&kp, &mut out).unwrap();
    assert_eq!(
        hex::encode(plain),
        concat!(
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
            "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
        )
    );
}

#[test]
fn pkcs1_pkcs8_pem_and_der_keys_are_equivalent() {
    let cert = data("nkpu-vector-cert.pem");
    for key in [
        "nkpu-vector-key.pem",
        "nkpu-vector-key-pkcs1.pem",
        "nkpu-vector-key.der",
    ] {
        let id = load_unlock_identity(&cert, Some(&data(key)), None).unwrap();
        assert_eq!(id.thumbprint_hex(), VECTOR_THUMBPRINT, "{key}");
    }
    // DER certificate with each key form too.
    let cer = data("nkpu-vector-cert.cer");
    for key in [
        "nkpu-vector-key.pem",
        "nkpu-vector-key-pkcs1.pem",
        "nkpu-vector-key.der",
    ] {
        let id = load_unlock_identity(&cer, Some(&data(key)), None).unwrap();
        assert_eq!(id.thumbprint_hex(), VECTOR_THUMBPRINT, "{key}");
    }
}

#[test]
fn from_der_parts_and_debug_hides_the_key() {
    let cert = std::fs::read(data("nkpu-vector-cert.cer")).unwrap();
    let key = std::fs::read(data("nkpu-vector-key.der")).unwrap();
    let id = UnlockIdentity::from_der_parts(cert, &key).unwrap();
    let dbg = format!("{id:?}");
    assert!(dbg.contains(VECTOR_THUMBPRINT), "{dbg}");
    assert!(dbg.contains("NKPU Test Vector"), "{dbg}");
    assert!(!dbg.contains("PrivateDecryptingKey"), "{dbg}");
    assert!(!dbg.to_lowercase().contains("key:"), "{dbg}");
}
