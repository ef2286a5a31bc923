//! The set of loaded Network Unlock keys with their policies, and the answer/refuse decision.

pub mod condition;

use crate::crypto::UnlockKey;
use crate::error::KeyStoreError;
use crate::nkpu::Thumbprint;
use crate::policy::{CertificatePolicy, PolicyAddrs};

/// Outcome of looking a request up; everything but `Answer` means silence.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    Answer(&'a UnlockKey),
    UnknownCertificate,
    SubnetRefused,
    Disabled,
}

impl Decision<'_> {
    /// A short stable label for logs and metrics ("answered", "unknown_certificate", …).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Answer(_) => "answered",
            Self::UnknownCertificate => "unknown_certificate",
            Self::SubnetRefused => "subnet_refused",
            Self::Disabled => "disabled",
        }
    }
}

/// All certificates the responder answers for (several at once during rotation).
#[derive(Debug, Default)]
pub struct KeyStore {
    entries: Vec<(UnlockKey, CertificatePolicy)>,
}

impl KeyStore {
    /// Fails if two entries share a thumbprint ([MS-NKPU] 3.2.1: each configuration has its own key).
    pub fn new(entries: Vec<(UnlockKey, CertificatePolicy)>) -> Result<Self, KeyStoreError> {
        for (i, (key, _)) in entries.iter().enumerate() {
            let t = key.thumbprint();
            if entries[..i].iter().any(|(k, _)| k.thumbprint() == t) {
                return Err(KeyStoreError::DuplicateThumbprint {
                    thumbprint: hex::encode(t),
                });
            }
        }
        Ok(Self { entries })
    }

    pub fn empty() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = (&UnlockKey, &CertificatePolicy)> {
        self.entries.iter().map(|(k, p)| (k, p))
    }

    /// The key for a thumbprint, whatever its policy (workers use the snapshot the decision was
    /// made with).
    pub fn key(&self, thumbprint: &Thumbprint) -> Option<&UnlockKey> {
        self.entries
            .iter()
            .map(|(k, _)| k)
            .find(|k| &k.thumbprint() == thumbprint)
    }

    /// `policy`: the addresses the subnet policy reads, from `trust::admit_v4`/`admit_v6`. The
    /// thumbprint is public (it travels in clear), so a plain comparison is fine.
    pub fn decide(&self, thumbprint: &Thumbprint, policy: &PolicyAddrs) -> Decision<'_> {
        let Some((key, entry_policy)) = self
            .entries
            .iter()
            .find(|(k, _)| &k.thumbprint() == thumbprint)
        else {
            return Decision::UnknownCertificate;
        };
        if !entry_policy.enabled {
            Decision::Disabled
        } else if !entry_policy.allows(policy) {
            Decision::SubnetRefused
        } else {
            Decision::Answer(key)
        }
    }
}
