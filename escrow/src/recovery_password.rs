//! BitLocker 48-digit recovery passwords: validation and normalisation (pure, no I/O).
//!
//! Rule (escrow-anchors §2.4): 8 groups of 6 digits separated by hyphens or spaces (one kind per password);
//! each group `g` satisfies `g % 11 == 0 && g <= 720885` (it encodes the 16-bit word `g / 11`).

use std::fmt;

use zeroize::Zeroizing;

/// Largest valid group: 11 * 65535.
const MAX_GROUP: u32 = 720_885;

/// A validated recovery password in normalised form `111111-222222-…` (8 groups, hyphens).
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryPassword(Zeroizing<String>);

impl RecoveryPassword {
    /// The normalised password. Handle with care: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RecoveryPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryPassword(<redacted>)")
    }
}

/// Why a recovery password was rejected. Group numbers are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("recovery password is empty")]
    Empty,
    #[error("recovery password must have 8 groups of 6 digits; found {0} groups")]
    GroupCount(usize),
    #[error("recovery password mixes separators; use hyphens or spaces, not both")]
    MixedSeparators,
    #[error(
        "group {group} of the recovery password must be exactly 6 digits (found {len} characters)"
    )]
    GroupLength { group: usize, len: usize },
    #[error("group {group} of the recovery password contains a non-digit character")]
    NotDigits { group: usize },
    #[error("group {group} of the recovery password is not divisible by 11 (mistyped digit?)")]
    NotMultipleOf11 { group: usize },
    #[error("group {group} of the recovery password is larger than 720885")]
    TooLarge { group: usize },
}

/// Parse and normalise a recovery password. Leading/trailing whitespace is ignored.
pub fn parse_recovery_password(s: &str) -> Result<RecoveryPassword, PasswordError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(PasswordError::Empty);
    }
    let has_hyphen = s.contains('-');
    let has_space = s.contains(' ');
    if has_hyphen && has_space {
        return Err(PasswordError::MixedSeparators);
    }
    let sep = if has_space { ' ' } else { '-' };
    let groups: Vec<&str> = s.split(sep).collect();
    if groups.len() != 8 {
        return Err(PasswordError::GroupCount(groups.len()));
    }
    let mut out = Zeroizing::new(String::with_capacity(55));
    for (i, g) in groups.iter().enumerate() {
        let group = i + 1;
        if !g.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PasswordError::NotDigits { group });
        }
        if g.len() != 6 {
            return Err(PasswordError::GroupLength {
                group,
                len: g.chars().count(),
            });
        }
        let value: u32 = g.bytes().fold(0, |acc, b| acc * 10 + u32::from(b - b'0'));
        if !value.is_multiple_of(11) {
            return Err(PasswordError::NotMultipleOf11 { group });
        }
        if value > MAX_GROUP {
            return Err(PasswordError::TooLarge { group });
        }
        if i > 0 {
            out.push('-');
        }
        out.push_str(g);
    }
    Ok(RecoveryPassword(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(groups: [&str; 8]) -> String {
        groups.join("-")
    }

    #[test]
    fn table() {
        let ok = "000000-111111-222222-333333-444444-555555-666666-720885";
        let cases: Vec<(String, Result<&str, PasswordError>)> = vec![
            (ok.to_owned(), Ok(ok)),
            (ok.replace('-', " "), Ok(ok)),
            (format!("  {ok}\n"), Ok(ok)),
            // 531058 = 11 * 48278: valid per the rule although Microsoft's printed checksum formula rejects it.
            (
                pw([
                    "531058", "000000", "000000", "000000", "000000", "000000", "000000", "000000",
                ]),
                Ok("531058-000000-000000-000000-000000-000000-000000-000000"),
            ),
            // 720886 is not a multiple of 11.
            (
                pw([
                    "000000", "720886", "000000", "000000", "000000", "000000", "000000", "000000",
                ]),
                Err(PasswordError::NotMultipleOf11 { group: 2 }),
            ),
            // 720896 = 11 * 65536: a multiple of 11 but above the 16-bit range.
            (
                pw([
                    "000000", "000000", "720896", "000000", "000000", "000000", "000000", "000000",
                ]),
                Err(PasswordError::TooLarge { group: 3 }),
            ),
            (
                pw([
                    "000000", "000000", "000000", "000000", "000000", "000000", "000000", "000001",
                ]),
                Err(PasswordError::NotMultipleOf11 { group: 8 }),
            ),
            (
                "000000-111111-222222-333333-444444-555555-666666".to_owned(),
                Err(PasswordError::GroupCount(7)),
            ),
            (format!("{ok}-000000"), Err(PasswordError::GroupCount(9))),
            (
                "000000-111111-22a222-333333-444444-555555-666666-720885".to_owned(),
                Err(PasswordError::NotDigits { group: 3 }),
            ),
            (
                "000000-111111-222222-333333-444444-555555-666666-72088".to_owned(),
                Err(PasswordError::GroupLength { group: 8, len: 5 }),
            ),
            (
                "0000000-111111-222222-333333-444444-555555-666666-720885".to_owned(),
                Err(PasswordError::GroupLength { group: 1, len: 7 }),
            ),
            (
                "000000-111111 222222-333333-444444-555555-666666-720885".to_owned(),
                Err(PasswordError::MixedSeparators),
            ),
            (
                "000000--111111-222222-333333-444444-555555-666666".to_owned(),
                Err(PasswordError::GroupLength { group: 2, len: 0 }),
            ),
            ("".to_owned(), Err(PasswordError::Empty)),
            ("   ".to_owned(), Err(PasswordError::Empty)),
            (
                "000000-111111-222222-333333-444444-555555-666666-７２０８８５".to_owned(),
                Err(PasswordError::NotDigits { group: 8 }),
            ),
        ];
        for (input, expected) in cases {
            let got = parse_recovery_password(&input);
            match expected {
                Ok(norm) => assert_eq!(
                    got.map(|p| p.expose().to_owned()),
                    Ok(norm.to_owned()),
                    "{input:?}"
                ),
                Err(e) => assert_eq!(got.err(), Some(e), "{input:?}"),
            }
        }
    }

    #[test]
    fn every_multiple_of_11_up_to_max_is_valid() {
        let mut count = 0;
        for k in 0..=65535u32 {
            let g = format!("{:06}", k * 11);
            let s = [g.as_str(); 8].join("-");
            assert!(parse_recovery_password(&s).is_ok(), "{g}");
            count += 1;
        }
        assert_eq!(count, 65536);
    }

    #[test]
    fn error_names_the_group() {
        let e = parse_recovery_password("000000-000000-000000-000000-000012-000000-000000-000000")
            .err();
        assert!(
            e.map(|e| e.to_string())
                .unwrap_or_default()
                .contains("group 5")
        );
    }

    #[test]
    fn debug_redacts() {
        let p = parse_recovery_password("000000-111111-222222-333333-444444-555555-666666-720885");
        let d = format!("{p:?}");
        assert!(!d.contains("111111"), "{d}");
    }
}
