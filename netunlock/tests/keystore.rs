//! KeyStore::decide over every outcome, with two certificates loaded (rotation).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::*;
use netunlock::{
    CertificatePolicy, Decision, KeyStore, KeyStoreError, PolicyAddrs, RejectionSecret, UnlockKey,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The policy addresses of a direct request from `s`.
fn direct(s: &str) -> PolicyAddrs {
    PolicyAddrs::direct(ip(s))
}

fn second_key() -> UnlockKey {
    let g = certs::generate_unlock_certificate("second", 30).unwrap();
    let pem = g.key_pkcs8_pem.as_str();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64_decode(&b64);
    let identity = certs::UnlockIdentity::from_der_parts(g.cert_der.clone(), &der).unwrap();
    UnlockKey::new(Arc::new(identity), &RejectionSecret::from_bytes([9; 32]))
}

/// Small base64 decoder so the tests need no extra dependency.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= u32::from(val(c)) << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    out
}

#[test]
fn decide_covers_every_outcome() {
    let second = second_key();
    let second_thumb = second.thumbprint();
    let store = KeyStore::new(vec![
        (
            unlock_key(1),
            CertificatePolicy {
                enabled: true,
                allowed_subnets: vec![
                    "192.0.2.0/24".parse().unwrap(),
                    "2001:db8::/64".parse().unwrap(),
                ],
            },
        ),
        (
            second,
            CertificatePolicy {
                enabled: false,
                allowed_subnets: vec![],
            },
        ),
    ])
    .unwrap();
    assert_eq!(store.len(), 2);
    assert!(!store.is_empty());
    assert_eq!(store.keys().count(), 2);

    let first: [u8; 20] = arr(THUMBPRINT);
    assert!(
        matches!(store.decide(&first, &direct("192.0.2.10")), Decision::Answer(k) if k.thumbprint() == first)
    );
    assert!(matches!(
        store.decide(&first, &direct("198.51.100.1")),
        Decision::SubnetRefused
    ));
    assert!(matches!(
        store.decide(&first, &direct("0.0.0.0")),
        Decision::SubnetRefused
    ));
    assert!(matches!(
        store.decide(&first, &direct("2001:db8::5")),
        Decision::Answer(_)
    ));
    assert!(matches!(
        store.decide(&first, &direct("2001:db8:1::5")),
        Decision::SubnetRefused
    ));
    assert!(
        matches!(
            store.decide(&first, &direct("fe80::216:3eff:fe01:1122")),
            Decision::Answer(_)
        ),
        "v6 link-local bypass for a direct request"
    );
    assert!(
        matches!(
            store.decide(
                &first,
                &PolicyAddrs::relayed(vec![ip("fe80::216:3eff:fe01:1122")])
            ),
            Decision::SubnetRefused
        ),
        "no bypass through a relay"
    );
    assert!(matches!(
        store.decide(
            &first,
            &PolicyAddrs::relayed(vec![ip("192.0.2.1"), ip("192.0.2.10")])
        ),
        Decision::Answer(_)
    ));
    assert!(
        matches!(
            store.decide(
                &first,
                &PolicyAddrs::relayed(vec![ip("198.51.100.1"), ip("192.0.2.10")])
            ),
            Decision::SubnetRefused
        ),
        "the relay's link (giaddr) must be allowed too"
    );
    assert!(matches!(
        store.decide(&second_thumb, &direct("192.0.2.10")),
        Decision::Disabled
    ));
    assert!(matches!(
        store.decide(&[0; 20], &direct("192.0.2.10")),
        Decision::UnknownCertificate
    ));
    assert_eq!(
        store.decide(&[0; 20], &direct("192.0.2.10")).label(),
        "unknown_certificate"
    );

    let empty = KeyStore::empty();
    assert!(empty.is_empty());
    assert!(matches!(
        empty.decide(&first, &direct("192.0.2.10")),
        Decision::UnknownCertificate
    ));
}

#[test]
fn two_enabled_certificates_each_answer_their_own_requests() {
    let second = second_key();
    let second_thumb = second.thumbprint();
    let (secrets, kp) = netunlock::client::new_key_protector(second.identity().cert_der()).unwrap();
    let store = KeyStore::new(vec![
        (unlock_key(1), CertificatePolicy::allow_all()),
        (second, CertificatePolicy::allow_all()),
    ])
    .unwrap();
    let Decision::Answer(k) = store.decide(&second_thumb, &direct("10.0.0.1")) else {
        panic!("second certificate must be answered");
    };
    assert_eq!(
        netunlock::open_kpr(&k.answer(&kp), &secrets.sk),
        Some(secrets.ck)
    );
    let Decision::Answer(k) = store.decide(&arr(THUMBPRINT), &direct("10.0.0.1")) else {
        panic!("first certificate must be answered");
    };
    assert_eq!(k.answer(&common::kp()), arr::<60>(KPR));
}

#[test]
fn duplicate_thumbprint_is_refused() {
    let err = KeyStore::new(vec![
        (unlock_key(1), CertificatePolicy::allow_all()),
        (unlock_key(2), CertificatePolicy::allow_all()),
    ])
    .unwrap_err();
    assert_eq!(
        err,
        KeyStoreError::DuplicateThumbprint {
            thumbprint: THUMBPRINT.into()
        }
    );
}
