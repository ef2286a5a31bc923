//! Shared harness for the store tests: a real SQLite file in a temp dir, and (when reachable) a real
//! PostgreSQL schema per test, dropped afterwards.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use escrow::{
    Actor, Backend, DeviceInfo, EscrowItem, EscrowRequest, EscrowService, Kek, ManualClock,
    ProtectorId, Role, VolumeType, parse_recovery_password,
};
use sqlx::Connection;
use time::OffsetDateTime;
use uuid::Uuid;

pub fn pg_base_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database for one test. Dropping it removes the PostgreSQL schema (the SQLite file goes with the tempdir).
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    schema: Option<String>,
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("escrow.db").display());
        Self {
            url,
            backend: Backend::Sqlite,
            dir,
            schema: None,
        }
    }

    /// None (after printing the SKIP reason) when no PostgreSQL server is reachable.
    pub async fn postgres() -> Option<Self> {
        let base = pg_base_url();
        let conn =
            tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(&base)).await;
        let mut conn = match conn {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                println!("SKIP: PostgreSQL not reachable at {base}: {e}");
                return None;
            }
            Err(_) => {
                println!("SKIP: PostgreSQL not reachable at {base}: timeout");
                return None;
            }
        };
        let schema = format!("t_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        Some(Self {
            url,
            backend: Backend::Postgres,
            dir: tempfile::tempdir().unwrap(),
            schema: Some(schema),
        })
    }

    pub async fn open(&self, kek: Kek) -> Result<EscrowService, escrow::EscrowError> {
        EscrowService::open_with_clock(&self.url, kek, Arc::new(ManualClock::new(t0()))).await
    }

    pub async fn open_with_clock(&self, kek: Kek, clock: Arc<ManualClock>) -> EscrowService {
        EscrowService::open_with_clock(&self.url, kek, clock)
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            let base = pg_base_url();
            // Drop runs outside any async context we can rely on: use a private runtime on a plain thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&base).await {
                        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                            .execute(&mut c)
                            .await;
                        let _ = c.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// Run the same test body on SQLite and (when reachable) PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::store_common::TestDb::sqlite().await;
                ($body)(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = $crate::store_common::TestDb::postgres().await else {
                    return;
                };
                ($body)(db).await;
            }
        }
    };
}

pub fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

pub fn admin() -> Actor {
    Actor::local("test-admin")
}

/// A valid recovery password derived from `n` (group i = 11 * ((n * 7 + i) % 65536)).
pub fn password(n: u32) -> String {
    (0..8u32)
        .map(|i| {
            format!(
                "{:06}",
                11 * ((n.wrapping_mul(7919).wrapping_add(i * 104_729)) % 65_536)
            )
        })
        .collect::<Vec<_>>()
        .join("-")
}

pub fn pid(n: u32) -> ProtectorId {
    format!("{n:08X}-0000-4000-8000-{n:012X}").parse().unwrap()
}

pub fn vol(n: u32) -> Uuid {
    Uuid::parse_str(&format!("{n:08x}-1111-4111-8111-111111111111")).unwrap()
}

pub fn item(volume: u32, protector: u32, pw: &str) -> EscrowItem {
    EscrowItem {
        volume_guid: vol(volume),
        mount_point: Some("C:".into()),
        volume_type: VolumeType::OperatingSystem,
        protector_id: pid(protector),
        recovery_password: parse_recovery_password(pw).unwrap(),
        key_package: None,
    }
}

pub fn req(items: Vec<EscrowItem>) -> EscrowRequest {
    EscrowRequest {
        items,
        tpm_owner_auth: None,
    }
}

pub fn cert(n: u32) -> String {
    format!("{n:064x}")
}

/// Create a token and enroll `name` with certificate `cert(n)`.
pub async fn enroll(svc: &EscrowService, name: &str, n: u32) -> DeviceInfo {
    let (_, secret) = svc
        .create_enrollment_token(&admin(), 1, Duration::from_secs(3600), None)
        .await
        .unwrap();
    svc.enroll_device(&secret, name, Some("corp.example"), None, &cert(n))
        .await
        .unwrap()
}

pub async fn operator(svc: &EscrowService, name: &str, role: Role) -> Actor {
    let info = svc.create_operator(&admin(), name, role).await.unwrap();
    let (_, secret) = svc.create_api_token(&admin(), info.id, None).await.unwrap();
    svc.authenticate_operator(&secret).await.unwrap().unwrap()
}

/// Execute raw SQL against the service's database (tampering in tests).
pub async fn raw(svc: &EscrowService, sql: &str) {
    sqlx::query(sql).execute(svc.db().pool()).await.unwrap();
}
