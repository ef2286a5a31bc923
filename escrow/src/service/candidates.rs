//! Reading protectors as help-desk candidates (never with secrets).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::from_micros;
use crate::error::EscrowError;
use crate::guid::parse_guid;
use crate::model::{KeyCandidate, ProtectorId};

/// Columns for [`candidate_from_row`]; `p` = protectors, `v` = volumes, `d` = devices. Column 11 is the
/// protectors row id (used by callers that update the row).
pub(crate) const CANDIDATE_SELECT: &str = "SELECT d.id, d.computer_name, d.domain, v.volume_guid, v.volume_type, v.mount_point, \
     p.protector_id, p.escrowed_at, p.superseded_at, p.disclosed_at, p.rotation_state, p.id \
     FROM protectors p JOIN volumes v ON v.id = p.volume_id JOIN devices d ON d.id = p.device_id";

pub(crate) fn candidate_from_row(row: &AnyRow) -> Result<KeyCandidate, EscrowError> {
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
    })
}

/// Storage form of a volume GUID: upper-case hyphenated, no braces.
pub(crate) fn volume_db(u: &uuid::Uuid) -> String {
    u.hyphenated().to_string().to_ascii_uppercase()
}
