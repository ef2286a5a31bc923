//! The server's private key with implicit rejection: the responder is not a padding oracle.
//!
//! Every call of [`UnlockKey::answer`] performs the same work whatever the key protector holds: one
//! RSA decryption, two HMACs (the rejection candidate), a constant-time select between the real and
//! the rejection CK‖SK (`subtle`), and one CCM encryption. A key protector that is not a valid RSA
//! input at all (≥ the modulus, 0 or 1) would make aws-lc return at once, so a stand-in ciphertext
//! is decrypted in its place (selected without a branch) and its result discarded. A forged or
//! corrupted key protector therefore gets a reply of the same size, built in the same time, that
//! decrypts to nothing the sender knows. What aws-lc does inside the decryption (its PKCS#1 unpadding
//! branches on validity) is a residual risk, stated in docs/threat-model.md and measured by
//! `benches/timing.rs`.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::hmac;
use aws_lc_rs::rsa::{Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeLess};
use zeroize::Zeroizing;

use crate::nkpu::{KP_LEN, KPR_LEN, Thumbprint, seal_kpr};

/// The per-process secret implicit rejection derives its pseudo-random keys from. Held zeroized;
/// share it by reference (or `Arc`), never copy it out.
pub struct RejectionSecret(Zeroizing<[u8; 32]>);

impl fmt::Debug for RejectionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RejectionSecret(<redacted>)")
    }
}

/// The system random generator failed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

impl RejectionSecret {
    /// Fresh random bytes; it only has to be unpredictable to clients, not stable across restarts.
    pub fn generate() -> Result<Self, RandomError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut secret[..]).map_err(|_| RandomError)?;
        Ok(Self(secret))
    }

    /// A fixed secret (tests, benchmarks, `config check`).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }
}

/// A loaded Network Unlock certificate and key, ready to answer requests.
pub struct UnlockKey {
    identity: Arc<certs::UnlockIdentity>,
    thumbprint: Thumbprint,
    /// `None` only if aws-lc-rs refused to wrap the key for PKCS#1 v1.5 (it never does for RSA keys);
    /// every answer is then a rejection answer, so the key still never leaks anything.
    pkcs1: Option<Pkcs1PrivateDecryptingKey>,
    /// HMAC-SHA256 key made from the rejection secret.
    rejection: hmac::Key,
    /// The public modulus, big-endian, left-padded to the key protector length.
    modulus: Box<[u8; KP_LEN]>,
    /// A valid ciphertext under this key, decrypted instead of a key protector that is not a valid RSA
    /// input, so that both take one full RSA decryption.
    stand_in: Box<[u8; KP_LEN]>,
}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockKey")
            .field("thumbprint", &hex::encode(self.thumbprint))
            .finish_non_exhaustive()
    }
}

