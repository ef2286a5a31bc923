//! Loads the daemon's keys: the Network Unlock certificates and the subnet policy into the
//! responder's key store (at start, by `config check`, and on SIGHUP, where a failure keeps the old
//! store), and the escrow key-encryption key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use netunlock::{
    CertificateCondition, CertificatePolicy, DisabledBy, KeyStore, RejectionSecret, UnlockKey,
    WdsPolicy,
};

use crate::config::{CertificateSettings, EscrowSettings, UnlockSettings};
use crate::security::check_private_file;
use crate::state::StateDir;

/// systemd credential name for the generated certificate's private key (`LoadCredential=`).
pub(crate) const UNLOCK_KEY_CREDENTIAL: &str = "network-unlock.key";

/// systemd credential name for the escrow key-encryption key (`LoadCredential[Encrypted]=`).
pub(crate) const KEK_CREDENTIAL: &str = "escrow-kek";

/// What was loaded, for the start-up summary, `config check`, health and the reload report.
#[derive(Debug, Clone)]
pub(crate) struct LoadedCertificate {
    pub(crate) thumbprint_hex: String,
    pub(crate) subject: String,
    pub(crate) not_before: time::OffsetDateTime,
    pub(crate) not_after: time::OffsetDateTime,
    pub(crate) enabled: bool,
    /// Why it is disabled (None while enabled).
    pub(crate) disabled_by: Option<DisabledBy>,
    pub(crate) allowed_subnets: Vec<String>,
    pub(crate) source: PathBuf,
}

impl LoadedCertificate {
    pub(crate) fn condition(&self, now: time::OffsetDateTime) -> CertificateCondition {
        CertificateCondition::classify(self.not_before, self.not_after, self.disabled_by, now)
    }
}

/// Everything one load read: the certificates and the subnet policy file they were checked against.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadedKeys {
    pub(crate) certificates: Vec<LoadedCertificate>,
    pub(crate) policy_file: Option<WdsPolicy>,
}

impl LoadedKeys {
    /// One line per certificate that will not work (or soon will not), for logs and `config check`.
    pub(crate) fn warnings(&self, now: time::OffsetDateTime) -> Vec<String> {
        self.certificates
            .iter()
            .filter_map(|c| {
                let condition = c.condition(now);
                condition.needs_attention().then(|| {
                    format!(
                        "network unlock certificate {} ({}, {}) {condition}",
                        c.thumbprint_hex,
                        c.subject,
                        c.source.display()
                    )
                })
            })
            .collect()
    }
}

/// The certificates to load: the configured ones, or the generated one in the state directory.
pub(crate) fn certificate_settings(
    unlock: &UnlockSettings,
    state: &StateDir,
) -> Vec<CertificateSettings> {
    if !unlock.certificates.is_empty() {
        return unlock.certificates.clone();
    }
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| Path::new(&d).join(UNLOCK_KEY_CREDENTIAL))
        .filter(|p| p.exists());
    vec![CertificateSettings {
        cert: state.unlock_cert(),
        key: Some(credential.unwrap_or_else(|| state.unlock_key())),
        pfx_password_file: None,
        enabled: true,
        allowed_subnets: Vec::new(),
    }]
}

