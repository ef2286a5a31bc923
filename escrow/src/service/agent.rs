//! Agent calls: escrow, check-in (supersede + rotation instructions), rotation reports, own keys.
//! A device only ever reaches rows with its own `device_id`.

use std::collections::HashSet;

use serde_json::json;
use sqlx::Row;

use super::candidates::{CANDIDATE_SELECT, candidate_from_row, volume_db};
use super::{EscrowService, clean_text};
use crate::audit::{action, from_micros};
use crate::error::EscrowError;
use crate::guid::parse_guid;
use crate::model::{
    Actor, AuditOutcome, CheckIn, DeviceInfo, EscrowItem, EscrowRequest, ItemOutcome, KeyCandidate,
    ProtectorId, RotationInstruction, RotationState,
};
use crate::sealing::{Sealer, aad, ct_eq};
use crate::store::{AuditCursor, NewAudit, Tx, append_audit, append_audit_at};

pub const MAX_ITEMS_PER_ESCROW: usize = 64;
pub const MAX_KEY_PACKAGE_BYTES: usize = 64 * 1024;
pub const MAX_CHECKIN_ENTRIES: usize = 1024;

fn validate_item(i: &EscrowItem) -> Result<Option<String>, EscrowError> {
    if i.key_package
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > MAX_KEY_PACKAGE_BYTES)
    {
        return Err(EscrowError::Validation(format!(
            "key package of protector {} must be 1..{MAX_KEY_PACKAGE_BYTES} bytes",
            i.protector_id
        )));
    }
    i.mount_point
        .as_deref()
        .map(|m| clean_text("mount point", m, 260))
        .transpose()
        .map(|m| m.filter(|m| !m.is_empty()))
}

/// Refuse a device that was revoked after its certificate was checked (the check and the write are not in
/// the same transaction otherwise).
async fn ensure_active(tx: &mut Tx, device: &DeviceInfo, now: i64) -> Result<(), EscrowError> {
    let n = sqlx::query(
        "UPDATE devices SET last_check_in = $1 WHERE id = $2 AND revoked = 0 AND cert_sha256 = $3",
    )
    .bind(now)
    .bind(device.id)
    .bind(device.client_cert_sha256.clone())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(EscrowError::Forbidden(format!(
            "device {} is revoked or its certificate binding changed; re-enroll",
            device.computer_name
        )));
    }
    Ok(())
}

