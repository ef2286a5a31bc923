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

    /// Generates the escrow HTTPS certificate on first start, or again when `escrow.tls_names`
    /// names something the self-generated one does not (a certificate that did not sign itself is
    /// someone's CA-issued one and is never replaced). Without `tls_names` an existing
    /// certificate is kept even when the host's addresses changed: agents pin its fingerprint.
    pub(crate) fn ensure_tls_certificate(&self, names: &[String]) -> Result<TlsCertificate> {
        let (cert, key) = (self.tls_cert(), self.tls_key());
        let mut outcome = TlsCertificate::Created;
        if cert.exists() && key.exists() {
            if names.is_empty() {
                return Ok(TlsCertificate::Kept);
            }
            let der = certs::read_certificate_der(&cert)?;
            let have = certs::server_certificate_names(&der)
                .with_context(|| format!("cannot read the names of {}", cert.display()))?;
            let missing: Vec<String> = names
                .iter()
                .filter(|n| !have.names.iter().any(|h| same_name(h, n)))
                .cloned()
                .collect();
            if missing.is_empty() || !have.self_signed {
                return Ok(TlsCertificate::Kept);
            }
            outcome = TlsCertificate::Regenerated { missing };
        }
        let dir = self.root.join(TLS_DIR);
        create_private_dir(&dir)?;
        let names = if names.is_empty() {
            default_tls_names()
        } else {
            names.to_vec()
        };
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
        Ok(outcome)
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

/// What [`StateDir::ensure_tls_certificate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsCertificate {
    Kept,
    Created,
    /// `escrow.tls_names` named these, which the previous self-generated certificate lacked.
    Regenerated {
        missing: Vec<String>,
    },
}

/// DNS names compare without case, addresses by value (`::1` = `0:0::1`).
fn same_name(a: &str, b: &str) -> bool {
    match (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a
            .trim_end_matches('.')
            .eq_ignore_ascii_case(b.trim_end_matches('.')),
    }
}

/// The names of a certificate generated without `escrow.tls_names`: the host name, localhost and
/// every address of the host, so a remote CLI or agent reaching the appliance by address
/// verifies it. IPv6 link-local addresses are left out: a URL cannot use them without a zone.
fn default_tls_names() -> Vec<String> {
    let mut names = vec![
        hostname(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    // Without the list (a restricted sandbox) the certificate still serves loopback and the name.
    let interfaces = netunlock::netif::list_interfaces().unwrap_or_default();
    for i in interfaces.iter().filter(|i| !i.loopback) {
        let v4 = i.ipv4.iter().map(|n| std::net::IpAddr::V4(n.addr()));
        let v6 = i
            .ipv6
            .iter()
            .map(|n| n.addr())
            .filter(|a| !a.is_unicast_link_local())
            .map(std::net::IpAddr::V6);
        for a in v4.chain(v6) {
            let a = a.to_string();
            if !names.contains(&a) {
                names.push(a);
            }
        }
    }
    names
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
        assert_eq!(
            state.ensure_tls_certificate(&[]).unwrap(),
            TlsCertificate::Created
        );
        assert_eq!(
            state.ensure_tls_certificate(&[]).unwrap(),
            TlsCertificate::Kept
        );
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
