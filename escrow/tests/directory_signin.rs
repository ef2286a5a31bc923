//! Directory sign-in against a real OpenLDAP server (`slapd`, started per test by the testkit):
//! each role group, refusals (wrong password, no role group, disabled account, empty password,
//! filter injection), LDAPS and StartTLS, TLS name and CA failures, an unreachable directory, and
//! the audit record of every outcome.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_common;

use std::net::IpAddr;
use std::time::Duration;

use escrow::directory::{BindMethod, Directory, DirectoryConfig, GroupLookup};
use escrow::{
    Actor, AuditFilter, AuditOutcome, AuditRecord, EscrowError, EscrowService, Kek, Role,
};
use store_common::TestDb;
use testkit::{
    ADMIN_USER, ADMINS_GROUP, AUDITOR_USER, AUDITORS_GROUP, DISABLED_USER, GROUPS_BASE,
    HELPDESK_GROUP, HELPDESK_USER, NO_ROLE_USER, PEOPLE_BASE, SERVICE_DN, SERVICE_PASSWORD, Slapd,
    TWO_GROUPS_USER, password_of,
};
use zeroize::Zeroizing;

fn slapd() -> Option<Slapd> {
    match Slapd::start() {
        Ok(s) => Some(s),
        Err(e) => {
            println!("SKIP: {e}");
            None
        }
    }
}

/// Search-then-bind over LDAPS with a group search (groupOfNames).
fn config(slapd: &Slapd) -> DirectoryConfig {
    DirectoryConfig {
        url: slapd.ldaps_url(),
        starttls: false,
        ca_pem: slapd.ca_pem.clone().into_bytes(),
        bind: BindMethod::SearchThenBind {
            dn: SERVICE_DN.into(),
            password: Zeroizing::new(SERVICE_PASSWORD.into()),
        },
        user_base: PEOPLE_BASE.into(),
        user_filter: "(&(objectClass=inetOrgPerson)(uid={user}))".into(),
        groups: GroupLookup::Search {
            base: GROUPS_BASE.into(),
            filter: "(&(objectClass=groupOfNames)(member={dn}))".into(),
        },
        role_groups: vec![
            // Spelled differently from the directory on purpose: DNs compare case-insensitively.
            (
                "CN=netunlockd-admins, OU=groups, DC=example, DC=org".into(),
                Role::Admin,
            ),
            (HELPDESK_GROUP.into(), Role::Helpdesk),
            (AUDITORS_GROUP.into(), Role::Auditor),
        ],
        connect_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(5),
    }
}

fn client() -> Option<IpAddr> {
    Some("192.0.2.10".parse().unwrap())
}

async fn sign_ins(svc: &EscrowService) -> Vec<AuditRecord> {
    svc.audit_report(
        &Actor::local("test"),
        AuditFilter {
            kind: Some("sign_in".into()),
            ..AuditFilter::default()
        },
    )
    .await
    .unwrap()
}

fn detail(r: &AuditRecord) -> serde_json::Value {
    serde_json::from_str(&r.detail).unwrap()
}

