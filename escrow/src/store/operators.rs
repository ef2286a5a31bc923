//! The operator aggregate: help-desk, admin and auditor accounts (their tokens are in `tokens`).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::audit::from_micros;
use crate::error::EscrowError;
use crate::model::{OperatorInfo, Role};

const OPERATOR_COLUMNS: &str = "id, name, role, disabled, created_at";

fn operator_from_row(row: &AnyRow) -> Result<OperatorInfo, EscrowError> {
    let role: String = row.try_get(2)?;
    Ok(OperatorInfo {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        role: role.parse().map_err(EscrowError::Storage)?,
        disabled: row.try_get::<i64, _>(3)? != 0,
        created_at: from_micros(row.try_get(4)?),
    })
}

pub(crate) async fn by_id(
    c: &mut AnyConnection,
    id: i64,
) -> Result<Option<OperatorInfo>, EscrowError> {
    sqlx::query(&format!(
        "SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(c)
    .await?
    .map(|r| operator_from_row(&r))
    .transpose()
}

pub(crate) async fn by_name(
    c: &mut AnyConnection,
    name: &str,
) -> Result<Option<OperatorInfo>, EscrowError> {
    sqlx::query(&format!(
        "SELECT {OPERATOR_COLUMNS} FROM operators WHERE name = $1"
    ))
    .bind(name.to_owned())
    .fetch_optional(c)
    .await?
    .map(|r| operator_from_row(&r))
    .transpose()
}

pub(crate) async fn insert(
    c: &mut AnyConnection,
    name: &str,
    role: Role,
    now: i64,
) -> Result<OperatorInfo, EscrowError> {
    let row = sqlx::query(&format!(
        "INSERT INTO operators (name, role, disabled, created_at) VALUES ($1, $2, 0, $3) RETURNING {OPERATOR_COLUMNS}"
    ))
    .bind(name.to_owned())
    .bind(role.as_str())
    .bind(now)
    .fetch_one(c)
    .await?;
    operator_from_row(&row)
}

/// Make an existing operator an enabled admin (admin recovery).
pub(crate) async fn reinstate_admin(c: &mut AnyConnection, id: i64) -> Result<(), EscrowError> {
    sqlx::query(
        "UPDATE operators SET role = 'admin', disabled = 0, disabled_at = NULL WHERE id = $1",
    )
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

pub(crate) async fn set_role(
    c: &mut AnyConnection,
    id: i64,
    role: Role,
) -> Result<(), EscrowError> {
    sqlx::query("UPDATE operators SET role = $1 WHERE id = $2")
        .bind(role.as_str())
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

pub(crate) async fn disable(c: &mut AnyConnection, id: i64, now: i64) -> Result<(), EscrowError> {
    sqlx::query("UPDATE operators SET disabled = 1, disabled_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// Enabled admins other than `except` (None: all of them).
pub(crate) async fn count_enabled_admins(
    c: &mut AnyConnection,
    except: Option<i64>,
) -> Result<i64, EscrowError> {
    Ok(sqlx::query(
        "SELECT COUNT(*) FROM operators WHERE role = 'admin' AND disabled = 0 AND ($1 IS NULL OR id <> $1)",
    )
    .bind(except)
    .fetch_one(c)
    .await?
    .try_get(0)?)
}

/// Operators with `id > after_id`, by id, at most `limit`.
pub(crate) async fn list(
    c: &mut AnyConnection,
    after_id: i64,
    limit: i64,
) -> Result<Vec<OperatorInfo>, EscrowError> {
    let rows = sqlx::query(&format!(
        "SELECT {OPERATOR_COLUMNS} FROM operators WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after_id)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter().map(operator_from_row).collect()
}

/// An operator together with the directory DN it is linked to (None: a local operator).
#[derive(Clone, Debug)]
pub(crate) struct LinkedOperator {
    pub info: OperatorInfo,
    pub directory_dn: Option<String>,
}

/// The operators linked to `dn` or named `name` (at most one of each; possibly the same row).
pub(crate) async fn by_directory_dn_or_name(
    c: &mut AnyConnection,
    dn: &str,
    name: &str,
) -> Result<Vec<LinkedOperator>, EscrowError> {
    let rows = sqlx::query(&format!(
        "SELECT {OPERATOR_COLUMNS}, directory_dn FROM operators WHERE directory_dn = $1 OR name = $2 ORDER BY id"
    ))
    .bind(dn.to_owned())
    .bind(name.to_owned())
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LinkedOperator {
                info: operator_from_row(r)?,
                directory_dn: r.try_get(5)?,
            })
        })
        .collect()
}

pub(crate) async fn insert_directory(
    c: &mut AnyConnection,
    name: &str,
    role: Role,
    dn: &str,
    now: i64,
) -> Result<OperatorInfo, EscrowError> {
    let row = sqlx::query(&format!(
        "INSERT INTO operators (name, role, disabled, created_at, directory_dn, last_sign_in_at) \
         VALUES ($1, $2, 0, $3, $4, $3) RETURNING {OPERATOR_COLUMNS}"
    ))
    .bind(name.to_owned())
    .bind(role.as_str())
    .bind(now)
    .bind(dn.to_owned())
    .fetch_one(c)
    .await?;
    operator_from_row(&row)
}

/// Record a directory sign-in: the role the directory grants now, the DN it was found at.
pub(crate) async fn record_directory_sign_in(
    c: &mut AnyConnection,
    id: i64,
    role: Role,
    dn: &str,
    now: i64,
) -> Result<(), EscrowError> {
    sqlx::query(
        "UPDATE operators SET role = $1, directory_dn = $2, last_sign_in_at = $3 WHERE id = $4",
    )
    .bind(role.as_str())
    .bind(dn.to_owned())
    .bind(now)
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}
