//! Writing key and certificate files: private keys 0600 from the first byte, atomic, never
//! overwriting; and the permission check applied to keys before they are loaded.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::error::CertError;
use crate::generate::GeneratedUnlockCert;

/// Paths written by [`write_unlock_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlockFiles {
    pub key: PathBuf,
    pub cert_pem: PathBuf,
    pub cert_cer: PathBuf,
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to a fresh temporary file beside `path` with `mode`, then links it into place
/// (link(2) fails if the target exists, so an existing file is never replaced, even in a race).
fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(CertError::Exists {
            path: path.to_path_buf(),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| CertError::InvalidParameter {
            what: "file path".into(),
            reason: format!("{} has no file name", path.display()),
        })?;
    let mut rnd = [0u8; 8];
    SystemRandom::new()
        .fill(&mut rnd)
        .map_err(|_| CertError::Generate {
            reason: "the system random generator failed".into(),
        })?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        hex::encode(rnd)
    ));
    let result = (|| {
        // The mode is given at creation, so the file is never more open than `mode` (umask can only narrow it).
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(write_err(path))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(write_err(path))?;
        f.write_all(bytes).map_err(write_err(path))?;
        f.sync_all().map_err(write_err(path))?;
        fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CertError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                write_err(path)(e)
            }
        })
    })();
    let _ = fs::remove_file(&tmp);
    if result.is_ok() {
        // Make the new directory entry durable; failure here does not undo a completed write.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
    }
    result
}

/// Writes a private key PEM with mode 0600, atomically; refuses to overwrite.
pub fn write_private_pem(path: &Path, pem: &str) -> Result<(), CertError> {
    write_new_file(path, pem.as_bytes(), 0o600)
}

/// Writes a public file (certificate) with mode 0644, atomically; refuses to overwrite.
pub fn write_public_file(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    write_new_file(path, bytes, 0o644)
}

fn check_base(base: &str) -> Result<(), CertError> {
    let ok = !base.is_empty()
        && !base.starts_with('.')
        && base.len() <= 200
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CertError::InvalidParameter {
            what: "file base name".into(),
            reason: format!(
                "{base:?} must be letters, digits, '-', '_' or '.', not starting with '.'"
            ),
        })
    }
}

/// Writes `<dir>/<base>.key` (PKCS#8 PEM, 0600), `<base>.pem` and `<base>.cer` (DER, for the Group
/// Policy). Refuses to overwrite any existing file; on failure, files already written are removed.
pub fn write_unlock_files(
    dir: &Path,
    base: &str,
    generated: &GeneratedUnlockCert,
) -> Result<UnlockFiles, CertError> {
    check_base(base)?;
    let files = UnlockFiles {
        key: dir.join(format!("{base}.key")),
        cert_pem: dir.join(format!("{base}.pem")),
        cert_cer: dir.join(format!("{base}.cer")),
    };
    for p in [&files.key, &files.cert_pem, &files.cert_cer] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(CertError::Exists { path: p.clone() });
        }
    }
    write_private_pem(&files.key, &generated.key_pkcs8_pem)?;
    if let Err(e) = write_public_file(&files.cert_pem, generated.cert_pem.as_bytes()) {
        let _ = fs::remove_file(&files.key);
        return Err(e);
    }
    if let Err(e) = write_public_file(&files.cert_cer, &generated.cert_der) {
        let _ = fs::remove_file(&files.key);
        let _ = fs::remove_file(&files.cert_pem);
        return Err(e);
    }
    Ok(files)
}

/// Refuses a private key file readable or writable by group/other (mode & 0o077 != 0).
pub fn check_private_key_permissions(path: &Path) -> Result<(), CertError> {
    let meta = fs::metadata(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(CertError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CertError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}
