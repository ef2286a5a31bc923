//! The legacy TPM owner authorisation a device escrowed (one per device; sealed).

use sqlx::{AnyConnection, Row};

use crate::error::EscrowError;

/// The sealed owner authorisation of a device and when it was escrowed (µs), if any.
pub(crate) async fn for_device(
    c: &mut AnyConnection,
    device_id: i64,
) -> Result<Option<(Vec<u8>, i64)>, EscrowError> {
    sqlx::query("SELECT sealed, updated_at FROM tpm_owner_auth WHERE device_id = $1")
        .bind(device_id)
        .fetch_optional(c)
        .await?
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .transpose()
}

/// Active devices whose computer name is `name` (case-insensitive); several when domains differ.
pub(crate) async fn devices_named(
    c: &mut AnyConnection,
    name: &str,
) -> Result<Vec<(i64, String, Option<String>)>, EscrowError> {
    let rows = sqlx::query(
        "SELECT id, computer_name, domain FROM devices WHERE lower(computer_name) = lower($1) AND revoked = 0 ORDER BY id",
    )
    .bind(name.to_owned())
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}
