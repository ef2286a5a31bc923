//! The server's private key with implicit rejection: the responder is not a padding oracle.
//!
//! Every call of [`UnlockKey::answer`] performs the same work whatever the key protector holds: one RSA
//! decryption, two HMACs (the rejection candidate), a byte-wise masked select between the real and the
//! rejection CK‖SK, and one CCM encryption. A forged or corrupted key protector therefore gets a reply of
//! the same size, built in the same time, that decrypts to nothing the sender knows.

use std::fmt;
use std::hint::black_box;
use std::sync::Arc;

use aws_lc_rs::hmac;
use aws_lc_rs::rsa::Pkcs1PrivateDecryptingKey;
use zeroize::Zeroizing;

use crate::nkpu::{KP_LEN, KPR_LEN, Thumbprint, seal_kpr};

/// A loaded Network Unlock certificate and key, ready to answer requests.
pub struct UnlockKey {
    identity: Arc<certs::UnlockIdentity>,
    thumbprint: Thumbprint,
    /// `None` only if aws-lc-rs refused to wrap the key for PKCS#1 v1.5 (it never does for RSA keys);
    /// every answer is then a rejection answer, so the key still never leaks anything.
    pkcs1: Option<Pkcs1PrivateDecryptingKey>,
    /// HMAC-SHA256 key made from the per-boot rejection secret (the raw secret is zeroized on return
    /// from `new`).
    rejection: hmac::Key,
}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockKey")
            .field("thumbprint", &hex::encode(self.thumbprint))
            .finish_non_exhaustive()
    }
}

impl UnlockKey {
    /// `rejection_secret` should be fresh random bytes per process (aws_lc_rs::rand); it only has to be
    /// unpredictable to clients, not stable across restarts.
    pub fn new(identity: Arc<certs::UnlockIdentity>, rejection_secret: [u8; 32]) -> Self {
        let secret = Zeroizing::new(rejection_secret);
        let rejection = hmac::Key::new(hmac::HMAC_SHA256, &secret[..]);
        let pkcs1 = Pkcs1PrivateDecryptingKey::new(identity.decrypting_key().clone()).ok();
        let thumbprint = identity.thumbprint();
        Self {
            identity,
            thumbprint,
            pkcs1,
            rejection,
        }
    }

    pub fn identity(&self) -> &certs::UnlockIdentity {
        &self.identity
    }

    pub fn thumbprint(&self) -> Thumbprint {
        self.thumbprint
    }

    /// Always returns a 60-byte KPR: for a valid key protector the KPR of its CK/SK, otherwise the KPR of
    /// a pseudo-random CK‖SK = HMAC-SHA256(secret, "ck"‖KP) ‖ HMAC-SHA256(secret, "sk"‖KP).
    pub fn answer(&self, key_protector: &[u8; KP_LEN]) -> [u8; KPR_LEN] {
        let mut plain = Zeroizing::new([0u8; KP_LEN]);
        // Length of the decrypted message, 0 on any RSA failure; the select below needs exactly 64.
        let len = match &self.pkcs1 {
            Some(key) => key
                .decrypt(&key_protector[..], &mut plain[..])
                .map_or(0, |m| m.len()),
            None => 0,
        };
        let valid = ct_eq_mask(len, 64);

        let mut fake = Zeroizing::new([0u8; 64]);
        fake[..32].copy_from_slice(self.rejection_half(b"ck", key_protector).as_ref());
        fake[32..].copy_from_slice(self.rejection_half(b"sk", key_protector).as_ref());

        let mut ck = Zeroizing::new([0u8; 32]);
        let mut sk = Zeroizing::new([0u8; 32]);
        for i in 0..32 {
            ck[i] = select(valid, plain[i], fake[i]);
            sk[i] = select(valid, plain[32 + i], fake[32 + i]);
        }
        seal_kpr(&ck, &sk)
    }

    fn rejection_half(&self, label: &[u8], key_protector: &[u8; KP_LEN]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.rejection);
        ctx.update(label);
        ctx.update(&key_protector[..]);
        ctx.sign()
    }
}

/// 0xff if `a == b`, else 0x00, computed without a branch on the values.
fn ct_eq_mask(a: usize, b: usize) -> u8 {
    let x = black_box(a ^ b) as u64;
    // x == 0  ⇔  (x | -x) has its top bit clear.
    let nonzero = (x | x.wrapping_neg()) >> 63;
    (nonzero as u8).wrapping_sub(1)
}

fn select(mask: u8, a: u8, b: u8) -> u8 {
    let mask = black_box(mask);
    (a & mask) | (b & !mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_and_select() {
        assert_eq!(ct_eq_mask(64, 64), 0xff);
        assert_eq!(ct_eq_mask(0, 64), 0x00);
        assert_eq!(ct_eq_mask(63, 64), 0x00);
        assert_eq!(ct_eq_mask(usize::MAX, 64), 0x00);
        assert_eq!(select(0xff, 0xaa, 0x55), 0xaa);
        assert_eq!(select(0x00, 0xaa, 0x55), 0x55);
    }
}
