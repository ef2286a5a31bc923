//! RSA cost vs. protocol overhead of the pure pipeline (issue 2 "Proof").
//!
//! Run: `cargo bench -p netunlock --bench nkpu`
//! Measures in one run: raw aws-lc-rs RSA-2048 PKCS#1 v1.5 decryptions per second, and the full pure
//! pipeline (parse request + KeyStore::decide + UnlockKey::answer + build reply) for v4 and v6, on one
//! thread and on all cores. Overhead = 1 − pipeline rate / RSA rate (same thread count).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rsa::Pkcs1PrivateDecryptingKey;
use netunlock::{CertificatePolicy, Decision, KeyStore, UnlockKey, v4, v6};

const WINDOW: Duration = Duration::from_secs(3);

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn hex_file(name: &str) -> Vec<u8> {
    hex::decode(String::from_utf8(data(name)).unwrap().trim()).unwrap()
}

/// Runs `op` on `threads` threads for WINDOW; returns operations per second.
fn rate(threads: usize, op: &(dyn Fn() + Sync)) -> f64 {
    for _ in 0..20 {
        op();
    }
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while start.elapsed() < WINDOW {
                        for _ in 0..16 {
                            op();
                        }
                        n += 16;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let identity = Arc::new(
        certs::UnlockIdentity::from_der_parts(
            data("vector54_cert.der"),
            &data("vector54_key.pk8.der"),
        )
        .unwrap(),
    );
    let raw_key = Pkcs1PrivateDecryptingKey::new(identity.decrypting_key().clone()).unwrap();
    let store = KeyStore::new(vec![(
        UnlockKey::new(identity, [7; 32]),
        CertificatePolicy {
            enabled: true,
            allowed_subnets: vec![
                "192.0.2.0/24".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
        },
    )])
    .unwrap();
    let v4_request = hex_file("v4_request.hex");
    let v6_request = hex_file("v6_request.hex");
    let kp = hex_file("kp.hex");
    let duid = v6::duid_llt(0, [2, 0, 0, 0, 0, 1]);
    let client: IpAddr = "192.0.2.10".parse().unwrap();

    let rsa = || {
        let mut out = [0u8; 256];
        let m = raw_key.decrypt(black_box(&kp), &mut out).unwrap();
        assert_eq!(m.len(), 64);
    };
    let pipeline_v4 = || {
        let req = v4::parse_request(black_box(&v4_request)).unwrap();
        let Decision::Answer(key) = store.decide(&req.nkpu.thumbprint, IpAddr::V4(req.ciaddr))
        else {
            panic!("not answered");
        };
        let reply = v4::build_reply(&req, &key.answer(&req.nkpu.key_protector));
        black_box(reply);
    };
    let pipeline_v6 = || {
        let req = v6::parse_request(black_box(&v6_request)).unwrap();
        let Decision::Answer(key) = store.decide(&req.nkpu.thumbprint, client) else {
            panic!("not answered");
        };
        let reply = v6::build_reply(&req, &duid, &key.answer(&req.nkpu.key_protector));
        black_box(reply);
    };
    // The protocol part alone (everything but the RSA decryption), to show where the time goes.
    let protocol_only_v4 = || {
        let req = v4::parse_request(black_box(&v4_request)).unwrap();
        let Decision::Answer(_) = store.decide(&req.nkpu.thumbprint, IpAddr::V4(req.ciaddr)) else {
            panic!("not answered");
        };
        let kpr = netunlock::seal_kpr(&[1; 32], &[2; 32]);
        black_box(v4::build_reply(&req, &kpr));
    };

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Network Unlock pure pipeline vs raw RSA-2048 (window {WINDOW:?} per cell, {cores} cores)"
    );
    println!(
        "{:<44} {:>12} {:>12}",
        "operation",
        "1 thread/s",
        format!("{cores} threads/s")
    );
    let mut rows = Vec::new();
    let ops: [(&str, &(dyn Fn() + Sync)); 4] = [
        ("raw RSA-2048 PKCS#1 v1.5 decrypt", &rsa),
        ("v4 pipeline (parse+decide+answer+reply)", &pipeline_v4),
        ("v6 pipeline (parse+decide+answer+reply)", &pipeline_v6),
        ("v4 protocol only (no RSA, no HMAC)", &protocol_only_v4),
    ];
    for (name, op) in ops {
        let one = rate(1, op);
        let all = rate(cores, op);
        println!("{name:<44} {one:>12.0} {all:>12.0}");
        rows.push((one, all));
    }
    let (rsa1, rsan) = rows[0];
    for (label, (one, all)) in [("v4", rows[1]), ("v6", rows[2])] {
        println!(
            "{label} overhead vs RSA: 1 thread {:.2}%, {cores} threads {:.2}%",
            (1.0 - one / rsa1) * 100.0,
            (1.0 - all / rsan) * 100.0
        );
    }
}
