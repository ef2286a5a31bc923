//! The state directory: what lives there and what is generated on first start.
//!
//! ```text
//! <state>/network-unlock/network-unlock.{key,pem,cer}   generated Network Unlock certificate (no [[unlock.certificate]])
//! <state>/escrow-tls/escrow.{key,pem}                   generated escrow HTTPS certificate (no tls_cert/tls_key)
//! <state>/kek.bin                                       escrow key-encryption key (unless a credential is used)
//! <state>/escrow.db                                     SQLite escrow database (default database_url)
//! <state>/server-duid                                   the appliance's stable DHCPv6 DUID
//! ```

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub(crate) const UNLOCK_DIR: &str = "network-unlock";
pub(crate) const UNLOCK_BASE: &str = "network-unlock";
pub(crate) const TLS_DIR: &str = "escrow-tls";
pub(crate) const TLS_BASE: &str = "escrow";

#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    #[cfg(test)]
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn unlock_cert(&self) -> PathBuf {
        self.root
            .join(UNLOCK_DIR)
            .join(format!("{UNLOCK_BASE}.pem"))
    }
    pub(crate) fn unlock_key(&self) -> PathBuf {
        self.root
            .join(UNLOCK_DIR)
            .join(format!("{UNLOCK_BASE}.key"))
    }
    pub(crate) fn unlock_cer(&self) -> PathBuf {
        self.root
            .join(UNLOCK_DIR)
            .join(format!("{UNLOCK_BASE}.cer"))
    }
    pub(crate) fn tls_cert(&self) -> PathBuf {
        self.root.join(TLS_DIR).join(format!("{TLS_BASE}.pem"))
    }
    pub(crate) fn tls_key(&self) -> PathBuf {
        self.root.join(TLS_DIR).join(format!("{TLS_BASE}.key"))
    }
    fn duid_file(&self) -> PathBuf {
        self.root.join("server-duid")
    }

    /// Creates the state directory (0750) if it is missing.
    pub(crate) fn ensure(&self) -> Result<()> {
        create_private_dir(&self.root)
    }

    /// Generates the Network Unlock certificate on first start. Returns true when it was created now.
    pub(crate) fn ensure_unlock_certificate(&self) -> Result<bool> {
        let (cert, key) = (self.unlock_cert(), self.unlock_key());
        match (cert.exists(), key.exists()) {
            (true, true) => return Ok(false),
            (false, false) => {}
            _ => bail!(
                "{} holds only one of {} and {}; restore the missing file from a backup, or move both away to \
                 generate a new certificate (clients then need the new .cer by Group Policy)",
                self.root.join(UNLOCK_DIR).display(),
                cert.display(),
                key.display()
            ),
        }
        let dir = self.root.join(UNLOCK_DIR);
        create_private_dir(&dir)?;
        let generated =
            certs::generate_unlock_certificate("BitLocker Network Unlock certificate", 3650)
                .context("cannot generate the Network Unlock certificate")?;
        certs::write_unlock_files(&dir, UNLOCK_BASE, &generated).with_context(|| {
            format!(
                "cannot write the Network Unlock certificate into {}",
                dir.display()
            )
        })?;
        Ok(true)
    }

    /// Generates the escrow HTTPS certificate on first start. Returns true when it was created now.
    pub(crate) fn ensure_tls_certificate(&self, names: &[String]) -> Result<bool> {
        let (cert, key) = (self.tls_cert(), self.tls_key());
        if cert.exists() && key.exists() {
            return Ok(false);
        }
        let dir = self.root.join(TLS_DIR);
        create_private_dir(&dir)?;
        let mut names = names.to_vec();
        if names.is_empty() {
            names.push(hostname());
            names.push("localhost".into());
            names.push("127.0.0.1".into());
            names.push("::1".into());
        }
        let generated = certs::generate_tls_server_certificate(&names, 3650)
            .context("cannot generate the escrow TLS certificate")?;
        // A half-written pair from an interrupted start is replaced as a whole.
        for p in [&cert, &key] {
            if p.exists() {
                std::fs::remove_file(p)
                    .with_context(|| format!("cannot replace {}", p.display()))?;
            }
        }
        certs::write_private_pem(&key, &generated.key_pem)?;
        certs::write_public_file(&cert, generated.cert_pem.as_bytes())?;
        Ok(true)
    }

    /// The appliance's DHCPv6 server DUID: a DUID-UUID (RFC 6355) created once and kept, so
    /// clients see the same server identity across restarts.
    pub(crate) fn server_duid(&self, create: bool) -> Result<Vec<u8>> {
        let path = self.duid_file();
        match std::fs::read(&path) {
            Ok(bytes) => {
                return parse_duid_file(&bytes).with_context(|| {
                    format!(
                        "{} is corrupt; delete it to create a new DUID",
                        path.display()
                    )
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        let mut duid = vec![0x00, 0x04];
        duid.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        if create {
            std::fs::write(&path, format!("{}\n", hex::encode(&duid)))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(duid)
    }
}

fn parse_duid_file(bytes: &[u8]) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(bytes).context("not text")?.trim();
    let duid = hex::decode(text).context("not hex")?;
    if duid.len() < 3 || duid.len() > 130 {
        bail!("a DUID is 3 to 130 bytes long, this one is {}", duid.len());
    }
    Ok(duid)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create the directory {} (does the service user own its parent?)",
                dir.display()
            )
        })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))
}

pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duid_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let a = state.server_duid(true).unwrap();
        assert_eq!(&a[..2], &[0, 4]);
        assert_eq!(a.len(), 18);
        assert_eq!(state.server_duid(true).unwrap(), a);
        std::fs::write(dir.path().join("server-duid"), "zz").unwrap();
        assert!(state.server_duid(true).is_err());
    }

    #[test]
    fn a_half_present_unlock_pair_is_an_error_not_a_silent_regeneration() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::create_dir_all(dir.path().join(UNLOCK_DIR)).unwrap();
        std::fs::write(state.unlock_cert(), "x").unwrap();
        let err = state.ensure_unlock_certificate().unwrap_err().to_string();
        assert!(err.contains("only one of"), "{err}");
    }

    #[test]
    fn first_start_generates_unlock_and_tls_material_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(&dir.path().join("state"));
        state.ensure().unwrap();
        assert!(state.ensure_unlock_certificate().unwrap());
        assert!(!state.ensure_unlock_certificate().unwrap());
        assert!(state.unlock_cer().exists());
        assert!(state.ensure_tls_certificate(&[]).unwrap());
        assert!(!state.ensure_tls_certificate(&[]).unwrap());
        let mode = std::fs::metadata(state.root())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o750);
        crate::security::check_private_file(&state.unlock_key(), "key").unwrap();
        crate::security::check_private_file(&state.tls_key(), "key").unwrap();
    }
}
