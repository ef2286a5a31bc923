//! Shared fixtures: the ms-nkpu.md §5.3–5.4 vectors (files in tests/data).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use netunlock::{RejectionSecret, UnlockKey};

pub const CK: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
pub const SK: &str = "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f";
pub const KPR: &str = "291f42978254c197e830f3c86920defea20f02cbc5b91f037f4f9825a4772c081f8fc4b9662b84c6c6cc1a88cec60c87fe09c2fc44f5dafce65a8130";
pub const THUMBPRINT: &str = "8037e13c67685c7b6666e113b8990c9345a94038";

pub fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn hex_file(name: &str) -> Vec<u8> {
    let text = String::from_utf8(data(name)).unwrap();
    hex::decode(text.trim()).unwrap()
}

pub fn arr<const N: usize>(hex_str: &str) -> [u8; N] {
    hex::decode(hex_str).unwrap().try_into().unwrap()
}

pub fn kp() -> Box<[u8; 256]> {
    Box::new(hex_file("kp.hex").try_into().unwrap())
}

pub fn identity() -> Arc<certs::UnlockIdentity> {
    Arc::new(
        certs::UnlockIdentity::from_der_parts(
            data("vector54_cert.der"),
            &data("vector54_key.pk8.der"),
        )
        .unwrap(),
    )
}

pub fn unlock_key(secret: u8) -> UnlockKey {
    UnlockKey::new(identity(), &RejectionSecret::from_bytes([secret; 32]))
}

pub fn server_duid() -> Vec<u8> {
    netunlock::v6::duid_llt(0, [2, 0, 0, 0, 0, 1])
}

/// Deterministic xorshift64* for fuzz-style loops (no extra dependency, reproducible failures).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
pub mod netns;