/// Insert or refresh a volume row; returns its id.
async fn upsert_volume(
    tx: &mut Tx,
    device_id: i64,
    item: &EscrowItem,
    mount: Option<&str>,
    now: i64,
) -> Result<i64, EscrowError> {
    let vg = volume_db(&item.volume_guid);
    let row = sqlx::query("SELECT id, mount_point, volume_type FROM volumes WHERE device_id = $1 AND volume_guid = $2")
        .bind(device_id)
        .bind(vg.clone())
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(row) = row {
        let id: i64 = row.try_get(0)?;
        let old_mount: Option<String> = row.try_get(1)?;
        let old_type: String = row.try_get(2)?;
        if old_mount.as_deref() != mount || old_type != item.volume_type.as_str() {
            sqlx::query("UPDATE volumes SET mount_point = $1, volume_type = $2 WHERE id = $3")
                .bind(mount.map(str::to_owned))
                .bind(item.volume_type.as_str())
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        return Ok(id);
    }
    Ok(sqlx::query("INSERT INTO volumes (device_id, volume_guid, mount_point, volume_type, first_seen) VALUES ($1, $2, $3, $4, $5) RETURNING id")
        .bind(device_id)
        .bind(vg)
        .bind(mount.map(str::to_owned))
        .bind(item.volume_type.as_str())
        .bind(now)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?)
}

/// Seal and insert a new protector row.
pub(crate) async fn insert_protector(
    tx: &mut Tx,
    sealer: &Sealer,
    device_id: i64,
    volume_id: i64,
    item: &EscrowItem,
    escrowed_at: i64,
) -> Result<(), EscrowError> {
    let vg = volume_db(&item.volume_guid);
    let pid = item.protector_id.db_string();
    let pw = item.recovery_password.expose();
    let sealed = sealer.seal(pw.as_bytes(), &aad::recovery_password(device_id, &vg, &pid))?;
    let kp = item
        .key_package
        .as_deref()
        .map(|k| sealer.seal(k, &aad::key_package(device_id, &vg, &pid)))
        .transpose()?;
    sqlx::query(
        "INSERT INTO protectors (device_id, volume_id, protector_id, protector_prefix, password_sealed, password_mac, \
         key_package_sealed, escrowed_at, rotation_state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'none')",
    )
    .bind(device_id)
    .bind(volume_id)
    .bind(pid)
    .bind(item.protector_id.prefix8())
    .bind(sealed)
    .bind(sealer.password_mac(pw))
    .bind(kp)
    .bind(escrowed_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Check an escrow request before it joins a commit batch; returns the cleaned mount points.
fn validate_request(req: &EscrowRequest) -> Result<Vec<Option<String>>, EscrowError> {
    if req.items.is_empty() && req.tpm_owner_auth.is_none() {
        return Err(EscrowError::Validation(
            "nothing to escrow: give at least one protector".into(),
        ));
    }
    if req.items.len() > MAX_ITEMS_PER_ESCROW {
        return Err(EscrowError::Validation(format!(
            "at most {MAX_ITEMS_PER_ESCROW} protectors per call"
        )));
    }
    let mounts = req
        .items
        .iter()
        .map(validate_item)
        .collect::<Result<Vec<_>, _>>()?;
    if req
        .tpm_owner_auth
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.len() > 1024)
    {
        return Err(EscrowError::Validation(
            "tpm_owner_auth must be 1..1024 characters".into(),
        ));
    }
    Ok(mounts)
}

/// One escrow call waiting for the group committer.
#[derive(Debug)]
pub(crate) struct EscrowJob {
    pub device: DeviceInfo,
    pub req: EscrowRequest,
    pub mounts: Vec<Option<String>>,
}

impl EscrowService {
    /// Store the device's recovery information. Idempotent per (device, volume GUID, protector ID).
    pub async fn escrow(
        &self,
        device: &DeviceInfo,
        req: EscrowRequest,
    ) -> Result<Vec<ItemOutcome>, EscrowError> {
        let mounts = validate_request(&req)?;
        self.group_commit(EscrowJob {
            device: device.clone(),
            req,
            mounts,
        })
        .await
    }

    /// The escrow writes of one request inside the committer's transaction (see `committer.rs`).
    pub(crate) async fn escrow_in_tx(
        &self,
        tx: &mut Tx,
        sealer: &Sealer,
        audit: &mut AuditCursor,
        job: &EscrowJob,
    ) -> Result<Vec<ItemOutcome>, EscrowError> {
        let (device, req) = (&job.device, &job.req);
        let mounts = job.mounts.clone();
        let actor = Actor::device(device);
        let now = self.now();
        let now_us = self.now_us();
        let tx = &mut *tx;
        ensure_active(tx, device, now_us).await?;
        let mut out = Vec::with_capacity(req.items.len());
        for (item, mount) in req.items.iter().zip(mounts) {
            let volume_id = upsert_volume(tx, device.id, item, mount.as_deref(), now_us).await?;
            let pid = item.protector_id.db_string();
            let vg = volume_db(&item.volume_guid);
            let existing = sqlx::query("SELECT id, password_mac, CASE WHEN key_package_sealed IS NULL THEN 1 ELSE 0 END, escrowed_at FROM protectors WHERE volume_id = $1 AND protector_id = $2")
                .bind(volume_id)
                .bind(pid.clone())
                .fetch_optional(&mut **tx)
                .await?;
            let outcome = match existing {
                Some(row) => {
                    let stored_mac: Vec<u8> = row.try_get(1)?;
                    if ct_eq(
                        &stored_mac,
                        &sealer.password_mac(item.recovery_password.expose()),
                    ) {
                        let no_kp: i64 = row.try_get::<i64, _>(2)?;
                        if let (1, Some(kp)) = (no_kp, item.key_package.as_deref()) {
                            let row_id: i64 = row.try_get(0)?;
                            sqlx::query(
                                "UPDATE protectors SET key_package_sealed = $1 WHERE id = $2",
                            )
                            .bind(sealer.seal(kp, &aad::key_package(device.id, &vg, &pid))?)
                            .bind(row_id)
                            .execute(&mut **tx)
                            .await?;
                        }
                        ItemOutcome::Unchanged
                    } else {
                        let stored_at: i64 = row.try_get(3)?;
                        let seq = append_audit_at(
                            tx,
                            audit,
                            NewAudit::new(&actor, action::ESCROW_MISMATCH, AuditOutcome::Failure)
                                .device(device.id, &device.computer_name)
                                .protector(item.protector_id.to_string())
                                .detail(json!({"volume_guid": vg, "stored_escrowed_at": stored_at,
                                    "note": "same protector ID sent with a different recovery password; refused"})),
                            now,
                        )
                        .await?;
                        sqlx::query("INSERT INTO mismatches (device_id, volume_guid, protector_id, detected_at, stored_escrowed_at, audit_seq) VALUES ($1, $2, $3, $4, $5, $6)")
                            .bind(device.id)
                            .bind(vg.clone())
                            .bind(pid.clone())
                            .bind(now_us)
                            .bind(stored_at)
                            .bind(seq)
                            .execute(&mut **tx)
                            .await?;
                        ItemOutcome::Mismatch
                    }
                }
                None => {
                    insert_protector(tx, sealer, device.id, volume_id, item, now_us).await?;
                    append_audit_at(
                        tx,
                        audit,
                        NewAudit::new(&actor, action::ESCROW, AuditOutcome::Success)
                            .device(device.id, &device.computer_name)
                            .protector(item.protector_id.to_string())
                            .detail(json!({"volume_guid": vg, "volume_type": item.volume_type, "key_package": item.key_package.is_some()})),
                        now,
                    )
                    .await?;
                    ItemOutcome::Stored
                }
            };
            out.push(outcome);
        }
        if let Some(auth) = &req.tpm_owner_auth {
            let sealed = sealer.seal(auth.as_bytes(), &aad::tpm_owner_auth(device.id))?;
            let n = sqlx::query(
                "UPDATE tpm_owner_auth SET sealed = $1, updated_at = $2 WHERE device_id = $3",
            )
            .bind(sealed.clone())
            .bind(now_us)
            .bind(device.id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if n == 0 {
                sqlx::query("INSERT INTO tpm_owner_auth (device_id, sealed, updated_at) VALUES ($1, $2, $3)")
                    .bind(device.id)
                    .bind(sealed)
                    .bind(now_us)
                    .execute(&mut **tx)
                    .await?;
            }
            append_audit_at(
                tx,
                audit,
                NewAudit::new(&actor, action::TPM_OWNER_AUTH, AuditOutcome::Success)
                    .device(device.id, &device.computer_name),
                now,
            )
            .await?;
        }
        Ok(out)
    }

    /// Record what the agent has now: protectors missing from a listed volume are superseded (kept as history).
    /// Returns the protectors the agent must rotate.
    pub async fn check_in(
        &self,
        device: &DeviceInfo,
        checkin: CheckIn,
    ) -> Result<Vec<RotationInstruction>, EscrowError> {
        if checkin.present_protectors.len() > MAX_CHECKIN_ENTRIES {
            return Err(EscrowError::Validation(format!(
                "at most {MAX_CHECKIN_ENTRIES} protectors per check-in"
            )));
        }
        let present: HashSet<(String, String)> = checkin
            .present_protectors
            .iter()
            .map(|(v, p)| (volume_db(v), p.db_string()))
            .collect();
        let volumes: HashSet<&String> = present.iter().map(|(v, _)| v).collect();
        let actor = Actor::device(device);
        let now = self.now();
        let now_us = self.now_us();
        let mut tx = self.inner.db.begin_write().await?;
        ensure_active(&mut tx, device, now_us).await?;
        let rows = sqlx::query(
            "SELECT p.id, v.volume_guid, p.protector_id, p.rotation_state FROM protectors p JOIN volumes v ON v.id = p.volume_id \
             WHERE p.device_id = $1 AND p.superseded_at IS NULL",
        )
        .bind(device.id)
        .fetch_all(&mut *tx)
        .await?;
        let mut live: Vec<(i64, String, String, String)> = Vec::with_capacity(rows.len());
        for r in &rows {
            live.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
        }
        for (row_id, vg, pid, rot) in &live {
            if !volumes.contains(vg) || present.contains(&(vg.clone(), pid.clone())) {
                continue;
            }
            // The protector is gone from a volume the agent reported: keep it as history. A pending rotation is
            // complete if another escrowed protector on that volume is still present.
            let replacement = live.iter().any(|(_, v2, p2, _)| {
                v2 == vg && p2 != pid && present.contains(&(v2.clone(), p2.clone()))
            });
            let done = replacement && (rot == "requested" || rot == "new_escrowed");
            sqlx::query(
                "UPDATE protectors SET superseded_at = $1, rotation_state = CASE WHEN $2 = 1 THEN 'done' ELSE rotation_state END, \
                 rotation_done_at = CASE WHEN $2 = 1 THEN $1 ELSE rotation_done_at END WHERE id = $3",
            )
            .bind(now_us)
            .bind(i64::from(done))
            .bind(*row_id)
            .execute(&mut *tx)
            .await?;
            let shown = parse_guid(pid)
                .map(|u| ProtectorId(u).to_string())
                .unwrap_or_else(|_| pid.clone());
            append_audit(
                &mut tx,
                NewAudit::new(&actor, action::SUPERSEDE, AuditOutcome::Success)
                    .device(device.id, &device.computer_name)
                    .protector(shown)
                    .detail(json!({"volume_guid": vg, "rotation_done": done})),
                now,
            )
            .await?;
        }
        let rows = sqlx::query(
            "SELECT v.volume_guid, p.protector_id, p.rotation_state, p.rotation_requested_at FROM protectors p \
             JOIN volumes v ON v.id = p.volume_id WHERE p.device_id = $1 AND p.superseded_at IS NULL \
             AND p.rotation_state IN ('requested', 'new_escrowed') ORDER BY p.id",
        )
        .bind(device.id)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let vg: String = r.try_get(0)?;
            let pid: String = r.try_get(1)?;
            let st: String = r.try_get(2)?;
            out.push(RotationInstruction {
                volume_guid: parse_guid(&vg).map_err(EscrowError::Storage)?,
                protector_id: pid.parse().map_err(EscrowError::Storage)?,
                state: st.parse().map_err(EscrowError::Storage)?,
                requested_at: from_micros(r.try_get::<Option<i64>, _>(3)?.unwrap_or(0)),
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Two-phase rotation: after escrowing `new`, report it (`old_removed = false` → NewEscrowed); after
    /// removing `old` from the volume, report again with `old_removed = true` → Done (old superseded).
    pub async fn report_rotation(
        &self,
        device: &DeviceInfo,
        old: ProtectorId,
        new: ProtectorId,
        old_removed: bool,
    ) -> Result<RotationState, EscrowError> {
        if old == new {
            return Err(EscrowError::Validation(
                "the new protector must differ from the old one".into(),
            ));
        }
        let actor = Actor::device(device);
        let now = self.now();
        let now_us = self.now_us();
        let mut tx = self.inner.db.begin_write().await?;
        ensure_active(&mut tx, device, now_us).await?;
        let row = sqlx::query("SELECT id, volume_id, rotation_state FROM protectors WHERE device_id = $1 AND protector_id = $2 ORDER BY id DESC")
            .bind(device.id)
            .bind(old.db_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(EscrowError::NotFound(format!(
                "protector {old} is not escrowed for this device"
            )));
        };
        let (row_id, volume_id): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let state: RotationState = row
            .try_get::<String, _>(2)?
            .parse()
            .map_err(EscrowError::Storage)?;
        let new_exists =
            sqlx::query("SELECT id FROM protectors WHERE device_id = $1 AND volume_id = $2 AND protector_id = $3")
                .bind(device.id)
                .bind(volume_id)
                .bind(new.db_string())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if !new_exists {
            return Err(EscrowError::Conflict(format!(
                "escrow the new protector {new} on the same volume before reporting the rotation of {old}"
            )));
        }
        if state == RotationState::Done {
            return Ok(RotationState::Done);
        }
        let next = if old_removed {
            RotationState::Done
        } else {
            RotationState::NewEscrowed
        };
        sqlx::query(
            "UPDATE protectors SET rotation_state = $1, replaced_by = $2, \
             rotation_done_at = CASE WHEN $3 = 1 THEN $4 ELSE rotation_done_at END, \
             superseded_at = CASE WHEN $3 = 1 THEN COALESCE(superseded_at, $4) ELSE superseded_at END WHERE id = $5",
        )
        .bind(next.as_str())
        .bind(new.db_string())
        .bind(i64::from(old_removed))
        .bind(now_us)
        .bind(row_id)
        .execute(&mut *tx)
        .await?;
        append_audit(
            &mut tx,
            NewAudit::new(&actor, action::ROTATION_REPORT, AuditOutcome::Success)
                .device(device.id, &device.computer_name)
                .protector(old.to_string())
                .detail(
                    json!({"new_protector": new.to_string(), "old_removed": old_removed, "from": state, "to": next}),
                ),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(next)
    }

    /// The device's own escrowed keys (metadata only).
    pub async fn device_own_keys(
        &self,
        device: &DeviceInfo,
    ) -> Result<Vec<KeyCandidate>, EscrowError> {
        let rows = sqlx::query(&format!(
            "{CANDIDATE_SELECT} WHERE p.device_id = $1 AND d.revoked = 0 AND d.cert_sha256 = $2 ORDER BY p.id"
        ))
        .bind(device.id)
        .bind(device.client_cert_sha256.clone())
        .fetch_all(&self.inner.db.pool)
        .await?;
        rows.iter().map(candidate_from_row).collect()
    }
}
