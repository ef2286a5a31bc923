//! Does the responder's work depend on what the key protector holds? (issue 7, item 5)
//!
//! Run: `cargo bench -p netunlock --bench timing [-- SAMPLES]`
//! Times `UnlockKey::answer` (RSA decryption, implicit-rejection select, CCM seal) for four classes
//! of key protector, interleaved in random order so load from other processes hits all classes
//! alike: a valid one, a forged one (random, below the modulus), one that decrypts to a 63-byte
//! message (valid padding, wrong length) and out-of-range ones (≥ the modulus, 0 and 1). Prints the
//! median, the 10 %-trimmed mean and Welch's t against the valid class, and whether the difference
//! is distinguishable (|t| > 4.5). The same classes over the network: `nkpu_load timing`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/stats.rs"]
mod stats;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::rsa::{Pkcs1PublicEncryptingKey, PublicEncryptingKey};
use netunlock::{KP_LEN, RejectionSecret, UnlockKey};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn encrypt(public: &Pkcs1PublicEncryptingKey, plain: &[u8]) -> Box<[u8; KP_LEN]> {
    let mut out = Box::new([0u8; KP_LEN]);
    let n = public.encrypt(plain, &mut out[..]).unwrap().len();
    assert_eq!(n, KP_LEN);
    out
}

fn main() {
    let samples: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let cert = data("vector54_cert.der");
    let identity = Arc::new(
        certs::UnlockIdentity::from_der_parts(cert.clone(), &data("vector54_key.pk8.der")).unwrap(),
    );
    let key = UnlockKey::new(identity, &RejectionSecret::from_bytes([7; 32]));
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let public = Pkcs1PublicEncryptingKey::new(
        PublicEncryptingKey::from_der(parsed.tbs_certificate.subject_pki.raw).unwrap(),
    )
    .unwrap();

    let mut rng = [0u8; KP_LEN];
    let mut forged = Box::new([0u8; KP_LEN]);
    aws_lc_rs::rand::fill(&mut rng).unwrap();
    forged.copy_from_slice(&rng);
    forged[0] = 0x01; // below any 2048-bit modulus, so a real (failing) RSA decryption
    let mut one = Box::new([0u8; KP_LEN]);
    one[KP_LEN - 1] = 1;
    let classes: Vec<(&str, Box<[u8; KP_LEN]>)> = vec![
        ("valid", encrypt(&public, &[0x5a; 64])),
        ("forged (random < n)", forged),
        (
            "wrong length (63-byte message)",
            encrypt(&public, &[0x5a; 63]),
        ),
        ("out of range (all 0xff ≥ n)", Box::new([0xff; KP_LEN])),
        ("out of range (0)", Box::new([0u8; KP_LEN])),
        ("out of range (1)", one),
    ];
    for (_, kp) in &classes {
        for _ in 0..20 {
            black_box(key.answer(kp));
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(samples); classes.len()];
    let mut order: Vec<usize> = (0..classes.len()).collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..samples {
        // Fisher–Yates with xorshift: a fresh order every round.
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        for &c in &order {
            let kp = &classes[c].1;
            let t = Instant::now();
            black_box(key.answer(black_box(kp)));
            times[c].push(t.elapsed().as_nanos() as f64);
        }
    }
    let summaries: Vec<_> = times.iter().map(|t| stats::summarise(t)).collect();
    println!(
        "UnlockKey::answer by key-protector class, in process, {samples} interleaved samples per class"
    );
    println!("{}", stats::HEADER);
    for (i, (name, _)) in classes.iter().enumerate() {
        println!("{}", stats::row(name, &summaries[i], &summaries[0]));
    }
}
