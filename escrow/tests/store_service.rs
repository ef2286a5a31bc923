//! Service-level tests against real databases: escrow semantics, enrollment, devices, roles, rotation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_common;

use std::sync::Arc;
use std::time::Duration;

use escrow::{
    CheckIn, DeviceFilter, DisclosureReason, EscrowError, EscrowRequest, ItemOutcome, Kek,
    ManualClock, Role, RotationState,
};
use store_common::*;

both_backends!(
    escrow_is_idempotent_records_mismatch_and_keeps_history,
    |db: TestDb| async move {
        let svc = db.open(Kek::generate()).await.unwrap();
        let dev = enroll(&svc, "SRV01", 1).await;
        let pw1 = password(1);
        assert_eq!(
            svc.escrow(&dev, req(vec![item(1, 1, &pw1)])).await.unwrap(),
            vec![ItemOutcome::Stored]
        );
        // Same data again (also with spaces instead of hyphens): no-op.
        assert_eq!(
            svc.escrow(&dev, req(vec![item(1, 1, &pw1.replace('-', " "))]))
                .await
                .unwrap(),
            vec![ItemOutcome::Unchanged]
        );
        // Same protector, another password: refused and recorded.
        let out = svc
            .escrow(
                &dev,
                req(vec![item(1, 1, &password(2)), item(1, 2, &password(3))]),
            )
            .await
            .unwrap();
        assert_eq!(out, vec![ItemOutcome::Mismatch, ItemOutcome::Stored]);
        let report = svc
            .fleet_report(&admin(), Duration::from_secs(86_400))
            .await
            .unwrap();
        assert_eq!(report.mismatches.len(), 1);
        assert_eq!(report.mismatches[0].protector_id, pid(1));
        let audit = svc
            .audit_report(
                &admin(),
                escrow::AuditFilter {
                    kind: Some("escrow_mismatch".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].outcome, escrow::AuditOutcome::Failure);
        // The stored password is still the first one.
        let d = svc
            .disclose(
                &admin(),
                &pid(1),
                None,
                DisclosureReason::TpmReset,
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(d.recovery_password.expose(), pw1);
        // The agent now only has protector 2 on volume 1: protector 1 is superseded, never deleted.
        svc.check_in(
            &dev,
            CheckIn {
                present_protectors: vec![(vol(1), pid(2))],
            },
        )
        .await
        .unwrap();
        let keys = svc.find_by_device(&admin(), "srv01").await.unwrap();
        assert_eq!(keys.len(), 2);
        let old = keys.iter().find(|k| k.protector_id == pid(1)).unwrap();
        assert!(old.superseded_at.is_some());
        assert!(
            keys.iter()
                .find(|k| k.protector_id == pid(2))
                .unwrap()
                .superseded_at
                .is_none()
        );
        // A volume the agent did not mention is left alone.
        svc.escrow(&dev, req(vec![item(2, 3, &password(4))]))
            .await
            .unwrap();
        svc.check_in(
            &dev,
            CheckIn {
                present_protectors: vec![(vol(1), pid(2))],
            },
        )
        .await
        .unwrap();
        assert!(
            svc.device_own_keys(&dev)
                .await
                .unwrap()
                .iter()
                .find(|k| k.protector_id == pid(3))
                .unwrap()
                .superseded_at
                .is_none()
        );
        // A re-escrow of a superseded key is still Unchanged, and its history is readable.
        assert_eq!(
            svc.escrow(&dev, req(vec![item(1, 1, &pw1)])).await.unwrap(),
            vec![ItemOutcome::Unchanged]
        );
    }
);

both_backends!(validation_errors_store_nothing, |db: TestDb| async move {
    let svc = db.open(Kek::generate()).await.unwrap();
    let dev = enroll(&svc, "SRV02", 2).await;
    assert!(matches!(
        svc.escrow(
            &dev,
            EscrowRequest {
                items: vec![],
                tpm_owner_auth: None
            }
        )
        .await,
        Err(EscrowError::Validation(_))
    ));
    let mut big = item(1, 1, &password(1));
    big.key_package = Some(vec![0u8; 70_000]);
    assert!(matches!(
        svc.escrow(&dev, req(vec![big])).await,
        Err(EscrowError::Validation(_))
    ));
    let mut ctrl = item(1, 1, &password(1));
    ctrl.mount_point = Some("C:\u{7}".into());
    assert!(matches!(
        svc.escrow(&dev, req(vec![ctrl])).await,
        Err(EscrowError::Validation(_))
    ));
    let many = (0..65).map(|i| item(1, i, &password(i))).collect();
    assert!(matches!(
        svc.escrow(&dev, req(many)).await,
        Err(EscrowError::Validation(_))
    ));
    assert!(svc.device_own_keys(&dev).await.unwrap().is_empty());
    assert!(matches!(
        svc.find_by_prefix(&admin(), "12345").await,
        Err(EscrowError::Validation(_))
    ));
    assert!(matches!(
        svc.find_by_prefix(&admin(), "1234567g").await,
        Err(EscrowError::Validation(_))
    ));
    let (_, tok) = svc
        .create_enrollment_token(&admin(), 5, Duration::from_secs(60), None)
        .await
        .unwrap();
    for bad in ["", "bad name", "x".repeat(64).as_str(), "név"] {
        assert!(
            matches!(
                svc.enroll_device(&tok, bad, None, None, &cert(9)).await,
                Err(EscrowError::Validation(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        svc.enroll_device(&tok, "OK", None, None, "abc").await,
        Err(EscrowError::Validation(_))
    ));
    assert!(matches!(
        svc.enroll_device(&tok, "OK", Some("bad domain!"), None, &cert(9))
            .await,
        Err(EscrowError::Validation(_))
    ));
    assert!(matches!(
        svc.create_enrollment_token(&admin(), 0, Duration::from_secs(60), None)
            .await,
        Err(EscrowError::Validation(_))
    ));
    assert!(matches!(
        svc.create_operator(&admin(), "bad name", Role::Auditor)
            .await,
        Err(EscrowError::Validation(_))
    ));
});

both_backends!(
    enrollment_tokens_are_bounded_and_devices_revocable,
    |db: TestDb| async move {
        let clock = Arc::new(ManualClock::new(t0()));
        let svc = db.open_with_clock(Kek::generate(), clock.clone()).await;
        let (info, tok) = svc
            .create_enrollment_token(
                &admin(),
                2,
                Duration::from_secs(3600),
                Some("rack 4".into()),
            )
            .await
            .unwrap();
        assert_eq!(info.max_uses, 2);
        assert!(matches!(
            svc.enroll_device("nue_wrong", "A", None, None, &cert(1))
                .await,
            Err(EscrowError::Unauthorized)
        ));
        let a = svc
            .enroll_device(&tok, "A", None, Some("SN1"), &cert(1))
            .await
            .unwrap();
        // A retry with the same binding is idempotent and uses nothing.
        assert_eq!(
            svc.enroll_device(&tok, "a", None, None, &cert(1))
                .await
                .unwrap()
                .id,
            a.id
        );
        let b = svc
            .enroll_device(&tok, "B", None, None, &cert(2))
            .await
            .unwrap();
        assert!(matches!(
            svc.enroll_device(&tok, "C", None, None, &cert(3)).await,
            Err(EscrowError::Gone(_))
        ));
        assert_eq!(
            svc.list_enrollment_tokens(&admin()).await.unwrap()[0].uses,
            2
        );
        // Expiry.
        let (_, tok2) = svc
            .create_enrollment_token(&admin(), 10, Duration::from_secs(60), None)
            .await
            .unwrap();
        clock.advance(time::Duration::seconds(61));
        assert!(matches!(
            svc.enroll_device(&tok2, "C", None, None, &cert(3)).await,
            Err(EscrowError::Gone(_))
        ));
        // Revoked token.
        let (t3, tok3) = svc
            .create_enrollment_token(&admin(), 10, Duration::from_secs(60), None)
            .await
            .unwrap();
        svc.revoke_enrollment_token(&admin(), t3.id).await.unwrap();
        assert!(matches!(
            svc.enroll_device(&tok3, "C", None, None, &cert(3)).await,
            Err(EscrowError::Gone(_))
        ));
        // Another certificate for an enrolled name, or a certificate bound elsewhere: refused.
        let (_, tok4) = svc
            .create_enrollment_token(&admin(), 10, Duration::from_secs(600), None)
            .await
            .unwrap();
        assert!(matches!(
            svc.enroll_device(&tok4, "A", None, None, &cert(5)).await,
            Err(EscrowError::Conflict(_))
        ));
        assert!(matches!(
            svc.enroll_device(&tok4, "D", None, None, &cert(2)).await,
            Err(EscrowError::Conflict(_))
        ));
        // Revocation: the certificate no longer authenticates, writes are refused.
        assert_eq!(
            svc.device_by_cert(&cert(2)).await.unwrap().map(|d| d.id),
            Some(b.id)
        );
        svc.escrow(&b, req(vec![item(1, 7, &password(7))]))
            .await
            .unwrap();
        svc.revoke_device(&admin(), b.id).await.unwrap();
        assert!(svc.device_by_cert(&cert(2)).await.unwrap().is_none());
        assert!(matches!(
            svc.escrow(&b, req(vec![item(1, 8, &password(8))])).await,
            Err(EscrowError::Forbidden(_))
        ));
        assert!(matches!(
            svc.check_in(&b, CheckIn::default()).await,
            Err(EscrowError::Forbidden(_))
        ));
        assert!(matches!(
            svc.enroll_device(&tok4, "B", None, None, &cert(6)).await,
            Err(EscrowError::Forbidden(_))
        ));
        // A revoked device is never a candidate (issue 8: a rogue device must not block or
        // confuse a recovery); its keys stay in the database for re-enrolment and the audit.
        assert_eq!(
            svc.find_by_prefix(&admin(), &pid(7).prefix8())
                .await
                .unwrap()
                .len(),
            0
        );
        // Re-enrollment after an admin allows it binds the new certificate to the same record.
        svc.allow_reenroll(&admin(), b.id).await.unwrap();
        let b2 = svc
            .enroll_device(&tok4, "B", None, None, &cert(6))
            .await
            .unwrap();
        assert_eq!(b2.id, b.id);
        assert!(!b2.revoked);
        assert!(svc.device_by_cert(&cert(2)).await.unwrap().is_none());
        assert_eq!(
            svc.device_by_cert(&cert(6)).await.unwrap().map(|d| d.id),
            Some(b.id)
        );
        let listed = svc
            .list_devices(
                &admin(),
                DeviceFilter {
                    name_contains: Some("b".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(listed.iter().map(|d| d.id).collect::<Vec<_>>(), vec![b.id]);
        assert!(matches!(
            svc.revoke_device(&admin(), 9999).await,
            Err(EscrowError::NotFound(_))
        ));
    }
);

both_backends!(
    device_cannot_touch_another_devices_keys,
    |db: TestDb| async move {
        let svc = db.open(Kek::generate()).await.unwrap();
        let a = enroll(&svc, "A", 1).await;
        let b = enroll(&svc, "B", 2).await;
        svc.escrow(&a, req(vec![item(1, 1, &password(1))]))
            .await
            .unwrap();
        svc.escrow(&b, req(vec![item(2, 2, &password(2))]))
            .await
            .unwrap();
        let own = svc.device_own_keys(&a).await.unwrap();
        assert_eq!(
            own.iter().map(|k| k.protector_id).collect::<Vec<_>>(),
            vec![pid(1)]
        );
        assert!(matches!(
            svc.report_rotation(&a, pid(2), pid(1), false).await,
            Err(EscrowError::NotFound(_))
        ));
        // B listing A's protector as absent from A's volume does nothing to A's rows.
        svc.check_in(
            &b,
            CheckIn {
                present_protectors: vec![(vol(1), pid(9))],
            },
        )
        .await
        .unwrap();
        assert!(
            svc.device_own_keys(&a).await.unwrap()[0]
                .superseded_at
                .is_none()
        );
        // The same protector/volume IDs escrowed by another device are a separate record, not a mismatch.
        assert_eq!(
            svc.escrow(&b, req(vec![item(1, 1, &password(5))]))
                .await
                .unwrap(),
            vec![ItemOutcome::Stored]
        );
        let d = svc
            .disclose(
                &admin(),
                &pid(1),
                Some("A"),
                DisclosureReason::LostPin,
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(d.recovery_password.expose(), password(1));
        assert!(matches!(
            svc.disclose(
                &admin(),
                &pid(1),
                None,
                DisclosureReason::LostPin,
                None,
                None
            )
            .await,
            Err(EscrowError::Conflict(_))
        ));
    }
);

both_backends!(
    role_matrix_is_enforced_by_the_service,
    |db: TestDb| async move {
        let svc = db.open(Kek::generate()).await.unwrap();
        let dev = enroll(&svc, "SRV", 1).await;
        svc.escrow(&dev, req(vec![item(1, 1, &password(1))]))
            .await
            .unwrap();
        let helpdesk = operator(&svc, "hd", Role::Helpdesk).await;
        let auditor = operator(&svc, "aud", Role::Auditor).await;
        let admin_op = operator(&svc, "adm", Role::Admin).await;
        let device_actor = escrow::Actor::device(&dev);
        let forbidden = |r: Result<(), EscrowError>| matches!(r, Err(EscrowError::Forbidden(_)));
        let day = Duration::from_secs(86_400);
        for (actor, may_find, may_admin, may_report) in [
            (&admin_op, true, true, true),
            (&helpdesk, true, false, false),
            (&auditor, false, false, true),
            (&device_actor, false, false, false),
        ] {
            let find = svc
                .find_by_prefix(actor, &pid(1).prefix8())
                .await
                .map(|_| ());
            assert_eq!(!forbidden(find), may_find, "{actor:?} find_by_prefix");
            let find = svc.find_by_device(actor, "SRV").await.map(|_| ());
            assert_eq!(!forbidden(find), may_find, "{actor:?} find_by_device");
            let dis = svc
                .disclose(
                    actor,
                    &pid(1),
                    Some("SRV"),
                    DisclosureReason::BiosChanged,
                    None,
                    None,
                )
                .await
                .map(|_| ());
            assert_eq!(!forbidden(dis), may_find, "{actor:?} disclose");
            let ops = svc.list_operators(actor).await.map(|_| ());
            assert_eq!(!forbidden(ops), may_admin, "{actor:?} list_operators");
            let ops = svc
                .create_operator(actor, &format!("x{}", rand_suffix()), Role::Auditor)
                .await
                .map(|_| ());
            assert_eq!(!forbidden(ops), may_admin, "{actor:?} create_operator");
            let tok = svc
                .create_enrollment_token(actor, 1, day, None)
                .await
                .map(|_| ());
            assert_eq!(
                !forbidden(tok),
                may_admin,
                "{actor:?} create_enrollment_token"
            );
            let tok = svc.list_enrollment_tokens(actor).await.map(|_| ());
            assert_eq!(
                !forbidden(tok),
                may_admin,
                "{actor:?} list_enrollment_tokens"
            );
            let api = svc.create_api_token(actor, 1, None).await.map(|_| ());
            assert_eq!(!forbidden(api), may_admin, "{actor:?} create_api_token");
            let rep = svc
                .audit_report(actor, Default::default())
                .await
                .map(|_| ());
            assert_eq!(!forbidden(rep), may_report, "{actor:?} audit_report");
            let rep = svc.fleet_report(actor, day).await.map(|_| ());
            assert_eq!(!forbidden(rep), may_report, "{actor:?} fleet_report");
            let devs = svc
                .list_devices(actor, DeviceFilter::default())
                .await
                .map(|_| ());
            assert_eq!(!forbidden(devs), may_report, "{actor:?} list_devices");
            let rv = svc.allow_reenroll(actor, dev.id).await;
            assert_eq!(!forbidden(rv), may_admin, "{actor:?} allow_reenroll");
        }
        // Helpdesk must name the device; a wrong name is refused and audited.
        assert!(matches!(
            svc.disclose(
                &helpdesk,
                &pid(1),
                None,
                DisclosureReason::LostPin,
                None,
                None
            )
            .await,
            Err(EscrowError::Validation(_))
        ));
        assert!(matches!(
            svc.disclose(
                &helpdesk,
                &pid(1),
                Some("OTHER"),
                DisclosureReason::LostPin,
                None,
                None
            )
            .await,
            Err(EscrowError::Forbidden(_))
        ));
        assert!(matches!(
            svc.disclose(
                &helpdesk,
                &pid(1),
                Some("SRV"),
                DisclosureReason::Other,
                None,
                None
            )
            .await,
            Err(EscrowError::Validation(_))
        ));
        assert!(matches!(
            svc.disclose(
                &helpdesk,
                &pid(9),
                Some("SRV"),
                DisclosureReason::LostPin,
                None,
                None
            )
            .await,
            Err(EscrowError::NotFound(_))
        ));
        svc.disclose(
            &helpdesk,
            &pid(1),
            Some("srv"),
            DisclosureReason::Other,
            Some("ticket 42"),
            None,
        )
        .await
        .unwrap();
        let failures = svc
            .audit_report(
                &auditor,
                escrow::AuditFilter {
                    kind: Some("disclose".into()),
                    outcome: Some(escrow::AuditOutcome::Failure),
                    operator: Some("hd".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(failures.len(), 4, "{failures:#?}");
        // A role that may not disclose is refused and audited as a failure too.
        let denied = svc
            .audit_report(
                &auditor,
                escrow::AuditFilter {
                    kind: Some("disclose".into()),
                    operator: Some("aud".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(denied.len(), 1);
        assert_eq!(denied[0].outcome, escrow::AuditOutcome::Failure);
        // Operator and token lifecycle.
        let ops = svc.list_operators(&admin()).await.unwrap();
        let hd = ops.iter().find(|o| o.name == "hd").unwrap();
        let (tinfo, secret) = svc
            .create_api_token(&admin(), hd.id, Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert!(svc.authenticate_operator(&secret).await.unwrap().is_some());
        assert!(
            svc.authenticate_operator("nuo_bogus")
                .await
                .unwrap()
                .is_none()
        );
        svc.revoke_api_token(&admin(), tinfo.id).await.unwrap();
        assert!(svc.authenticate_operator(&secret).await.unwrap().is_none());
        svc.set_operator_role(&admin(), hd.id, Role::Auditor)
            .await
            .unwrap();
        let (_, s2) = svc.create_api_token(&admin(), hd.id, None).await.unwrap();
        assert_eq!(
            svc.authenticate_operator(&s2)
                .await
                .unwrap()
                .and_then(|a| a.role()),
            Some(Role::Auditor)
        );
        svc.disable_operator(&admin(), hd.id).await.unwrap();
        assert!(svc.authenticate_operator(&s2).await.unwrap().is_none());
        // The last admin cannot be demoted or disabled.
        let adm = ops.iter().find(|o| o.name == "adm").unwrap();
        assert!(matches!(
            svc.disable_operator(&admin(), adm.id).await,
            Err(EscrowError::Conflict(_))
        ));
        assert!(matches!(
            svc.bootstrap_admin("second").await,
            Err(EscrowError::Conflict(_))
        ));
    }
);

both_backends!(bootstrap_and_token_expiry, |db: TestDb| async move {
    let clock = Arc::new(ManualClock::new(t0()));
    let svc = db.open_with_clock(Kek::generate(), clock.clone()).await;
    let (info, secret) = svc.bootstrap_admin("root").await.unwrap();
    assert_eq!(info.role, Role::Admin);
    let actor = svc.authenticate_operator(&secret).await.unwrap().unwrap();
    assert!(matches!(
        svc.bootstrap_admin("again").await,
        Err(EscrowError::Conflict(_))
    ));
    let (_, short) = svc
        .create_api_token(&actor, info.id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(svc.authenticate_operator(&short).await.unwrap().is_some());
    clock.advance(time::Duration::seconds(31));
    assert!(svc.authenticate_operator(&short).await.unwrap().is_none());
    assert!(svc.authenticate_operator(&secret).await.unwrap().is_some());
});

both_backends!(
    disclosure_drives_two_phase_rotation,
    |db: TestDb| async move {
        let clock = Arc::new(ManualClock::new(t0()));
        let svc = db.open_with_clock(Kek::generate(), clock.clone()).await;
        let dev = enroll(&svc, "SRV", 1).await;
        let mut it = item(1, 1, &password(1));
        it.key_package = Some(vec![1, 2, 3, 4]);
        svc.escrow(&dev, req(vec![it])).await.unwrap();
        assert!(
            svc.check_in(
                &dev,
                CheckIn {
                    present_protectors: vec![(vol(1), pid(1))]
                }
            )
            .await
            .unwrap()
            .is_empty()
        );
        let cands = svc
            .find_by_prefix(&admin(), &pid(1).prefix8().to_lowercase())
            .await
            .unwrap();
        assert_eq!(cands.len(), 1);
        assert_eq!(cands[0].rotation, RotationState::None);
        let d = svc
            .disclose(
                &admin(),
                &pid(1),
                Some("SRV"),
                DisclosureReason::LostPin,
                None,
                Some("10.0.0.9".parse().unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(d.key_package.as_deref(), Some(&[1u8, 2, 3, 4][..]));
        assert_eq!(d.candidate.rotation, RotationState::Requested);
        assert!(d.candidate.disclosed_at.is_some());
        let rec = svc
            .audit_report(
                &admin(),
                escrow::AuditFilter {
                    kind: Some("disclose".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(rec.last().map(|r| r.seq), Some(d.audit_seq));
        assert_eq!(
            rec.last().and_then(|r| r.client_addr.clone()).as_deref(),
            Some("10.0.0.9")
        );
        clock.advance(time::Duration::hours(5));
        let ins = svc
            .check_in(
                &dev,
                CheckIn {
                    present_protectors: vec![(vol(1), pid(1))],
                },
            )
            .await
            .unwrap();
        assert_eq!(ins.len(), 1);
        assert_eq!(
            (ins[0].protector_id, ins[0].state),
            (pid(1), RotationState::Requested)
        );
        let fleet = svc
            .fleet_report(&admin(), Duration::from_secs(86_400))
            .await
            .unwrap();
        assert_eq!(fleet.disclosed_not_rotated.len(), 1);
        assert_eq!(fleet.disclosed_not_rotated[0].age_secs, 5 * 3600);
        let g = svc.fleet_gauges().await.unwrap();
        assert_eq!(
            (g.disclosed_not_rotated, g.oldest_disclosed_not_rotated_secs),
            (1, 5 * 3600)
        );
        // Reporting before the new protector is escrowed is refused.
        assert!(matches!(
            svc.report_rotation(&dev, pid(1), pid(2), false).await,
            Err(EscrowError::Conflict(_))
        ));
        svc.escrow(&dev, req(vec![item(1, 2, &password(2))]))
            .await
            .unwrap();
        assert_eq!(
            svc.report_rotation(&dev, pid(1), pid(2), false)
                .await
                .unwrap(),
            RotationState::NewEscrowed
        );
        let ins = svc
            .check_in(
                &dev,
                CheckIn {
                    present_protectors: vec![(vol(1), pid(1)), (vol(1), pid(2))],
                },
            )
            .await
            .unwrap();
        assert_eq!(ins[0].state, RotationState::NewEscrowed);
        assert_eq!(
            svc.report_rotation(&dev, pid(1), pid(2), true)
                .await
                .unwrap(),
            RotationState::Done
        );
        assert_eq!(
            svc.report_rotation(&dev, pid(1), pid(2), true)
                .await
                .unwrap(),
            RotationState::Done
        );
        assert!(
            svc.check_in(
                &dev,
                CheckIn {
                    present_protectors: vec![(vol(1), pid(2))]
                }
            )
            .await
            .unwrap()
            .is_empty()
        );
        let keys = svc.find_by_device(&admin(), "SRV").await.unwrap();
        let old = keys.iter().find(|k| k.protector_id == pid(1)).unwrap();
        assert_eq!(old.rotation, RotationState::Done);
        assert!(old.superseded_at.is_some());
        assert!(
            svc.fleet_report(&admin(), Duration::from_secs(86_400))
                .await
                .unwrap()
                .disclosed_not_rotated
                .is_empty()
        );
        // Disclosing a historical key does not queue a rotation.
        let d = svc
            .disclose(
                &admin(),
                &pid(1),
                None,
                DisclosureReason::Other,
                Some("audit"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(d.candidate.rotation, RotationState::Done);
        // Check-in completing a rotation without an explicit report: disclose 2, escrow 3, drop 2.
        svc.disclose(
            &admin(),
            &pid(2),
            None,
            DisclosureReason::TpmReset,
            None,
            None,
        )
        .await
        .unwrap();
        svc.escrow(&dev, req(vec![item(1, 3, &password(3))]))
            .await
            .unwrap();
        svc.check_in(
            &dev,
            CheckIn {
                present_protectors: vec![(vol(1), pid(3))],
            },
        )
        .await
        .unwrap();
        let k2 = svc
            .find_by_prefix(&admin(), &pid(2).prefix8())
            .await
            .unwrap();
        assert_eq!(k2[0].rotation, RotationState::Done);
        // Stale devices and volumes without a key.
        clock.advance(time::Duration::days(3));
        let other = enroll(&svc, "EMPTY", 2).await;
        let fleet = svc
            .fleet_report(&admin(), Duration::from_secs(86_400))
            .await
            .unwrap();
        assert!(fleet.stale_devices.iter().any(|s| s.device_id == dev.id));
        assert!(
            fleet
                .stale_devices
                .iter()
                .any(|s| s.device_id == other.id && s.last_check_in.is_none())
        );
        svc.escrow(&other, req(vec![item(5, 5, &password(5))]))
            .await
            .unwrap();
        svc.check_in(
            &other,
            CheckIn {
                present_protectors: vec![(vol(5), pid(6))],
            },
        )
        .await
        .unwrap();
        let fleet = svc
            .fleet_report(&admin(), Duration::from_secs(86_400))
            .await
            .unwrap();
        assert_eq!(fleet.volumes_without_key.len(), 1);
        assert_eq!(fleet.volumes_without_key[0].volume_guid, vol(5));
    }
);

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

both_backends!(
    bulk_import_then_enroll_and_gauges,
    |db: TestDb| async move {
        let clock = Arc::new(ManualClock::new(t0()));
        let svc = db.open_with_clock(Kek::generate(), clock.clone()).await;
        let rec = |name: &str, v: u32, p: u32| escrow::ImportRecord {
            computer_name: name.into(),
            domain: Some("corp.example".into()),
            item: item(v, p, &password(p)),
            escrowed_at: t0() - time::Duration::days(400),
        };
        let records = vec![rec("OLD1", 1, 1), rec("OLD1", 1, 2), rec("OLD2", 2, 3)];
        let helpdesk = operator(&svc, "hd", Role::Helpdesk).await;
        assert!(matches!(
            svc.bulk_import(&helpdesk, &records).await,
            Err(EscrowError::Forbidden(_))
        ));
        assert_eq!(svc.bulk_import(&admin(), &records).await.unwrap(), 3);
        // Importing again changes nothing.
        assert_eq!(svc.bulk_import(&admin(), &records).await.unwrap(), 0);
        let keys = svc.find_by_device(&admin(), "old1").await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].escrowed_at, t0() - time::Duration::days(400));
        // An imported device has no certificate yet: its first enrollment binds one to the same record.
        let (_, tok) = svc
            .create_enrollment_token(&admin(), 1, Duration::from_secs(60), None)
            .await
            .unwrap();
        let d = svc
            .enroll_device(&tok, "OLD1", Some("corp.example"), None, &cert(11))
            .await
            .unwrap();
        assert_eq!(d.id, keys[0].device_id);
        assert_eq!(
            svc.escrow(&d, req(vec![item(1, 1, &password(1))]))
                .await
                .unwrap(),
            vec![ItemOutcome::Unchanged]
        );
        let d = svc
            .disclose(
                &admin(),
                &pid(3),
                Some("OLD2"),
                DisclosureReason::LostPin,
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(d.recovery_password.expose(), password(3));
        // Gauges: OLD1 checked in now, OLD2 never; one disclosed key waiting for rotation.
        clock.advance(time::Duration::days(2));
        let g = svc.fleet_gauges().await.unwrap();
        assert_eq!(
            (
                g.devices_active,
                g.devices_1d_to_7d,
                g.devices_over_30d_or_never
            ),
            (2, 1, 1)
        );
        assert_eq!((g.protectors_escrowed, g.disclosed_not_rotated), (3, 1));
        assert_eq!(g.oldest_disclosed_not_rotated_secs, 2 * 86_400);
        assert!(g.audit_chain_length >= 5);
        let stale = svc
            .list_devices(
                &admin(),
                DeviceFilter {
                    stale_for_secs: Some(86_400),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(stale.len(), 2);
        let stale = svc
            .list_devices(
                &admin(),
                DeviceFilter {
                    stale_for_secs: Some(3 * 86_400),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            stale
                .iter()
                .map(|d| d.computer_name.as_str())
                .collect::<Vec<_>>(),
            vec!["OLD2"]
        );
    }
);

both_backends!(
    ping_answers_while_open_and_fails_once_closed,
    |db: TestDb| async move {
        let svc = db.open(Kek::generate()).await.unwrap();
        svc.ping().await.unwrap();
        svc.close().await;
        assert!(matches!(svc.ping().await, Err(EscrowError::Storage(_))));
    }
);
