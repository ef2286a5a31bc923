//! The role matrix, table-driven: every caller kind (no credentials, a device certificate, and
//! each operator role) against every endpoint, with the expected HTTP status per cell — over
//! real TLS against the real daemon, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use escrow::client::ApiClient;
use escrow::wire;

use crate::escrow_support::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Anonymous,
    Device,
    Auditor,
    Helpdesk,
    Admin,
}

/// Column order of the expectations below. Admin runs last so the objects it mutates exist for
/// every earlier (refused) caller.
const WHO: [Who; 5] = [
    Who::Anonymous,
    Who::Device,
    Who::Auditor,
    Who::Helpdesk,
    Who::Admin,
];

#[derive(Clone, Copy, Debug)]
enum Call {
    Me,
    FindPrefix,
    FindDevice,
    Disclose,
    AuditReport,
    AuditCsv,
    Fleet,
    Unlocks,
    Verify,
    ListDevices,
    RevokeDevice,
    AllowReenroll,
    ListEnrollTokens,
    CreateEnrollToken,
    RevokeEnrollToken,
    ListOperators,
    CreateOperator,
    SetRole,
    DisableOperator,
    CreateApiToken,
    RevokeApiToken,
    AgentEscrow,
    AgentCheckIn,
    AgentRotation,
    AgentKeys,
    Health,
}

// anonymous, device, auditor, helpdesk, admin
const MATRIX: &[(Call, [u16; 5])] = &[
    (Call::Health, [200, 200, 200, 200, 200]),
    (Call::Me, [401, 401, 200, 200, 200]),
    (Call::FindPrefix, [401, 401, 403, 200, 200]),
    (Call::FindDevice, [401, 401, 403, 200, 200]),
    (Call::Disclose, [401, 401, 403, 200, 200]),
    (Call::AuditReport, [401, 401, 200, 403, 200]),
    (Call::AuditCsv, [401, 401, 200, 403, 200]),
    (Call::Fleet, [401, 401, 200, 403, 200]),
    (Call::Unlocks, [401, 401, 200, 403, 200]),
    (Call::Verify, [401, 401, 200, 403, 200]),
    (Call::ListDevices, [401, 401, 200, 403, 200]),
    (Call::RevokeDevice, [401, 401, 403, 403, 200]),
    (Call::AllowReenroll, [401, 401, 403, 403, 200]),
    (Call::ListEnrollTokens, [401, 401, 403, 403, 200]),
    (Call::CreateEnrollToken, [401, 401, 403, 403, 200]),
    (Call::RevokeEnrollToken, [401, 401, 403, 403, 200]),
    (Call::ListOperators, [401, 401, 403, 403, 200]),
    (Call::CreateOperator, [401, 401, 403, 403, 200]),
    (Call::SetRole, [401, 401, 403, 403, 200]),
    (Call::CreateApiToken, [401, 401, 403, 403, 200]),
    (Call::RevokeApiToken, [401, 401, 403, 403, 200]),
    (Call::DisableOperator, [401, 401, 403, 403, 200]),
    // Agent routes accept only an enrolled device certificate; operator tokens do not count.
    (Call::AgentEscrow, [401, 200, 401, 401, 401]),
    (Call::AgentCheckIn, [401, 200, 401, 401, 401]),
    (Call::AgentRotation, [401, 409, 401, 401, 401]),
    (Call::AgentKeys, [401, 200, 401, 401, 401]),
];

struct Targets {
    device_name: String,
    /// One undisclosed key per caller so each successful disclosure is independent.
    keys: Vec<(Who, String)>,
    victim_device: String,
    enroll_token_id: String,
    victim_operator: String,
    api_token_id: String,
    volume: String,
}

