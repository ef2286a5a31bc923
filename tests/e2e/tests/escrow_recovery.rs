//! Issue 8 items 1 and 3 (and issue 9 item 7, server side), against the real daemon: a rogue or
//! cloned device escrowing the real server's key ID cannot block its recovery; every refused
//! disclosure is audited with the key's device; an enrolled device re-enrolling with its own
//! certificate is answered before any token check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use escrow::ApiClient;
use escrow::client::ClientError;
use escrow::wire;
use reqwest::Method;

use crate::escrow_support::*;

fn api_err<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api {
            status, message, ..
        }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn helpdesk(d: &EscrowDaemon, admin: &ApiClient, name: &str) -> ApiClient {
    let op = admin
        .create_operator(&wire::CreateOperator {
            name: name.into(),
            role: wire::Role::Helpdesk,
        })
        .await
        .unwrap();
    let tok = admin
        .create_api_token(&wire::CreateApiToken {
            operator_id: op.id,
            ttl_seconds: None,
        })
        .await
        .unwrap();
    d.operator(&tok.token)
}

fn body(
    device_id: Option<i64>,
    device_name: Option<&str>,
    reason: Option<&str>,
) -> wire::DiscloseBody {
    wire::DiscloseBody {
        device_id,
        device_name: device_name.map(str::to_owned),
        reason: reason.map(str::to_owned),
        reason_text: None,
    }
}

async fn enroll_as(agent: &Agent, token: &str, domain: Option<&str>) -> wire::DeviceView {
    agent
        .client
        .enroll(&wire::EnrollRequest {
            token: token.to_string(),
            computer_name: agent.name.clone(),
            domain: domain.map(str::to_owned),
            serial: None,
        })
        .await
        .unwrap()
}

