use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::super::{Config, Overrides, parse, validate};
use super::*;

fn check(text: &str) -> Result<Config> {
    validate(
        parse(text)?,
        None,
        &Overrides::default(),
        Some(PathBuf::from("/srv/state")),
    )
}

const AD: &str = r#"
[directory]
url = "ldaps://dc1.corp.example"
bind_dn = "CN=svc-netunlockd,OU=Service Accounts,DC=corp,DC=example"
bind_password_file = "/etc/netunlockd/directory-bind-password"
user_base = "DC=corp,DC=example"
admin_groups = ["CN=BitLocker Admins,OU=Groups,DC=corp,DC=example"]
helpdesk_groups = ["CN=BitLocker Helpdesk,OU=Groups,DC=corp,DC=example"]
auditor_groups = ["CN=BitLocker Auditors,OU=Groups,DC=corp,DC=example"]
"#;

#[test]
fn no_section_means_no_directory_sign_in() {
    assert!(check("").unwrap().directory.is_none());
}

#[test]
fn an_active_directory_section_gets_its_defaults() {
    let d = check(AD).unwrap().directory.unwrap();
    assert_eq!(d.url, "ldaps://dc1.corp.example");
    assert_eq!(
        d.user_filter,
        "(&(objectClass=user)(sAMAccountName={user}))"
    );
    assert_eq!(d.groups, GroupLookup::MemberOf);
    assert_eq!(d.role_groups.len(), 3);
    assert_eq!(d.role_groups[0].1, Role::Admin);
    assert_eq!(d.connect_timeout, Duration::from_secs(5));
    assert_eq!(
        d.bind_dn.unwrap().1,
        PasswordSource::File("/etc/netunlockd/directory-bind-password".into())
    );
}

#[test]
fn invalid_sections_are_refused_with_the_setting_named() {
    let openldap = |extra: &str| {
        format!(
            "[directory]\nurl = \"ldaps://ldap.example.org\"\nbind_template = \"uid={{user}},ou=people,dc=example,dc=org\"\n\
             user_base = \"ou=people,dc=example,dc=org\"\nuser_filter = \"(uid={{user}})\"\n\
             helpdesk_groups = [\"cn=helpdesk,ou=groups,dc=example,dc=org\"]\n{extra}"
        )
    };
    check(&openldap("")).unwrap();
    let cases = [
        (openldap("group_lookup = \"search\""), "group_base"),
        (openldap("group_lookup = \"nested\""), "group_lookup"),
        (openldap("bind_dn = \"cn=svc,dc=example,dc=org\""), "not both"),
        (openldap("bind_password_file = \"/p\""), "bind_password_file"),
        (openldap("starttls = true"), "already LDAPS"),
        (openldap("unknown_key = 1"), "unknown field"),
        (openldap("connect_timeout_secs = 0"), "connect_timeout"),
        (
            AD.replace("ldaps://dc1.corp.example", "ldap://dc1.corp.example"),
            "in clear",
        ),
        (
            AD.replace(
                "bind_dn = \"CN=svc-netunlockd,OU=Service Accounts,DC=corp,DC=example\"",
                "",
            ),
            "set bind_dn",
        ),
        (
            "[directory]\nurl = \"ldaps://dc1\"\nbind_template = \"{user}@corp\"\nuser_base = \"dc=corp\"\n"
                .to_owned(),
            "no role groups",
        ),
        (format!("[escrow]\nenabled = false\n{AD}"), "[escrow] is disabled"),
    ];
    for (text, want) in cases {
        let err = format!("{:#}", check(&text).expect_err(want));
        assert!(
            err.contains(want),
            "{err:?} does not mention {want:?}\n{text}"
        );
    }
}

#[test]
fn load_reads_the_password_file_and_refuses_loose_permissions_or_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca = dir.path().join("ca.pem");
    let cert = certs::generate_tls_server_certificate(&["dc1.corp.example".into()], 1).unwrap();
    std::fs::write(&ca, cert.cert_pem).unwrap();
    let text = AD.replace(
        "/etc/netunlockd/directory-bind-password",
        &pw.display().to_string(),
    ) + &format!("ca_file = {:?}\n", ca.display().to_string());
    let d = check(&text).unwrap().directory.unwrap();
    d.load().unwrap();
    assert!(d.describe().contains("ldaps://dc1.corp.example"));

    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(d.load().is_err());
    std::fs::write(&pw, "\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = format!("{:#}", d.load().unwrap_err());
    assert!(err.contains("empty"), "{err}");

    let mut missing_ca = d.clone();
    missing_ca.ca_file = Some(dir.path().join("nope.pem"));
    std::fs::write(&pw, "s3cret").unwrap();
    let err = format!("{:#}", missing_ca.load().unwrap_err());
    assert!(err.contains("ca_file"), "{err}");
}
