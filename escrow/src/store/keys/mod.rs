//! The key aggregate: volumes, their recovery protectors (sealed passwords and key packages), TPM owner
//! authorisations and recorded mismatches. Reads for the help desk return [`KeyCandidate`]s (never
//! secrets); the sealed secret of one protector is read only by a disclosure.

mod batch;
mod bulk;

pub(crate) use batch::{
    NewConflict, NewMismatch, NewProtector, StoredVolume, devices_holding, insert_conflicts,
    insert_mismatches, insert_protectors, insert_volumes, load_protectors, load_volumes,
    set_key_package, update_volume, upsert_tpm,
};
pub(crate) use bulk::{protectors_after, reseal_protector, reseal_tpm, tpm_all};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::audit::from_micros;
use crate::error::EscrowError;
use crate::guid::parse_guid;
use crate::model::{KeyCandidate, ProtectorId, RotationInstruction, RotationState};

/// Columns for [`candidate_from_row`]; `p` = protectors, `v` = volumes, `d` = devices. Column 11 is the
/// protectors row id.
const CANDIDATE_SELECT: &str = "SELECT d.id, d.computer_name, d.domain, v.volume_guid, v.volume_type, v.mount_point, \
     p.protector_id, p.escrowed_at, p.superseded_at, p.disclosed_at, p.rotation_state, p.id, \
     d.first_seen, d.last_check_in, d.cert_sha256 \
     FROM protectors p JOIN volumes v ON v.id = p.volume_id JOIN devices d ON d.id = p.device_id";

fn candidate_from_row(row: &AnyRow) -> Result<KeyCandidate, EscrowError> {
    let vg: String = row.try_get(3)?;
    let vt: String = row.try_get(4)?;
    let pid: String = row.try_get(6)?;
    let rot: String = row.try_get(10)?;
    Ok(KeyCandidate {
        device_id: row.try_get(0)?,
        device_name: row.try_get(1)?,
        domain: row.try_get(2)?,
        volume_guid: parse_guid(&vg).map_err(EscrowError::Storage)?,
        volume_type: vt.parse().map_err(EscrowError::Storage)?,
        mount_point: row.try_get(5)?,
        protector_id: pid.parse::<ProtectorId>().map_err(EscrowError::Storage)?,
        escrowed_at: from_micros(row.try_get(7)?),
        superseded_at: row.try_get::<Option<i64>, _>(8)?.map(from_micros),
        disclosed_at: row.try_get::<Option<i64>, _>(9)?.map(from_micros),
        rotation: rot.parse().map_err(EscrowError::Storage)?,
        device_enrolled_at: from_micros(row.try_get(12)?),
        device_last_check_in: row.try_get::<Option<i64>, _>(13)?.map(from_micros),
        device_cert_sha256: row.try_get(14)?,
    })
}

/// Storage form of a volume GUID: upper-case hyphenated, no braces.
pub(crate) fn volume_db(u: &uuid::Uuid) -> String {
    u.hyphenated().to_string().to_ascii_uppercase()
}

/// Keys of active devices whose recovery key ID starts with `prefix8` (upper-case hex), newest
/// first (indexed lookup). Revoked devices are never candidates.
/// Each with its protectors row id (the page key), below `before_row` (newest first).
pub(crate) async fn by_prefix(
    c: &mut AnyConnection,
    prefix8: &str,
    before_row: i64,
    limit: i64,
) -> Result<Vec<(KeyCandidate, i64)>, EscrowError> {
    let rows = sqlx::query(&format!(
        "{CANDIDATE_SELECT} WHERE p.protector_prefix = $1 AND d.revoked = 0 AND p.id < $2 ORDER BY p.id DESC LIMIT $3"
    ))
    .bind(prefix8.to_owned())
    .bind(before_row)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter().map(candidate_with_row).collect()
}

fn candidate_with_row(row: &AnyRow) -> Result<(KeyCandidate, i64), EscrowError> {
    Ok((candidate_from_row(row)?, row.try_get::<i64, _>(11)?))
}

/// Keys of active devices named `name` (any case, any domain), history included.
/// Each with its protectors row id (the page key), below `before_row` (newest first).
pub(crate) async fn by_device_name(
    c: &mut AnyConnection,
    name: &str,
    before_row: i64,
    limit: i64,
) -> Result<Vec<(KeyCandidate, i64)>, EscrowError> {
    let rows = sqlx::query(&format!(
        "{CANDIDATE_SELECT} WHERE lower(d.computer_name) = $1 AND d.revoked = 0 AND p.id < $2 ORDER BY p.id DESC LIMIT $3"
    ))
    .bind(name.to_ascii_lowercase())
    .bind(before_row)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter().map(candidate_with_row).collect()
}

