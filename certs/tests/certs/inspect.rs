//! Inspection and its warnings.

use aws_lc_rs::rsa::KeySize;
use certs::{
    NETWORK_UNLOCK_EKU, generate_unlock_certificate, inspect_certificate, read_certificate_der,
};
use time::{Duration, OffsetDateTime, macros::datetime};

use crate::common::{VECTOR_THUMBPRINT, data, ec_cert, rsa_cert};

#[test]
fn vector_certificate_is_suitable() {
    let der = read_certificate_der(&data("nkpu-vector-cert.pem")).unwrap();
    let i = inspect_certificate(&der, datetime!(2030-01-01 0:00 UTC)).unwrap();
    assert_eq!(i.thumbprint_hex, VECTOR_THUMBPRINT);
    assert_eq!(i.subject, "CN=NKPU Test Vector Network Unlock certificate");
    assert_eq!(i.issuer, i.subject);
    assert_eq!(i.serial_hex, "4e4b5055");
    assert_eq!(i.key_algorithm, "RSA");
    assert_eq!(i.key_bits, Some(2048));
    assert_eq!(i.extended_key_usages, vec![NETWORK_UNLOCK_EKU.to_string()]);
    assert_eq!(i.application_policies, vec![NETWORK_UNLOCK_EKU.to_string()]);
    assert!(i.key_encipherment);
    assert!(i.warnings.is_empty(), "{:?}", i.warnings);
    assert_eq!(i.not_before, datetime!(2025-01-01 0:00 UTC));
    assert_eq!(i.not_after, datetime!(2050-01-01 0:00 UTC));
    let text = i.to_string();
    assert!(
        text.contains(VECTOR_THUMBPRINT) && text.contains("suitable"),
        "{text}"
    );
    assert!(text.contains("BitLocker Network Unlock"), "{text}");
}

#[test]
fn validity_warnings() {
    let der = std::fs::read(data("nkpu-vector-cert.cer")).unwrap();
    let expired = inspect_certificate(&der, datetime!(2051-01-01 0:00 UTC)).unwrap();
    assert_eq!(expired.warnings.len(), 1, "{:?}", expired.warnings);
    assert!(
        expired.warnings[0].contains("expired"),
        "{:?}",
        expired.warnings
    );
    assert!(expired.to_string().contains("Warnings:"));

    let early = inspect_certificate(&der, datetime!(2024-06-01 0:00 UTC)).unwrap();
    assert!(
        early.warnings[0].contains("not valid before"),
        "{:?}",
        early.warnings
    );

    let soon = inspect_certificate(&der, datetime!(2049-12-15 0:00 UTC)).unwrap();
    assert!(
        soon.warnings[0].contains("expires in less than 30 days"),
        "{:?}",
        soon.warnings
    );
    let not_yet = inspect_certificate(&der, datetime!(2049-11-15 0:00 UTC)).unwrap();
    assert!(not_yet.warnings.is_empty(), "{:?}", not_yet.warnings);
}

#[test]
fn expired_generated_style_certificate_warns() {
    let (der, _) = rsa_cert(KeySize::Rsa2048, -400, -10);
    let i = inspect_certificate(&der, OffsetDateTime::now_utc()).unwrap();
    assert!(
        i.warnings.iter().any(|w| w.contains("expired")),
        "{:?}",
        i.warnings
    );
}

#[test]
fn missing_eku_and_key_usage_and_wrong_key_warn() {
    let (der, _) = rsa_cert(KeySize::Rsa3072, -1, 100);
    let i = inspect_certificate(&der, OffsetDateTime::now_utc()).unwrap();
    assert!(i.extended_key_usages.is_empty());
    assert!(!i.key_encipherment);
    let w = i.warnings.join("\n");
    assert!(
        w.contains("no BitLocker Network Unlock extended key usage"),
        "{w}"
    );
    assert!(w.contains("keyEncipherment"), "{w}");
    assert!(w.contains("RSA 3072-bit"), "{w}");
    assert_eq!(i.warnings.len(), 3, "{w}");

    let (ec, _) = ec_cert();
    let i = inspect_certificate(&ec, OffsetDateTime::now_utc()).unwrap();
    assert_eq!(i.key_algorithm, "EC");
    assert_eq!(i.key_bits, Some(256));
    assert!(
        i.warnings.iter().any(|w| w.contains("EC 256-bit")),
        "{:?}",
        i.warnings
    );
}

#[test]
fn generated_certificate_has_everything_windows_expects() {
    let g = generate_unlock_certificate("BitLocker Network Unlock certificate", 3650).unwrap();
    let now = OffsetDateTime::now_utc();
    let i = inspect_certificate(&g.cert_der, now).unwrap();
    assert!(i.warnings.is_empty(), "{:?}", i.warnings);
    assert_eq!(i.key_bits, Some(2048));
    assert_eq!(i.extended_key_usages, vec![NETWORK_UNLOCK_EKU.to_string()]);
    assert_eq!(i.application_policies, vec![NETWORK_UNLOCK_EKU.to_string()]);
    assert!(i.key_encipherment);
    let days = (i.not_after - i.not_before).whole_days();
    assert_eq!(days, 3650);
    assert!(i.not_before <= now && now - i.not_before < Duration::minutes(5));
    assert_eq!(i.thumbprint_hex, hex::encode(g.thumbprint));
    // Exact extension encodings of ms-nkpu.md §6.1 appear in the DER.
    let der_hex = hex::encode(&g.cert_der);
    assert!(
        der_hex.contains("300e300c060a2b060104018237430101"),
        "application policies value"
    );
    assert!(
        der_hex.contains("0603551d0f0101ff0404030205"),
        "critical keyUsage"
    );
}
