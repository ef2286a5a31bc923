//! The directory the tests sign in against: names and passwords of its entries.

pub const BASE_DN: &str = "dc=example,dc=org";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
pub const ROOT_PASSWORD: &str = "root-secret";
pub const POLICY_DN: &str = "cn=default,ou=policies,dc=example,dc=org";

pub const PEOPLE_BASE: &str = "ou=people,dc=example,dc=org";
pub const GROUPS_BASE: &str = "ou=groups,dc=example,dc=org";
pub const SERVICE_DN: &str = "cn=svc-netunlockd,ou=services,dc=example,dc=org";
pub const SERVICE_PASSWORD: &str = "service-secret";

pub const ADMINS_GROUP: &str = "cn=netunlockd-admins,ou=groups,dc=example,dc=org";
pub const HELPDESK_GROUP: &str = "cn=netunlockd-helpdesk,ou=groups,dc=example,dc=org";
pub const AUDITORS_GROUP: &str = "cn=netunlockd-auditors,ou=groups,dc=example,dc=org";
pub const OTHER_GROUP: &str = "cn=staff,ou=groups,dc=example,dc=org";

/// (uid, password) of each person; all passwords are "<uid>-pw".
pub const ADMIN_USER: &str = "alice";
pub const HELPDESK_USER: &str = "hannah";
pub const AUDITOR_USER: &str = "audrey";
/// In the auditors and helpdesk groups: helpdesk wins.
pub const TWO_GROUPS_USER: &str = "tom";
/// In no role group (only "staff").
pub const NO_ROLE_USER: &str = "nora";
/// In the helpdesk group, but locked by an administrator (ppolicy `pwdAccountLockedTime`).
pub const DISABLED_USER: &str = "dave";

pub fn password_of(uid: &str) -> String {
    format!("{uid}-pw")
}

pub fn dn_of(uid: &str) -> String {
    format!("uid={uid},{PEOPLE_BASE}")
}

fn person(uid: &str, extra: &str) -> String {
    format!(
        "dn: uid={uid},{PEOPLE_BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {uid}-pw\n{extra}\n"
    )
}

fn group(dn: &str, members: &[&str]) -> String {
    let cn = dn
        .split(',')
        .next()
        .and_then(|r| r.strip_prefix("cn="))
        .unwrap_or(dn);
    let mut s = format!("dn: {dn}\nobjectClass: groupOfNames\ncn: {cn}\n");
    for m in members {
        s.push_str(&format!("member: {}\n", dn_of(m)));
    }
    s.push('\n');
    s
}

/// Everything loaded into a fresh [`crate::Slapd`].
pub static LDIF: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut s = format!(
        "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
         dn: ou=people,{BASE_DN}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{BASE_DN}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: ou=services,{BASE_DN}\nobjectClass: organizationalUnit\nou: services\n\n\
         dn: ou=policies,{BASE_DN}\nobjectClass: organizationalUnit\nou: policies\n\n\
         dn: {POLICY_DN}\nobjectClass: pwdPolicy\nobjectClass: device\ncn: default\npwdAttribute: userPassword\npwdLockout: TRUE\n\n\
         dn: {SERVICE_DN}\nobjectClass: person\ncn: svc-netunlockd\nsn: service\nuserPassword: {SERVICE_PASSWORD}\n\n"
    );
    for uid in [
        ADMIN_USER,
        HELPDESK_USER,
        AUDITOR_USER,
        TWO_GROUPS_USER,
        NO_ROLE_USER,
    ] {
        s.push_str(&person(uid, ""));
    }
    s.push_str(&person(
        DISABLED_USER,
        "pwdAccountLockedTime: 000001010000Z\n",
    ));
    s.push_str(&group(ADMINS_GROUP, &[ADMIN_USER]));
    s.push_str(&group(
        HELPDESK_GROUP,
        &[HELPDESK_USER, TWO_GROUPS_USER, DISABLED_USER],
    ));
    s.push_str(&group(AUDITORS_GROUP, &[AUDITOR_USER, TWO_GROUPS_USER]));
    s.push_str(&group(OTHER_GROUP, &[NO_ROLE_USER, ADMIN_USER]));
    s
});