async fn perform(call: Call, who: Who, c: &ApiClient, t: &Targets) -> u16 {
    let key = t
        .keys
        .iter()
        .find(|(w, _)| *w == who)
        .map(|(_, k)| k.clone())
        .unwrap_or_else(guid);
    match call {
        Call::Health => status_of(c.health().await),
        Call::Me => status_of(c.me().await),
        Call::FindPrefix => status_of(c.find_by_prefix(&key[1..9]).await),
        Call::FindDevice => status_of(c.find_by_device(&t.device_name).await),
        Call::Disclose => status_of(
            c.disclose(
                &key,
                &wire::DiscloseBody {
                    device_id: None,
                    device_name: Some(t.device_name.clone()),
                    reason: Some("lost_pin".into()),
                    reason_text: None,
                },
            )
            .await,
        ),
        Call::AuditReport => status_of(c.audit_report(&wire::AuditQuery::default()).await),
        Call::AuditCsv => status_of(c.audit_report_csv(&wire::AuditQuery::default()).await),
        Call::Fleet => status_of(c.fleet_report(Some(7)).await),
        Call::Unlocks => status_of(c.unlock_report(Some(7)).await),
        Call::Verify => status_of(c.verify_audit().await),
        Call::ListDevices => status_of(c.list_devices(&wire::DeviceQuery::default()).await),
        Call::RevokeDevice => status_of(c.revoke_device(&t.victim_device).await),
        Call::AllowReenroll => status_of(c.allow_reenroll(&t.victim_device).await),
        Call::ListEnrollTokens => status_of(c.list_enrollment_tokens().await),
        Call::CreateEnrollToken => status_of(
            c.create_enrollment_token(&wire::CreateEnrollmentToken {
                max_uses: 1,
                ttl_seconds: 600,
                note: None,
            })
            .await,
        ),
        Call::RevokeEnrollToken => status_of(c.revoke_enrollment_token(&t.enroll_token_id).await),
        Call::ListOperators => status_of(c.list_operators().await),
        Call::CreateOperator => status_of(
            c.create_operator(&wire::CreateOperator {
                name: format!("new-{who:?}").to_lowercase(),
                role: wire::Role::Auditor,
            })
            .await,
        ),
        Call::SetRole => status_of(c.set_operator_role(&t.victim_operator, "helpdesk").await),
        Call::DisableOperator => status_of(c.disable_operator(&t.victim_operator).await),
        Call::CreateApiToken => status_of(
            c.create_api_token(&wire::CreateApiToken {
                operator_id: t.victim_operator.parse().unwrap(),
                ttl_seconds: None,
            })
            .await,
        ),
        Call::RevokeApiToken => status_of(c.revoke_api_token(&t.api_token_id).await),
        Call::AgentEscrow => status_of(
            c.escrow(&wire::EscrowBody {
                items: vec![item(&t.volume, &guid(), &recovery_password(77))],
                tpm_owner_auth: None,
            })
            .await,
        ),
        Call::AgentCheckIn => status_of(
            c.check_in(&wire::CheckInBody {
                protectors: vec![],
                adapters: None,
            })
            .await,
        ),
        // A well-formed report about a protector whose replacement was never escrowed: 409 for the
        // device itself, refused earlier for everyone else.
        Call::AgentRotation => {
            let old = t.keys[0].1.clone();
            status_of(
                c.report_rotation(&wire::RotationReport {
                    old_protector_id: old,
                    new_protector_id: guid(),
                    old_removed: false,
                })
                .await,
            )
        }
        Call::AgentKeys => status_of(c.own_keys().await),
    }
}

