//! Table-by-table copy of the whole store for backup and restore: every table in foreign-key order, each
//! row as a JSON array in column order (integers, text, base64 for blobs). The keyring and the audit
//! chain head travel separately (`keyring`, `audit::read_head`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use sqlx::{AnyConnection, Row};

use super::{Backend, backend_of};
use crate::error::EscrowError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Blob,
}
use Kind::{Blob, Int, Text};

/// Every table in foreign-key order, with its columns. `audit_head` and `keyring` are handled apart.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "operators",
        &[
            ("id", Int),
            ("name", Text),
            ("role", Text),
            ("disabled", Int),
            ("created_at", Int),
            ("disabled_at", Int),
        ],
    ),
    (
        "api_tokens",
        &[
            ("id", Int),
            ("operator_id", Int),
            ("token_hash", Blob),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("last_used_at", Int),
        ],
    ),
    (
        "enrollment_tokens",
        &[
            ("id", Int),
            ("token_hash", Blob),
            ("note", Text),
            ("max_uses", Int),
            ("uses", Int),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("created_by", Text),
        ],
    ),
    (
        "devices",
        &[
            ("id", Int),
            ("computer_name", Text),
            ("domain", Text),
            ("name_key", Text),
            ("serial", Text),
            ("first_seen", Int),
            ("last_check_in", Int),
            ("cert_sha256", Text),
            ("revoked", Int),
            ("revoked_at", Int),
            ("reenroll_allowed", Int),
            ("enrolled_token", Int),
        ],
    ),
    (
        "volumes",
        &[
            ("id", Int),
            ("device_id", Int),
            ("volume_guid", Text),
            ("mount_point", Text),
            ("volume_type", Text),
            ("first_seen", Int),
        ],
    ),
    (
        "protectors",
        &[
            ("id", Int),
            ("device_id", Int),
            ("volume_id", Int),
            ("protector_id", Text),
            ("protector_prefix", Text),
            ("password_sealed", Blob),
            ("password_mac", Blob),
            ("key_package_sealed", Blob),
            ("escrowed_at", Int),
            ("superseded_at", Int),
            ("disclosed_at", Int),
            ("rotation_state", Text),
            ("rotation_requested_at", Int),
            ("rotation_done_at", Int),
            ("replaced_by", Text),
        ],
    ),
    (
        "tpm_owner_auth",
        &[("device_id", Int), ("sealed", Blob), ("updated_at", Int)],
    ),
    (
        "mismatches",
        &[
            ("id", Int),
            ("device_id", Int),
            ("volume_guid", Text),
            ("protector_id", Text),
            ("detected_at", Int),
            ("stored_escrowed_at", Int),
            ("audit_seq", Int),
        ],
    ),
    (
        "protector_conflicts",
        &[
            ("id", Int),
            ("protector_id", Text),
            ("device_id", Int),
            ("other_device_id", Int),
            ("detected_at", Int),
            ("audit_seq", Int),
        ],
    ),
    (
        "audit_log",
        &[
            ("seq", Int),
            ("at", Int),
            ("actor_kind", Text),
            ("actor_id", Int),
            ("actor_name", Text),
            ("action", Text),
            ("device_id", Int),
            ("device_name", Text),
            ("protector_id", Text),
            ("reason", Text),
            ("outcome", Text),
            ("client_addr", Text),
            ("detail", Text),
            ("prev_hash", Blob),
            ("hash", Blob),
        ],
    ),
];

/// The table holding the audit chain (its rows are checked before a restore writes anything).
pub(crate) const AUDIT_TABLE: &str = "audit_log";

/// Tables with an identity/autoincrement `id` whose sequence must follow restored ids (PostgreSQL).
const ID_TABLES: &[&str] = &[
    "operators",
    "api_tokens",
    "enrollment_tokens",
    "devices",
    "volumes",
    "protectors",
    "mismatches",
    "protector_conflicts",
];

/// Tables that must be empty before a restore.
const MUST_BE_EMPTY: &[&str] = &[
    "operators",
    "devices",
    "protectors",
    "audit_log",
    "enrollment_tokens",
];

/// Every table's name, in the order a restore must insert them.
pub(crate) fn table_names() -> impl Iterator<Item = &'static str> {
    TABLES.iter().map(|(name, _)| *name)
}

