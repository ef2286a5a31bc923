//! Whether a loaded certificate will actually unlock anyone, so the daemon can say so loudly
//! (start-up, reload, `config check`, health) instead of loading it at INFO. Pure: the caller passes
//! the clock.

use std::fmt;

use time::{Duration, OffsetDateTime};

use crate::policy::CertificatePolicy;

/// A certificate that expires within this long is warned about (it still unlocks).
pub const EXPIRY_WARNING: Duration = Duration::days(30);

/// Why a certificate is disabled; each needs a different fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisabledBy {
    /// `enabled = false` in its `[[unlock.certificate]]` entry.
    Configuration,
    /// Its section in the WDS `bde-network-unlock.ini` says `DISABLED`.
    PolicyFile,
    /// The configured `allowed_subnets` and the policy file's subnets have nothing in common.
    NoCommonSubnet,
}

impl DisabledBy {
    /// Why `configured` merged with the policy file's section `wds` (see
    /// [`CertificatePolicy::merge_wds`]) ends up disabled, if it does.
    pub fn of(configured: &CertificatePolicy, wds: Option<&CertificatePolicy>) -> Option<Self> {
        if !configured.enabled {
            return Some(Self::Configuration);
        }
        let wds = wds?;
        if !wds.enabled {
            return Some(Self::PolicyFile);
        }
        if CertificatePolicy::merge_wds(configured.clone(), Some(wds)).enabled {
            None
        } else {
            Some(Self::NoCommonSubnet)
        }
    }
}

/// What a certificate is good for right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateCondition {
    Usable,
    /// Usable, but not for long.
    ExpiresSoon {
        days_left: i64,
    },
    Expired {
        not_after: OffsetDateTime,
    },
    NotYetValid {
        not_before: OffsetDateTime,
    },
    Disabled(DisabledBy),
}

impl CertificateCondition {
    /// A disabled certificate is reported as disabled whatever its dates (enabling it is the first
    /// fix); then validity, then nearing expiry.
    pub fn classify(
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        disabled: Option<DisabledBy>,
        now: OffsetDateTime,
    ) -> Self {
        if let Some(by) = disabled {
            Self::Disabled(by)
        } else if now < not_before {
            Self::NotYetValid { not_before }
        } else if now >= not_after {
            Self::Expired { not_after }
        } else if not_after - now <= EXPIRY_WARNING {
            Self::ExpiresSoon {
                days_left: (not_after - now).whole_days(),
            }
        } else {
            Self::Usable
        }
    }

    /// Whether clients can be unlocked with it. Whether Windows clients check the validity dates
    /// at boot is not documented, and the responder answers regardless; an expired or not yet valid
    /// certificate still counts as unusable so health never reports "ok" on the strength of one.
    pub fn usable(&self) -> bool {
        matches!(self, Self::Usable | Self::ExpiresSoon { .. })
    }

    /// Whether an operator should hear about it.
    pub fn needs_attention(&self) -> bool {
        !matches!(self, Self::Usable)
    }

    /// A short stable label for logs ("usable", "expires_soon", "expired", …).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Usable => "usable",
            Self::ExpiresSoon { .. } => "expires_soon",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Disabled(_) => "disabled",
        }
    }
}

