//! Encryption at rest, KEK handling, re-wrap, backup/restore and the prefix index, on real databases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_common;

use escrow::{Backend, ChainVerification, DisclosureReason, EscrowError, EscrowService, Kek};
use sqlx::Row;
use store_common::*;

async fn with_keys(svc: &EscrowService, n: u32) -> Vec<String> {
    let dev = enroll(svc, "SRV", 1).await;
    let mut pws = Vec::new();
    let mut items = Vec::new();
    for i in 1..=n {
        let pw = password(i);
        let mut it = item(1, i, &pw);
        it.key_package = Some(format!("KEYPACKAGE-{i}").into_bytes());
        items.push(it);
        pws.push(pw);
    }
    let mut r = req(items);
    r.tpm_owner_auth = Some(zeroize::Zeroizing::new("TPMOWNERAUTHSECRET".into()));
    svc.escrow(&dev, r).await.unwrap();
    pws
}

#[tokio::test]
async fn sqlite_file_without_the_kek_reveals_no_secret() {
    let db = TestDb::sqlite().await;
    let svc = db.open(Kek::generate()).await.unwrap();
    let pws = with_keys(&svc, 5).await;
    svc.close().await;
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(db.dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(bytes.len() > 10_000);
    let hay = String::from_utf8_lossy(&bytes);
    for pw in &pws {
        assert!(
            !hay.contains(pw.as_str()),
            "password found in the raw database"
        );
        assert!(!hay.contains(&pw.replace('-', "")));
        assert!(
            !hay.contains(&pw[..13]),
            "a password prefix is in the raw database"
        );
    }
    assert!(!hay.contains("KEYPACKAGE-"));
    assert!(!hay.contains("TPMOWNERAUTHSECRET"));
    // Sanity: non-secret data is there in clear, so the search itself works.
    assert!(hay.contains("SRV"));
}

both_backends!(
    postgres_and_sqlite_rows_hold_no_plaintext,
    |db: TestDb| async move {
        let svc = db.open(Kek::generate()).await.unwrap();
        let pws = with_keys(&svc, 3).await;
        let rows =
            sqlx::query("SELECT password_sealed, password_mac, key_package_sealed FROM protectors")
                .fetch_all(svc.db().pool())
                .await
                .unwrap();
        assert_eq!(rows.len(), 3);
        for r in rows {
            for i in 0..3 {
                let b: Vec<u8> = r.try_get(i).unwrap();
                let s = String::from_utf8_lossy(&b);
                assert!(pws.iter().all(|p| !s.contains(p.as_str())) && !s.contains("KEYPACKAGE"));
            }
        }
    }
);

both_backends!(swapped_ciphertexts_do_not_open, |db: TestDb| async move {
    let svc = db.open(Kek::generate()).await.unwrap();
    with_keys(&svc, 2).await;
    // Move protector 2's sealed password onto protector 1's row.
    raw(&svc, "UPDATE protectors SET password_sealed = (SELECT password_sealed FROM protectors WHERE protector_id = '00000002-0000-4000-8000-000000000002') WHERE protector_id = '00000001-0000-4000-8000-000000000001'").await;
    let r = svc
        .disclose(
            &admin(),
            &pid(1),
            None,
            DisclosureReason::LostPin,
            None,
            None,
        )
        .await;
    assert!(matches!(r, Err(EscrowError::Crypto(_))), "{r:?}");
    // The failed attempt is audited, the key is not marked disclosed.
    let k = svc
        .find_by_prefix(&admin(), &pid(1).prefix8())
        .await
        .unwrap();
    assert!(k[0].disclosed_at.is_none());
    let fails = svc
        .audit_report(
            &admin(),
            escrow::AuditFilter {
                outcome: Some(escrow::AuditOutcome::Failure),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(fails.len(), 1);
    assert_eq!(
        svc.disclose(
            &admin(),
            &pid(2),
            None,
            DisclosureReason::LostPin,
            None,
            None
        )
        .await
        .unwrap()
        .recovery_password
        .expose(),
        password(2)
    );
});

both_backends!(
    wrong_kek_is_refused_with_a_clear_error,
    |db: TestDb| async move {
        let kek = Kek::generate();
        let svc = db.open(kek.clone()).await.unwrap();
        with_keys(&svc, 1).await;
        svc.close().await;
        let other = Kek::generate();
        let err = db.open(other.clone()).await.err().unwrap();
        let msg = err.to_string();
        assert!(matches!(err, EscrowError::Crypto(_)));
        assert!(
            msg.contains(&other.id())
                && msg.contains(&kek.id())
                && msg.contains("restore the right KEK"),
            "{msg}"
        );
        assert!(db.open(kek).await.is_ok());
    }
);

both_backends!(
    rewrap_rotates_the_data_key_and_retires_the_old_kek,
    |db: TestDb| async move {
        let old = Kek::generate();
        let svc = db.open(old.clone()).await.unwrap();
        let pws = with_keys(&svc, 4).await;
        let before: Vec<Vec<u8>> =
            sqlx::query("SELECT password_sealed FROM protectors ORDER BY id")
                .fetch_all(svc.db().pool())
                .await
                .unwrap()
                .iter()
                .map(|r| r.try_get(0).unwrap())
                .collect();
        let new = Kek::generate();
        // 4 passwords + 4 key packages + 1 TPM owner auth.
        assert_eq!(svc.rewrap_kek(&new).await.unwrap(), 9);
        assert_eq!(svc.kek_id(), new.id());
        let after: Vec<Vec<u8>> = sqlx::query("SELECT password_sealed FROM protectors ORDER BY id")
            .fetch_all(svc.db().pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get(0).unwrap())
            .collect();
        assert!(before.iter().zip(&after).all(|(a, b)| a != b));
        // Still works in this process, including idempotent re-escrow (password MACs were recomputed).
        let dev = svc.device_by_cert(&cert(1)).await.unwrap().unwrap();
        assert_eq!(
            svc.escrow(&dev, req(vec![item(1, 1, &pws[0])]))
                .await
                .unwrap(),
            vec![escrow::ItemOutcome::Unchanged]
        );
        assert_eq!(
            svc.escrow(&dev, req(vec![item(1, 1, &password(77))]))
                .await
                .unwrap(),
            vec![escrow::ItemOutcome::Mismatch]
        );
        svc.close().await;
        assert!(matches!(db.open(old).await, Err(EscrowError::Crypto(_))));
        let svc = db.open(new).await.unwrap();
        let d = svc
            .disclose(
                &admin(),
                &pid(3),
                None,
                DisclosureReason::LostPin,
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(d.recovery_password.expose(), pws[2]);
        assert_eq!(d.key_package.as_deref(), Some(&b"KEYPACKAGE-3"[..]));
        assert!(matches!(
            svc.verify_audit_chain().await.unwrap(),
            ChainVerification::Ok { .. }
        ));
    }
);

both_backends!(backup_restore_round_trip, |db: TestDb| async move {
    let kek = Kek::generate();
    let svc = db.open(kek.clone()).await.unwrap();
    let pws = with_keys(&svc, 3).await;
    svc.disclose(
        &admin(),
        &pid(1),
        None,
        DisclosureReason::TpmReset,
        None,
        None,
    )
    .await
    .unwrap();
    let (op, secret) = svc.bootstrap_admin("root").await.unwrap();
    let backup_key = Kek::generate();
    let file = db.dir.path().join("escrow.backup");
    let summary = svc.backup(&file, &backup_key).await.unwrap();
    assert_eq!((summary.devices, summary.protectors), (1, 3));
    let raw_file = std::fs::read(&file).unwrap();
    let hay = String::from_utf8_lossy(&raw_file);
    assert!(
        !hay.contains("SRV") && !hay.contains(&pws[0]),
        "the backup envelope must be encrypted"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Restoring into a non-empty database is refused.
    assert!(matches!(
        svc.restore(&file, &backup_key).await,
        Err(EscrowError::Conflict(_))
    ));

    // A fresh, empty database of the same backend, opened with the same KEK.
    let target = match db.backend {
        Backend::Sqlite => TestDb::sqlite().await,
        Backend::Postgres => TestDb::postgres().await.unwrap(),
    };
    let restored = target.open(kek.clone()).await.unwrap();
    assert!(matches!(
        restored.restore(&file, &Kek::generate()).await,
        Err(EscrowError::Crypto(_))
    ));
    let s2 = restored.restore(&file, &backup_key).await.unwrap();
    assert_eq!(s2.rows, summary.rows);
    assert!(matches!(
        restored.verify_audit_chain().await.unwrap(),
        ChainVerification::Ok { .. }
    ));
    let d = restored
        .disclose(
            &admin(),
            &pid(2),
            Some("srv"),
            DisclosureReason::LostPin,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(d.recovery_password.expose(), pws[1]);
    let k1 = restored
        .find_by_prefix(&admin(), &pid(1).prefix8())
        .await
        .unwrap();
    assert_eq!(k1[0].rotation, escrow::RotationState::Requested);
    assert_eq!(
        restored
            .authenticate_operator(&secret)
            .await
            .unwrap()
            .and_then(|a| a.role()),
        Some(escrow::Role::Admin)
    );
    // New rows get fresh ids after explicit-id inserts (PostgreSQL identity sequences were advanced).
    let op2 = restored
        .create_operator(&admin(), "after-restore", escrow::Role::Auditor)
        .await
        .unwrap();
    assert!(op2.id > op.id);
    let dev = restored.device_by_cert(&cert(1)).await.unwrap().unwrap();
    assert_eq!(
        restored
            .escrow(&dev, req(vec![item(2, 9, &password(9))]))
            .await
            .unwrap(),
        vec![escrow::ItemOutcome::Stored]
    );
    // A service with another KEK cannot restore it (the data key would not unwrap).
    let third = match db.backend {
        Backend::Sqlite => TestDb::sqlite().await,
        Backend::Postgres => TestDb::postgres().await.unwrap(),
    };
    let other = third.open(Kek::generate()).await.unwrap();
    let e = other.restore(&file, &backup_key).await.err().unwrap();
    assert!(e.to_string().contains("KEK id"), "{e}");
});

#[tokio::test]
async fn sqlite_prefix_lookup_uses_an_index() {
    let db = TestDb::sqlite().await;
    let svc = db.open(Kek::generate()).await.unwrap();
    with_keys(&svc, 3).await;
    let rows = sqlx::query("EXPLAIN QUERY PLAN SELECT p.id FROM protectors p JOIN volumes v ON v.id = p.volume_id JOIN devices d ON d.id = p.device_id WHERE p.protector_prefix = $1")
        .bind("00000001")
        .fetch_all(svc.db().pool())
        .await
        .unwrap();
    let plan: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String, _>(3).unwrap())
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("USING INDEX protectors_prefix"), "{plan}");
    assert!(!plan.contains("SCAN p"), "{plan}");
}

#[tokio::test]
async fn postgres_prefix_lookup_uses_an_index() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let svc = db.open(Kek::generate()).await.unwrap();
    with_keys(&svc, 3).await;
    let mut conn = svc.db().pool().acquire().await.unwrap();
    // The table is tiny, so tell the planner a sequential scan is expensive, as it is at 1M rows.
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let rows =
        sqlx::query("EXPLAIN SELECT p.id FROM protectors p WHERE p.protector_prefix = '00000001'")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let plan: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String, _>(0).unwrap())
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("protectors_prefix"), "{plan}");
    sqlx::query("SET enable_seqscan = on")
        .execute(&mut *conn)
        .await
        .unwrap();
}
