//! What the escrow needs to know about the directory, validated once (pure: no file or network
//! access here; the daemon reads the service password and the CA file and hands them over).

use std::time::Duration;

use zeroize::Zeroizing;

use super::roles::RoleMapping;
use crate::model::Role;

/// How a person's name becomes a bind.
#[derive(Clone)]
pub enum BindMethod {
    /// Bind directly as `template` with `{user}` replaced: a UPN such as `{user}@corp.example`
    /// (Active Directory) or a DN such as `uid={user},ou=people,dc=example,dc=org` (the value is
    /// escaped per RFC 4514 when the template is a DN). The person's entry is then read with their
    /// own rights.
    Template(String),
    /// Bind as a service account, search the person with the user filter, then bind as the DN found
    /// (works on every directory; the only way to refuse a disabled account before binding to it).
    SearchThenBind {
        dn: String,
        password: Zeroizing<String>,
    },
}

impl std::fmt::Debug for BindMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Template(t) => f.debug_tuple("Template").field(t).finish(),
            Self::SearchThenBind { dn, .. } => f
                .debug_struct("SearchThenBind")
                .field("dn", dn)
                .finish_non_exhaustive(),
        }
    }
}

/// Where group membership comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupLookup {
    /// The person's `memberOf` attribute (Active Directory; OpenLDAP with the memberof overlay).
    /// Direct groups only.
    MemberOf,
    /// Search under `base` with `filter`, where `{dn}` is the person's DN and `{user}` the typed
    /// name (both escaped): `(member={dn})` for groupOfNames, `(memberUid={user})` for posixGroup,
    /// `(member:1.2.840.113556.1.4.1941:={dn})` for nested groups in Active Directory.
    Search { base: String, filter: String },
}

/// A validated directory configuration (see [`DirectoryConfig::validate`]).
#[derive(Clone, Debug)]
pub struct DirectoryConfig {
    /// `ldaps://host[:port]` or `ldap://host[:port]` (the latter only with `starttls`).
    pub url: String,
    pub starttls: bool,
    /// PEM CA certificates the directory's certificate must chain to; empty: the system bundle.
    pub ca_pem: Vec<u8>,
    pub bind: BindMethod,
    /// Base and filter (with `{user}`) that find a person's entry, e.g. `(sAMAccountName={user})`.
    pub user_base: String,
    pub user_filter: String,
    pub groups: GroupLookup,
    pub role_groups: Vec<(String, Role)>,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
}

/// Longest accepted typed user name and password (far above real ones; bounds the work per attempt).
pub const MAX_USER_NAME: usize = 256;
pub const MAX_PASSWORD: usize = 1024;

impl DirectoryConfig {
    /// Check everything that can be checked without the network; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let (scheme, _host, _port) = parse_url(&self.url)?;
        match (scheme, self.starttls) {
            ("ldap", false) => {
                return Err(format!(
                    "url {:?} is plain LDAP: passwords would cross the network in clear; use ldaps:// or set starttls = true",
                    self.url
                ));
            }
            ("ldaps", true) => {
                return Err(format!(
                    "url {:?} is already LDAPS; starttls applies to ldap:// URLs only",
                    self.url
                ));
            }
            _ => {}
        }
        match &self.bind {
            BindMethod::Template(t) => {
                if !t.contains("{user}") {
                    return Err(format!("bind_template {t:?} must contain {{user}}"));
                }
            }
            BindMethod::SearchThenBind { dn, password } => {
                check_dn("bind_dn", dn)?;
                if password.is_empty() {
                    return Err(
                        "the service account password is empty (an empty password is an unauthenticated bind)"
                            .into(),
                    );
                }
            }
        }
        check_dn("user_base", &self.user_base)?;
        check_filter("user_filter", &self.user_filter, &["{user}"])?;
        if let GroupLookup::Search { base, filter } = &self.groups {
            check_dn("group_base", base)?;
            check_filter("group_filter", filter, &["{dn}", "{user}"])?;
        }
        if self.role_groups.is_empty() {
            return Err("no role groups are configured: nobody could sign in".into());
        }
        let mut seen: Vec<(String, Role)> = Vec::new();
        for (dn, role) in &self.role_groups {
            check_dn("role group", dn)?;
            let n = super::roles::normalise_dn(dn);
            if let Some((_, other)) = seen.iter().find(|(d, r)| *d == n && r != role) {
                return Err(format!(
                    "group {dn:?} is mapped to both {other} and {role}; map each group to one role"
                ));
            }
            seen.push((n, *role));
        }
        for (name, t) in [
            ("connect_timeout", self.connect_timeout),
            ("operation_timeout", self.operation_timeout),
        ] {
            if t.is_zero() || t > Duration::from_secs(120) {
                return Err(format!("{name} must be between 1 ms and 120 s"));
            }
        }
        Ok(())
    }

    pub fn role_mapping(&self) -> RoleMapping {
        RoleMapping::new(self.role_groups.iter().map(|(d, r)| (d.as_str(), *r)))
    }

    /// Whether the bind template is a DN (its `{user}` is then DN-escaped) rather than a UPN.
    pub(crate) fn template_is_dn(template: &str) -> bool {
        template.contains('=')
    }
}

