//! Issue 8 items 1 and 2 at the service level, on SQLite and PostgreSQL: every list pages with a
//! stable order and a `next` cursor and drops nothing; the audit export streams everything; a
//! protector ID held by two devices is recorded, counted and reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_common;

use std::collections::BTreeSet;
use std::time::Duration;

use escrow::{AuditFilter, DeviceFilter, EscrowError, ItemOutcome, Kek, PageRequest, Role};
use store_common::*;

/// Reads every page with `limit` and checks that pages are full until the last, and that the
/// concatenation has no duplicates.
async fn every_page<T, F, Fut>(limit: u32, mut page: F) -> Vec<T>
where
    T: std::fmt::Debug,
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Result<escrow::Page<T>, EscrowError>>,
{
    let mut req = PageRequest::first(limit);
    let mut all = Vec::new();
    loop {
        let p = page(req.clone()).await.unwrap();
        let last = p.next.is_none();
        assert!(
            last || p.items.len() == limit as usize,
            "a page before the last must be full"
        );
        let next = req.after(&p);
        all.extend(p.items);
        match next {
            Some(n) => req = n,
            None => return all,
        }
    }
}

both_backends!(
    every_list_pages_without_dropping_anything,
    |db: TestDb| async move {
        let svc = db.open(Kek::generate()).await.unwrap();
        // 25 devices named SRV-0.., one with 30 keys on one volume (history), all with prefix 0000000x.
        let mut devices = Vec::new();
        for n in 0..25u32 {
            devices.push(enroll(&svc, &format!("SRV-{n:02}"), n + 1).await);
        }
        for k in 0..30u32 {
            svc.escrow(&devices[0], req(vec![item(1, 1000 + k, &password(k))]))
                .await
                .unwrap();
        }
        for n in 0..12u32 {
            let _ = operator(&svc, &format!("op{n}"), Role::Auditor).await;
        }

        let a = admin();
        let keys = every_page(7, |p| svc.find_by_device_page(&a, "srv-00", p)).await;
        assert_eq!(keys.len(), 30);
        let ids: BTreeSet<_> = keys.iter().map(|k| k.protector_id).collect();
        assert_eq!(ids.len(), 30, "no duplicates across pages");
        assert!(
            keys.windows(2)
                .all(|w| w[0].escrowed_at >= w[1].escrowed_at),
            "newest first"
        );
        let all_devices = DeviceFilter::default();
        let devs = every_page(4, |p| svc.list_devices_page(&a, &all_devices, p)).await;
        assert_eq!(devs.len(), 25);
        assert!(devs.windows(2).all(|w| w[0].id < w[1].id));
        let ops = every_page(5, |p| svc.list_operators_page(&a, p)).await;
        assert_eq!(ops.len(), 12);
        let toks = every_page(10, |p| svc.list_enrollment_tokens_page(&a, p)).await;
        assert_eq!(toks.len(), 25);
        let api = every_page(5, |p| svc.list_api_tokens_page(&a, None, p)).await;
        assert_eq!(api.len(), 12);

        // The audit log: more records than any old cap would keep, all of them in chain order.
        let filter = AuditFilter::default();
        let records = every_page(1000, |p| svc.audit_report_page(&a, &filter, p)).await;
        let total = records.len();
        assert!(total >= 25 + 30 + 12 * 2 + 25, "{total}");
        assert!(records.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        // The export streams the same records.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let export = {
            let svc = svc.clone();
            tokio::spawn(async move {
                svc.audit_export(&admin(), &AuditFilter::default(), tx)
                    .await
            })
        };
        let mut exported = 0usize;
        let mut last = 0i64;
        while let Some(batch) = rx.recv().await {
            for r in batch {
                assert_eq!(r.seq, last + 1);
                last = r.seq;
                exported += 1;
            }
        }
        export.await.unwrap().unwrap();
        assert_eq!(exported, total);

        // Bad page requests are clear errors.
        for bad in [
            PageRequest {
                cursor: None,
                limit: Some(0),
            },
            PageRequest {
                cursor: None,
                limit: Some(1001),
            },
            PageRequest {
                cursor: Some("garbage".into()),
                limit: None,
            },
        ] {
            assert!(matches!(
                svc.list_operators_page(&admin(), bad).await,
                Err(EscrowError::Validation(_))
            ));
        }
    }
);

both_backends!(
    a_protector_id_held_by_two_devices_is_recorded_counted_and_reported,
    |db: TestDb| async move {
        let svc = db.open(Kek::generate()).await.unwrap();
        let real = enroll(&svc, "SRV-REAL", 1).await;
        let clone = enroll(&svc, "SRV-CLONE", 2).await;
        svc.escrow(&real, req(vec![item(1, 1, &password(1))]))
            .await
            .unwrap();
        assert_eq!(svc.fleet_gauges().await.unwrap().protector_conflicts, 0);
        // The clone escrows the same key ID (another password): stored for it, recorded as a conflict.
        assert_eq!(
            svc.escrow(&clone, req(vec![item(1, 1, &password(2))]))
                .await
                .unwrap(),
            vec![ItemOutcome::Stored]
        );
        // Re-sending is idempotent and records nothing more.
        assert_eq!(
            svc.escrow(&clone, req(vec![item(1, 1, &password(2))]))
                .await
                .unwrap(),
            vec![ItemOutcome::Unchanged]
        );
        assert_eq!(svc.fleet_gauges().await.unwrap().protector_conflicts, 1);
        let report = svc
            .fleet_report(&admin(), Duration::from_secs(86_400))
            .await
            .unwrap();
        assert_eq!(report.protector_conflicts.len(), 1);
        let c = &report.protector_conflicts[0];
        assert_eq!((c.device_id, c.other_device_id), (clone.id, real.id));
        assert_eq!(c.protector_id, pid(1));
        let audit = svc
            .audit_report(
                &admin(),
                AuditFilter {
                    kind: Some("escrow_conflict".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].device_id, Some(clone.id));
        assert_eq!(audit[0].seq, c.audit_seq);
        // Both keys can be disclosed, each by its device.
        for (dev, pw) in [(&real, password(1)), (&clone, password(2))] {
            let d = svc
                .disclose_request(
                    &admin(),
                    &escrow::DiscloseRequest {
                        protector_id: pid(1),
                        device_id: Some(dev.id),
                        device_name: None,
                        reason: Some("lost_pin".into()),
                        reason_text: None,
                        client_addr: None,
                    },
                )
                .await
                .unwrap();
            assert_eq!(d.recovery_password.expose(), pw);
        }
        // Within one batch of calls too (the group committer merges concurrent calls).
        let third = enroll(&svc, "SRV-THIRD", 3).await;
        let (a, b) = tokio::join!(
            svc.escrow(&real, req(vec![item(2, 7, &password(7))])),
            svc.escrow(&third, req(vec![item(2, 7, &password(8))]))
        );
        assert_eq!(a.unwrap(), vec![ItemOutcome::Stored]);
        assert_eq!(b.unwrap(), vec![ItemOutcome::Stored]);
        assert_eq!(svc.fleet_gauges().await.unwrap().protector_conflicts, 2);
    }
);
