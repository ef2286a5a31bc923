//! Envelope encryption of escrowed secrets (pure crypto + KEK file handling).
//!
//! KEK (32 bytes, file or systemd credential) --AES-256-GCM--> DEK (random per database, `keyring` table)
//! DEK --AES-256-GCM, random 96-bit nonce, AAD = row identity--> each secret.
//! A password MAC (HMAC-SHA256 under a key derived from the DEK) lets escrow compare passwords without
//! decrypting rows.

use std::fmt;
use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{digest, hmac, rand};
use zeroize::Zeroizing;

use crate::error::EscrowError;

/// Format byte of sealed blobs and wrapped keys.
const SEAL_V1: u8 = 1;
const KEK_WRAP_AAD: &str = "netunlockd-escrow keyring v1 dek";
/// What key files are called in errors unless the caller names their purpose.
const KEK_FILE: &str = "KEK file";

/// Key-encryption key. Never printed (Debug shows only its id).
#[derive(Clone)]
pub struct Kek(Zeroizing<[u8; 32]>);

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek(id={})", self.id())
    }
}

pub(crate) fn random32() -> Result<Zeroizing<[u8; 32]>, EscrowError> {
    let mut k = Zeroizing::new([0u8; 32]);
    rand::fill(&mut k[..])
        .map_err(|_| EscrowError::Crypto("the system random generator failed".into()))?;
    Ok(k)
}

impl Kek {
    /// A fresh random KEK. aws-lc's RNG does not fail on Linux; if it ever did, the process aborts rather
    /// than hand out a predictable key (use [`Kek::try_generate`] to get the error instead).
    pub fn generate() -> Self {
        match Self::try_generate() {
            Ok(k) => k,
            Err(_) => {
                eprintln!("netunlockd: the system random generator failed; refusing to continue");
                std::process::abort()
            }
        }
    }