async fn each_role_group_signs_in_with_its_role(db: TestDb) {
    let Some(slapd) = slapd() else { return };
    let svc = db.open(Kek::generate()).await.unwrap();
    let dir = Directory::new(config(&slapd)).unwrap();
    for (user, role) in [
        (ADMIN_USER, Role::Admin),
        (HELPDESK_USER, Role::Helpdesk),
        (AUDITOR_USER, Role::Auditor),
        (TWO_GROUPS_USER, Role::Helpdesk),
    ] {
        let s = svc
            .sign_in_directory(&dir, user, &password_of(user), client())
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(s.operator.role, role, "{user}");
        assert_eq!(s.operator.name, user);
        assert_eq!(s.actor.role(), Some(role));
        assert_eq!(s.directory_dn, testkit::dn_of(user));
    }
    // Signing in again reuses the record; a typed name in another case is the same person.
    let again = svc
        .sign_in_directory(&dir, "Alice", &password_of(ADMIN_USER), None)
        .await
        .unwrap();
    let operators = svc.list_operators(&Actor::local("test")).await.unwrap();
    assert_eq!(operators.len(), 4, "{operators:?}");
    assert!(operators.iter().any(|o| o.id == again.operator.id));

    // Membership is re-checked at every sign-in: hannah joins the admins group.
    slapd
        .ldapmodify(&format!(
            "dn: {ADMINS_GROUP}\nchangetype: modify\nadd: member\nmember: {}\n",
            testkit::dn_of(HELPDESK_USER)
        ))
        .unwrap();
    let promoted = svc
        .sign_in_directory(&dir, HELPDESK_USER, &password_of(HELPDESK_USER), None)
        .await
        .unwrap();
    assert_eq!(promoted.operator.role, Role::Admin);

    let audit = sign_ins(&svc).await;
    assert_eq!(audit.len(), 6);
    assert!(audit.iter().all(|r| r.outcome == AuditOutcome::Success));
    let first = &audit[0];
    assert_eq!(first.actor_kind, "operator");
    assert_eq!(first.actor_name, ADMIN_USER);
    assert_eq!(first.client_addr.as_deref(), Some("192.0.2.10"));
    assert_eq!(detail(first)["role"], "admin");
    assert_eq!(detail(first)["created"], true);
    let last = detail(audit.last().unwrap());
    assert_eq!(last["role"], "admin");
    assert_eq!(last["previous_role"], "helpdesk");
    assert_eq!(last["created"], false);
    assert!(matches!(
        svc.verify_audit_chain().await.unwrap(),
        escrow::ChainVerification::Ok { .. }
    ));
}
both_backends!(roles, each_role_group_signs_in_with_its_role);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_generic_and_each_reason_is_audited() {
    let Some(slapd) = slapd() else { return };
    let db = TestDb::sqlite().await;
    let svc = db.open(Kek::generate()).await.unwrap();
    let dir = Directory::new(config(&slapd)).unwrap();
    let cases = [
        (ADMIN_USER, "not-her-password", "wrong_password"),
        (
            NO_ROLE_USER,
            password_of(NO_ROLE_USER).as_str(),
            "no_role_group",
        ),
        (
            DISABLED_USER,
            password_of(DISABLED_USER).as_str(),
            "account_disabled",
        ),
        (ADMIN_USER, "", "empty_password"),
        ("nobody", "whatever", "no_such_user"),
        // Unescaped, this filter would match every person (and the service bind would succeed).
        ("*)(uid=*", "whatever", "no_such_user"),
        ("*", password_of(ADMIN_USER).as_str(), "no_such_user"),
        ("", "x", "invalid_user_name"),
    ]
    .map(|(u, p, r)| (u.to_owned(), p.to_owned(), r));
    for (user, password, _) in &cases {
        let err = svc
            .sign_in_directory(&dir, user, password, client())
            .await
            .expect_err(user);
        assert!(matches!(err, EscrowError::SignInRefused), "{user}: {err:?}");
        assert_eq!(err.http_status(), 401);
        // The person learns nothing about why.
        assert!(!err.to_string().contains("disabled account"), "{err}");
    }
    let audit = sign_ins(&svc).await;
    let reasons: Vec<_> = audit.iter().map(|r| r.reason.clone().unwrap()).collect();
    let expected: Vec<_> = cases.iter().map(|(_, _, r)| r.to_string()).collect();
    assert_eq!(reasons, expected);
    for (r, (user, _, _)) in audit.iter().zip(&cases) {
        assert_eq!(r.outcome, AuditOutcome::Failure);
        assert_eq!(r.actor_kind, "directory_user");
        assert_eq!(&r.actor_name, user);
        assert_eq!(r.client_addr.as_deref(), Some("192.0.2.10"));
    }
    // The no-role refusal records which entry the directory found.
    assert_eq!(detail(&audit[1])["dn"], testkit::dn_of(NO_ROLE_USER));
    // Nobody was turned into an operator.
    assert!(
        svc.list_operators(&Actor::local("test"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_operators_and_local_name_clashes_are_refused() {
    let Some(slapd) = slapd() else { return };
    let db = TestDb::sqlite().await;
    let svc = db.open(Kek::generate()).await.unwrap();
    let dir = Directory::new(config(&slapd)).unwrap();
    let admin = Actor::local("test");
    // Another admin, so the directory admin is not the last one (which cannot be disabled).
    svc.bootstrap_admin("root").await.unwrap();
    let alice = svc
        .sign_in_directory(&dir, ADMIN_USER, &password_of(ADMIN_USER), None)
        .await
        .unwrap();
    svc.disable_operator(&admin, alice.operator.id)
        .await
        .unwrap();
    let err = svc
        .sign_in_directory(&dir, ADMIN_USER, &password_of(ADMIN_USER), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EscrowError::SignInRefused), "{err:?}");

    // A local operator (token only) named like a directory person is not taken over.
    svc.create_operator(&admin, AUDITOR_USER, Role::Auditor)
        .await
        .unwrap();
    let err = svc
        .sign_in_directory(&dir, AUDITOR_USER, &password_of(AUDITOR_USER), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EscrowError::SignInRefused), "{err:?}");
    let reasons: Vec<_> = sign_ins(&svc)
        .await
        .iter()
        .filter_map(|r| r.reason.clone())
        .collect();
    assert_eq!(
        reasons,
        ["operator_disabled", "name_taken_by_local_operator"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_a_dn_template_and_member_of() {
    let Some(slapd) = slapd() else { return };
    let db = TestDb::sqlite().await;
    let svc = db.open(Kek::generate()).await.unwrap();
    let mut c = config(&slapd);
    c.url = slapd.ldap_url();
    c.starttls = true;
    c.bind = BindMethod::Template(format!("uid={{user}},{PEOPLE_BASE}"));
    c.groups = GroupLookup::MemberOf;
    let dir = Directory::new(c).unwrap();
    let s = svc
        .sign_in_directory(&dir, HELPDESK_USER, &password_of(HELPDESK_USER), None)
        .await
        .unwrap();
    assert_eq!(s.operator.role, Role::Helpdesk);
    assert_eq!(s.granted_by, HELPDESK_GROUP);
    for (user, password) in [
        (AUDITOR_USER, "wrong"),
        // The DN template escapes the name: no other entry can be addressed.
        ("hannah,ou=people", "hannah-pw"),
        (DISABLED_USER, "dave-pw"),
    ] {
        let err = svc
            .sign_in_directory(&dir, user, password, None)
            .await
            .unwrap_err();
        assert!(matches!(err, EscrowError::SignInRefused), "{user}: {err:?}");
    }
    let reasons: Vec<_> = sign_ins(&svc)
        .await
        .iter()
        .filter_map(|r| r.reason.clone())
        .collect();
    // Without a service account the lock is only visible as a failed bind (slapd says 49).
    assert_eq!(
        reasons,
        ["wrong_password", "wrong_password", "wrong_password"]
    );
}

/// A change to the working configuration.
type Edit<'a> = Box<dyn Fn(&mut DirectoryConfig) + 'a>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_and_an_unreachable_directory_are_clear_and_tokens_still_work() {
    let Some(slapd) = slapd() else { return };
    let db = TestDb::sqlite().await;
    let svc = db.open(Kek::generate()).await.unwrap();
    let (_, token) = svc.bootstrap_admin("root").await.unwrap();

    let other_ca = certs::generate_tls_server_certificate(&["localhost".into()], 1).unwrap();
    let dead_port = testkit::free_port().unwrap();
    let cases: [(&str, Edit<'_>, &str, &str); 5] = [
        (
            "name mismatch",
            Box::new(|c| c.url = format!("ldaps://127.0.0.1:{}", slapd.ldaps_port)),
            "directory_unreachable",
            "TLS failed",
        ),
        (
            "untrusted CA",
            Box::new(|c| c.ca_pem = other_ca.cert_pem.clone().into_bytes()),
            "directory_unreachable",
            "TLS failed",
        ),
        (
            "nobody listening",
            Box::new(|c| c.url = format!("ldaps://localhost:{dead_port}")),
            "directory_unreachable",
            "unreachable",
        ),
        (
            "StartTLS against the LDAPS port",
            Box::new(|c| {
                c.url = format!("ldap://localhost:{}", slapd.ldaps_port);
                c.starttls = true;
                c.connect_timeout = Duration::from_millis(500);
                c.operation_timeout = Duration::from_millis(500);
            }),
            "directory_unreachable",
            "unreachable",
        ),
        (
            "wrong service password",
            Box::new(|c| {
                c.bind = BindMethod::SearchThenBind {
                    dn: SERVICE_DN.into(),
                    password: Zeroizing::new("nope".into()),
                }
            }),
            "directory_misconfigured",
            "service account",
        ),
    ];
    for (what, edit, reason, message) in &cases {
        let mut c = config(&slapd);
        edit(&mut c);
        let dir = Directory::new(c).unwrap();
        let err = svc
            .sign_in_directory(&dir, ADMIN_USER, &password_of(ADMIN_USER), None)
            .await
            .unwrap_err();
        let EscrowError::DirectoryUnavailable(m) = &err else {
            panic!("{what}: {err:?}");
        };
        assert!(m.contains(message), "{what}: {m}");
        assert_eq!(err.http_status(), 503);
        let last = sign_ins(&svc).await.pop().unwrap();
        assert_eq!(last.reason.as_deref(), Some(*reason), "{what}");
        assert!(detail(&last)["error"].as_str().unwrap().contains(message));
    }
    // Local operator tokens do not depend on the directory.
    assert!(svc.authenticate_operator(&token).await.unwrap().is_some());
}