/// Loads every certificate and key, applies the WDS subnet policy, and builds the key store.
pub(crate) fn load(
    unlock: &UnlockSettings,
    state: &StateDir,
    rejection_secret: &RejectionSecret,
) -> Result<(KeyStore, LoadedKeys)> {
    let wds = match &unlock.subnet_policy {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| {
                format!("cannot read the subnet policy file {}", path.display())
            })?;
            // Notepad saves UTF-16 with a byte-order mark; anything else undecodable gets the
            // command that converts it.
            let text = netunlock::decode_ini_bytes(&bytes).with_context(|| {
                format!(
                    "cannot decode the subnet policy file {p}; convert it to UTF-8 with \
                     `iconv -f UTF-16LE -t UTF-8 {p} -o {p}.utf8` and point subnet_policy at the result",
                    p = path.display()
                )
            })?;
            Some(netunlock::parse_wds_ini(&text).with_context(|| {
                format!(
                    "the subnet policy file {} is malformed (WDS would stop answering too); fix it",
                    path.display()
                )
            })?)
        }
        None => None,
    };

    let mut entries = Vec::new();
    let mut summary = Vec::new();
    for settings in certificate_settings(unlock, state) {
        let identity = load_identity(&settings)?;
        let configured = CertificatePolicy {
            enabled: settings.enabled,
            allowed_subnets: settings.allowed_subnets.clone(),
        };
        let thumbprint = identity.thumbprint();
        let section = wds.as_ref().and_then(|w| w.policy_for(&thumbprint));
        let disabled_by = DisabledBy::of(&configured, section);
        let policy = CertificatePolicy::merge_wds(configured, section);
        summary.push(LoadedCertificate {
            thumbprint_hex: identity.thumbprint_hex(),
            subject: identity.subject().to_string(),
            not_before: identity.not_before(),
            not_after: identity.not_after(),
            enabled: policy.enabled,
            disabled_by,
            allowed_subnets: policy
                .allowed_subnets
                .iter()
                .map(ToString::to_string)
                .collect(),
            source: settings.cert.clone(),
        });
        entries.push((UnlockKey::new(Arc::new(identity), rejection_secret), policy));
    }
    let store =
        KeyStore::new(entries).context("the configured Network Unlock certificates conflict")?;
    Ok((
        store,
        LoadedKeys {
            certificates: summary,
            policy_file: wds,
        },
    ))
}

/// The first line of a .pfx password file (which must be private, like a key).
pub(crate) fn read_pfx_password(path: &Path) -> Result<zeroize::Zeroizing<String>> {
    check_private_file(path, "the .pfx password file")?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    Ok(zeroize::Zeroizing::new(
        text.lines().next().unwrap_or("").to_string(),
    ))
}

fn load_identity(settings: &CertificateSettings) -> Result<certs::UnlockIdentity> {
    let password = match &settings.pfx_password_file {
        Some(p) => Some(read_pfx_password(p)?),
        None => None,
    };
    match &settings.key {
        Some(key) => check_private_file(key, "the Network Unlock private key")?,
        // A .pfx holds the private key itself.
        None => check_private_file(&settings.cert, "the Network Unlock .pfx file")?,
    }
    certs::load_unlock_identity(
        &settings.cert,
        settings.key.as_deref(),
        password.as_ref().map(|p| p.as_str()),
    )
    .with_context(|| {
        format!(
            "cannot load the Network Unlock certificate {}",
            settings.cert.display()
        )
    })
}

/// The KEK for `serve`: a systemd credential when one is provided, else the configured file,
/// created with mode 0600 on first start.
pub(crate) fn kek_for_serve(e: &EscrowSettings) -> Result<escrow::Kek> {
    if let Some(kek) = escrow::Kek::from_credentials_dir(KEK_CREDENTIAL)? {
        return Ok(kek);
    }
    let kek = escrow::Kek::load_or_create(&e.kek_file).with_context(|| {
        format!(
            "cannot load or create the key-encryption key {}",
            e.kek_file.display()
        )
    })?;
    check_private_file(&e.kek_file, "the key-encryption key")?;
    Ok(kek)
}

/// The KEK for one-shot commands: the credential or the existing file, never created here (a new
/// KEK would make every escrowed secret unreadable).
pub(crate) fn existing_kek(e: &EscrowSettings) -> Result<escrow::Kek> {
    if let Some(kek) = escrow::Kek::from_credentials_dir(KEK_CREDENTIAL)? {
        return Ok(kek);
    }
    check_private_file(&e.kek_file, "the key-encryption key")?;
    escrow::Kek::load(&e.kek_file).with_context(|| {
        format!(
            "cannot load the key-encryption key {}",
            e.kek_file.display()
        )
    })
}