    pub fn try_generate() -> Result<Self, EscrowError> {
        Ok(Self(random32()?))
    }

    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(Zeroizing::new(b))
    }

    /// Parse key file contents: 32 raw bytes, or 64 hex digits (optionally followed by a newline).
    pub fn from_file_bytes(data: &[u8], origin: &str) -> Result<Self, EscrowError> {
        if data.len() == 32 {
            let mut k = Zeroizing::new([0u8; 32]);
            k.copy_from_slice(data);
            return Ok(Self(k));
        }
        let text = std::str::from_utf8(data).map(str::trim).unwrap_or("");
        if text.len() == 64 {
            let mut k = Zeroizing::new([0u8; 32]);
            if hex::decode_to_slice(text, &mut k[..]).is_ok() {
                return Ok(Self(k));
            }
        }
        Err(EscrowError::Crypto(format!(
            "the key file {origin} is not a 256-bit key: expected 32 raw bytes or 64 hex digits ({} bytes found)",
            data.len()
        )))
    }

    /// Load an existing KEK file.
    pub fn load(path: &Path) -> Result<Self, EscrowError> {
        Self::load_named(path, KEK_FILE)
    }

    /// As [`Kek::load`] for a key file of another purpose (e.g. "backup key file"), which its
    /// errors name: the same format serves the backup key, and "the KEK file" would mislead.
    pub fn load_named(path: &Path, what: &str) -> Result<Self, EscrowError> {
        let data = Zeroizing::new(std::fs::read(path).map_err(|e| {
            EscrowError::Io(format!("cannot read the {what} {}: {e}", path.display()))
        })?);
        Self::from_file_bytes(&data, &path.display().to_string())
    }

    /// Load the KEK file, or create it (mode 0600, 64 hex digits) if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, EscrowError> {
        Self::load_or_create_named(path, KEK_FILE)
    }

    /// As [`Kek::load_or_create`], naming the file `what` in errors.
    pub fn load_or_create_named(path: &Path, what: &str) -> Result<Self, EscrowError> {
        if path.exists() {
            return Self::load_named(path, what);
        }
        let kek = Self::try_generate()?;
        kek.write_new_file_named(path, what)?;
        Ok(kek)
    }

    /// Write this KEK to a new file with mode 0600 (fails if the file exists).
    pub fn write_new_file(&self, path: &Path) -> Result<(), EscrowError> {
        self.write_new_file_named(path, KEK_FILE)
    }

    fn write_new_file_named(&self, path: &Path, what: &str) -> Result<(), EscrowError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                EscrowError::Io(format!("cannot create the {what} {}: {e}", path.display()))
            })?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(&self.0[..])));
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| {
                EscrowError::Io(format!("cannot write the {what} {}: {e}", path.display()))
            })
    }

    /// `$CREDENTIALS_DIRECTORY/<name>` (systemd `LoadCredential=`/`LoadCredentialEncrypted=`), if set and present.
    pub fn from_credentials_dir(name: &str) -> Result<Option<Self>, EscrowError> {
        let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
            return Ok(None);
        };
        let path = Path::new(&dir).join(name);
        if !path.exists() {
            return Ok(None);
        }
        Self::load(&path).map(Some)
    }

    /// Short public fingerprint (16 hex digits) identifying which KEK wrapped a database's data key.
    pub fn id(&self) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"netunlockd-escrow kek id v1\0");
        ctx.update(&self.0[..]);
        hex::encode(&ctx.finish().as_ref()[..8])
    }

    fn aead(&self) -> Result<LessSafeKey, EscrowError> {
        aead_key(&self.0)
    }

    /// Wrap a DEK for storage in the keyring table.
    pub(crate) fn wrap(&self, dek: &Dek) -> Result<Vec<u8>, EscrowError> {
        seal_with(&self.aead()?, &dek.0[..], KEK_WRAP_AAD.as_bytes())
    }

    /// Unwrap a DEK from the keyring table.
    pub(crate) fn unwrap_dek(&self, wrapped: &[u8]) -> Result<Dek, EscrowError> {
        let plain = open_with(&self.aead()?, wrapped, KEK_WRAP_AAD.as_bytes())?;
        if plain.len() != 32 {
            return Err(EscrowError::Crypto(
                "the wrapped data key has the wrong length".into(),
            ));
        }
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&plain);
        Ok(Dek(k))
    }

    /// AES-256-GCM key for whole-file encryption (backups).
    pub(crate) fn seal_blob(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, EscrowError> {
        seal_with(&self.aead()?, plain, aad)
    }

    pub(crate) fn open_blob(
        &self,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EscrowError> {
        open_with(&self.aead()?, sealed, aad)
    }
}

/// Per-database data-encryption key.
pub(crate) struct Dek(Zeroizing<[u8; 32]>);

impl Dek {
    pub(crate) fn generate() -> Result<Self, EscrowError> {
        Ok(Self(random32()?))
    }
}

fn aead_key(k: &[u8; 32]) -> Result<LessSafeKey, EscrowError> {
    UnboundKey::new(&AES_256_GCM, k)
        .map(LessSafeKey::new)
        .map_err(|_| EscrowError::Crypto("cannot build an AES-256-GCM key".into()))
}

/// `v1 || nonce(12) || ciphertext || tag(16)`.
fn seal_with(key: &LessSafeKey, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, EscrowError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce)
        .map_err(|_| EscrowError::Crypto("the system random generator failed".into()))?;
    let mut buf = Vec::with_capacity(1 + NONCE_LEN + plain.len() + 16);
    buf.push(SEAL_V1);
    buf.extend_from_slice(&nonce);
    let mut body = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| EscrowError::Crypto("sealing failed".into()))?;
    buf.extend_from_slice(&body);
    body.fill(0);
    Ok(buf)
}

