//! Whole-table walks of the key aggregate: re-sealing every secret under a new data key.

use sqlx::{AnyConnection, Row};

use crate::error::EscrowError;

/// One protector row with its sealed secrets and the fields their AAD is built from.
pub(crate) struct SealedRow {
    pub id: i64,
    pub device_id: i64,
    pub volume_guid: String,
    pub protector_id: String,
    pub password_sealed: Vec<u8>,
    pub key_package_sealed: Option<Vec<u8>>,
}

/// Up to `limit` protector rows with `id > after`, in id order.
pub(crate) async fn protectors_after(
    c: &mut AnyConnection,
    after: i64,
    limit: i64,
) -> Result<Vec<SealedRow>, EscrowError> {
    let rows = sqlx::query(
        "SELECT p.id, p.device_id, v.volume_guid, p.protector_id, p.password_sealed, p.key_package_sealed \
         FROM protectors p JOIN volumes v ON v.id = p.volume_id WHERE p.id > $1 ORDER BY p.id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SealedRow {
                id: r.try_get(0)?,
                device_id: r.try_get(1)?,
                volume_guid: r.try_get(2)?,
                protector_id: r.try_get(3)?,
                password_sealed: r.try_get(4)?,
                key_package_sealed: r.try_get(5)?,
            })
        })
        .collect()
}

pub(crate) async fn reseal_protector(
    c: &mut AnyConnection,
    id: i64,
    password_sealed: Vec<u8>,
    password_mac: Vec<u8>,
    key_package_sealed: Option<Vec<u8>>,
) -> Result<(), EscrowError> {
    sqlx::query(
        "UPDATE protectors SET password_sealed = $1, password_mac = $2, key_package_sealed = $3 WHERE id = $4",
    )
    .bind(password_sealed)
    .bind(password_mac)
    .bind(key_package_sealed)
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

/// Every sealed TPM owner authorisation: (device id, sealed value).
pub(crate) async fn tpm_all(c: &mut AnyConnection) -> Result<Vec<(i64, Vec<u8>)>, EscrowError> {
    let rows = sqlx::query("SELECT device_id, sealed FROM tpm_owner_auth ORDER BY device_id")
        .fetch_all(c)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

pub(crate) async fn reseal_tpm(
    c: &mut AnyConnection,
    device_id: i64,
    sealed: Vec<u8>,
) -> Result<(), EscrowError> {
    sqlx::query("UPDATE tpm_owner_auth SET sealed = $1 WHERE device_id = $2")
        .bind(sealed)
        .bind(device_id)
        .execute(c)
        .await?;
    Ok(())
}
