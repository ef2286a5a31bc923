//! The command line as people and scripts meet it, against the real binary and a real daemon:
//! tables by default and JSON on request, one exit code per meaning, a closed pipe that ends
//! quietly, errors that say what to do, `.pfx` inspection with a password file, a UTF-16 subnet
//! policy, and `status` agreeing with `audit verify` within seconds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::escrow_support::{Backend, EscrowDaemon, both_backends, netunlockd_bin};
use crate::harness::free_port;

fn run(args: &[&str]) -> Output {
    Command::new(netunlockd_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NETUNLOCKD_CONFIG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn both(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // The reader is gone before the command writes its first line (`netunlockd … | head -0`).
    let mut child = Command::new(netunlockd_bin())
        .args(["certs", "new-unlock", "--out-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(
        out.status.code() == Some(0) && err.is_empty(),
        "status {:?}, stderr: {err}",
        out.status
    );
}

#[test]
fn exit_codes_tell_usage_failure_warnings_and_unreachable_apart() {
    let out = run(&["status", "--no-such-option"]);
    assert_eq!(out.status.code(), Some(2), "usage error: {}", both(&out));

    let out = run(&["status", "--metrics", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(out.status.code(), Some(4), "unreachable: {}", both(&out));
    assert!(
        text(&out.stderr).contains("is netunlockd running"),
        "{}",
        both(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.cer");
    let out = run(&["certs", "inspect", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "failure: {}", both(&out));

    // A TLS server certificate is not a Network Unlock certificate: warnings, code 5.
    let tls = certs::generate_tls_server_certificate(&["localhost".into()], 30).unwrap();
    let pem = dir.path().join("tls.pem");
    std::fs::write(&pem, &tls.cert_pem).unwrap();
    let out = run(&["certs", "inspect", pem.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "warnings: {}", both(&out));
    let out = run(&[
        "certs",
        "inspect",
        pem.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(5));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!json["warnings"].as_array().unwrap().is_empty(), "{json}");

    // The man page lists them.
    let assets = tempfile::tempdir().unwrap();
    let out = run(&[
        "generate-assets",
        "--out-dir",
        assets.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", both(&out));
    let man = std::fs::read_to_string(assets.path().join("man/netunlockd-status.8")).unwrap();
    assert!(
        man.contains("EXIT STATUS") && man.contains("could not be reached"),
        "{man}"
    );
}

#[test]
fn usage_errors_name_the_accepted_values_not_rust_types() {
    let out = run(&[
        "escrow",
        "disclose",
        "X",
        "--reason",
        "because",
        "--token",
        "t",
        "--url",
        "https://127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("tpm_reset") && !err.contains("DisclosureReason"),
        "{err}"
    );
    let out = run(&["certs", "new-unlock", "--out-dir", "/tmp/x", "--days", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        !text(&out.stderr).contains("validity_days"),
        "{}",
        both(&out)
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[unlock]\nworkers = \"many\"\n").unwrap();
    let out = run(&["config", "check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = text(&out.stderr);
    assert!(err.contains("workers") && !err.contains("usize"), "{err}");
}

#[test]
fn a_password_protected_pfx_is_inspected_with_a_password_file() {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    use rustls_pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let generated = certs::generate_unlock_certificate("e2e pfx", 3650).unwrap();
    let key_der =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(generated.key_pkcs8_pem.as_bytes())
            .unwrap();
    let chain = PrivateKeyChain::new(
        vec![1u8, 2, 3, 4],
        PrivateKey::from_der(key_der.secret_der()).unwrap(),
        [Certificate::from_der(&generated.cert_der).unwrap()],
    );
    let mut ks = KeyStore::new();
    ks.add_entry("network unlock", KeyStoreEntry::PrivateKeyChain(chain));
    let pfx = dir.path().join("wds-unlock.pfx");
    std::fs::write(&pfx, ks.writer("Pa55word!").write().unwrap()).unwrap();

    let out = run(&["certs", "inspect", pfx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        text(&out.stderr).contains("--password-file"),
        "{}",
        both(&out)
    );

    let pass = dir.path().join("wds-unlock.pass");
    std::fs::write(&pass, "Pa55word!\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&[
        "certs",
        "inspect",
        pfx.to_str().unwrap(),
        "--password-file",
        pass.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert!(
        text(&out.stdout).contains(&hex::encode(generated.thumbprint)),
        "{}",
        both(&out)
    );
}

#[test]
fn a_utf16_subnet_policy_saved_by_notepad_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "certs",
        "new-unlock",
        "--out-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", both(&out));
    let ini = "[SUBNETS]\r\nLAB=10.0.0.0/8\r\n";
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(ini.encode_utf16().flat_map(u16::to_le_bytes));
    let policy = dir.path().join("bde-network-unlock.ini");
    std::fs::write(&policy, utf16).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{s}\"\n[escrow]\nenabled = false\n[unlock]\nsubnet_policy = \"{p}\"\n\
             [[unlock.certificate]]\ncert = \"{d}/network-unlock.pem\"\nkey = \"{d}/network-unlock.key\"\n",
            s = dir.path().join("s").display(),
            p = policy.display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = run(&["config", "check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        text(&out.stdout).contains("subnet policy"),
        "{}",
        both(&out)
    );
}

/// Tables for people, JSON for scripts, the same data.
async fn people_and_scripts(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.bootstrap_admin();
    let with_token = |args: &[&str]| {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--token", admin.as_str()]);
        d.cli(&a)
    };
    let out = with_token(&[
        "operator", "create", "--name", "alice", "--role", "helpdesk",
    ]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        text(&out.stdout).starts_with("created operator alice"),
        "{}",
        both(&out)
    );

    let out = with_token(&["operator", "list"]);
    assert!(out.status.success(), "{}", both(&out));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID  NAME"), "{table}");
    let role_col = lines[0].find("ROLE").unwrap();
    for l in &lines[1..] {
        assert!(
            l[role_col..].starts_with("admin") || l[role_col..].starts_with("helpdesk"),
            "columns not aligned:\n{table}"
        );
    }

    let out = with_token(&["operator", "list", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = json["operators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"alice") && names.contains(&"admin"),
        "{json}"
    );

    let out = with_token(&["escrow", "devices"]);
    assert_eq!(text(&out.stdout).trim(), "no devices", "{}", both(&out));

    // More operators than one API page (100): the CLI follows `next` and prints every one.
    let api = d.operator(&admin);
    for k in 0..120 {
        api.create_operator(&escrow::wire::CreateOperator {
            name: format!("hd{k:03}"),
            role: escrow::Role::Helpdesk,
        })
        .await
        .unwrap();
    }
    let out = with_token(&["operator", "list", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["operators"].as_array().unwrap().len(), 122, "{json}");
    assert!(json["next"].is_null(), "one joined list, no cursor: {json}");
    let out = with_token(&["operator", "list"]);
    let table = text(&out.stdout);
    assert_eq!(table.lines().count(), 1 + 122, "{table}");
    assert!(table.contains("hd119"), "{table}");
}
both_backends!(people_output_and_json, super::people_and_scripts);

/// `status` (the daemon's periodic check) and `audit verify` (a full read) agree within seconds,
/// on new records and on tampering, and `status` says "unhealthy" with its own exit code.
async fn status_agrees_with_audit_verify(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.bootstrap_admin();
    let client = d.operator(&admin);
    for i in 0..3 {
        client
            .create_operator(&escrow::wire::CreateOperator {
                name: format!("op{i}"),
                role: "auditor".parse().unwrap(),
            })
            .await
            .unwrap();
    }
    let verify = d.cli(&["audit", "verify", "--output", "json"]);
    let verify: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    let expected = format!(
        "{} record(s), head {}",
        verify["records"],
        verify["head_hash"].as_str().unwrap()
    );
    let status_detail = |d: &EscrowDaemon| {
        let out = d.cli(&["status", "--output", "json"]);
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", both(&out)));
        (
            out.status.code(),
            json["audit_chain"]["detail"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let (code, detail) = status_detail(&d);
        if detail == expected {
            assert_eq!(code, Some(0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status still says {detail:?}, audit verify says {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // An edit of an old record: `audit verify` and `status` both see it, status exits 3.
    let sql = "UPDATE audit_log SET actor_name = 'nobody' WHERE seq = 2";
    match &backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&d.database_url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres(_) => {
            let pool = sqlx::PgPool::connect(&d.database_url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
    let verify = d.cli(&["audit", "verify"]);
    assert_eq!(verify.status.code(), Some(3), "{}", both(&verify));
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let (code, detail) = status_detail(&d);
        if code == Some(3) {
            assert!(detail.contains("record 2"), "{detail}");
            break;
        }
        assert!(Instant::now() < deadline, "status still healthy: {detail}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
both_backends!(
    status_and_audit_verify_agree,
    super::status_agrees_with_audit_verify
);

/// Files the daemon creates in its state directory are private whatever the caller's umask.
#[test]
fn state_files_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[metrics]\nenabled = false\n[unlock]\ninterfaces = [\"lo\"]\n\
             v4_listen = \"127.0.0.1:{}\"\nv6 = false\n[escrow]\nlisten = \"127.0.0.1:{}\"\n",
            state.display(),
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    // umask 0 in the child: a file created without an explicit mode would be world-writable.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("umask 0; exec \"$0\" serve --config \"$1\"")
        .arg(netunlockd_bin())
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(state.join("escrow.db").exists() && state.join("server-duid").exists()) {
        assert!(Instant::now() < deadline, "the daemon created no database");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    let mut checked = 0;
    for entry in std::fs::read_dir(&state).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("escrow.db") || name == "server-duid" || name == "kek.bin" {
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} is {mode:o}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "expected the database, the DUID and the KEK");
}
