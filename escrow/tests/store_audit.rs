//! Audit chain tamper detection and fail-closed disclosure, on both backends (tampering with raw SQL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_common;

use escrow::{Backend, ChainVerification, DisclosureReason, EscrowError, EscrowService, Kek};
use sqlx::Row;
use store_common::*;

/// A service with a device, two escrowed keys and a few disclosures: 7 audit records.
async fn populated(db: &TestDb) -> EscrowService {
    let svc = db.open(Kek::generate()).await.unwrap();
    let dev = enroll(&svc, "SRV", 1).await;
    svc.escrow(
        &dev,
        req(vec![item(1, 1, &password(1)), item(1, 2, &password(2))]),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        svc.disclose(
            &admin(),
            &pid(1),
            None,
            DisclosureReason::BiosChanged,
            None,
            None,
        )
        .await
        .unwrap();
    }
    match svc.verify_audit_chain().await.unwrap() {
        ChainVerification::Ok { records, .. } => assert_eq!(records, 7),
        other => panic!("fresh chain must verify: {other:?}"),
    }
    svc
}

fn broken_at(v: ChainVerification) -> i64 {
    match v {
        ChainVerification::Broken { seq, .. } => seq,
        other => panic!("tampering not detected: {other:?}"),
    }
}

both_backends!(edited_record_is_detected, |db: TestDb| async move {
    let svc = populated(&db).await;
    raw(
        &svc,
        "UPDATE audit_log SET reason = 'lost_pin' WHERE seq = 6",
    )
    .await;
    assert_eq!(broken_at(svc.verify_audit_chain().await.unwrap()), 6);
});

both_backends!(deleted_record_is_detected, |db: TestDb| async move {
    let svc = populated(&db).await;
    raw(&svc, "DELETE FROM audit_log WHERE seq = 4").await;
    assert_eq!(broken_at(svc.verify_audit_chain().await.unwrap()), 4);
});