/// Split an LDAP URL into (scheme, host, port). Only `scheme://host[:port][/]` is accepted: search
/// parameters in the URL would be silently ignored, so they are refused.
pub fn parse_url(url: &str) -> Result<(&'static str, String, u16), String> {
    let (scheme, rest, default_port) = if let Some(r) = url.strip_prefix("ldaps://") {
        ("ldaps", r, 636)
    } else if let Some(r) = url.strip_prefix("ldap://") {
        ("ldap", r, 389)
    } else {
        return Err(format!("url {url:?} must start with ldaps:// or ldap://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '@', '#']) || rest.chars().any(char::is_whitespace) {
        return Err(format!(
            "url {url:?} must be just scheme://host[:port] (no user, path or query)"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("url {url:?}: unterminated IPv6 address"))?;
        (format!("[{h}]"), after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (rest.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("url {url:?} has no host name"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("url {url:?}: {p:?} is not a port number"))?,
        None => default_port,
    };
    Ok((scheme, host, port))
}

fn check_dn(what: &str, dn: &str) -> Result<(), String> {
    if dn.trim().is_empty() || !dn.contains('=') || dn.chars().any(char::is_control) {
        return Err(format!(
            "{what} {dn:?} is not a distinguished name (e.g. ou=people,dc=example,dc=org)"
        ));
    }
    Ok(())
}

fn check_filter(what: &str, filter: &str, placeholders: &[&str]) -> Result<(), String> {
    if !placeholders.iter().any(|p| filter.contains(p)) {
        return Err(format!(
            "{what} {filter:?} must contain {}",
            placeholders.join(" or ")
        ));
    }
    let mut depth = 0i32;
    for c in filter.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    if !filter.starts_with('(') || !filter.ends_with(')') || depth != 0 {
        return Err(format!(
            "{what} {filter:?} is not a parenthesised LDAP filter, e.g. (uid={{user}})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> DirectoryConfig {
        DirectoryConfig {
            url: "ldaps://dc1.corp.example".into(),
            starttls: false,
            ca_pem: Vec::new(),
            bind: BindMethod::SearchThenBind {
                dn: "CN=svc-netunlockd,OU=Service,DC=corp,DC=example".into(),
                password: Zeroizing::new("s3cret".into()),
            },
            user_base: "DC=corp,DC=example".into(),
            user_filter: "(sAMAccountName={user})".into(),
            groups: GroupLookup::MemberOf,
            role_groups: vec![
                ("CN=BitLocker Admins,DC=corp,DC=example".into(), Role::Admin),
                (
                    "CN=BitLocker Helpdesk,DC=corp,DC=example".into(),
                    Role::Helpdesk,
                ),
            ],
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn urls() {
        let ok = [
            (
                "ldaps://dc1.corp.example",
                ("ldaps", "dc1.corp.example", 636),
            ),
            (
                "ldaps://dc1.corp.example:3269/",
                ("ldaps", "dc1.corp.example", 3269),
            ),
            ("ldap://10.0.0.5", ("ldap", "10.0.0.5", 389)),
            ("ldap://[fd00::5]:1389", ("ldap", "[fd00::5]", 1389)),
        ];
        for (url, (s, h, p)) in ok {
            assert_eq!(parse_url(url), Ok((s, h.to_owned(), p)), "{url}");
        }
        for bad in [
            "dc1.corp.example",
            "https://dc1",
            "ldaps://",
            "ldaps://dc1:0",
            "ldaps://dc1:99999",
            "ldaps://dc1/dc=corp??sub",
            "ldaps://user@dc1",
            "ldaps://[fd00::5",
            "ldaps://dc 1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_sample_is_valid() {
        assert_eq!(sample().validate(), Ok(()));
    }

    #[test]
    fn invalid_configurations_name_the_setting() {
        type Edit = fn(&mut DirectoryConfig);
        let cases: [(Edit, &str); 14] = [
            (|c| c.url = "ldap://dc1".into(), "in clear"),
            (
                |c| {
                    c.url = "ldaps://dc1".into();
                    c.starttls = true;
                },
                "already LDAPS",
            ),
            (
                |c| c.bind = BindMethod::Template("uid=x,dc=y".into()),
                "{user}",
            ),
            (
                |c| {
                    c.bind = BindMethod::SearchThenBind {
                        dn: "cn=svc,dc=x".into(),
                        password: Zeroizing::new(String::new()),
                    }
                },
                "unauthenticated bind",
            ),
            (
                |c| {
                    c.bind = BindMethod::SearchThenBind {
                        dn: "svc".into(),
                        password: Zeroizing::new("p".into()),
                    }
                },
                "bind_dn",
            ),
            (|c| c.user_base = String::new(), "user_base"),
            (|c| c.user_filter = "(uid=alice)".into(), "{user}"),
            (|c| c.user_filter = "uid={user}".into(), "parenthesised"),
            (|c| c.user_filter = "(&(uid={user})".into(), "parenthesised"),
            (
                |c| {
                    c.groups = GroupLookup::Search {
                        base: "ou=groups,dc=x".into(),
                        filter: "(member=x)".into(),
                    }
                },
                "{dn} or {user}",
            ),
            (|c| c.role_groups.clear(), "nobody could sign in"),
            (
                |c| {
                    c.role_groups.push((
                        "cn=bitlocker admins, dc=corp,dc=example".into(),
                        Role::Auditor,
                    ))
                },
                "both admin and auditor",
            ),
            (|c| c.connect_timeout = Duration::ZERO, "connect_timeout"),
            (
                |c| c.operation_timeout = Duration::from_secs(600),
                "operation_timeout",
            ),
        ];
        for (edit, want) in cases {
            let mut c = sample();
            edit(&mut c);
            let err = c.validate().expect_err(want);
            assert!(err.contains(want), "{err:?} does not mention {want:?}");
        }
    }

    #[test]
    fn the_service_password_never_appears_in_debug_output() {
        assert!(!format!("{:?}", sample()).contains("s3cret"));
    }
}