fn open_with(
    key: &LessSafeKey,
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EscrowError> {
    if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != SEAL_V1 {
        return Err(EscrowError::Crypto(
            "sealed value is truncated or has an unknown format".into(),
        ));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
    let mut body = Zeroizing::new(sealed[1 + NONCE_LEN..].to_vec());
    let n = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
        .map_err(|_| {
            EscrowError::Crypto(
                "a sealed value failed authentication (wrong key, or the value was moved to another row or altered)"
                    .into(),
            )
        })?
        .len();
    body.truncate(n);
    Ok(body)
}

/// Seals and opens row secrets under the DEK; computes password MACs.
pub struct Sealer {
    key: LessSafeKey,
    mac: hmac::Key,
    /// Fingerprint of the DEK (not secret), stored in the keyring for diagnostics.
    dek_id: String,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer(dek={})", self.dek_id)
    }
}

impl Sealer {
    pub(crate) fn new(dek: &Dek) -> Result<Self, EscrowError> {
        // Separate subkeys for encryption and MAC, derived with HMAC-SHA256 (a one-block HKDF-expand).
        let prk = hmac::Key::new(hmac::HMAC_SHA256, &dek.0[..]);
        let enc = Zeroizing::new(
            hmac::sign(&prk, b"netunlockd-escrow seal v1\x01")
                .as_ref()
                .to_vec(),
        );
        let mac = Zeroizing::new(
            hmac::sign(&prk, b"netunlockd-escrow password-mac v1\x01")
                .as_ref()
                .to_vec(),
        );
        let id = hmac::sign(&prk, b"netunlockd-escrow dek id v1\x01");
        let mut enc32 = Zeroizing::new([0u8; 32]);
        enc32.copy_from_slice(&enc[..32]);
        Ok(Self {
            key: aead_key(&enc32)?,
            mac: hmac::Key::new(hmac::HMAC_SHA256, &mac),
            dek_id: hex::encode(&id.as_ref()[..8]),
        })
    }

    pub fn dek_id(&self) -> &str {
        &self.dek_id
    }

    /// Seal `plain` bound to the row identity `aad`.
    pub fn seal(&self, plain: &[u8], aad: &str) -> Result<Vec<u8>, EscrowError> {
        seal_with(&self.key, plain, aad.as_bytes())
    }

    /// Open a value sealed for row identity `aad`; fails if it was sealed for another row.
    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<Zeroizing<Vec<u8>>, EscrowError> {
        open_with(&self.key, sealed, aad.as_bytes())
    }

    /// Keyed MAC of a normalised recovery password, for constant-time equality checks without decryption.
    pub fn password_mac(&self, normalised: &str) -> Vec<u8> {
        hmac::sign(&self.mac, normalised.as_bytes())
            .as_ref()
            .to_vec()
    }
}

/// Row identities used as AAD.
pub mod aad {
    pub fn recovery_password(device_id: i64, volume_guid: &str, protector_id: &str) -> String {
        format!("protector:{device_id}:{volume_guid}:{protector_id}:recovery_password")
    }
    pub fn key_package(device_id: i64, volume_guid: &str, protector_id: &str) -> String {
        format!("protector:{device_id}:{volume_guid}:{protector_id}:key_package")
    }
    pub fn tpm_owner_auth(device_id: i64) -> String {
        format!("device:{device_id}:tpm_owner_auth")
    }
}

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    #[allow(deprecated)]
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// SHA-256 of a bearer secret (tokens are stored only as this hash).
pub fn token_hash(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// A new bearer secret: `<prefix>_` + 43 base64url characters (256 bits).
pub fn new_token_secret(prefix: &str) -> Result<Zeroizing<String>, EscrowError> {
    use base64::Engine;
    let k = random32()?;
    Ok(Zeroizing::new(format!(
        "{prefix}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&k[..])
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(&Dek::generate().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn seal_open_roundtrip_and_aad_binding() {
        let s = sealer();
        let a = aad::recovery_password(1, "vol", "P1");
        let b = aad::recovery_password(2, "vol", "P1");
        let sealed = s.seal(b"secret", &a).unwrap_or_default();
        assert_eq!(
            s.open(&sealed, &a).map(|p| p.to_vec()).ok(),
            Some(b"secret".to_vec())
        );
        assert!(
            s.open(&sealed, &b).is_err(),
            "a ciphertext moved to another row must not open"
        );
        let mut tampered = sealed.clone();
        if let Some(x) = tampered.last_mut() {
            *x ^= 1;
        }
        assert!(s.open(&tampered, &a).is_err());
        assert!(s.open(&sealed[..10], &a).is_err());
        assert!(
            sealer().open(&sealed, &a).is_err(),
            "another DEK must not open it"
        );
    }

    #[test]
    fn kek_wrap_unwrap() {
        let k1 = Kek::generate();
        let k2 = Kek::generate();
        assert_ne!(k1.id(), k2.id());
        let dek = Dek::generate().unwrap_or_else(|e| panic!("{e}"));
        let w = k1.wrap(&dek).unwrap_or_default();
        let back = k1.unwrap_dek(&w).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&back.0[..], &dek.0[..]);
        assert!(k2.unwrap_dek(&w).is_err());
    }

    #[test]
    fn kek_file_forms_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("kek");
        let k = Kek::load_or_create(&p).unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        let again = Kek::load_or_create(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.id(), again.id());
        assert!(!format!("{k:?}").contains(&hex::encode(&k.0[..])));
        assert_eq!(
            Kek::from_file_bytes(&[7u8; 32], "raw").map(|k| k.id()).ok(),
            Some(Kek::from_bytes([7u8; 32]).id())
        );
        assert!(Kek::from_file_bytes(b"short", "x").is_err());
        assert!(Kek::from_file_bytes(&[b'z'; 64], "x").is_err());
        assert!(Kek::load(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn password_mac_is_keyed() {
        let s1 = sealer();
        let s2 = sealer();
        assert_eq!(s1.password_mac("a"), s1.password_mac("a"));
        assert_ne!(s1.password_mac("a"), s1.password_mac("b"));
        assert_ne!(s1.password_mac("a"), s2.password_mac("a"));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