async fn rogue_cannot_block(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.admin().await;
    let hd = helpdesk(&d, &admin, "hd-rogue").await;
    let real = d.agent("SRV-X");
    let real_dev = real.enroll(&enrollment_token(&admin, 1).await).await;
    let (vol, pid) = (guid(), guid());
    let real_pw = recovery_password(1);
    real.client
        .escrow(&wire::EscrowBody {
            items: vec![item(&vol, &pid, &real_pw)],
            tpm_owner_auth: None,
        })
        .await
        .unwrap();
    // A rogue device (another domain) and a clone (no domain) escrow the same volume and key ID.
    let rogue = d.agent("SRV-X");
    let rogue_dev = enroll_as(&rogue, &enrollment_token(&admin, 1).await, Some("LAB")).await;
    let clone = d.agent("SRV-X");
    let clone_dev = enroll_as(&clone, &enrollment_token(&admin, 1).await, None).await;
    for (a, seed) in [(&rogue, 2), (&clone, 3)] {
        let res = a
            .client
            .escrow(&wire::EscrowBody {
                items: vec![item(&vol, &pid, &recovery_password(seed))],
                tpm_owner_auth: None,
            })
            .await
            .unwrap();
        assert_eq!(res.results[0].outcome, "stored");
    }

    // The lookup by what the recovery screen shows lists every candidate, with what tells them apart.
    let found = hd.find_by_prefix(&pid[1..9]).await.unwrap().keys;
    assert_eq!(found.len(), 3, "{found:?}");
    let real_row = found
        .iter()
        .find(|k| k.device_id == real_dev.id)
        .expect("the real server is a candidate");
    assert_eq!(real_row.device_name, "SRV-X");
    assert_eq!(real_row.domain.as_deref(), Some("CORP"));
    assert_eq!(real_row.device_cert_sha256, real.cert_sha256);
    assert!(real_row.device_last_check_in.is_some());
    assert!(real_row.device_enrolled_at <= real_row.escrowed_at);
    let raw: serde_json::Value = serde_json::from_slice(
        &hd.request_raw(Method::GET, &format!("keys?prefix={}", &pid[1..9]), None)
            .await
            .unwrap()
            .1,
    )
    .unwrap();
    for field in [
        "device_id",
        "device_name",
        "domain",
        "device_enrolled_at",
        "device_cert_sha256",
        "device_last_check_in",
    ] {
        assert!(
            raw["keys"][0].get(field).is_some(),
            "{field} missing: {raw}"
        );
    }

    // A bare name is ambiguous: 409 that says how to choose, for helpdesk and admin alike.
    for who in [&hd, &admin] {
        let (status, message) = api_err(
            who.disclose(&pid, &body(None, Some("SRV-X"), Some("lost_pin")))
                .await,
        );
        assert_eq!(status, 409, "{message}");
        assert!(message.contains("device_id"), "{message}");
        assert!(
            message.contains(&real_dev.id.to_string()),
            "the answer lists the candidates: {message}"
        );
    }
    // By device id, and by domain-qualified name, the real server's key comes back.
    let by_id = hd
        .disclose(&pid, &body(Some(real_dev.id), None, Some("lost_pin")))
        .await
        .unwrap();
    assert_eq!(by_id.recovery_password, real_pw);
    assert_eq!(by_id.key.device_id, real_dev.id);
    let by_qualified = hd
        .disclose(&pid, &body(None, Some("corp\\srv-x"), Some("lost_pin")))
        .await
        .unwrap();
    assert_eq!(by_qualified.recovery_password, real_pw);
    let (status, _) = api_err(
        hd.disclose(
            &pid,
            &body(Some(rogue_dev.id), Some("CORP\\SRV-X"), Some("lost_pin")),
        )
        .await,
    );
    assert_eq!(status, 403, "id and name must name the same device");

    // The conflicts are recorded, audited and reported.
    let fleet = admin.fleet_report(None).await.unwrap();
    let conflicts: Vec<(i64, i64)> = fleet
        .protector_conflicts
        .iter()
        .map(|c| (c.device_id, c.other_device_id))
        .collect();
    assert!(
        conflicts.contains(&(rogue_dev.id, real_dev.id)),
        "{conflicts:?}"
    );
    assert!(
        conflicts.contains(&(clone_dev.id, real_dev.id)),
        "{conflicts:?}"
    );
    assert!(
        conflicts.contains(&(clone_dev.id, rogue_dev.id)),
        "{conflicts:?}"
    );
    let audited = admin
        .audit_report(&wire::AuditQuery {
            kind: Some("escrow_conflict".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .records;
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert!(
        audited.iter().any(
            |r| r.device_id == Some(rogue_dev.id) && r.outcome == escrow::AuditOutcome::Failure
        )
    );

    // Revoked devices are neither candidates nor blockers.
    admin
        .revoke_device(&rogue_dev.id.to_string())
        .await
        .unwrap();
    admin
        .revoke_device(&clone_dev.id.to_string())
        .await
        .unwrap();
    let found = hd.find_by_prefix(&pid[1..9]).await.unwrap().keys;
    assert_eq!(
        found.iter().map(|k| k.device_id).collect::<Vec<_>>(),
        vec![real_dev.id]
    );
    let by_name = hd
        .disclose(&pid, &body(None, Some("SRV-X"), Some("lost_pin")))
        .await
        .unwrap();
    assert_eq!(by_name.recovery_password, real_pw);

    // The same name in the same domain with another certificate is refused until an admin allows it.
    let usurper = d.agent("SRV-X");
    let token = enrollment_token(&admin, 2).await;
    let (status, message) = api_err(
        usurper
            .client
            .enroll(&wire::EnrollRequest {
                token: token.clone(),
                computer_name: "srv-x".into(),
                domain: Some("corp".into()),
                serial: None,
            })
            .await,
    );
    assert_eq!(status, 409, "{message}");
    admin
        .allow_reenroll(&real_dev.id.to_string())
        .await
        .unwrap();
    let rebound = enroll_as(&usurper, &token, Some("CORP")).await;
    assert_eq!(rebound.id, real_dev.id);
    assert_eq!(rebound.client_cert_sha256, usurper.cert_sha256);
}
both_backends!(
    a_rogue_or_cloned_device_cannot_block_recovery,
    super::rogue_cannot_block
);

async fn refused_disclosures_audited(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.admin().await;
    let hd = helpdesk(&d, &admin, "hd-audit").await;
    let agent = d.agent("SRV-AUD-01");
    let dev = agent.enroll(&enrollment_token(&admin, 1).await).await;
    let pid = guid();
    agent
        .client
        .escrow(&wire::EscrowBody {
            items: vec![item(&guid(), &pid, &recovery_password(4))],
            tpm_owner_auth: None,
        })
        .await
        .unwrap();
    let path = format!("keys/{pid}/disclose");
    let refused: Vec<(&str, serde_json::Value, u16)> = vec![
        (
            "no reason",
            serde_json::json!({"device_name": "SRV-AUD-01"}),
            400,
        ),
        (
            "unknown reason",
            serde_json::json!({"device_name": "SRV-AUD-01", "reason": "curiosity"}),
            400,
        ),
        (
            "other without text",
            serde_json::json!({"device_name": "SRV-AUD-01", "reason": "other"}),
            400,
        ),
        (
            "no device named (helpdesk)",
            serde_json::json!({"reason": "lost_pin"}),
            400,
        ),
        (
            "wrong device",
            serde_json::json!({"device_name": "SRV-OTHER", "reason": "lost_pin"}),
            403,
        ),
    ];
    for (what, json, status) in &refused {
        let (s, b) = hd
            .request_raw(
                Method::POST,
                &path,
                Some(("application/json", serde_json::to_vec(json).unwrap())),
            )
            .await
            .unwrap();
        assert_eq!(s, *status, "{what}: {}", String::from_utf8_lossy(&b));
    }
    // Each refusal is in the audit log, found by the device's name.
    let records = admin
        .audit_report(&wire::AuditQuery {
            device: Some("SRV-AUD-01".into()),
            kind: Some("disclose".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .records;
    assert_eq!(records.len(), refused.len(), "{records:?}");
    for r in &records {
        assert_eq!(r.device_id, Some(dev.id), "{r:?}");
        assert_eq!(r.actor_name, "hd-audit");
        assert_eq!(r.outcome, escrow::AuditOutcome::Failure);
        assert_eq!(r.protector_id.as_deref(), Some(pid.as_str()));
    }
    assert!(
        records
            .iter()
            .any(|r| r.reason.as_deref() == Some("curiosity")),
        "the unknown reason is recorded as given: {records:?}"
    );
    // A refusal about a key nobody holds is audited too, without a device.
    let unknown = guid();
    let (s, _) = hd
        .request_raw(
            Method::POST,
            &format!("keys/{unknown}/disclose"),
            Some((
                "application/json",
                br#"{"device_name":"SRV-AUD-01","reason":"lost_pin"}"#.to_vec(),
            )),
        )
        .await
        .unwrap();
    assert_eq!(s, 404);
    let all = admin
        .audit_report(&wire::AuditQuery {
            kind: Some("disclose".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .records;
    assert!(
        all.iter()
            .any(|r| r.protector_id.as_deref() == Some(unknown.as_str()) && r.device_id.is_none()),
        "{all:?}"
    );
}
both_backends!(
    every_refused_disclosure_is_audited_with_the_device,
    super::refused_disclosures_audited
);

async fn reenroll_before_token_check(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.admin().await;
    let agent = d.agent("SRV-AGAIN-01");
    let token = enrollment_token(&admin, 1).await;
    let first = agent.enroll(&token).await;
    // The token is used up now; an unknown one and a revoked one do not matter either: the
    // certificate of the active device authenticates it.
    let tokens = admin.list_enrollment_tokens().await.unwrap().tokens;
    admin
        .revoke_enrollment_token(&tokens[0].id.to_string())
        .await
        .unwrap();
    for t in [token.as_str(), "nue_not_a_token_at_all", ""] {
        let again = agent.enroll(t).await;
        assert_eq!(again.id, first.id, "{t:?}");
        assert_eq!(again.client_cert_sha256, first.client_cert_sha256);
    }
    // Another certificate under the same name still needs a valid token (and an admin's consent).
    let other = d.agent("SRV-AGAIN-01");
    let (status, _) = api_err(
        other
            .client
            .enroll(&wire::EnrollRequest {
                token: "nue_not_a_token_at_all".into(),
                computer_name: "SRV-AGAIN-01".into(),
                domain: Some("CORP".into()),
                serial: None,
            })
            .await,
    );
    assert_eq!(status, 401);
    // A revoked device is not let back in by its certificate.
    admin.revoke_device(&first.id.to_string()).await.unwrap();
    let (status, _) = api_err(
        agent
            .client
            .enroll(&wire::EnrollRequest {
                token: token.clone(),
                computer_name: "SRV-AGAIN-01".into(),
                domain: Some("CORP".into()),
                serial: None,
            })
            .await,
    );
    assert_ne!(status / 100, 2);
}
both_backends!(
    an_enrolled_device_reenrolling_with_its_certificate_needs_no_token,
    super::reenroll_before_token_check
);
