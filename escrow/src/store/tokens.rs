//! The token aggregate: enrollment tokens (devices) and personal API tokens (operators). Only SHA-256
//! hashes of the secrets are stored.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::audit::from_micros;
use crate::error::EscrowError;
use crate::model::{ApiTokenInfo, EnrollmentTokenInfo};

const ENROLLMENT_COLUMNS: &str = "id, note, max_uses, uses, created_at, expires_at, revoked_at";

fn enrollment_from_row(row: &AnyRow) -> Result<EnrollmentTokenInfo, EscrowError> {
    let max: i64 = row.try_get(2)?;
    let uses: i64 = row.try_get(3)?;
    Ok(EnrollmentTokenInfo {
        id: row.try_get(0)?,
        note: row.try_get(1)?,
        max_uses: u32::try_from(max).unwrap_or(u32::MAX),
        uses: u32::try_from(uses).unwrap_or(u32::MAX),
        created_at: from_micros(row.try_get(4)?),
        expires_at: from_micros(row.try_get(5)?),
        revoked: row.try_get::<Option<i64>, _>(6)?.is_some(),
    })
}

/// An enrollment token to create.
pub(crate) struct NewEnrollmentToken<'a> {
    pub hash: Vec<u8>,
    pub note: Option<&'a str>,
    pub max_uses: u32,
    pub created_at: i64,
    pub expires_at: i64,
    pub created_by: &'a str,
}

pub(crate) async fn insert_enrollment(
    c: &mut AnyConnection,
    t: NewEnrollmentToken<'_>,
) -> Result<EnrollmentTokenInfo, EscrowError> {
    let row = sqlx::query(&format!(
        "INSERT INTO enrollment_tokens (token_hash, note, max_uses, uses, created_at, expires_at, created_by) \
         VALUES ($1, $2, $3, 0, $4, $5, $6) RETURNING {ENROLLMENT_COLUMNS}"
    ))
    .bind(t.hash)
    .bind(t.note.map(str::to_owned))
    .bind(i64::from(t.max_uses))
    .bind(t.created_at)
    .bind(t.expires_at)
    .bind(t.created_by.to_owned())
    .fetch_one(c)
    .await?;
    enrollment_from_row(&row)
}

/// Enrollment tokens with `id > after_id`, by id, at most `limit`.
pub(crate) async fn list_enrollment(
    c: &mut AnyConnection,
    after_id: i64,
    limit: i64,
) -> Result<Vec<EnrollmentTokenInfo>, EscrowError> {
    let rows = sqlx::query(&format!(
        "SELECT {ENROLLMENT_COLUMNS} FROM enrollment_tokens WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after_id)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter().map(enrollment_from_row).collect()
}

/// Revoke an active enrollment token; false if there is none with this id.
pub(crate) async fn revoke_enrollment(
    c: &mut AnyConnection,
    id: i64,
    now: i64,
) -> Result<bool, EscrowError> {
    let n = sqlx::query(
        "UPDATE enrollment_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(c)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// A stored enrollment token, as the enrollment rules need it.
pub(crate) struct EnrollmentTokenRow {
    pub id: i64,
    pub hash: Vec<u8>,
    pub max_uses: i64,
    pub uses: i64,
    pub expires_at: i64,
    pub revoked: bool,
}

pub(crate) async fn enrollment_by_hash(
    c: &mut AnyConnection,
    hash: &[u8],
) -> Result<Option<EnrollmentTokenRow>, EscrowError> {
    let row = sqlx::query(
        "SELECT id, token_hash, max_uses, uses, expires_at, revoked_at FROM enrollment_tokens WHERE token_hash = $1",
    )
    .bind(hash.to_vec())
    .fetch_optional(c)
    .await?;
    row.map(|r| {
        Ok(EnrollmentTokenRow {
            id: r.try_get(0)?,
            hash: r.try_get(1)?,
            max_uses: r.try_get(2)?,
            uses: r.try_get(3)?,
            expires_at: r.try_get(4)?,
            revoked: r.try_get::<Option<i64>, _>(5)?.is_some(),
        })
    })
    .transpose()
}

pub(crate) async fn count_enrollment_use(
    c: &mut AnyConnection,
    id: i64,
) -> Result<(), EscrowError> {
    sqlx::query("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = $1")
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// Store an API token's hash; returns its id.
pub(crate) async fn insert_api(
    c: &mut AnyConnection,
    operator_id: i64,
    hash: Vec<u8>,
    created_at: i64,
    expires_at: Option<i64>,
) -> Result<i64, EscrowError> {
    Ok(sqlx::query(
        "INSERT INTO api_tokens (operator_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(operator_id)
    .bind(hash)
    .bind(created_at)
    .bind(expires_at)
    .fetch_one(c)
    .await?
    .try_get(0)?)
}

/// API tokens (never their hashes) with `id > after_id`, by id, at most `limit`; only those of
/// `operator_id` when given.
pub(crate) async fn list_api(
    c: &mut AnyConnection,
    operator_id: Option<i64>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<ApiTokenInfo>, EscrowError> {
    let rows = sqlx::query(
        "SELECT id, operator_id, created_at, expires_at, revoked_at FROM api_tokens \
         WHERE ($1 = 0 OR operator_id = $1) AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(operator_id.unwrap_or(0))
    .bind(after_id)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ApiTokenInfo {
                id: r.try_get(0)?,
                operator_id: r.try_get(1)?,
                created_at: from_micros(r.try_get(2)?),
                expires_at: r.try_get::<Option<i64>, _>(3)?.map(from_micros),
                revoked: r.try_get::<Option<i64>, _>(4)?.is_some(),
            })
        })
        .collect()
}

/// Revoke an active API token; false if there is none with this id.
pub(crate) async fn revoke_api(
    c: &mut AnyConnection,
    id: i64,
    now: i64,
) -> Result<bool, EscrowError> {
    let n =
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(c)
            .await?
            .rows_affected();
    Ok(n == 1)
}

/// Revoke every active token of an operator.
pub(crate) async fn revoke_all_api_of(
    c: &mut AnyConnection,
    operator_id: i64,
    now: i64,
) -> Result<(), EscrowError> {
    sqlx::query(
        "UPDATE api_tokens SET revoked_at = $1 WHERE operator_id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(operator_id)
    .execute(c)
    .await?;
    Ok(())
}

/// An API token joined with its operator, as authentication needs it.
pub(crate) struct ApiTokenOwner {
    pub hash: Vec<u8>,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub operator_id: i64,
    pub operator_name: String,
    pub role: String,
    pub operator_disabled: bool,
}

pub(crate) async fn api_by_hash(
    c: &mut AnyConnection,
    hash: &[u8],
) -> Result<Option<ApiTokenOwner>, EscrowError> {
    let row = sqlx::query(
        "SELECT t.token_hash, t.expires_at, t.revoked_at, o.id, o.name, o.role, o.disabled \
         FROM api_tokens t JOIN operators o ON o.id = t.operator_id WHERE t.token_hash = $1",
    )
    .bind(hash.to_vec())
    .fetch_optional(c)
    .await?;
    row.map(|r| {
        Ok(ApiTokenOwner {
            hash: r.try_get(0)?,
            expires_at: r.try_get(1)?,
            revoked: r.try_get::<Option<i64>, _>(2)?.is_some(),
            operator_id: r.try_get(3)?,
            operator_name: r.try_get(4)?,
            role: r.try_get(5)?,
            operator_disabled: r.try_get::<i64, _>(6)? != 0,
        })
    })
    .transpose()
}
