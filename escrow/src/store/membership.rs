//! Network Unlock group membership (issue 11): heartbeat rows in the shared PostgreSQL database.
//! Every time is the database's own clock (`clock_timestamp()`), so appliances with skewed clocks
//! still agree on who is alive. PostgreSQL only: a group shares one database between appliances.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, Row};

use super::{Backend, Db, normalise_url, redact_url};
use crate::error::EscrowError;

/// The database's clock in microseconds since the epoch.
const NOW_MICROS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT";

/// One membership row as read back: who, where, and how long since its last heartbeat.
pub(crate) struct MemberRow {
    pub(crate) member_id: String,
    pub(crate) address: String,
    pub(crate) silent_for_micros: i64,
}

/// Opens a small pool for the heartbeat (two connections, short waits: the caller wants to learn
/// quickly that the database is gone) and runs the PostgreSQL migrations.
pub(crate) async fn open(database_url: &str, wait: Duration) -> Result<Db, EscrowError> {
    sqlx::any::install_default_drivers();
    let (url, backend) = normalise_url(database_url)?;
    if backend != Backend::Postgres {
        return Err(EscrowError::Validation(
            "a Network Unlock group needs a postgres:// database shared by its members (SQLite cannot be shared between appliances)".into(),
        ));
    }
    let opts = AnyConnectOptions::from_str(&url)
        .map_err(|e| EscrowError::Validation(format!("database_url is malformed: {e}")))?;
    let pool = AnyPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(wait)
        .connect_with(opts)
        .await
        .map_err(|e| {
            EscrowError::Storage(format!(
                "cannot open the group database ({}): {e}",
                redact_url(&url)
            ))
        })?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(Db { pool, backend })
}

/// Records a heartbeat of `member` (creating its row on the first one).
pub(crate) async fn beat(
    conn: &mut AnyConnection,
    group: &str,
    member: &str,
    address: &str,
) -> Result<(), EscrowError> {
    sqlx::query(&format!(
        "INSERT INTO unlock_group_members (group_name, member_id, address, joined_at, last_seen) \
         VALUES ($1, $2, $3, {NOW_MICROS}, {NOW_MICROS}) \
         ON CONFLICT (group_name, member_id) DO UPDATE SET address = EXCLUDED.address, last_seen = EXCLUDED.last_seen"
    ))
    .bind(group)
    .bind(member)
    .bind(address)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every member row of `group`, with the time since its last heartbeat.
pub(crate) async fn members(
    conn: &mut AnyConnection,
    group: &str,
) -> Result<Vec<MemberRow>, EscrowError> {
    let rows = sqlx::query(&format!(
        "SELECT member_id, address, GREATEST({NOW_MICROS} - last_seen, 0) \
         FROM unlock_group_members WHERE group_name = $1 ORDER BY member_id"
    ))
    .bind(group)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(MemberRow {
                member_id: r.try_get(0)?,
                address: r.try_get(1)?,
                silent_for_micros: r.try_get(2)?,
            })
        })
        .collect()
}

/// Removes `member`'s row (a clean stop: the others take its share at their next heartbeat).
pub(crate) async fn leave(
    conn: &mut AnyConnection,
    group: &str,
    member: &str,
) -> Result<(), EscrowError> {
    sqlx::query("DELETE FROM unlock_group_members WHERE group_name = $1 AND member_id = $2")
        .bind(group)
        .bind(member)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes rows silent for longer than `older_than` (members that were killed and never came back).
pub(crate) async fn forget_silent(
    conn: &mut AnyConnection,
    group: &str,
    older_than: Duration,
) -> Result<u64, EscrowError> {
    let micros = i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX);
    let done = sqlx::query(&format!(
        "DELETE FROM unlock_group_members WHERE group_name = $1 AND last_seen < {NOW_MICROS} - $2"
    ))
    .bind(group)
    .bind(micros)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
