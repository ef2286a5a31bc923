//! The keyring: the data key (DEK) of this database, wrapped by the KEK. One row.

use sqlx::{AnyConnection, Row};

use crate::error::EscrowError;

/// The stored keyring row.
#[derive(Clone, Debug)]
pub(crate) struct Keyring {
    pub kek_id: String,
    pub dek_id: String,
    pub wrapped_dek: Vec<u8>,
    pub created_at: i64,
    pub rewrapped_at: Option<i64>,
}

pub(crate) async fn get(c: &mut AnyConnection) -> Result<Option<Keyring>, EscrowError> {
    let row = sqlx::query(
        "SELECT kek_id, dek_id, wrapped_dek, created_at, rewrapped_at FROM keyring WHERE id = 1",
    )
    .fetch_optional(c)
    .await?;
    row.map(|r| {
        Ok(Keyring {
            kek_id: r.try_get(0)?,
            dek_id: r.try_get(1)?,
            wrapped_dek: r.try_get(2)?,
            created_at: r.try_get(3)?,
            rewrapped_at: r.try_get(4)?,
        })
    })
    .transpose()
}

pub(crate) async fn insert(c: &mut AnyConnection, k: &Keyring) -> Result<(), EscrowError> {
    sqlx::query(
        "INSERT INTO keyring (id, kek_id, dek_id, wrapped_dek, created_at, rewrapped_at) VALUES (1, $1, $2, $3, $4, $5)",
    )
    .bind(k.kek_id.clone())
    .bind(k.dek_id.clone())
    .bind(k.wrapped_dek.clone())
    .bind(k.created_at)
    .bind(k.rewrapped_at)
    .execute(c)
    .await?;
    Ok(())
}

/// Replace the keyring row (KEK re-wrap, restore).
pub(crate) async fn replace(c: &mut AnyConnection, k: &Keyring) -> Result<(), EscrowError> {
    sqlx::query(
        "UPDATE keyring SET kek_id = $1, dek_id = $2, wrapped_dek = $3, created_at = $4, rewrapped_at = $5 WHERE id = 1",
    )
    .bind(k.kek_id.clone())
    .bind(k.dek_id.clone())
    .bind(k.wrapped_dek.clone())
    .bind(k.created_at)
    .bind(k.rewrapped_at)
    .execute(c)
    .await?;
    Ok(())
}