both_backends!(deleted_newest_record_is_detected, |db: TestDb| async move {
    let svc = populated(&db).await;
    let last: i64 = sqlx::query("SELECT MAX(seq) FROM audit_log")
        .fetch_one(svc.db().pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    raw(&svc, &format!("DELETE FROM audit_log WHERE seq = {last}")).await;
    assert_eq!(broken_at(svc.verify_audit_chain().await.unwrap()), last);
});

both_backends!(reordered_records_are_detected, |db: TestDb| async move {
    let svc = populated(&db).await;
    // Swap the positions of records 3 and 5.
    raw(&svc, "UPDATE audit_log SET seq = -3 WHERE seq = 3").await;
    raw(&svc, "UPDATE audit_log SET seq = 3 WHERE seq = 5").await;
    raw(&svc, "UPDATE audit_log SET seq = 5 WHERE seq = -3").await;
    assert_eq!(broken_at(svc.verify_audit_chain().await.unwrap()), 3);
});

both_backends!(
    rehashed_edit_still_breaks_the_link,
    |db: TestDb| async move {
        // An attacker who edits a record AND recomputes its own hash still breaks the next record's link.
        let svc = populated(&db).await;
        let rows = svc
            .audit_report(&admin(), Default::default())
            .await
            .unwrap();
        let mut r = rows[4].clone();
        r.actor_name = "mallory".into();
        let h = hex::encode(r.compute_hash());
        let sql = match svc.backend() {
            Backend::Sqlite => format!(
                "UPDATE audit_log SET actor_name = 'mallory', hash = X'{h}' WHERE seq = {}",
                r.seq
            ),
            Backend::Postgres => format!(
                "UPDATE audit_log SET actor_name = 'mallory', hash = decode('{h}', 'hex') WHERE seq = {}",
                r.seq
            ),
        };
        raw(&svc, &sql).await;
        assert_eq!(
            broken_at(svc.verify_audit_chain().await.unwrap()),
            r.seq + 1
        );
    }
);

both_backends!(
    disclosure_fails_closed_when_the_audit_insert_fails,
    |db: TestDb| async move {
        let svc = populated(&db).await;
        let before: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log")
            .fetch_one(svc.db().pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        match svc.backend() {
            Backend::Sqlite => {
                raw(&svc, "CREATE TRIGGER block_disclose BEFORE INSERT ON audit_log WHEN NEW.action = 'disclose' BEGIN SELECT RAISE(ABORT, 'audit store refuses'); END").await;
            }
            Backend::Postgres => {
                raw(&svc, "CREATE FUNCTION block_disclose() RETURNS trigger AS $$ BEGIN IF NEW.action = 'disclose' THEN RAISE EXCEPTION 'audit store refuses'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql").await;
                raw(&svc, "CREATE TRIGGER block_disclose BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION block_disclose()").await;
            }
        }
        let r = svc
            .disclose(
                &admin(),
                &pid(2),
                None,
                DisclosureReason::LostPin,
                None,
                None,
            )
            .await;
        assert!(matches!(r, Err(EscrowError::Storage(_))), "{r:?}");
        // Nothing changed: the key is not marked disclosed and no rotation is queued.
        let k = svc
            .find_by_prefix(&admin(), &pid(2).prefix8())
            .await
            .unwrap();
        assert!(k[0].disclosed_at.is_none());
        assert_eq!(k[0].rotation, escrow::RotationState::None);
        let after: i64 = sqlx::query("SELECT COUNT(*) FROM audit_log")
            .fetch_one(svc.db().pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(before, after);
        raw(
            &svc,
            "DROP TRIGGER block_disclose ON audit_log"
                .replace(
                    " ON audit_log",
                    if svc.backend() == Backend::Sqlite {
                        ""
                    } else {
                        " ON audit_log"
                    },
                )
                .as_str(),
        )
        .await;
        assert!(matches!(
            svc.verify_audit_chain().await.unwrap(),
            ChainVerification::Ok { .. }
        ));
        svc.disclose(
            &admin(),
            &pid(2),
            None,
            DisclosureReason::LostPin,
            None,
            None,
        )
        .await
        .unwrap();
    }
);

both_backends!(
    disclosure_fails_closed_when_the_database_is_gone,
    |db: TestDb| async move {
        let svc = populated(&db).await;
        svc.close().await;
        let r = svc
            .disclose(
                &admin(),
                &pid(2),
                None,
                DisclosureReason::LostPin,
                None,
                None,
            )
            .await;
        assert!(matches!(r, Err(EscrowError::Storage(_))), "{r:?}");
    }
);

both_backends!(
    concurrent_appends_do_not_fork_the_chain,
    |db: TestDb| async move {
        let svc = db.open(Kek::generate()).await.unwrap();
        let mut devs = Vec::new();
        for i in 0..8u32 {
            devs.push(enroll(&svc, &format!("N{i}"), 100 + i).await);
        }
        let mut tasks = Vec::new();
        for (i, d) in devs.into_iter().enumerate() {
            let s = svc.clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..10u32 {
                    let n = (i as u32) * 100 + j;
                    s.escrow(&d, req(vec![item(n, n, &password(n))]))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        match svc.verify_audit_chain().await.unwrap() {
            ChainVerification::Ok { records, .. } => assert_eq!(records, 8 * 2 + 80),
            other => panic!("{other:?}"),
        }
    }
);

both_backends!(
    one_failing_call_in_a_commit_batch_does_not_fail_the_others,
    |db: TestDb| async move {
        let svc = db.open(Kek::generate()).await.unwrap();
        let good = enroll(&svc, "GOOD", 1).await;
        let bad = enroll(&svc, "BAD", 2).await;
        svc.revoke_device(&admin(), bad.id).await.unwrap();
        let mut tasks = Vec::new();
        for n in 0..40u32 {
            let s = svc.clone();
            let d = if n % 10 == 3 {
                bad.clone()
            } else {
                good.clone()
            };
            tasks.push(tokio::spawn(async move {
                (n, s.escrow(&d, req(vec![item(n, n, &password(n))])).await)
            }));
        }
        for t in tasks {
            let (n, r) = t.await.unwrap();
            if n % 10 == 3 {
                assert!(matches!(r, Err(EscrowError::Forbidden(_))), "{n}: {r:?}");
            } else {
                assert_eq!(r.unwrap(), vec![escrow::ItemOutcome::Stored], "{n}");
            }
        }
        assert_eq!(svc.device_own_keys(&good).await.unwrap().len(), 36);
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM protectors WHERE device_id = $1")
            .bind(bad.id)
            .fetch_one(svc.db().pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(n, 0);
        assert!(matches!(
            svc.verify_audit_chain().await.unwrap(),
            ChainVerification::Ok { .. }
        ));
    }
);

both_backends!(
    calls_in_one_commit_batch_see_each_other_in_order,
    |db: TestDb| async move {
        use escrow::ItemOutcome::*;
        // Many concurrent calls for the same protector land in the same batches; the outcome must be what
        // the calls would get one after the other: one Stored, the rest Unchanged or Mismatch.
        let svc = db.open(Kek::generate()).await.unwrap();
        let d = enroll(&svc, "SAME", 7).await;
        let mut tasks = Vec::new();
        for n in 0..60u32 {
            let s = svc.clone();
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                let mut it = item(1, 1, &password(if n % 6 == 5 { 2 } else { 1 }));
                if n % 4 == 1 {
                    it.key_package = Some(vec![1, 2, 3]);
                }
                it.mount_point = Some(format!("M{}:", n % 3));
                let mut r = req(vec![it, item(2, 100 + n, &password(n))]);
                if n % 10 == 0 {
                    r.tpm_owner_auth = Some(format!("auth-{n}").into());
                }
                s.escrow(&d, r).await.unwrap()
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            let o = t.await.unwrap();
            assert_eq!(o[1], Stored);
            outcomes.push(o[0]);
        }
        let stored = outcomes.iter().filter(|o| **o == Stored).count();
        let mismatched = outcomes.iter().filter(|o| **o == Mismatch).count();
        assert_eq!(stored, 1, "{outcomes:?}");
        // Whichever password arrived first is the stored one; every call with the other one is refused.
        assert!(mismatched == 10 || mismatched == 50, "{outcomes:?}");
        let count = |sql: &'static str| {
            let pool = svc.db().pool().clone();
            async move {
                sqlx::query(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    .try_get::<i64, _>(0)
                    .unwrap()
            }
        };
        assert_eq!(count("SELECT COUNT(*) FROM protectors").await, 61);
        assert_eq!(count("SELECT COUNT(*) FROM volumes").await, 2);
        assert_eq!(
            count("SELECT COUNT(*) FROM mismatches").await,
            mismatched as i64
        );
        assert_eq!(count("SELECT COUNT(*) FROM tpm_owner_auth").await, 1);
        assert_eq!(
            count("SELECT COUNT(*) FROM protectors WHERE key_package_sealed IS NOT NULL").await,
            1
        );
        // Every mismatch row points at its own failure record in the chain.
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM mismatches m JOIN audit_log a ON a.seq = m.audit_seq \
                 WHERE a.action = 'escrow_mismatch'"
            )
            .await,
            mismatched as i64
        );
        match svc.verify_audit_chain().await.unwrap() {
            // enrollment token + enrollment + 61 escrows + mismatches + 6 TPM owner-auth updates
            ChainVerification::Ok { records, .. } => {
                assert_eq!(records, 2 + 61 + mismatched as u64 + 6)
            }
            other => panic!("{other:?}"),
        }
    }
);
