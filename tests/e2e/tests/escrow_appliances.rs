//! Issue 8 item 5, against two real daemons on one PostgreSQL database: a revocation through one
//! appliance is refused by the other at once; the per-operator find/disclose limit holds across
//! appliances; every appliance needs the same KEK (a different one is refused at start, with a
//! message that says what to do). PostgreSQL only by nature (a SQLite file has one appliance).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use escrow::wire;

use crate::escrow_support::*;

/// A and B on one database, B with A's KEK file (what the operator guide tells operators to do).
async fn pair(test: &str) -> Option<(EscrowDaemon, EscrowDaemon)> {
    let backend = postgres_or_skip(test).await?;
    let a = EscrowDaemon::start(&backend).await;
    let kek = a.dir.path().join("state").join("kek.bin");
    assert!(kek.exists(), "A keeps its KEK at {}", kek.display());
    let mut b = a.peer(&format!("kek_file = \"{}\"", kek.display()));
    b.launch();
    Some((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_appliance_is_refused_by_the_other_at_once() {
    let Some((a, b)) = pair("revocation_across_appliances").await else {
        return;
    };
    let admin = a.admin().await;
    let agent = a.agent("SRV-TWO-01");
    let dev = agent.enroll(&enrollment_token(&admin, 1).await).await;
    let on_b = agent.on(&b);
    // B has seen (and could have cached) the device.
    assert!(on_b.own_keys().await.unwrap().keys.is_empty());
    on_b.check_in(&wire::CheckInBody {
        protectors: vec![],
        adapters: None,
    })
    .await
    .unwrap();
    admin.revoke_device(&dev.id.to_string()).await.unwrap();
    assert_eq!(status_of(on_b.own_keys().await), 403);
    assert_eq!(
        status_of(
            on_b.escrow(&wire::EscrowBody {
                items: vec![item(&guid(), &guid(), &recovery_password(1))],
                tpm_owner_auth: None,
            })
            .await
        ),
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_rate_limit_holds_across_appliances() {
    let Some((a, b)) = pair("rate_limit_across_appliances").await else {
        return;
    };
    let token = a.bootstrap_admin();
    let (on_a, on_b) = (a.operator(&token), b.operator(&token));
    // The burst is 60 per operator, then 2/s. Two appliances with a limiter each would let all
    // 100 of these through; one shared bucket lets through the burst and what refills meanwhile.
    let started = std::time::Instant::now();
    let mut allowed = 0u32;
    let mut limited = 0u32;
    for i in 0..100 {
        let client = if i % 2 == 0 { &on_a } else { &on_b };
        match status_of(client.find_by_prefix("24B0AA32").await) {
            200 => allowed += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let refill = (started.elapsed().as_secs_f64() * 2.0).ceil() as u32;
    assert!(
        allowed <= 60 + refill + 1,
        "{allowed} lookups allowed across two appliances (burst 60, {refill} refilled)"
    );
    assert!(limited > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_with_another_kek_refuses_to_start() {
    let Some(backend) = postgres_or_skip("kek_mismatch").await else {
        return;
    };
    let a = EscrowDaemon::start(&backend).await;
    // No kek_file: the peer generates its own KEK in its state directory.
    let b = a.peer("");
    let (status, out) = b.serve_fails();
    assert!(!status.success());
    assert!(
        out.contains("does not unwrap this database's data key")
            && out.contains("every appliance sharing this database needs the same one"),
        "the refusal says what to do:\n{out}"
    );
    // A is unaffected.
    assert_eq!(a.anonymous().health().await.unwrap().status, "ok");
}
