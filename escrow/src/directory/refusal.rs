//! Why a directory refused a person, from the bind result and the person's entry (pure). The person
//! is shown one generic refusal; the specific reason goes to the audit log.

use std::collections::HashMap;

/// Why a sign-in was refused by the directory (or before asking it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Empty password: RFC 4513 §5.1.2 makes that an unauthenticated bind that many servers accept.
    EmptyPassword,
    /// Empty, too long or containing control characters.
    InvalidUserName,
    NoSuchUser,
    /// The user filter matched more than one entry.
    AmbiguousUser,
    WrongPassword,
    AccountDisabled,
    AccountLocked,
    AccountExpired,
    PasswordExpired,
    /// Logon hours or workstation restrictions (AD 530/531).
    LogonRestricted,
    /// Authenticated, but in none of the mapped role groups.
    NoRoleGroup,
}

impl Refusal {
    /// The reason code written to the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmptyPassword => "empty_password",
            Self::InvalidUserName => "invalid_user_name",
            Self::NoSuchUser => "no_such_user",
            Self::AmbiguousUser => "ambiguous_user",
            Self::WrongPassword => "wrong_password",
            Self::AccountDisabled => "account_disabled",
            Self::AccountLocked => "account_locked",
            Self::AccountExpired => "account_expired",
            Self::PasswordExpired => "password_expired",
            Self::LogonRestricted => "logon_restricted",
            Self::NoRoleGroup => "no_role_group",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `data NNN` code Active Directory puts in the diagnostic message of a failed bind
/// (`80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 52e, v4563`).
pub fn ad_data_code(diagnostic: &str) -> Option<String> {
    let start = diagnostic.find("data ")? + "data ".len();
    let code: String = diagnostic[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    (!code.is_empty()).then(|| code.to_ascii_lowercase())
}

/// The refusal for an invalidCredentials (49) bind, from AD's `data` code when there is one.
pub fn from_bind_failure(diagnostic: &str) -> Refusal {
    match ad_data_code(diagnostic).as_deref() {
        Some("525") => Refusal::NoSuchUser,
        Some("530" | "531") => Refusal::LogonRestricted,
        Some("532" | "773") => Refusal::PasswordExpired,
        Some("533") => Refusal::AccountDisabled,
        Some("701") => Refusal::AccountExpired,
        Some("775") => Refusal::AccountLocked,
        _ => Refusal::WrongPassword,
    }
}

/// AD `userAccountControl` bit ACCOUNTDISABLE.
const UF_ACCOUNTDISABLE: u64 = 0x2;
/// OpenLDAP ppolicy: this `pwdAccountLockedTime` means "locked by an administrator until unlocked".
const PPOLICY_PERMANENT_LOCK: &str = "000001010000Z";

/// Attributes read with the person's entry to tell a disabled account from a wrong password.
pub const STATE_ATTRIBUTES: &[&str] = &[
    "userAccountControl",
    "pwdAccountLockedTime",
    "nsAccountLock",
];

/// A refusal the entry itself shows (AD disabled flag, OpenLDAP ppolicy lock, 389-DS/FreeIPA
/// `nsAccountLock`), checked before binding so a disabled account is reported as such.
pub fn from_entry(attrs: &HashMap<String, Vec<String>>) -> Option<Refusal> {
    let get = |name: &str| {
        attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first())
            .map(|v| v.trim())
    };
    if get("userAccountControl")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|uac| uac & UF_ACCOUNTDISABLE != 0)
    {
        return Some(Refusal::AccountDisabled);
    }
    if get("nsAccountLock").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Some(Refusal::AccountDisabled);
    }
    match get("pwdAccountLockedTime") {
        Some(PPOLICY_PERMANENT_LOCK) => Some(Refusal::AccountDisabled),
        Some(_) => Some(Refusal::AccountLocked),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_bind_diagnostics() {
        let msg = |code: &str| {
            format!(
                "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {code}, v4563"
            )
        };
        let cases = [
            ("525", Refusal::NoSuchUser),
            ("52e", Refusal::WrongPassword),
            ("52E", Refusal::WrongPassword),
            ("530", Refusal::LogonRestricted),
            ("531", Refusal::LogonRestricted),
            ("532", Refusal::PasswordExpired),
            ("533", Refusal::AccountDisabled),
            ("701", Refusal::AccountExpired),
            ("773", Refusal::PasswordExpired),
            ("775", Refusal::AccountLocked),
            ("999", Refusal::WrongPassword),
        ];
        for (code, want) in cases {
            assert_eq!(from_bind_failure(&msg(code)), want, "data {code}");
        }
        assert_eq!(ad_data_code(&msg("52e")).as_deref(), Some("52e"));
        assert_eq!(from_bind_failure(""), Refusal::WrongPassword);
        assert_eq!(from_bind_failure("data "), Refusal::WrongPassword);
        assert_eq!(ad_data_code("metadata x"), None);
    }

    #[test]
    fn entry_state() {
        let entry = |k: &str, v: &str| HashMap::from([(k.to_owned(), vec![v.to_owned()])]);
        let cases = [
            (
                entry("userAccountControl", "514"),
                Some(Refusal::AccountDisabled),
            ),
            (
                entry("useraccountcontrol", "66050"),
                Some(Refusal::AccountDisabled),
            ),
            (entry("userAccountControl", "512"), None),
            (entry("userAccountControl", "junk"), None),
            (
                entry("pwdAccountLockedTime", "000001010000Z"),
                Some(Refusal::AccountDisabled),
            ),
            (
                entry("pwdAccountLockedTime", "20261130010203Z"),
                Some(Refusal::AccountLocked),
            ),
            (
                entry("nsAccountLock", "TRUE"),
                Some(Refusal::AccountDisabled),
            ),
            (entry("nsAccountLock", "false"), None),
            (HashMap::new(), None),
        ];
        for (attrs, want) in cases {
            assert_eq!(from_entry(&attrs), want, "{attrs:?}");
        }
    }
}
