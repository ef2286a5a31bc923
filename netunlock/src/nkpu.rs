//! MS-NKPU constants, the decoded request, and the key protector response (KPR) cipher.
//!
//! KPR = tag ‖ ciphertext of AES-256-CCM(key = SK, nonce = 12 × 00, no AAD, tag 16 bytes) over the
//! 12-byte header `2c000000 01000000 06200000` followed by CK (ms-nkpu.md §2.5). RustCrypto `ccm` emits
//! ciphertext and tag separately; the tag goes first on the wire.

use ccm::aead::generic_array::GenericArray;
use ccm::consts::{U12, U16};
use ccm::{AeadInPlace, Ccm, KeyInit};
use zeroize::Zeroizing;

/// IANA enterprise number of Microsoft, used in v4 option 125 and v6 options 16/17.
pub const ENTERPRISE_MICROSOFT: u32 = 311;
/// SHA-1 certificate thumbprint length.
pub const THUMBPRINT_LEN: usize = 20;
/// RSA-2048 key protector length.
pub const KP_LEN: usize = 256;
/// Key protector response length: 16-byte CCM tag + 12-byte header + 32-byte CK.
pub const KPR_LEN: usize = 60;
/// The vendor class both directions carry.
pub const VENDOR_CLASS: &[u8; 9] = b"BITLOCKER";
/// The constant header Windows expects in front of CK inside the KPR (ms-nkpu.md §2.5, Appendix <2>).
pub const KPR_HEADER: [u8; 12] = [0x2c, 0, 0, 0, 0x01, 0, 0, 0, 0x06, 0x20, 0, 0];

const TAG_LEN: usize = 16;
const PLAINTEXT_LEN: usize = KPR_HEADER.len() + 32;

/// SHA-1 over the DER of the Network Unlock certificate, carried raw in the request.
pub type Thumbprint = [u8; THUMBPRINT_LEN];

type Aes256Ccm = Ccm<aes::Aes256, U16, U12>;

/// The two things an NKPU request carries, whichever DHCP version brought it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NkpuRequest {
    pub thumbprint: Thumbprint,
    /// RSA PKCS#1 v1.5 ciphertext of CK ‖ SK under the certificate's public key (not secret).
    pub key_protector: Box<[u8; KP_LEN]>,
}

impl NkpuRequest {
    /// Lowercase hex thumbprint, as shown by Windows and used in logs and the WDS .ini.
    pub fn thumbprint_hex(&self) -> String {
        hex::encode(self.thumbprint)
    }
}

/// Builds the KPR for network key `ck` under session key `sk` (server side).
pub fn seal_kpr(ck: &[u8; 32], sk: &[u8; 32]) -> [u8; KPR_LEN] {
    let cipher = Aes256Ccm::new(GenericArray::from_slice(sk));
    let nonce = GenericArray::default();
    let mut buf = Zeroizing::new([0u8; PLAINTEXT_LEN]);
    buf[..KPR_HEADER.len()].copy_from_slice(&KPR_HEADER);
    buf[KPR_HEADER.len()..].copy_from_slice(ck);
    let mut kpr = [0u8; KPR_LEN];
    // The only failure mode of CCM encryption is a message longer than the length field allows
    // (2^24 bytes for a 12-byte nonce); 44 bytes never hits it, so the error arm is unreachable.
    match cipher.encrypt_in_place_detached(&nonce, &[], &mut buf[..]) {
        Ok(tag) => {
            kpr[..TAG_LEN].copy_from_slice(&tag);
            kpr[TAG_LEN..].copy_from_slice(&buf[..]);
        }
        Err(_) => kpr.fill(0),
    }
    kpr
}

/// Opens a KPR with session key `sk` (client side). Returns CK when the tag verifies and the header is
/// the one Windows uses; `None` otherwise.
pub fn open_kpr(kpr: &[u8; KPR_LEN], sk: &[u8; 32]) -> Option<[u8; 32]> {
    let cipher = Aes256Ccm::new(GenericArray::from_slice(sk));
    let nonce = GenericArray::default();
    let mut buf = Zeroizing::new([0u8; PLAINTEXT_LEN]);
    buf.copy_from_slice(&kpr[TAG_LEN..]);
    let tag = GenericArray::from_slice(&kpr[..TAG_LEN]);
    cipher
        .decrypt_in_place_detached(&nonce, &[], &mut buf[..], tag)
        .ok()?;
    if buf[..KPR_HEADER.len()] != KPR_HEADER {
        return None;
    }
    let mut ck = [0u8; 32];
    ck.copy_from_slice(&buf[KPR_HEADER.len()..]);
    Some(ck)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        let v = hex::decode(s).unwrap();
        v.try_into().unwrap()
    }

    const CK: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
    const SK: &str = "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f";
    const KPR: &str = "291f42978254c197e830f3c86920defea20f02cbc5b91f037f4f9825a4772c081f8fc4b9662b84c6c6cc1a88cec60c87fe09c2fc44f5dafce65a8130";
    const KPR_ZERO: &str = "3b44ef6c773221129aa5cf233647a05eed944044c9e7aa95d4fe9513c7f3dd8ccf5f8ac052dbd31ff1297612437fb1962fbc66abe04708cffa8188e8";

    #[test]
    fn kpr_vector_5_3() {
        assert_eq!(seal_kpr(&h(CK), &h(SK)), h::<60>(KPR));
    }

    #[test]
    fn kpr_vector_all_zero() {
        assert_eq!(seal_kpr(&[0; 32], &[0; 32]), h::<60>(KPR_ZERO));
    }

    #[test]
    fn open_round_trip_and_rejections() {
        let kpr = h::<60>(KPR);
        assert_eq!(open_kpr(&kpr, &h(SK)), Some(h(CK)));
        assert_eq!(open_kpr(&kpr, &[0; 32]), None, "wrong SK must not open");
        for i in 0..KPR_LEN {
            let mut bad = kpr;
            bad[i] ^= 0x01;
            assert_eq!(
                open_kpr(&bad, &h(SK)),
                None,
                "bit flip at {i} must not open"
            );
        }
    }

    #[test]
    fn open_rejects_wrong_header() {
        // A correctly authenticated message whose header is not Windows' is not a Network Unlock KPR.
        let sk = h::<32>(SK);
        let cipher = Aes256Ccm::new(GenericArray::from_slice(&sk));
        let mut buf = [0u8; PLAINTEXT_LEN];
        buf[0] = 0x2d;
        let tag = cipher
            .encrypt_in_place_detached(&GenericArray::default(), &[], &mut buf)
            .unwrap();
        let mut kpr = [0u8; KPR_LEN];
        kpr[..16].copy_from_slice(&tag);
        kpr[16..].copy_from_slice(&buf);
        assert_eq!(open_kpr(&kpr, &sk), None);
    }
}
