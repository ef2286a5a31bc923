//! Role from group membership: configured group DNs map to roles, the highest role wins
//! (admin > helpdesk > auditor, as MBAM's administrators group overrides its users group), and a
//! person in none of the groups gets no role (refused). Pure.

use crate::model::Role;

/// Rank of a role when a person is in several mapped groups.
fn rank(role: Role) -> u8 {
    match role {
        Role::Admin => 3,
        Role::Helpdesk => 2,
        Role::Auditor => 1,
    }
}

/// A DN in the form used for comparison: attribute types and values lower-cased, spaces around the
/// `,` and `=` separators removed (directories compare these attributes case-insensitively and
/// return DNs with varying case and spacing, e.g. `CN=Helpdesk, OU=Groups` vs `cn=helpdesk,ou=groups`).
/// Escaped separators (`\,`) stay part of their value.
pub fn normalise_dn(dn: &str) -> String {
    let mut rdns = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in dn.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == ',' || c == ';' {
            rdns.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    rdns.push(current);
    rdns.iter()
        .map(|rdn| match split_unescaped_eq(rdn) {
            Some((t, v)) => format!(
                "{}={}",
                t.trim().to_lowercase(),
                trim_unescaped(v).to_lowercase()
            ),
            None => rdn.trim().to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn split_unescaped_eq(rdn: &str) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, c) in rdn.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '=' => return Some((&rdn[..i], &rdn[i + 1..])),
            _ => {}
        }
    }
    None
}

/// Trim leading spaces and trailing spaces that are not escaped (`\ ` at the end is data).
fn trim_unescaped(v: &str) -> &str {
    let v = v.trim_start();
    let mut end = v.len();
    while v[..end].ends_with(' ') && !v[..end - 1].ends_with('\\') {
        end -= 1;
    }
    &v[..end]
}

/// Group DN → role, as configured; built once, compared by [`normalise_dn`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleMapping {
    groups: Vec<(String, Role)>,
}

impl RoleMapping {
    /// `groups`: (group DN, role) pairs. The same group listed twice keeps the higher role.
    pub fn new<S: AsRef<str>>(groups: impl IntoIterator<Item = (S, Role)>) -> Self {
        Self {
            groups: groups
                .into_iter()
                .map(|(dn, role)| (normalise_dn(dn.as_ref()), role))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The highest role granted by any of `member_of` (group DNs as the directory returned them), and
    /// the configured group that granted it; None when no mapped group matches.
    pub fn role_for<S: AsRef<str>>(&self, member_of: &[S]) -> Option<(Role, String)> {
        let member: Vec<String> = member_of.iter().map(|g| normalise_dn(g.as_ref())).collect();
        self.groups
            .iter()
            .filter(|(dn, _)| member.contains(dn))
            .max_by_key(|(_, role)| rank(*role))
            .map(|(dn, role)| (*role, dn.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_compare_without_case_or_separator_spacing() {
        let cases = [
            (
                "CN=Helpdesk,OU=Groups,DC=corp",
                "cn=helpdesk,ou=groups,dc=corp",
            ),
            ("cn=Help Desk , ou=Groups", "cn=help desk,ou=groups"),
            ("CN = BitLocker Admins;DC=x", "cn=bitlocker admins,dc=x"),
            ("cn=Smith\\, John,ou=People", "cn=smith\\, john,ou=people"),
            ("cn=trailing\\ ,dc=x", "cn=trailing\\ ,dc=x"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(normalise_dn(input), want, "input {input:?}");
        }
    }

    fn mapping() -> RoleMapping {
        RoleMapping::new([
            (
                "CN=BitLocker Admins,OU=Groups,DC=corp,DC=example",
                Role::Admin,
            ),
            (
                "CN=BitLocker Helpdesk,OU=Groups,DC=corp,DC=example",
                Role::Helpdesk,
            ),
            (
                "CN=BitLocker Auditors,OU=Groups,DC=corp,DC=example",
                Role::Auditor,
            ),
        ])
    }

    #[test]
    fn highest_mapped_role_wins_and_none_is_refused() {
        let admins = "cn=bitlocker admins,ou=groups,dc=corp,dc=example";
        let helpdesk = "CN=BitLocker Helpdesk, OU=Groups, DC=corp, DC=example";
        let auditors = "CN=BitLocker Auditors,OU=Groups,DC=corp,DC=example";
        let other = "CN=Domain Users,CN=Users,DC=corp,DC=example";
        let cases: [(&[&str], Option<Role>); 8] = [
            (&[admins], Some(Role::Admin)),
            (&[helpdesk], Some(Role::Helpdesk)),
            (&[auditors], Some(Role::Auditor)),
            (&[auditors, helpdesk], Some(Role::Helpdesk)),
            (&[auditors, admins, helpdesk], Some(Role::Admin)),
            (&[other, auditors], Some(Role::Auditor)),
            (&[other], None),
            (&[], None),
        ];
        let m = mapping();
        for (groups, want) in cases {
            assert_eq!(
                m.role_for(groups).map(|(r, _)| r),
                want,
                "groups {groups:?}"
            );
        }
    }

    #[test]
    fn a_group_whose_name_only_starts_like_a_mapped_one_does_not_match() {
        let m = mapping();
        assert_eq!(
            m.role_for(&["CN=BitLocker Admins Old,OU=Groups,DC=corp,DC=example"]),
            None
        );
        assert_eq!(m.role_for(&["CN=BitLocker Admins,OU=Groups,DC=corp"]), None);
    }
}
