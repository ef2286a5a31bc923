//! Network Unlock group membership rows (issue 11) on a real PostgreSQL; SQLite is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_common;

use std::time::Duration;

use escrow::{EscrowError, Membership};
use store_common::*;

const WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn heartbeats_list_every_member_with_its_silence_and_leave_removes_one() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let a = Membership::open(&db.url, WAIT).await.unwrap();
    let b = Membership::open(&db.url, WAIT).await.unwrap();
    a.heartbeat("site1", "nu-a", "10.0.0.1").await.unwrap();
    // Another group in the same database is invisible.
    b.heartbeat("site2", "nu-x", "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = b.heartbeat("site1", "nu-b", "10.0.0.2").await.unwrap();
    let ids: Vec<&str> = seen.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(ids, ["nu-a", "nu-b"]);
    assert_eq!(seen[0].address, "10.0.0.1");
    assert!(
        seen[0].silent_for >= Duration::from_millis(250),
        "{:?}",
        seen[0]
    );
    assert!(
        seen[1].silent_for < Duration::from_millis(250),
        "{:?}",
        seen[1]
    );

    // A heartbeat refreshes the row instead of adding one.
    let seen = a.heartbeat("site1", "nu-a", "10.0.0.9").await.unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].address, "10.0.0.9");
    assert!(seen[0].silent_for < Duration::from_millis(250));

    a.leave("site1", "nu-a").await.unwrap();
    let seen = b.heartbeat("site1", "nu-b", "").await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    b.heartbeat("site1", "nu-c", "").await.unwrap();
    assert_eq!(
        b.forget_silent("site1", Duration::from_millis(100))
            .await
            .unwrap(),
        1,
        "nu-b has been silent for 200 ms"
    );
    let seen = b.heartbeat("site1", "nu-c", "").await.unwrap();
    assert_eq!(seen.len(), 1);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_group_on_sqlite_is_refused_with_the_reason() {
    let db = TestDb::sqlite().await;
    let err = Membership::open(&db.url, WAIT).await.unwrap_err();
    assert!(
        matches!(&err, EscrowError::Validation(m) if m.contains("postgres://")),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_a_storage_error_within_the_wait() {
    // A port nothing listens on: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let err = Membership::open(
        &format!("postgres://postgres@127.0.0.1:{port}/none"),
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EscrowError::Storage(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
