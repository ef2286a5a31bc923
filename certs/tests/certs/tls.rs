//! TLS certificates and PEM loading.

use certs::{
    CertError, generate_client_certificate, generate_tls_server_certificate, inspect_certificate,
    load_certificate_chain, load_private_key, server_certificate_names, sha256_fingerprint_hex,
    write_private_pem, write_public_file,
};
use rustls_pki_types::PrivateKeyDer;

use crate::common::{data, write};

#[test]
fn server_certificate_with_dns_and_ip_names_round_trips_through_files() {
    let names = vec![
        "escrow.example.net".to_string(),
        "192.0.2.7".to_string(),
        "::1".to_string(),
    ];
    let g = generate_tls_server_certificate(&names, 825).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kp = dir.path().join("tls.key");
    let cp = dir.path().join("tls.crt");
    write_private_pem(&kp, &g.key_pem).unwrap();
    write_public_file(&cp, g.cert_pem.as_bytes()).unwrap();

    let chain = load_certificate_chain(&cp).unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].as_ref(), g.cert_der.as_slice());
    let key = load_private_key(&kp).unwrap();
    assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
    assert_eq!(key.secret_der(), g.key_pkcs8_der.as_slice());

    let (_, parsed) = x509_parser::parse_x509_certificate(&g.cert_der).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap().value;
    let shown = format!("{:?}", san.general_names);
    assert!(shown.contains("escrow.example.net"), "{shown}");
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    // The names read back are the names given (what decides whether to regenerate it).
    let read = server_certificate_names(&g.cert_der).unwrap();
    assert_eq!(read.names, names);
    assert!(read.self_signed);
    let i = inspect_certificate(&g.cert_der, time::OffsetDateTime::now_utc()).unwrap();
    assert_eq!(i.key_algorithm, "EC");
    assert_eq!(i.key_bits, Some(256));
    assert_eq!(i.subject, "CN=escrow.example.net");
    assert_eq!(sha256_fingerprint_hex(&g.cert_der).len(), 64);
    let dbg = format!("{g:?}");
    assert!(!dbg.contains("PRIVATE"), "{dbg}");
}

#[test]
fn client_certificate_has_client_auth() {
    let g = generate_client_certificate("agent-srv042", 365).unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&g.cert_der).unwrap();
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(parsed.subject().to_string(), "CN=agent-srv042");
    // Distinct certificates get distinct fingerprints.
    let g2 = generate_client_certificate("agent-srv042", 365).unwrap();
    assert_ne!(
        sha256_fingerprint_hex(&g.cert_der),
        sha256_fingerprint_hex(&g2.cert_der)
    );
}

#[test]
fn bad_generation_parameters_are_errors() {
    assert!(matches!(
        generate_tls_server_certificate(&[], 10),
        Err(CertError::InvalidParameter { .. })
    ));
    assert!(matches!(
        generate_tls_server_certificate(&["bad name with spaces".to_string()], 10),
        Err(CertError::InvalidParameter { .. })
    ));
    assert!(matches!(
        generate_tls_server_certificate(&["ok.example".to_string()], 0),
        Err(CertError::InvalidParameter { .. })
    ));
    assert!(matches!(
        generate_client_certificate("", 10),
        Err(CertError::InvalidParameter { .. })
    ));
    assert!(matches!(
        generate_client_certificate("x", u32::MAX),
        Err(CertError::InvalidParameter { .. })
    ));
    assert!(matches!(
        certs::generate_unlock_certificate("x", 0),
        Err(CertError::InvalidParameter { .. })
    ));
}

#[test]
fn chain_and_key_loading_of_other_forms() {
    let dir = tempfile::tempdir().unwrap();
    // A two-certificate chain file keeps order.
    let a = generate_client_certificate("a", 1).unwrap();
    let b = generate_client_certificate("b", 1).unwrap();
    let chain_path = write(
        dir.path(),
        "chain.pem",
        format!("{}{}", a.cert_pem, b.cert_pem).as_bytes(),
    );
    let chain = load_certificate_chain(&chain_path).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1].as_ref(), b.cert_der.as_slice());
    // DER certificate file.
    let chain = load_certificate_chain(&data("nkpu-vector-cert.cer")).unwrap();
    assert_eq!(chain.len(), 1);
    // PKCS#1 and PKCS#8 DER keys.
    assert!(matches!(
        load_private_key(&data("nkpu-vector-key-pkcs1.pem")).unwrap(),
        PrivateKeyDer::Pkcs1(_)
    ));
    assert!(matches!(
        load_private_key(&data("nkpu-vector-key.der")).unwrap(),
        PrivateKeyDer::Pkcs8(_)
    ));
    // A key file given as a certificate chain and vice versa.
    let err = load_certificate_chain(&data("nkpu-vector-key.pem")).unwrap_err();
    assert!(matches!(err, CertError::NoCertificate { .. }), "{err}");
    let err = load_private_key(&data("nkpu-vector-cert.pem")).unwrap_err();
    assert!(matches!(err, CertError::NoPrivateKey { .. }), "{err}");
}
