//! The set of loaded Network Unlock keys with their policies, and the answer/refuse decision.

use std::net::IpAddr;

use crate::crypto::UnlockKey;
use crate::error::KeyStoreError;
use crate::nkpu::Thumbprint;
use crate::policy::CertificatePolicy;

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

    /// `client_addr`: v4 = ciaddr (or the IP source if ciaddr is 0); v6 = the client's address (link-local
    /// always allowed). The thumbprint is public (it travels in clear), so a plain comparison is fine.
    pub fn decide(&self, thumbprint: &Thumbprint, client_addr: IpAddr) -> Decision<'_> {
        let Some((key, policy)) = self
            .entries
            .iter()
            .find(|(k, _)| &k.thumbprint() == thumbprint)
        else {
            return Decision::UnknownCertificate;
        };
        if !policy.enabled {
            Decision::Disabled
        } else if !policy.allows_address(client_addr) {
            Decision::SubnetRefused
        } else {
            Decision::Answer(key)
        }
    }
}
