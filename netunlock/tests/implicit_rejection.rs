//! No oracle: a corrupted key protector gets a 60-byte answer that is deterministic per (KP, secret),
//! differs between secrets, and opens under no key the client holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use netunlock::open_kpr;

#[test]
fn corrupted_key_protectors_get_unopenable_answers() {
    let key = unlock_key(1);
    let same_secret = unlock_key(1);
    let other_secret = unlock_key(2);
    let good = kp();
    assert_eq!(key.answer(&good), arr::<60>(KPR), "valid path unaffected");
    assert_eq!(
        other_secret.answer(&good),
        arr::<60>(KPR),
        "secret plays no part for a valid KP"
    );

    let mut rng = XorShift(42);
    for round in 0..16 {
        let mut bad = good.clone();
        match round {
            0 => bad.fill(0),
            1 => bad.fill(0xff),
            2 => bad[0] ^= 0x80,
            3 => bad[255] ^= 1,
            _ => {
                for b in bad.iter_mut() {
                    *b = rng.next() as u8;
                }
            }
        }
        let a = key.answer(&bad);
        assert_eq!(a.len(), 60);
        assert_ne!(a, arr::<60>(KPR), "round {round}");
        assert_eq!(a, key.answer(&bad), "deterministic, round {round}");
        assert_eq!(
            a,
            same_secret.answer(&bad),
            "depends only on KP and secret, round {round}"
        );
        assert_ne!(
            a,
            other_secret.answer(&bad),
            "different secret, round {round}"
        );
        assert_eq!(
            open_kpr(&a, &arr(SK)),
            None,
            "must not open under the client's SK, round {round}"
        );
    }
}

#[test]
fn key_protector_of_the_wrong_length_is_rejected_implicitly() {
    // A valid PKCS#1 v1.5 encryption of 63 bytes (not CK‖SK): RSA succeeds, the length check selects
    // the rejection answer.
    use aws_lc_rs::rsa::{Pkcs1PublicEncryptingKey, PublicEncryptingKey};
    let identity = identity();
    let public = PublicEncryptingKey::from_der(&x509_spki(identity.cert_der())).unwrap();
    let enc = Pkcs1PublicEncryptingKey::new(public).unwrap();
    let key = unlock_key(5);
    for len in [1usize, 32, 63, 65, 200] {
        let msg = vec![0x5a; len];
        let mut kp = Box::new([0u8; 256]);
        enc.encrypt(&msg, &mut kp[..]).unwrap();
        let sk_guess: [u8; 32] = std::array::from_fn(|i| msg.get(32 + i).copied().unwrap_or(0));
        let a = key.answer(&kp);
        assert_eq!(open_kpr(&a, &sk_guess), None, "len {len}");
        assert_eq!(a, key.answer(&kp));
    }
}

/// The SubjectPublicKeyInfo of a certificate (via x509-parser, as the client does).
fn x509_spki(cert_der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    cert.tbs_certificate.subject_pki.raw.to_vec()
}