impl UnlockKey {
    pub fn new(identity: Arc<certs::UnlockIdentity>, rejection_secret: &RejectionSecret) -> Self {
        let rejection = hmac::Key::new(hmac::HMAC_SHA256, &rejection_secret.0[..]);
        let pkcs1 = Pkcs1PrivateDecryptingKey::new(identity.decrypting_key().clone()).ok();
        let thumbprint = identity.thumbprint();
        let modulus = modulus_of(identity.cert_der());
        let stand_in = stand_in_ciphertext(&identity, &rejection);
        Self {
            identity,
            thumbprint,
            pkcs1,
            rejection,
            modulus,
            stand_in,
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
        let in_range = self.is_rsa_input(key_protector);
        let input = Zeroizing::new(<[u8; KP_LEN]>::conditional_select(
            &self.stand_in,
            key_protector,
            in_range,
        ));
        let mut plain = Zeroizing::new([0u8; KP_LEN]);
        // Length of the decrypted message, 0 on any RSA failure; the select below needs exactly 64.
        let len = match &self.pkcs1 {
            Some(key) => key
                .decrypt(&input[..], &mut plain[..])
                .map_or(0, |m| m.len()),
            None => 0,
        };
        let valid = in_range & len.ct_eq(&64);

        let fake_ck = self.rejection_half(b"ck", key_protector);
        let fake_sk = self.rejection_half(b"sk", key_protector);
        let mut real_ck = Zeroizing::new([0u8; 32]);
        let mut real_sk = Zeroizing::new([0u8; 32]);
        real_ck.copy_from_slice(&plain[..32]);
        real_sk.copy_from_slice(&plain[32..64]);
        let ck = Zeroizing::new(<[u8; 32]>::conditional_select(&fake_ck, &real_ck, valid));
        let sk = Zeroizing::new(<[u8; 32]>::conditional_select(&fake_sk, &real_sk, valid));
        seal_kpr(&ck, &sk)
    }

    /// 1 when 1 < KP < n (RFC 8017 §5.1.2 input range, minus the fixed points 0 and 1).
    fn is_rsa_input(&self, kp: &[u8; KP_LEN]) -> Choice {
        let below_modulus = ct_less_be(kp, &self.modulus);
        let high_zero = kp[..KP_LEN - 1].ct_eq(&[0u8; KP_LEN - 1]);
        let small = high_zero & kp[KP_LEN - 1].ct_lt(&2);
        below_modulus & !small
    }

    fn rejection_half(&self, label: &[u8], key_protector: &[u8; KP_LEN]) -> Zeroizing<[u8; 32]> {
        let mut ctx = hmac::Context::with_key(&self.rejection);
        ctx.update(label);
        ctx.update(&key_protector[..]);
        let tag = ctx.sign();
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(tag.as_ref());
        out
    }
}

/// `a < b` for big-endian byte strings of equal length, without a branch on their values.
fn ct_less_be(a: &[u8; KP_LEN], b: &[u8; KP_LEN]) -> Choice {
    let mut less = Choice::from(0);
    let mut decided = Choice::from(0);
    for (x, y) in a.iter().zip(b.iter()) {
        let differ = !x.ct_eq(y);
        less = Choice::conditional_select(&less, &x.ct_lt(y), !decided & differ);
        decided |= differ;
    }
    less
}

/// The RSA modulus from the certificate, left-padded to 256 bytes. A certificate the loader accepted is
/// RSA-2048, so this always succeeds; if it ever did not, every input counts as in range and aws-lc's
/// own range check applies.
fn modulus_of(cert_der: &[u8]) -> Box<[u8; KP_LEN]> {
    let mut out = Box::new([0xffu8; KP_LEN]);
    let parsed = x509_parser::parse_x509_certificate(cert_der)
        .ok()
        .and_then(|(_, c)| match c.tbs_certificate.subject_pki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => Some(rsa.modulus.to_vec()),
            _ => None,
        });
    if let Some(n) = parsed {
        let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
        if n.len() == KP_LEN {
            out.copy_from_slice(&n);
        }
    }
    out
}

/// Encrypts 64 bytes derived from the rejection key under the certificate's public key. If that fails
/// (it does not for an RSA-2048 key), the stand-in is all zeros, which aws-lc rejects quickly — the
/// timing then differs only for out-of-range inputs, as before this measure.
fn stand_in_ciphertext(
    identity: &certs::UnlockIdentity,
    rejection: &hmac::Key,
) -> Box<[u8; KP_LEN]> {
    let mut out = Box::new([0u8; KP_LEN]);
    let seed = hmac::sign(rejection, b"stand-in ciphertext");
    let mut message = Zeroizing::new([0u8; 64]);
    message[..32].copy_from_slice(seed.as_ref());
    message[32..].copy_from_slice(seed.as_ref());
    if let Ok(public) = Pkcs1PublicEncryptingKey::new(identity.decrypting_key().public_key()) {
        let mut ct = [0u8; KP_LEN];
        if let Ok(written) = public.encrypt(&message[..], &mut ct)
            && written.len() == KP_LEN
        {
            out.copy_from_slice(&ct);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_endian_less_than() {
        let mut a = [0u8; KP_LEN];
        let mut b = [0u8; KP_LEN];
        assert!(!bool::from(ct_less_be(&a, &b)), "equal is not less");
        b[KP_LEN - 1] = 1;
        assert!(bool::from(ct_less_be(&a, &b)));
        assert!(!bool::from(ct_less_be(&b, &a)));
        a[0] = 1;
        assert!(!bool::from(ct_less_be(&a, &b)), "the high byte decides");
        b[0] = 2;
        assert!(bool::from(ct_less_be(&a, &b)));
    }
}
