//! Escrow API against the real daemon over real TLS: the agent lifecycle (enroll, escrow,
//! idempotent re-escrow, mismatch, check-in, two-phase rotation to "done"), help-desk find and
//! disclose, reports, and every kind of bad input — each refused with a clear error and nothing
//! stored. Every test runs on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use escrow::client::ClientError;
use escrow::wire;
use reqwest::Method;

use crate::escrow_support::*;

fn api_err(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String, String) {
    match r {
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => (status, code, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn lifecycle(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.admin().await;
    let token = enrollment_token(&admin, 1).await;
    let agent = d.agent("SRV-LIFE-01");
    let device = agent.enroll(&token).await;
    assert_eq!(device.computer_name, "SRV-LIFE-01");
    assert_eq!(device.client_cert_sha256, agent.cert_sha256);

    let (vol_c, vol_d) = (guid(), guid());
    let (p1, p2) = (guid(), guid());
    let (pw1, pw2) = (recovery_password(1), recovery_password(2));
    let mut data = item(&vol_d, &p2, &pw2);
    data.volume_type = "fixed".into();
    data.mount_point = Some("D:".into());
    data.key_package = Some("S2V5UGFja2FnZQ==".into());
    let body = wire::EscrowBody {
        items: vec![item(&vol_c, &p1, &pw1), data],
        tpm_owner_auth: None,
    };

    let r = agent.client.escrow(&body).await.unwrap();
    assert_eq!(
        r.results
            .iter()
            .map(|x| x.outcome.as_str())
            .collect::<Vec<_>>(),
        ["stored", "stored"]
    );
    // Re-escrow of the same data: idempotent.
    let r = agent.client.escrow(&body).await.unwrap();
    assert_eq!(
        r.results
            .iter()
            .map(|x| x.outcome.as_str())
            .collect::<Vec<_>>(),
        ["unchanged", "unchanged"]
    );
    // Same protector, different password: refused (409), recorded, stored key kept.
    let bad = wire::EscrowBody {
        items: vec![item(&vol_c, &p1, &recovery_password(99))],
        tpm_owner_auth: None,
    };
    let (status, code, message) = api_err(agent.client.escrow(&bad).await);
    assert_eq!((status, code.as_str()), (409, "mismatch"), "{message}");
    assert!(message.contains(&p1), "{message}");

    let own = agent.client.own_keys().await.unwrap();
    assert_eq!(own.keys.len(), 2);

    // Help desk: find by the 8-digit prefix (no secrets), by device, then disclose with a reason.
    let prefix = &p1[1..9];
    let found = admin.find_by_prefix(prefix).await.unwrap();
    assert_eq!(found.keys.len(), 1);
    assert_eq!(found.keys[0].device_name, "SRV-LIFE-01");
    let raw = serde_json::to_string(&found).unwrap();
    assert!(!raw.contains(&pw1), "find must not return secrets");
    assert_eq!(
        admin
            .find_by_device("SRV-LIFE-01")
            .await
            .unwrap()
            .keys
            .len(),
        2
    );

    let (status, code, message) = api_err(
        admin
            .disclose(
                &p1,
                &wire::DiscloseBody {
                    device_id: None,
                    device_name: None,
                    reason: Some("because".into()),
                    reason_text: None,
                },
            )
            .await,
    );
    assert_eq!(
        (status, code.as_str()),
        (400, "validation_failed"),
        "{message}"
    );
    assert!(
        message.contains("lost_pin"),
        "the message lists the valid reasons: {message}"
    );
    let (status, _, message) = api_err(
        admin
            .disclose(
                &p1,
                &wire::DiscloseBody {
                    device_id: None,
                    device_name: None,
                    reason: Some("other".into()),
                    reason_text: None,
                },
            )
            .await,
    );
    assert_eq!(status, 400, "{message}");
    let disclosed = admin
        .disclose(
            &p1,
            &wire::DiscloseBody {
                device_id: None,
                device_name: None,
                reason: Some("lost_pin".into()),
                reason_text: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        disclosed.recovery_password, pw1,
        "the first escrowed password survives the mismatch"
    );
    assert_eq!(disclosed.key.device_name, "SRV-LIFE-01");
    let with_package = admin
        .disclose(
            &p2,
            &wire::DiscloseBody {
                device_id: None,
                device_name: Some("SRV-LIFE-01".into()),
                reason: Some("tpm_reset".into()),
                reason_text: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        with_package.key_package.as_deref(),
        Some("S2V5UGFja2FnZQ==")
    );

    // Rotation: check-in asks for it; escrow the new protector; report; remove the old; done.
    let present = |ps: &[(&str, &str)]| wire::CheckInBody {
        protectors: ps
            .iter()
            .map(|(v, p)| wire::PresentProtector {
                volume_guid: v.to_string(),
                protector_id: p.to_string(),
            })
            .collect(),
        adapters: None,
    };
    let ci = agent
        .client
        .check_in(&present(&[(&vol_c, &p1), (&vol_d, &p2)]))
        .await
        .unwrap();
    let asked: Vec<String> = ci
        .rotations
        .iter()
        .map(|r| r.protector_id.to_string())
        .collect();
    assert!(asked.contains(&p1) && asked.contains(&p2), "{asked:?}");
    assert!(ci.rotations.iter().all(|r| r.state.as_str() == "requested"));

    let p1_new = guid();
    let r = agent
        .client
        .escrow(&wire::EscrowBody {
            items: vec![item(&vol_c, &p1_new, &recovery_password(3))],
            tpm_owner_auth: None,
        })
        .await
        .unwrap();
    assert_eq!(r.results[0].outcome, "stored");
    let rotation = |old: &str, new: &str, removed: bool| wire::RotationReport {
        old_protector_id: old.to_string(),
        new_protector_id: new.to_string(),
        old_removed: removed,
    };
    // Reporting a rotation to a protector that was never escrowed is refused.
    let (status, _, message) = api_err(
        agent
            .client
            .report_rotation(&rotation(&p1, &guid(), false))
            .await,
    );
    assert_eq!(status, 409, "{message}");
    assert_eq!(
        agent
            .client
            .report_rotation(&rotation(&p1, &p1_new, false))
            .await
            .unwrap()
            .state,
        "new_escrowed"
    );
    let ci = agent
        .client
        .check_in(&present(&[(&vol_c, &p1), (&vol_c, &p1_new), (&vol_d, &p2)]))
        .await
        .unwrap();
    assert!(
        ci.rotations
            .iter()
            .any(|r| r.protector_id.to_string() == p1 && r.state.as_str() == "new_escrowed")
    );
    assert_eq!(
        agent
            .client
            .report_rotation(&rotation(&p1, &p1_new, true))
            .await
            .unwrap()
            .state,
        "done"
    );
    let keys = admin.find_by_device("SRV-LIFE-01").await.unwrap().keys;
    let old = keys
        .iter()
        .find(|k| k.protector_id.to_string() == p1)
        .unwrap();
    assert_eq!(old.rotation.as_str(), "done");
    assert!(
        old.superseded_at.is_some() && old.disclosed_at.is_some(),
        "history is kept: {old:?}"
    );
    let ci = agent
        .client
        .check_in(&present(&[(&vol_c, &p1_new), (&vol_d, &p2)]))
        .await
        .unwrap();
    assert!(
        ci.rotations
            .iter()
            .all(|r| r.protector_id.to_string() != p1)
    );

    // Reports: the audit trail names the disclosures with reasons; CSV export; chain intact.
    let audit = admin
        .audit_report(&wire::AuditQuery {
            kind: Some("disclose".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let reasons: Vec<_> = audit
        .records
        .iter()
        .filter(|r| r.outcome.as_str() == "success")
        .filter_map(|r| r.reason.clone())
        .collect();
    assert!(
        reasons.contains(&"lost_pin".to_string()) && reasons.contains(&"tpm_reset".to_string()),
        "{reasons:?}"
    );
    assert!(
        audit
            .records
            .iter()
            .any(|r| r.outcome.as_str() == "failure"),
        "failed disclosures are audited too"
    );
    let csv = admin
        .audit_report_csv(&wire::AuditQuery {
            device: Some("SRV-LIFE-01".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        csv.starts_with("seq,at,actor_kind,actor_name,action,"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.contains(",disclose,") && l.contains("lost_pin")),
        "{csv}"
    );
    assert!(!csv.contains(&pw1));
    let verdict = admin.verify_audit().await.unwrap();
    assert!(matches!(verdict, wire::ChainView::Ok { .. }), "{verdict:?}");
    let fleet = admin.fleet_report(Some(30)).await.unwrap();
    assert!(!fleet.mismatches.is_empty(), "the mismatch is reported");
}
both_backends!(agent_lifecycle_find_disclose_rotate, super::lifecycle);

async fn bad_input(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.admin().await;
    let agent = d.agent("SRV-BAD-01");
    agent.enroll(&enrollment_token(&admin, 1).await).await;
    let (vol, pid) = (guid(), guid());
    let good = serde_json::to_vec(&wire::EscrowBody {
        items: vec![item(&vol, &pid, &recovery_password(5))],
        tpm_owner_auth: None,
    })
    .unwrap();

    let mut wrong_group = recovery_password(5);
    wrong_group.replace_range(
        40..41,
        if &wrong_group[40..41] == "9" {
            "8"
        } else {
            "9"
        },
    );
    let cases: Vec<(Vec<u8>, u16, &str, String)> = vec![
        (
            b"{\"items\": [".to_vec(),
            400,
            "invalid_json",
            "not valid JSON".into(),
        ),
        (
            b"[]".to_vec(),
            400,
            "invalid_json",
            "expected struct".into(),
        ),
        (
            String::from_utf8(good.clone())
                .unwrap()
                .replace("\"items\"", "\"colour\":1,\"items\"")
                .into_bytes(),
            400,
            "invalid_json",
            "unknown field `colour`".into(),
        ),
        (
            serde_json::to_vec(&wire::EscrowBody {
                items: vec![item(&vol, &pid, &wrong_group)],
                tpm_owner_auth: None,
            })
            .unwrap(),
            400,
            "validation_failed",
            "group 6".into(),
        ),
        (
            serde_json::to_vec(&wire::EscrowBody {
                items: vec![item(&vol, &pid, "123456-123456")],
                tpm_owner_auth: None,
            })
            .unwrap(),
            400,
            "validation_failed",
            "8 groups".into(),
        ),
        (
            serde_json::to_vec(&wire::EscrowBody {
                items: vec![item("C:", &pid, &recovery_password(5))],
                tpm_owner_auth: None,
            })
            .unwrap(),
            400,
            "validation_failed",
            "volume_guid".into(),
        ),
        (
            serde_json::to_vec(&wire::EscrowBody {
                items: vec![],
                tpm_owner_auth: None,
            })
            .unwrap(),
            400,
            "validation_failed",
            "items is empty".into(),
        ),
        (
            // Larger than max_body_bytes (65536 in the test config).
            serde_json::to_vec(&wire::EscrowBody {
                items: vec![item(&vol, &pid, &recovery_password(5))],
                tpm_owner_auth: Some("x".repeat(70_000)),
            })
            .unwrap(),
            413,
            "body_too_large",
            "max_body_bytes".into(),
        ),
    ];
    for (body, status, code, needle) in cases {
        let (s, b) = agent
            .client
            .request_raw(
                Method::POST,
                "agent/escrow",
                Some(("application/json", body)),
            )
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&b);
        assert_eq!(s, status, "{text}");
        let v: wire::ErrorBody = serde_json::from_slice(&b)
            .unwrap_or_else(|e| panic!("not an error body ({e}): {text}"));
        assert_eq!(v.error.code, code, "{text}");
        assert!(
            v.error.message.contains(&needle),
            "{:?} lacks {needle:?}",
            v.error.message
        );
        assert!(
            !v.error.message.contains(&wrong_group[..20]),
            "passwords are never echoed"
        );
    }
    // Wrong content type.
    let (s, _) = agent
        .client
        .request_raw(
            Method::POST,
            "agent/escrow",
            Some(("text/plain", good.clone())),
        )
        .await
        .unwrap();
    assert_eq!(s, 415);
    // Nothing was stored by any of it.
    assert!(agent.client.own_keys().await.unwrap().keys.is_empty());
    assert!(
        admin
            .find_by_device("SRV-BAD-01")
            .await
            .unwrap()
            .keys
            .is_empty()
    );
    let escrows = admin
        .audit_report(&wire::AuditQuery {
            kind: Some("escrow".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(escrows.records.is_empty(), "{:?}", escrows.records);
    // And the good body still works afterwards.
    let (s, b) = agent
        .client
        .request_raw(
            Method::POST,
            "agent/escrow",
            Some(("application/json", good)),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
}
both_backends!(bad_input_is_refused_and_nothing_is_stored, super::bad_input);

async fn enrollment_tokens(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.admin().await;
    let req = |name: &str, token: &str| wire::EnrollRequest {
        token: token.to_string(),
        computer_name: name.to_string(),
        domain: None,
        serial: None,
    };
    // Expired.
    let short = admin
        .create_enrollment_token(&wire::CreateEnrollmentToken {
            max_uses: 5,
            ttl_seconds: 1,
            note: None,
        })
        .await
        .unwrap()
        .token;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let a = d.agent("SRV-TOK-A");
    let (s, code, m) = api_err(a.client.enroll(&req("SRV-TOK-A", &short)).await);
    assert_eq!((s, code.as_str()), (410, "gone"), "{m}");
    assert!(m.contains("expired"), "{m}");
    // Used up.
    let once = enrollment_token(&admin, 1).await;
    a.client.enroll(&req("SRV-TOK-A", &once)).await.unwrap();
    let b = d.agent("SRV-TOK-B");
    let (s, _, m) = api_err(b.client.enroll(&req("SRV-TOK-B", &once)).await);
    assert_eq!(s, 410, "{m}");
    assert!(m.contains("used up"), "{m}");
    // Revoked.
    let created = admin
        .create_enrollment_token(&wire::CreateEnrollmentToken {
            max_uses: 5,
            ttl_seconds: 3600,
            note: None,
        })
        .await
        .unwrap();
    admin
        .revoke_enrollment_token(&created.info.id.to_string())
        .await
        .unwrap();
    let (s, _, m) = api_err(b.client.enroll(&req("SRV-TOK-B", &created.token)).await);
    assert_eq!(s, 410, "{m}");
    // Unknown token; no client certificate at all.
    let (s, _, m) = api_err(b.client.enroll(&req("SRV-TOK-B", "nu_enroll_bogus")).await);
    assert!(s == 401 || s == 403 || s == 410, "{s} {m}");
    let (s, _, m) = api_err(
        d.anonymous()
            .enroll(&req("SRV-TOK-C", &enrollment_token(&admin, 1).await))
            .await,
    );
    assert_eq!(s, 401, "{m}");
    assert!(m.contains("client certificate"), "{m}");
    // Only the one good enrollment exists.
    let devices = admin
        .list_devices(&wire::DeviceQuery {
            include_revoked: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<_> = devices
        .devices
        .iter()
        .map(|x| x.computer_name.as_str())
        .collect();
    assert_eq!(names, ["SRV-TOK-A"]);
}
both_backends!(
    enrollment_tokens_expire_run_out_and_revoke,
    super::enrollment_tokens
);

async fn device_identity(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.admin().await;
    let token = enrollment_token(&admin, 2).await;
    let a = d.agent("SRV-ID-A");
    let b = d.agent("SRV-ID-B");
    a.enroll(&token).await;
    b.enroll(&token).await;
    let (vol, pa) = (guid(), guid());
    a.client
        .escrow(&wire::EscrowBody {
            items: vec![item(&vol, &pa, &recovery_password(7))],
            tpm_owner_auth: None,
        })
        .await
        .unwrap();
    let body = wire::EscrowBody {
        items: vec![item(&guid(), &guid(), &recovery_password(8))],
        tpm_owner_auth: None,
    };

    // No client certificate.
    let anon = d.anonymous();
    let (s, _, m) = api_err(anon.escrow(&body).await);
    assert_eq!(s, 401);
    assert_eq!(
        m,
        "this endpoint needs the device's client certificate (mutual TLS)"
    );
    // A certificate nobody enrolled (wrong certificate).
    let stranger = d.agent("SRV-ID-A");
    let (s, _, m) = api_err(stranger.client.escrow(&body).await);
    assert_eq!(s, 403, "{m}");
    let (s, _, _) = api_err(stranger.client.own_keys().await);
    assert_eq!(s, 403);
    // B sees only its own keys, and has no way to read A's: operator routes need a token.
    assert!(b.client.own_keys().await.unwrap().keys.is_empty());
    let (s, _, _) = api_err(b.client.find_by_device("SRV-ID-A").await);
    assert_eq!(s, 401);
    let (s, _, _) = api_err(
        b.client
            .disclose(
                &pa,
                &wire::DiscloseBody {
                    device_id: None,
                    device_name: Some("SRV-ID-A".into()),
                    reason: Some("lost_pin".into()),
                    reason_text: None,
                },
            )
            .await,
    );
    assert_eq!(s, 401);
    // B cannot rotate A's protector either.
    let (s, _, _) = api_err(
        b.client
            .report_rotation(&wire::RotationReport {
                old_protector_id: pa.clone(),
                new_protector_id: guid(),
                old_removed: true,
            })
            .await,
    );
    assert_eq!(s, 404);
    // Revoked device: refused from the next request on, nothing stored.
    let dev_b = admin
        .list_devices(&wire::DeviceQuery {
            name: Some("SRV-ID-B".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .revoke_device(&dev_b.devices[0].id.to_string())
        .await
        .unwrap();
    let (s, _, m) = api_err(b.client.escrow(&body).await);
    assert_eq!(s, 403, "{m}");
    assert!(
        admin
            .find_by_device("SRV-ID-B")
            .await
            .unwrap()
            .keys
            .is_empty()
    );
    assert!(admin.find_by_device("SRV-ID-A").await.unwrap().keys.len() == 1);
    // Re-enrollment after an admin allows it binds a new certificate.
    admin
        .allow_reenroll(&dev_b.devices[0].id.to_string())
        .await
        .unwrap();
    let b2 = d.agent("SRV-ID-B");
    b2.enroll(&enrollment_token(&admin, 1).await).await;
    b2.client.escrow(&body).await.unwrap();
    let (s, _, _) = api_err(b.client.own_keys().await);
    assert_eq!(s, 403, "the old certificate stays dead");
}
both_backends!(
    device_identity_no_cert_wrong_cert_other_device_revoked,
    super::device_identity
);

async fn metrics_and_reload(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.admin().await;
    let agent = d.agent("SRV-MET-01");
    agent.enroll(&enrollment_token(&admin, 1).await).await;
    let pid = guid();
    agent
        .client
        .escrow(&wire::EscrowBody {
            items: vec![item(&guid(), &pid, &recovery_password(11))],
            tpm_owner_auth: None,
        })
        .await
        .unwrap();
    admin
        .disclose(
            &pid,
            &wire::DiscloseBody {
                device_id: None,
                device_name: None,
                reason: Some("bios_changed".into()),
                reason_text: None,
            },
        )
        .await
        .unwrap();
    let text = reqwest::get(format!("http://{}/metrics", d.metrics_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "netunlockd_escrow_requests_total{outcome=\"success\",route=\"/api/v1/agent/escrow\"} 1",
        "netunlockd_disclosures_total{reason=\"bios_changed\"} 1",
        "netunlockd_escrow_http_request_duration_seconds_bucket{route=\"/api/v1/keys/{protector_id}/disclose\"",
        "netunlockd_audit_chain_length",
        "netunlockd_escrow_devices{freshness=\"fresh\"}",
    ] {
        assert!(
            text.contains(needle),
            "/metrics lacks {needle}:\n{}",
            text.lines()
                .filter(|l| l.contains("escrow") || l.contains("disclos"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let served = d
        .anonymous()
        .request_raw(Method::GET, "openapi.json", None)
        .await
        .unwrap();
    assert_eq!(served.0, 200);
    let docs = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .unwrap();
    assert!(
        served.1 == docs,
        "the served OpenAPI document differs from docs/openapi.json"
    );
}
both_backends!(
    metrics_count_requests_and_disclosures_openapi_is_served,
    super::metrics_and_reload
);

async fn tls_reload(backend: Backend) {
    let mut d = EscrowDaemon::start(&backend).await;
    let admin = d.admin().await;
    // Opens the admin's keep-alive connection under the old certificate.
    assert_eq!(admin.me().await.unwrap().name, "admin");
    let old_pin = d.rotate_tls_certificate();
    assert_ne!(old_pin, d.server_sha256);
    // New connections get the new certificate: the new pin works, the old pin is refused.
    assert_eq!(d.anonymous().health().await.unwrap().status, "ok");
    let stale = escrow::client::ApiClient::new(&escrow::client::ApiClientConfig {
        base_url: d.base_url(),
        trust: escrow::client::ServerTrust::PinnedSha256(old_pin),
        token: None,
        identity: None,
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    match stale.health().await {
        Err(ClientError::Transport(m)) => assert!(m.contains("pinned"), "{m}"),
        other => panic!("a client pinned to the old certificate must be refused: {other:?}"),
    }
    // The listener was not restarted: the admin's keep-alive client still works.
    assert_eq!(admin.me().await.unwrap().name, "admin");
}
both_backends!(
    sighup_reloads_the_tls_certificate_without_restart,
    super::tls_reload
);
