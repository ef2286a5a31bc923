//! PKCS#12: files built with p12-keystore here, and with `openssl pkcs12 -export` when available.

use std::path::Path;
use std::process::Command;

use certs::{CertError, generate_unlock_certificate, load_unlock_identity, read_certificate_der};
use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain,
};

use crate::common::{VECTOR_THUMBPRINT, data, openssl_available, write};

fn vector_pfx(password: &str, alg: EncryptionAlgorithm) -> Vec<u8> {
    let cert = std::fs::read(data("nkpu-vector-cert.cer")).unwrap();
    let key = std::fs::read(data("nkpu-vector-key.der")).unwrap();
    let chain = PrivateKeyChain::new(
        vec![1u8, 2, 3, 4],
        PrivateKey::from_der(&key).unwrap(),
        [Certificate::from_der(&cert).unwrap()],
    );
    let mut ks = KeyStore::new();
    ks.add_entry("network unlock", KeyStoreEntry::PrivateKeyChain(chain));
    ks.writer(password)
        .encryption_algorithm(alg)
        .write()
        .unwrap()
}

#[test]
fn pfx_good_and_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    for alg in [
        EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
        EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
    ] {
        let p = write(dir.path(), "nu.pfx", &vector_pfx("s3cret", alg));
        let id = load_unlock_identity(&p, None, Some("s3cret")).unwrap();
        assert_eq!(id.thumbprint_hex(), VECTOR_THUMBPRINT, "{alg:?}");

        let err = load_unlock_identity(&p, None, Some("wrong")).unwrap_err();
        assert!(
            matches!(err, CertError::PfxPassword { .. }),
            "{alg:?}: {err}"
        );
        assert!(err.to_string().contains("nu.pfx"), "{err}");
        let err = load_unlock_identity(&p, None, None).unwrap_err();
        assert!(
            matches!(err, CertError::PfxPassword { .. }),
            "{alg:?}: {err}"
        );
    }
}

#[test]
fn pfx_with_empty_password_and_key_path_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "nu.p12",
        &vector_pfx("", EncryptionAlgorithm::PbeWithHmacSha256AndAes256),
    );
    let id = load_unlock_identity(&p, None, None).unwrap();
    assert_eq!(id.thumbprint_hex(), VECTOR_THUMBPRINT);
    // read_certificate_der opens a password-less pfx for its certificate.
    let der = read_certificate_der(&p).unwrap();
    assert_eq!(certs::thumbprint_hex(&der), VECTOR_THUMBPRINT);
}

#[test]
fn pfx_of_a_generated_certificate() {
    let g = generate_unlock_certificate("pfx round trip", 10).unwrap();
    use rustls_pki_types::pem::PemObject as _;
    let pkcs8 =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(g.key_pkcs8_pem.as_bytes()).unwrap();
    let chain = PrivateKeyChain::new(
        vec![9u8],
        PrivateKey::from_der(pkcs8.secret_der()).unwrap(),
        [Certificate::from_der(&g.cert_der).unwrap()],
    );
    let mut ks = KeyStore::new();
    ks.add_entry("x", KeyStoreEntry::PrivateKeyChain(chain));
    let bytes = ks.writer("pw").write().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "g.pfx", &bytes);
    let id = load_unlock_identity(&p, None, Some("pw")).unwrap();
    assert_eq!(id.thumbprint(), g.thumbprint);
}

#[test]
fn pfx_with_only_a_certificate_has_no_key() {
    let cert = std::fs::read(data("nkpu-vector-cert.cer")).unwrap();
    let mut ks = KeyStore::new();
    ks.add_entry(
        "c",
        KeyStoreEntry::Certificate(Certificate::from_der(&cert).unwrap()),
    );
    let bytes = ks.writer("pw").write().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "c.pfx", &bytes);
    let err = load_unlock_identity(&p, None, Some("pw")).unwrap_err();
    assert!(matches!(err, CertError::PfxNoKey { .. }), "{err}");
}

fn openssl_export(
    dir: &Path,
    name: &str,
    extra: &[&str],
    password: &str,
) -> Option<std::path::PathBuf> {
    let out = dir.join(name);
    let status = Command::new("openssl")
        .args(["pkcs12", "-export", "-inkey"])
        .arg(data("nkpu-vector-key.pem"))
        .arg("-in")
        .arg(data("nkpu-vector-cert.pem"))
        .arg("-out")
        .arg(&out)
        .arg("-passout")
        .arg(format!("pass:{password}"))
        .args(extra)
        .output()
        .unwrap();
    if status.status.success() {
        Some(out)
    } else {
        println!(
            "openssl pkcs12 -export {extra:?} failed (skipping that variant): {}",
            String::from_utf8_lossy(&status.stderr)
        );
        None
    }
}

#[test]
fn pfx_made_by_openssl() {
    if !openssl_available() {
        println!("SKIP pfx_made_by_openssl: the openssl command is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Default (OpenSSL 3: PBES2/AES-256-CBC + HMAC-SHA256), and the legacy Windows-style 3DES variant.
    let modern = openssl_export(dir.path(), "modern.pfx", &[], "Passw0rd!")
        .expect("default export must work");
    let id = load_unlock_identity(&modern, None, Some("Passw0rd!")).unwrap();
    assert_eq!(id.thumbprint_hex(), VECTOR_THUMBPRINT);
    let err = load_unlock_identity(&modern, None, Some("nope")).unwrap_err();
    assert!(matches!(err, CertError::PfxPassword { .. }), "{err}");

    let legacy_args = [
        "-keypbe",
        "PBE-SHA1-3DES",
        "-certpbe",
        "PBE-SHA1-3DES",
        "-macalg",
        "sha1",
    ];
    if let Some(legacy) = openssl_export(dir.path(), "legacy.pfx", &legacy_args, "Passw0rd!") {
        let id = load_unlock_identity(&legacy, None, Some("Passw0rd!")).unwrap();
        assert_eq!(id.thumbprint_hex(), VECTOR_THUMBPRINT);
    }
    // `-legacy`: RC2-40 certificate bag + 3DES key bag, what older Windows exports use.
    if let Some(rc2) = openssl_export(dir.path(), "rc2.pfx", &["-legacy"], "Passw0rd!") {
        let id = load_unlock_identity(&rc2, None, Some("Passw0rd!")).unwrap();
        assert_eq!(id.thumbprint_hex(), VECTOR_THUMBPRINT);
    }
    if let Some(aes) = openssl_export(
        dir.path(),
        "aes.pfx",
        &[
            "-keypbe",
            "AES-256-CBC",
            "-certpbe",
            "AES-256-CBC",
            "-macalg",
            "sha256",
        ],
        "",
    ) {
        let id = load_unlock_identity(&aes, None, None).unwrap();
        assert_eq!(id.thumbprint_hex(), VECTOR_THUMBPRINT);
    }
}
