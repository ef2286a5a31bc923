//! Files: modes, atomic no-overwrite, permission checks.

use std::os::unix::fs::PermissionsExt;

use certs::{
    CertError, check_private_key_permissions, generate_unlock_certificate, gpo_instructions,
    write_private_pem, write_public_file, write_unlock_files,
};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn unlock_files_have_the_right_modes_and_contents() {
    let dir = tempfile::tempdir().unwrap();
    let g = generate_unlock_certificate("files", 30).unwrap();
    let f = write_unlock_files(dir.path(), "network-unlock", &g).unwrap();
    assert_eq!(f.key, dir.path().join("network-unlock.key"));
    assert_eq!(mode(&f.key), 0o600);
    assert_eq!(mode(&f.cert_pem), 0o644);
    assert_eq!(mode(&f.cert_cer), 0o644);
    assert_eq!(std::fs::read(&f.cert_cer).unwrap(), g.cert_der);
    assert_eq!(std::fs::read_to_string(&f.cert_pem).unwrap(), g.cert_pem);
    assert!(
        std::fs::read_to_string(&f.key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    check_private_key_permissions(&f.key).unwrap();
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);

    let text = gpo_instructions(&f, &hex::encode(g.thumbprint));
    assert!(text.contains("network-unlock.cer"));
    assert!(
        text.contains(
            "Public Key Policies > BitLocker Drive Encryption Network Unlock Certificate"
        )
    );
    assert!(text.contains("Allow network unlock at startup"));
    assert!(text.contains("manage-bde -protectors -get C:"));
    assert!(text.contains(&hex::encode(g.thumbprint)));
    assert!(!text.contains("BEGIN PRIVATE KEY"));
}

#[test]
fn overwrite_is_refused_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let g = generate_unlock_certificate("first", 30).unwrap();
    let f = write_unlock_files(dir.path(), "nu", &g).unwrap();
    let key_before = std::fs::read(&f.key).unwrap();
    let g2 = generate_unlock_certificate("second", 30).unwrap();
    let err = write_unlock_files(dir.path(), "nu", &g2).unwrap_err();
    assert!(matches!(err, CertError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("nu.key"), "{err}");
    assert_eq!(std::fs::read(&f.key).unwrap(), key_before);

    // Only the .cer exists: still refused, and no .key/.pem are created.
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::write(dir2.path().join("x.cer"), b"old").unwrap();
    let err = write_unlock_files(dir2.path(), "x", &g).unwrap_err();
    assert!(matches!(err, CertError::Exists { .. }), "{err}");
    assert!(!dir2.path().join("x.key").exists());
    assert!(!dir2.path().join("x.pem").exists());

    let p = dir.path().join("k.pem");
    write_private_pem(&p, "first").unwrap();
    assert!(matches!(
        write_private_pem(&p, "second"),
        Err(CertError::Exists { .. })
    ));
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "first");
    let c = dir.path().join("c.pem");
    write_public_file(&c, b"a").unwrap();
    assert!(matches!(
        write_public_file(&c, b"b"),
        Err(CertError::Exists { .. })
    ));
}

#[test]
fn private_pem_is_0600_and_public_is_0644() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tls.key");
    write_private_pem(&p, "secret").unwrap();
    assert_eq!(mode(&p), 0o600);
    let c = dir.path().join("tls.crt");
    write_public_file(&c, b"cert").unwrap();
    assert_eq!(mode(&c), 0o644);
}

#[test]
fn bad_base_names_and_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let g = generate_unlock_certificate("names", 30).unwrap();
    for base in ["", "../evil", "a/b", ".hidden", "sp ace"] {
        let err = write_unlock_files(dir.path(), base, &g).unwrap_err();
        assert!(
            matches!(err, CertError::InvalidParameter { .. }),
            "{base}: {err}"
        );
    }
    let err = write_unlock_files(&dir.path().join("missing"), "nu", &g).unwrap_err();
    assert!(matches!(err, CertError::Write { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn permission_check_refuses_group_or_world_access() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("key.pem");
    std::fs::write(&p, "k").unwrap();
    for bad in [0o644, 0o640, 0o604, 0o660, 0o610, 0o601] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(bad)).unwrap();
        let err = check_private_key_permissions(&p).unwrap_err();
        assert!(
            matches!(err, CertError::InsecurePermissions { .. }),
            "{bad:o}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
    }
    for good in [0o600, 0o400] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(good)).unwrap();
        check_private_key_permissions(&p).unwrap();
    }
    let err = check_private_key_permissions(dir.path()).unwrap_err();
    assert!(matches!(err, CertError::NotAFile { .. }), "{err}");
    let err = check_private_key_permissions(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, CertError::Read { .. }), "{err}");
}
