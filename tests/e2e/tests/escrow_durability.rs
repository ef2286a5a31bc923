//! Durability and hygiene against the real daemon: an audit record edited in the database is
//! caught by `netunlockd audit verify`; `kill -9` while agents escrow loses no acknowledged
//! escrow; and the daemon's complete log output of a run never contains a recovery password or
//! a token. SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use escrow::wire;

use crate::escrow_support::*;

async fn tamper(d: &EscrowDaemon, backend: &Backend, sql: &str) {
    match backend {
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
}

async fn audit_tamper(backend: Backend) {
    let mut d = EscrowDaemon::start(&backend).await;
    let admin_token = d.bootstrap_admin();
    let admin = d.operator(&admin_token);
    let agent = d.agent("SRV-AUDIT-01");
    agent.enroll(&enrollment_token(&admin, 1).await).await;
    let pid = guid();
    agent
        .client
        .escrow(&wire::EscrowBody {
            items: vec![item(&guid(), &pid, &recovery_password(21))],
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
                reason: Some("lost_startup_key".into()),
                reason_text: None,
            },
        )
        .await
        .unwrap();
    let disclose_seq = admin
        .audit_report(&wire::AuditQuery {
            kind: Some("disclose".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .records[0]
        .seq;
    d.kill9();

    let ok = d.cli(&["audit", "verify"]);
    assert!(
        ok.status.success(),
        "intact chain: {}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );

    // Someone with database access rewrites who disclosed the key.
    tamper(
        &d,
        &backend,
        &format!("UPDATE audit_log SET actor_name = 'nobody' WHERE seq = {disclose_seq}"),
    )
    .await;
    let broken = d.cli(&["audit", "verify"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&broken.stdout),
        String::from_utf8_lossy(&broken.stderr)
    );
    assert!(
        !broken.status.success(),
        "tampering must be detected: {out}"
    );
    assert!(
        out.contains("BROKEN") && out.contains(&disclose_seq.to_string()),
        "{out}"
    );

    // The API reports it as well once the daemon is back.
    d.restart();
    let admin = d.operator(&admin_token);
    match admin.verify_audit().await.unwrap() {
        wire::ChainView::Broken { seq, reason } => assert_eq!(seq, disclose_seq, "{reason}"),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}
both_backends!(
    audit_chain_tampered_in_the_database_is_caught,
    super::audit_tamper
);

async fn kill9(backend: Backend) {
    let mut d = EscrowDaemon::start(&backend).await;
    let admin_token = d.bootstrap_admin();
    let admin = d.operator(&admin_token);
    let token = enrollment_token(&admin, 8).await;
    let mut agents = Vec::new();
    for i in 0..8 {
        let a = d.agent(&format!("SRV-K9-{i:02}"));
        a.enroll(&token).await;
        agents.push(Arc::new(a));
    }
    // Every 200 answer is an acknowledged escrow; record it, then pull the plug mid-stream.
    let acked: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let mut tasks = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let a = a.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let volume = guid();
            for n in 0..10_000u64 {
                let (pid, pw) = (guid(), recovery_password(i as u64 * 1_000_000 + n));
                let body = wire::EscrowBody {
                    items: vec![item(&volume, &pid, &pw)],
                    tpm_owner_auth: None,
                };
                match a.client.escrow(&body).await {
                    Ok(r) if r.results[0].outcome == "stored" => {
                        acked.lock().unwrap().push((a.name.clone(), pid, pw))
                    }
                    Ok(r) => panic!("unexpected outcome {r:?}"),
                    Err(_) => break,
                }
            }
        }));
    }
    let started = Instant::now();
    while acked.lock().unwrap().len() < 200 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 200,
        "only {} escrows before the kill",
        acked.len()
    );

    d.restart();
    let admin = d.operator(&admin_token);
    for a in &agents {
        let stored: std::collections::HashSet<String> = admin
            .find_by_device(&a.name)
            .await
            .unwrap()
            .keys
            .iter()
            .map(|k| k.protector_id.to_string())
            .collect();
        for (_, pid, _) in acked.iter().filter(|(n, _, _)| n == &a.name) {
            assert!(
                stored.contains(pid),
                "acknowledged escrow {pid} of {} lost after kill -9",
                a.name
            );
        }
    }
    // Spot-check the secrets themselves decrypt to what was acknowledged.
    for (name, pid, pw) in acked.iter().step_by(acked.len() / 5) {
        let got = admin
            .disclose(
                pid,
                &wire::DiscloseBody {
                    device_id: None,
                    device_name: Some(name.clone()),
                    reason: Some("other".into()),
                    reason_text: Some("e2e kill -9 check".into()),
                },
            )
            .await
            .unwrap();
        assert_eq!(&got.recovery_password, pw);
    }
    assert!(matches!(
        admin.verify_audit().await.unwrap(),
        wire::ChainView::Ok { .. }
    ));
}
both_backends!(
    kill_9_while_agents_escrow_loses_no_acknowledged_escrow,
    super::kill9
);

async fn secrets_in_logs(backend: Backend) {
    let d = EscrowDaemon::start_with(&backend, "debug", "").await;
    let bootstrap = d.bootstrap_admin();
    let admin = d.operator(&bootstrap);
    let op = admin
        .create_operator(&wire::CreateOperator {
            name: "hd".into(),
            role: wire::Role::Helpdesk,
        })
        .await
        .unwrap();
    let hd_token = admin
        .create_api_token(&wire::CreateApiToken {
            operator_id: op.id,
            ttl_seconds: None,
        })
        .await
        .unwrap()
        .token;
    let helpdesk = d.operator(&hd_token);
    let enroll = enrollment_token(&admin, 3).await;
    let mut secrets = vec![bootstrap.clone(), hd_token.clone(), enroll.clone()];
    for i in 0..3u64 {
        let a = d.agent(&format!("SRV-LOG-{i}"));
        a.enroll(&enroll).await;
        let (vol, pid, pw) = (guid(), guid(), recovery_password(300 + i));
        a.client
            .escrow(&wire::EscrowBody {
                items: vec![item(&vol, &pid, &pw)],
                tpm_owner_auth: Some(format!("tpm-owner-auth-secret-{i}")),
            })
            .await
            .unwrap();
        // A mismatch and an invalid password also pass through the server.
        let wrong = recovery_password(900 + i);
        let mismatch = a
            .client
            .escrow(&wire::EscrowBody {
                items: vec![item(&vol, &pid, &wrong)],
                tpm_owner_auth: None,
            })
            .await;
        assert_eq!(status_of(mismatch), 409);
        let mut invalid = recovery_password(950 + i);
        invalid.replace_range(0..1, "9");
        let _ = a
            .client
            .escrow(&wire::EscrowBody {
                items: vec![item(&guid(), &guid(), &invalid)],
                tpm_owner_auth: None,
            })
            .await;
        let got = helpdesk
            .disclose(
                &pid,
                &wire::DiscloseBody {
                    device_id: None,
                    device_name: Some(format!("SRV-LOG-{i}")),
                    reason: Some("lost_pin".into()),
                    reason_text: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(got.recovery_password, pw);
        secrets.extend([
            pw.clone(),
            pw.replace('-', ""),
            wrong,
            invalid,
            format!("tpm-owner-auth-secret-{i}"),
        ]);
    }
    // A wrong token is a secret too.
    let _ = d.operator("nu_wrong_token_value_123").me().await;
    secrets.push("nu_wrong_token_value_123".into());

    let log = d.log_text();
    assert!(
        log.contains("escrow request"),
        "request logging is on: {}",
        &log[..log.len().min(2000)]
    );
    for s in &secrets {
        assert!(
            !log.contains(s.as_str()),
            "the daemon log contains a secret ({} chars)",
            s.len()
        );
    }
}
both_backends!(
    daemon_logs_never_contain_passwords_or_tokens,
    super::secrets_in_logs
);