/// The operator-facing sentence, e.g. "expired on 2026-01-31: replace it".
impl fmt::Display for CertificateCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usable => f.write_str("usable"),
            Self::ExpiresSoon { days_left } => write!(
                f,
                "expires within {days_left} day(s): roll a new certificate out to the clients now"
            ),
            Self::Expired { not_after } => write!(
                f,
                "expired on {}: clients may refuse it; roll a new certificate out",
                not_after.date()
            ),
            Self::NotYetValid { not_before } => write!(
                f,
                "not yet valid (valid from {}): check the appliance clock or the certificate",
                not_before.date()
            ),
            Self::Disabled(DisabledBy::Configuration) => {
                f.write_str("disabled (enabled = false in the configuration): it answers nobody")
            }
            Self::Disabled(DisabledBy::PolicyFile) => {
                f.write_str("disabled by the subnet policy file (DISABLED in its section): it answers nobody")
            }
            Self::Disabled(DisabledBy::NoCommonSubnet) => f.write_str(
                "disabled: its allowed_subnets and the subnet policy file's subnets do not overlap, so it answers nobody",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    fn policy(enabled: bool, subnets: &[&str]) -> CertificatePolicy {
        CertificatePolicy {
            enabled,
            allowed_subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn classification_table() {
        let year = Duration::days(365);
        let cases: &[(
            &str,
            OffsetDateTime,
            OffsetDateTime,
            Option<DisabledBy>,
            CertificateCondition,
        )] = &[
            (
                "valid for a year",
                NOW - year,
                NOW + year,
                None,
                CertificateCondition::Usable,
            ),
            (
                "31 days left",
                NOW - year,
                NOW + Duration::days(31),
                None,
                CertificateCondition::Usable,
            ),
            (
                "exactly 30 days left",
                NOW - year,
                NOW + Duration::days(30),
                None,
                CertificateCondition::ExpiresSoon { days_left: 30 },
            ),
            (
                "one hour left",
                NOW - year,
                NOW + Duration::hours(1),
                None,
                CertificateCondition::ExpiresSoon { days_left: 0 },
            ),
            (
                "expires this instant",
                NOW - year,
                NOW,
                None,
                CertificateCondition::Expired { not_after: NOW },
            ),
            (
                "expired yesterday",
                NOW - year,
                NOW - Duration::days(1),
                None,
                CertificateCondition::Expired {
                    not_after: NOW - Duration::days(1),
                },
            ),
            (
                "valid from tomorrow",
                NOW + Duration::days(1),
                NOW + year,
                None,
                CertificateCondition::NotYetValid {
                    not_before: NOW + Duration::days(1),
                },
            ),
            (
                "valid from this instant",
                NOW,
                NOW + year,
                None,
                CertificateCondition::Usable,
            ),
            (
                "disabled and expired: disabled wins",
                NOW - year,
                NOW - Duration::days(1),
                Some(DisabledBy::PolicyFile),
                CertificateCondition::Disabled(DisabledBy::PolicyFile),
            ),
            (
                "disabled in the configuration",
                NOW - year,
                NOW + year,
                Some(DisabledBy::Configuration),
                CertificateCondition::Disabled(DisabledBy::Configuration),
            ),
        ];
        for (name, not_before, not_after, disabled, want) in cases {
            let got = CertificateCondition::classify(*not_before, *not_after, *disabled, NOW);
            assert_eq!(got, *want, "{name}");
            assert_eq!(
                got.usable(),
                matches!(
                    want,
                    CertificateCondition::Usable | CertificateCondition::ExpiresSoon { .. }
                ),
                "{name}"
            );
            assert_eq!(
                got.needs_attention(),
                *want != CertificateCondition::Usable,
                "{name}"
            );
        }
    }

    #[test]
    fn disabled_reason_table() {
        let cases: &[(
            &str,
            CertificatePolicy,
            Option<CertificatePolicy>,
            Option<DisabledBy>,
        )] = &[
            ("no policy file section", policy(true, &[]), None, None),
            (
                "configured off",
                policy(false, &[]),
                None,
                Some(DisabledBy::Configuration),
            ),
            (
                "configured off and DISABLED in the file: the configuration is named first",
                policy(false, &[]),
                Some(policy(false, &[])),
                Some(DisabledBy::Configuration),
            ),
            (
                "DISABLED in the file",
                policy(true, &[]),
                Some(policy(false, &[])),
                Some(DisabledBy::PolicyFile),
            ),
            (
                "overlapping subnets",
                policy(true, &["10.0.0.0/8"]),
                Some(policy(true, &["10.1.0.0/16"])),
                None,
            ),
            (
                "disjoint subnets",
                policy(true, &["10.0.0.0/8"]),
                Some(policy(true, &["192.168.0.0/16"])),
                Some(DisabledBy::NoCommonSubnet),
            ),
            (
                "file section without subnets",
                policy(true, &["10.0.0.0/8"]),
                Some(policy(true, &[])),
                None,
            ),
        ];
        for (name, configured, wds, want) in cases {
            assert_eq!(DisabledBy::of(configured, wds.as_ref()), *want, "{name}");
        }
    }

    #[test]
    fn every_sentence_names_the_problem() {
        let words = [
            (
                CertificateCondition::ExpiresSoon { days_left: 3 },
                "expires within 3 day",
            ),
            (
                CertificateCondition::Expired { not_after: NOW },
                "expired on 2026-06-01",
            ),
            (
                CertificateCondition::NotYetValid { not_before: NOW },
                "not yet valid",
            ),
            (
                CertificateCondition::Disabled(DisabledBy::Configuration),
                "enabled = false",
            ),
            (
                CertificateCondition::Disabled(DisabledBy::PolicyFile),
                "subnet policy file",
            ),
            (
                CertificateCondition::Disabled(DisabledBy::NoCommonSubnet),
                "do not overlap",
            ),
        ];
        for (condition, needle) in words {
            let text = condition.to_string();
            assert!(text.contains(needle), "{text:?} lacks {needle:?}");
        }
    }
}