/// Every stored protector with this ID held by an active device, each with its row id (a
/// disclosure picks one). A revoked device neither offers nor blocks a disclosure.
pub(crate) async fn holders(
    c: &mut AnyConnection,
    protector_id: &ProtectorId,
) -> Result<Vec<(KeyCandidate, i64)>, EscrowError> {
    let rows = sqlx::query(&format!(
        "{CANDIDATE_SELECT} WHERE p.protector_id = $1 AND d.revoked = 0 ORDER BY p.id"
    ))
    .bind(protector_id.db_string())
    .fetch_all(c)
    .await?;
    rows.iter().map(candidate_with_row).collect()
}

pub(crate) async fn by_row(
    c: &mut AnyConnection,
    row_id: i64,
) -> Result<KeyCandidate, EscrowError> {
    let row = sqlx::query(&format!("{CANDIDATE_SELECT} WHERE p.id = $1"))
        .bind(row_id)
        .fetch_one(c)
        .await?;
    candidate_from_row(&row)
}

/// The keys of a device, if it is still active and bound to `cert_sha256`.
pub(crate) async fn own(
    c: &mut AnyConnection,
    device_id: i64,
    cert_sha256: &str,
) -> Result<Vec<KeyCandidate>, EscrowError> {
    let rows = sqlx::query(&format!(
        "{CANDIDATE_SELECT} WHERE p.device_id = $1 AND d.revoked = 0 AND d.cert_sha256 = $2 ORDER BY p.id"
    ))
    .bind(device_id)
    .bind(cert_sha256.to_owned())
    .fetch_all(c)
    .await?;
    rows.iter().map(candidate_from_row).collect()
}

/// The first `limit` protectors disclosed and not rotated yet, oldest disclosure first (fleet report).
pub(crate) async fn rotation_pending_all(
    c: &mut AnyConnection,
    limit: i64,
) -> Result<Vec<KeyCandidate>, EscrowError> {
    let rows = sqlx::query(&format!(
        "{CANDIDATE_SELECT} WHERE p.rotation_state IN ('requested', 'new_escrowed') ORDER BY p.disclosed_at LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter().map(candidate_from_row).collect()
}

/// The sealed secrets of one protector row.
pub(crate) struct SealedSecret {
    pub password: Vec<u8>,
    pub key_package: Option<Vec<u8>>,
    pub superseded: bool,
}

pub(crate) async fn sealed_secret(
    c: &mut AnyConnection,
    row_id: i64,
) -> Result<SealedSecret, EscrowError> {
    let row = sqlx::query(
        "SELECT password_sealed, key_package_sealed, superseded_at FROM protectors WHERE id = $1",
    )
    .bind(row_id)
    .fetch_one(c)
    .await?;
    Ok(SealedSecret {
        password: row.try_get(0)?,
        key_package: row.try_get(1)?,
        superseded: row.try_get::<Option<i64>, _>(2)?.is_some(),
    })
}

/// Mark a protector disclosed; with `rotate`, also queue its rotation.
pub(crate) async fn mark_disclosed(
    c: &mut AnyConnection,
    row_id: i64,
    now: i64,
    rotate: bool,
) -> Result<(), EscrowError> {
    sqlx::query(
        "UPDATE protectors SET disclosed_at = $1, \
         rotation_state = CASE WHEN $2 = 1 THEN 'requested' ELSE rotation_state END, \
         rotation_requested_at = CASE WHEN $2 = 1 THEN $1 ELSE rotation_requested_at END WHERE id = $3",
    )
    .bind(now)
    .bind(i64::from(rotate))
    .bind(row_id)
    .execute(c)
    .await?;
    Ok(())
}

/// A protector still on the device as far as the store knows (not superseded).
pub(crate) struct LiveProtector {
    pub row_id: i64,
    /// Storage forms (upper-case hyphenated).
    pub volume_guid: String,
    pub protector_id: String,
    pub rotation: RotationState,
}

pub(crate) async fn live_of_device(
    c: &mut AnyConnection,
    device_id: i64,
) -> Result<Vec<LiveProtector>, EscrowError> {
    let rows = sqlx::query(
        "SELECT p.id, v.volume_guid, p.protector_id, p.rotation_state FROM protectors p JOIN volumes v ON v.id = p.volume_id \
         WHERE p.device_id = $1 AND p.superseded_at IS NULL",
    )
    .bind(device_id)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LiveProtector {
                row_id: r.try_get(0)?,
                volume_guid: r.try_get(1)?,
                protector_id: r.try_get(2)?,
                rotation: r
                    .try_get::<String, _>(3)?
                    .parse()
                    .map_err(EscrowError::Storage)?,
            })
        })
        .collect()
}