fn cell(row: &sqlx::any::AnyRow, i: usize, kind: Kind) -> Result<Value, EscrowError> {
    Ok(match kind {
        Int => row
            .try_get::<Option<i64>, _>(i)?
            .map_or(Value::Null, Value::from),
        Text => row
            .try_get::<Option<String>, _>(i)?
            .map_or(Value::Null, Value::from),
        Blob => row
            .try_get::<Option<Vec<u8>>, _>(i)?
            .map_or(Value::Null, |b| Value::from(B64.encode(b))),
    })
}

/// Every row of every table, each table's rows in primary-key order.
pub(crate) async fn dump(
    c: &mut AnyConnection,
) -> Result<Vec<(&'static str, Vec<Value>)>, EscrowError> {
    let mut out = Vec::with_capacity(TABLES.len());
    for (name, cols) in TABLES {
        let list = cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query(&format!("SELECT {list} FROM {name} ORDER BY {}", cols[0].0))
            .fetch_all(&mut *c)
            .await?;
        let mut values = Vec::with_capacity(rows.len());
        for r in &rows {
            let vals = cols
                .iter()
                .enumerate()
                .map(|(i, (_, k))| cell(r, i, *k))
                .collect::<Result<Vec<_>, _>>()?;
            values.push(Value::Array(vals));
        }
        out.push((*name, values));
    }
    Ok(out)
}

/// The first table of [`MUST_BE_EMPTY`] that has rows, with its row count.
pub(crate) async fn first_non_empty(
    c: &mut AnyConnection,
) -> Result<Option<(&'static str, i64)>, EscrowError> {
    for t in MUST_BE_EMPTY {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {t}"))
            .fetch_one(&mut *c)
            .await?
            .try_get(0)?;
        if n > 0 {
            return Ok(Some((t, n)));
        }
    }
    Ok(None)
}

fn bad(what: &str) -> EscrowError {
    EscrowError::Validation(format!("the backup is malformed: {what}"))
}

/// Insert the rows of `table` (as produced by [`dump`]).
pub(crate) async fn load_table(
    c: &mut AnyConnection,
    table: &str,
    rows: &[Value],
) -> Result<(), EscrowError> {
    let (name, cols) = TABLES
        .iter()
        .find(|(n, _)| *n == table)
        .ok_or_else(|| bad(&format!("unknown table {table}")))?;
    let list = cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
    let params = (1..=cols.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("INSERT INTO {name} ({list}) VALUES ({params})");
    for row in rows {
        let vals = row
            .as_array()
            .filter(|a| a.len() == cols.len())
            .ok_or_else(|| bad(&format!("row of {name}")))?;
        let mut q = sqlx::query(&sql);
        for ((_, kind), v) in cols.iter().zip(vals) {
            q = match kind {
                Int => q.bind(if v.is_null() {
                    None
                } else {
                    Some(v.as_i64().ok_or_else(|| bad(name))?)
                }),
                Text => q.bind(if v.is_null() {
                    None
                } else {
                    Some(v.as_str().ok_or_else(|| bad(name))?.to_owned())
                }),
                Blob => q.bind(if v.is_null() {
                    None
                } else {
                    Some(
                        B64.decode(v.as_str().ok_or_else(|| bad(name))?)
                            .map_err(|_| bad(name))?,
                    )
                }),
            };
        }
        q.execute(&mut *c).await?;
    }
    Ok(())
}

/// Set the audit chain head (restore).
pub(crate) async fn set_audit_head(
    c: &mut AnyConnection,
    seq: i64,
    hash: Vec<u8>,
) -> Result<(), EscrowError> {
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(hash)
        .execute(c)
        .await?;
    Ok(())
}

/// After inserting rows with explicit ids, move PostgreSQL's identity sequences past them.
pub(crate) async fn fix_sequences(c: &mut AnyConnection) -> Result<(), EscrowError> {
    if backend_of(c) != Backend::Postgres {
        return Ok(());
    }
    for t in ID_TABLES {
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence('{t}', 'id'), COALESCE((SELECT MAX(id) FROM {t}), 0) + 1, false)"
        ))
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}
