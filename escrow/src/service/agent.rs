//! Agent calls: escrow (queued for the group committer), check-in (supersede + rotation instructions),
//! rotation reports, own keys. A device only ever reaches rows with its own `device_id`, and every call
//! re-checks in its own SQL that the device is still active and bound to the certificate it presented.

use std::collections::HashSet;

use serde_json::json;

use super::escrow_batch::EscrowJob;
use super::{EscrowService, clean_text};
use crate::audit::action;
use crate::error::EscrowError;
use crate::guid::parse_guid;
use crate::model::{
    Actor, AuditOutcome, CheckIn, DeviceInfo, EscrowItem, EscrowRequest, ItemOutcome, KeyCandidate,
    ProtectorId, RotationInstruction, RotationState,
};
use crate::store::audit::{self as audit_log, NewAudit};
use crate::store::keys::{self, volume_db};
use crate::store::{Tx, devices};

use crate::model::limits::{
    MAX_CHECKIN_ENTRIES, MAX_KEY_PACKAGE_BYTES, MAX_MOUNT_POINT_CHARS, MAX_PROTECTORS_PER_ESCROW,
    MAX_TPM_OWNER_AUTH_CHARS,
};

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
        .map(|m| clean_text("mount point", m, MAX_MOUNT_POINT_CHARS))
        .transpose()
        .map(|m| m.filter(|m| !m.is_empty()))
}

/// Check an escrow request before it joins a commit batch; returns the cleaned mount points.
fn validate_request(req: &EscrowRequest) -> Result<Vec<Option<String>>, EscrowError> {
    if req.items.is_empty() {
        return Err(EscrowError::Validation(
            "items is empty: send at least one recovery protector".into(),
        ));
    }
    if req.items.len() > MAX_PROTECTORS_PER_ESCROW {
        return Err(EscrowError::Validation(format!(
            "items lists {} protectors; at most {MAX_PROTECTORS_PER_ESCROW} per call (split the batch)",
            req.items.len()
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
        .is_some_and(|t| t.is_empty() || t.len() > MAX_TPM_OWNER_AUTH_CHARS)
    {
        return Err(EscrowError::Validation(format!(
            "tpm_owner_auth must be 1..{MAX_TPM_OWNER_AUTH_CHARS} characters"
        )));
    }
    Ok(mounts)
}

/// The refusal of a device that was revoked (or re-bound) after its certificate was looked up.
pub(crate) fn not_active(device: &DeviceInfo) -> EscrowError {
    EscrowError::Forbidden(format!(
        "device {} is revoked or its certificate binding changed; re-enroll",
        device.computer_name
    ))
}

/// Refresh the device's check-in time, or refuse it if it is no longer active and bound.
async fn ensure_active(tx: &mut Tx, device: &DeviceInfo, now: i64) -> Result<(), EscrowError> {
    if devices::touch_if_bound(tx, device.id, &device.client_cert_sha256, now).await? {
        Ok(())
    } else {
        Err(not_active(device))
    }
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
        let live = keys::live_of_device(&mut tx, device.id).await?;
        let mut audit = audit_log::AuditCursor::read(&mut tx).await?;
        for p in &live {
            let key = (p.volume_guid.clone(), p.protector_id.clone());
            if !volumes.contains(&p.volume_guid) || present.contains(&key) {
                continue;
            }
            // The protector is gone from a volume the agent reported: keep it as history. A pending rotation is
            // complete if another escrowed protector on that volume is still present.
            let replacement = live.iter().any(|q| {
                q.volume_guid == p.volume_guid
                    && q.protector_id != p.protector_id
                    && present.contains(&(q.volume_guid.clone(), q.protector_id.clone()))
            });
            let done = replacement
                && matches!(
                    p.rotation,
                    RotationState::Requested | RotationState::NewEscrowed
                );
            keys::supersede(&mut tx, p.row_id, now_us, done).await?;
            let shown = parse_guid(&p.protector_id)
                .map(|u| ProtectorId(u).to_string())
                .unwrap_or_else(|_| p.protector_id.clone());
            audit_log::append_at(
                &mut tx,
                &mut audit,
                NewAudit::new(&actor, action::SUPERSEDE, AuditOutcome::Success)
                    .device(device.id, &device.computer_name)
                    .protector(shown)
                    .detail(json!({"volume_guid": p.volume_guid, "rotation_done": done})),
                now,
            )
            .await?;
        }
        audit.store(&mut tx).await?;
        let out = keys::pending_rotations(&mut tx, device.id).await?;
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
        let Some((row_id, volume_id, state)) =
            keys::newest_of_device(&mut tx, device.id, &old).await?
        else {
            return Err(EscrowError::NotFound(format!(
                "protector {old} is not escrowed for this device"
            )));
        };
        if !keys::exists_on_volume(&mut tx, device.id, volume_id, &new).await? {
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
        keys::set_rotation(&mut tx, row_id, next, &new, old_removed, now_us).await?;
        audit_log::append(
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

    /// The device's own escrowed keys (metadata only); refused like every agent call when the
    /// device was revoked or re-bound since its certificate was looked up.
    pub async fn device_own_keys(
        &self,
        device: &DeviceInfo,
    ) -> Result<Vec<KeyCandidate>, EscrowError> {
        let mut conn = self.inner.db.conn().await?;
        match devices::active_by_cert(&mut conn, &device.client_cert_sha256).await? {
            Some(d) if d.id == device.id => {}
            _ => return Err(not_active(device)),
        }
        keys::own(&mut conn, device.id, &device.client_cert_sha256).await
    }
}