async fn matrix(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.admin().await;
    let helpdesk_op = admin
        .create_operator(&wire::CreateOperator {
            name: "hd".into(),
            role: wire::Role::Helpdesk,
        })
        .await
        .unwrap();
    let auditor_op = admin
        .create_operator(&wire::CreateOperator {
            name: "aud".into(),
            role: wire::Role::Auditor,
        })
        .await
        .unwrap();
    let victim_op = admin
        .create_operator(&wire::CreateOperator {
            name: "victim".into(),
            role: wire::Role::Auditor,
        })
        .await
        .unwrap();
    let tok = |id: i64| wire::CreateApiToken {
        operator_id: id,
        ttl_seconds: Some(3600),
    };
    let helpdesk = d.operator(
        &admin
            .create_api_token(&tok(helpdesk_op.id))
            .await
            .unwrap()
            .token,
    );
    let auditor = d.operator(
        &admin
            .create_api_token(&tok(auditor_op.id))
            .await
            .unwrap()
            .token,
    );
    let victim_token = admin.create_api_token(&tok(victim_op.id)).await.unwrap();

    let enroll = enrollment_token(&admin, 2).await;
    let agent = d.agent("SRV-ROLES-01");
    agent.enroll(&enroll).await;
    let victim_agent = d.agent("SRV-ROLES-VICTIM");
    let victim_device = victim_agent.enroll(&enroll).await;
    let volume = guid();
    let keys: Vec<(Who, String)> = WHO.iter().map(|w| (*w, guid())).collect();
    let items = keys
        .iter()
        .enumerate()
        .map(|(i, (_, k))| item(&volume, k, &recovery_password(100 + i as u64)))
        .collect();
    agent
        .client
        .escrow(&wire::EscrowBody {
            items,
            tpm_owner_auth: None,
        })
        .await
        .unwrap();
    let spare_enroll = admin
        .create_enrollment_token(&wire::CreateEnrollmentToken {
            max_uses: 1,
            ttl_seconds: 600,
            note: None,
        })
        .await
        .unwrap();
    let targets = Targets {
        device_name: "SRV-ROLES-01".into(),
        keys,
        victim_device: victim_device.id.to_string(),
        enroll_token_id: spare_enroll.info.id.to_string(),
        victim_operator: victim_op.id.to_string(),
        api_token_id: victim_token.info.id.to_string(),
        volume,
    };
    let anonymous = d.anonymous();
    let mut failures = Vec::new();
    for (call, expected) in MATRIX {
        for (col, who) in WHO.iter().enumerate() {
            let client = match who {
                Who::Anonymous => &anonymous,
                Who::Device => &agent.client,
                Who::Auditor => &auditor,
                Who::Helpdesk => &helpdesk,
                Who::Admin => &admin,
            };
            let got = perform(*call, *who, client, &targets).await;
            if got != expected[col] {
                failures.push(format!(
                    "{call:?} as {who:?}: expected {}, got {got}",
                    expected[col]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "role matrix mismatches:\n{}",
        failures.join("\n")
    );

    // Helpdesk specifics: the device name is mandatory and must match.
    let spare = guid();
    agent
        .client
        .escrow(&wire::EscrowBody {
            items: vec![item(&targets.volume, &spare, &recovery_password(555))],
            tpm_owner_auth: None,
        })
        .await
        .unwrap();
    let no_name = helpdesk
        .disclose(
            &spare,
            &wire::DiscloseBody {
                device_id: None,
                device_name: None,
                reason: Some("lost_pin".into()),
                reason_text: None,
            },
        )
        .await;
    assert_eq!(status_of(no_name), 400);
    let wrong_name = helpdesk
        .disclose(
            &spare,
            &wire::DiscloseBody {
                device_id: None,
                device_name: Some("SRV-ROLES-VICTIM".into()),
                reason: Some("lost_pin".into()),
                reason_text: None,
            },
        )
        .await;
    assert_eq!(status_of(wrong_name), 403);
    // The disabled operator's token stopped working; the revoked device is refused.
    assert_eq!(status_of(d.operator(&victim_token.token).me().await), 401);
    // Every refused disclosure was audited as a failure.
    let audit = admin
        .audit_report(&wire::AuditQuery {
            kind: Some("disclose".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let failures = audit
        .records
        .iter()
        .filter(|r| r.outcome.as_str() == "failure")
        .count();
    assert!(
        failures >= 3,
        "auditor + two helpdesk refusals are audited: {failures}"
    );
}
both_backends!(every_role_against_every_endpoint, super::matrix);
