//! The console session aggregate: server-side web sessions of operators. Only the SHA-256 of the
//! cookie secret is stored. Sessions are not part of backups (they are worthless after a restore).

use sqlx::{AnyConnection, Row};

use crate::error::EscrowError;
use crate::model::Role;

/// A stored session joined with its operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionRow {
    pub id: i64,
    pub operator_id: i64,
    pub operator_name: String,
    pub role: Role,
    pub operator_disabled: bool,
    pub hash: Vec<u8>,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

pub(crate) struct NewSession<'a> {
    pub hash: Vec<u8>,
    pub operator_id: i64,
    pub now: i64,
    pub expires_at: i64,
    pub client_addr: Option<&'a str>,
}

pub(crate) async fn insert(c: &mut AnyConnection, s: NewSession<'_>) -> Result<i64, EscrowError> {
    Ok(sqlx::query(
        "INSERT INTO console_sessions (token_hash, operator_id, created_at, last_seen_at, expires_at, client_addr) \
         VALUES ($1, $2, $3, $3, $4, $5) RETURNING id",
    )
    .bind(s.hash)
    .bind(s.operator_id)
    .bind(s.now)
    .bind(s.expires_at)
    .bind(s.client_addr.map(str::to_owned))
    .fetch_one(c)
    .await?
    .try_get(0)?)
}

pub(crate) async fn by_hash(
    c: &mut AnyConnection,
    hash: &[u8],
) -> Result<Option<SessionRow>, EscrowError> {
    let Some(row) = sqlx::query(
        "SELECT s.id, s.operator_id, o.name, o.role, o.disabled, s.token_hash, s.created_at, s.last_seen_at, s.expires_at \
         FROM console_sessions s JOIN operators o ON o.id = s.operator_id WHERE s.token_hash = $1",
    )
    .bind(hash.to_vec())
    .fetch_optional(c)
    .await?
    else {
        return Ok(None);
    };
    let role: String = row.try_get(3)?;
    Ok(Some(SessionRow {
        id: row.try_get(0)?,
        operator_id: row.try_get(1)?,
        operator_name: row.try_get(2)?,
        role: role.parse().map_err(EscrowError::Storage)?,
        operator_disabled: row.try_get::<i64, _>(4)? != 0,
        hash: row.try_get(5)?,
        created_at: row.try_get(6)?,
        last_seen_at: row.try_get(7)?,
        expires_at: row.try_get(8)?,
    }))
}

pub(crate) async fn touch(c: &mut AnyConnection, id: i64, now: i64) -> Result<(), EscrowError> {
    sqlx::query("UPDATE console_sessions SET last_seen_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

pub(crate) async fn delete(c: &mut AnyConnection, id: i64) -> Result<(), EscrowError> {
    sqlx::query("DELETE FROM console_sessions WHERE id = $1")
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// Ends every session of an operator (disabled, or role changed). Returns how many ended.
pub(crate) async fn delete_for_operator(
    c: &mut AnyConnection,
    operator_id: i64,
) -> Result<u64, EscrowError> {
    Ok(
        sqlx::query("DELETE FROM console_sessions WHERE operator_id = $1")
            .bind(operator_id)
            .execute(c)
            .await?
            .rows_affected(),
    )
}

/// Removes sessions past their absolute end or idle since before `idle_before`.
pub(crate) async fn delete_expired(
    c: &mut AnyConnection,
    now: i64,
    idle_before: i64,
) -> Result<u64, EscrowError> {
    Ok(
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen_at < $2")
            .bind(now)
            .bind(idle_before)
            .execute(c)
            .await?
            .rows_affected(),
    )
}