/// Keep a protector as history; `rotation_done` also completes its pending rotation.
pub(crate) async fn supersede(
    c: &mut AnyConnection,
    row_id: i64,
    now: i64,
    rotation_done: bool,
) -> Result<(), EscrowError> {
    sqlx::query(
        "UPDATE protectors SET superseded_at = $1, rotation_state = CASE WHEN $2 = 1 THEN 'done' ELSE rotation_state END, \
         rotation_done_at = CASE WHEN $2 = 1 THEN $1 ELSE rotation_done_at END WHERE id = $3",
    )
    .bind(now)
    .bind(i64::from(rotation_done))
    .bind(row_id)
    .execute(c)
    .await?;
    Ok(())
}

/// The rotations a device has to perform or finish, in escrow order.
pub(crate) async fn pending_rotations(
    c: &mut AnyConnection,
    device_id: i64,
) -> Result<Vec<RotationInstruction>, EscrowError> {
    let rows = sqlx::query(
        "SELECT v.volume_guid, p.protector_id, p.rotation_state, p.rotation_requested_at FROM protectors p \
         JOIN volumes v ON v.id = p.volume_id WHERE p.device_id = $1 AND p.superseded_at IS NULL \
         AND p.rotation_state IN ('requested', 'new_escrowed') ORDER BY p.id",
    )
    .bind(device_id)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            let vg: String = r.try_get(0)?;
            let pid: String = r.try_get(1)?;
            let st: String = r.try_get(2)?;
            Ok(RotationInstruction {
                volume_guid: parse_guid(&vg).map_err(EscrowError::Storage)?,
                protector_id: pid.parse().map_err(EscrowError::Storage)?,
                state: st.parse().map_err(EscrowError::Storage)?,
                requested_at: from_micros(r.try_get::<Option<i64>, _>(3)?.unwrap_or(0)),
            })
        })
        .collect()
}

/// The newest row of a device's protector `protector_id`: (row id, volume row id, rotation state).
pub(crate) async fn newest_of_device(
    c: &mut AnyConnection,
    device_id: i64,
    protector_id: &ProtectorId,
) -> Result<Option<(i64, i64, RotationState)>, EscrowError> {
    let row = sqlx::query(
        "SELECT id, volume_id, rotation_state FROM protectors WHERE device_id = $1 AND protector_id = $2 ORDER BY id DESC",
    )
    .bind(device_id)
    .bind(protector_id.db_string())
    .fetch_optional(c)
    .await?;
    row.map(|r| {
        Ok((
            r.try_get(0)?,
            r.try_get(1)?,
            r.try_get::<String, _>(2)?
                .parse()
                .map_err(EscrowError::Storage)?,
        ))
    })
    .transpose()
}

/// Whether the device has escrowed `protector_id` on the volume row `volume_id`.
pub(crate) async fn exists_on_volume(
    c: &mut AnyConnection,
    device_id: i64,
    volume_id: i64,
    protector_id: &ProtectorId,
) -> Result<bool, EscrowError> {
    Ok(sqlx::query(
        "SELECT id FROM protectors WHERE device_id = $1 AND volume_id = $2 AND protector_id = $3",
    )
    .bind(device_id)
    .bind(volume_id)
    .bind(protector_id.db_string())
    .fetch_optional(c)
    .await?
    .is_some())
}

/// Record rotation progress of a protector row; `old_removed` also completes it and supersedes the row.
pub(crate) async fn set_rotation(
    c: &mut AnyConnection,
    row_id: i64,
    next: RotationState,
    replaced_by: &ProtectorId,
    old_removed: bool,
    now: i64,
) -> Result<(), EscrowError> {
    sqlx::query(
        "UPDATE protectors SET rotation_state = $1, replaced_by = $2, \
         rotation_done_at = CASE WHEN $3 = 1 THEN $4 ELSE rotation_done_at END, \
         superseded_at = CASE WHEN $3 = 1 THEN COALESCE(superseded_at, $4) ELSE superseded_at END WHERE id = $5",
    )
    .bind(next.as_str())
    .bind(replaced_by.db_string())
    .bind(i64::from(old_removed))
    .bind(now)
    .bind(row_id)
    .execute(c)
    .await?;
    Ok(())
}
