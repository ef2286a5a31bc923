//! Help-desk lookups and disclosure. A disclosure decrypts, marks, queues rotation and appends its audit
//! record in one transaction; the password leaves this function only after that commit (fail closed).

use std::net::IpAddr;

use serde_json::json;
use sqlx::Row;
use zeroize::Zeroizing;

use super::candidates::{CANDIDATE_SELECT, candidate_from_row, volume_db};
use super::{EscrowService, clean_text, require_role};
use crate::audit::action;
use crate::error::EscrowError;
use crate::guid::parse_prefix8;
use crate::model::{
    Actor, AuditOutcome, Disclosure, DisclosureReason, KeyCandidate, ProtectorId, Role,
    parse_recovery_password,
};
use crate::sealing::aad;
use crate::store::{NewAudit, Tx, append_audit};

/// Most candidates returned for one prefix (a prefix collides rarely; this bounds enumeration).
pub const MAX_CANDIDATES: i64 = 50;

impl EscrowService {
    /// Keys whose recovery key ID starts with these 8 hex digits (indexed lookup). No secrets.
    pub async fn find_by_prefix(
        &self,
        actor: &Actor,
        prefix8: &str,
    ) -> Result<Vec<KeyCandidate>, EscrowError> {
        require_role(
            actor,
            &[Role::Admin, Role::Helpdesk],
            "look up recovery keys",
        )?;
        let prefix = parse_prefix8(prefix8).map_err(EscrowError::Validation)?;
        let rows = sqlx::query(&format!(
            "{CANDIDATE_SELECT} WHERE p.protector_prefix = $1 ORDER BY p.escrowed_at DESC, p.id DESC LIMIT $2"
        ))
        .bind(prefix)
        .bind(MAX_CANDIDATES)
        .fetch_all(&self.inner.db.pool)
        .await?;
        rows.iter().map(candidate_from_row).collect()
    }

    /// Keys of a device (case-insensitive computer name), newest first, including history.
    pub async fn find_by_device(
        &self,
        actor: &Actor,
        device_name: &str,
    ) -> Result<Vec<KeyCandidate>, EscrowError> {
        require_role(
            actor,
            &[Role::Admin, Role::Helpdesk],
            "look up recovery keys",
        )?;
        let name = super::devices::validate_computer_name(device_name)?;
        let rows = sqlx::query(&format!(
            "{CANDIDATE_SELECT} WHERE lower(d.computer_name) = $1 ORDER BY d.id, p.escrowed_at DESC, p.id DESC LIMIT 1000"
        ))
        .bind(name.to_ascii_lowercase())
        .fetch_all(&self.inner.db.pool)
        .await?;
        rows.iter().map(candidate_from_row).collect()
    }

    /// Disclose one recovery password. Helpdesk must name the device; the reason is mandatory (`Other` needs
    /// text). Failed attempts are audited too.
    pub async fn disclose(
        &self,
        actor: &Actor,
        protector_id: &ProtectorId,
        device_name: Option<&str>,
        reason: DisclosureReason,
        reason_text: Option<&str>,
        client_addr: Option<IpAddr>,
    ) -> Result<Disclosure, EscrowError> {
        let now = self.now();
        let now_us = self.now_us();
        let client = client_addr.map(|a| a.to_string());
        // Not while a DEK rotation swaps keys (it holds this lock exclusively).
        let _keys = self.inner.seal_lock.read().await;
        let mut tx = self.inner.db.begin_write().await?;
        let base = NewAudit::new(actor, action::DISCLOSE, AuditOutcome::Failure)
            .protector(protector_id.to_string())
            .reason(Some(reason.as_str().to_owned()))
            .client(client.clone());
        match self
            .disclose_in_tx(
                &mut tx,
                actor,
                protector_id,
                device_name,
                reason,
                reason_text,
                base.clone(),
                now_us,
            )
            .await
        {
            Ok(d) => {
                // Commit first: the audit record is durable before the password leaves this function.
                tx.commit().await?;
                Ok(d)
            }
            Err(e) => {
                // Nothing but the failure record is written: roll back, then audit the failure on its own.
                drop(tx);
                let mut tx = self.inner.db.begin_write().await?;
                let (dev_id, dev_name) = (None::<i64>, device_name.map(str::to_owned));
                let mut rec = base
                    .detail(json!({"error": e.public_message(), "device_name_given": dev_name}));
                rec.device_id = dev_id;
                append_audit(&mut tx, rec, now).await?;
                tx.commit().await?;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn disclose_in_tx(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        protector_id: &ProtectorId,
        device_name: Option<&str>,
        reason: DisclosureReason,
        reason_text: Option<&str>,
        base: NewAudit,
        now_us: i64,
    ) -> Result<Disclosure, EscrowError> {
        let role = require_role(
            actor,
            &[Role::Admin, Role::Helpdesk],
            "disclose recovery keys",
        )?;
        let text = reason_text
            .map(|t| clean_text("reason text", t, 500))
            .transpose()?
            .filter(|t| !t.is_empty());
        if reason == DisclosureReason::Other && text.is_none() {
            return Err(EscrowError::Validation(
                "reason 'other' needs a free-text explanation".into(),
            ));
        }
        let device_name = device_name.map(str::trim).filter(|n| !n.is_empty());
        if role == Role::Helpdesk && device_name.is_none() {
            return Err(EscrowError::Validation(
                "the helpdesk role must give the device name as well as the key ID".into(),
            ));
        }
        let rows = sqlx::query(&format!(
            "{CANDIDATE_SELECT} WHERE p.protector_id = $1 ORDER BY p.id"
        ))
        .bind(protector_id.db_string())
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            return Err(EscrowError::NotFound(format!(
                "no escrowed key with ID {protector_id}"
            )));
        }
        let mut matching = Vec::new();
        for r in &rows {
            let c = candidate_from_row(r)?;
            if device_name.is_none_or(|n| c.device_name.eq_ignore_ascii_case(n)) {
                matching.push((c, r.try_get::<i64, _>(11)?));
            }
        }
        let (cand, row_id) = match matching.len() {
            0 => {
                return Err(EscrowError::Forbidden(format!(
                    "key {protector_id} does not belong to the device named"
                )));
            }
            1 => matching.remove(0),
            n => {
                return Err(EscrowError::Conflict(format!(
                    "key ID {protector_id} is escrowed by {n} devices; give the device name"
                )));
            }
        };
        let row =
            sqlx::query("SELECT password_sealed, key_package_sealed, superseded_at FROM protectors WHERE id = $1")
                .bind(row_id)
                .fetch_one(&mut **tx)
                .await?;
        let sealed: Vec<u8> = row.try_get(0)?;
        let kp_sealed: Option<Vec<u8>> = row.try_get(1)?;
        let superseded: Option<i64> = row.try_get(2)?;
        let vg = volume_db(&cand.volume_guid);
        let pid = protector_id.db_string();
        let sealer = self.sealer();
        let plain = sealer.open(&sealed, &aad::recovery_password(cand.device_id, &vg, &pid))?;
        let pw_text = Zeroizing::new(
            String::from_utf8(plain.to_vec())
                .map_err(|_| EscrowError::Crypto("stored password is not text".into()))?,
        );
        let password = parse_recovery_password(&pw_text)
            .map_err(|e| EscrowError::Crypto(format!("stored password is invalid: {e}")))?;
        let key_package = kp_sealed
            .map(|k| {
                sealer
                    .open(&k, &aad::key_package(cand.device_id, &vg, &pid))
                    .map(|p| p.to_vec())
            })
            .transpose()?;
        // A superseded (historical) key is no longer on the disk: nothing to rotate.
        let rotate = superseded.is_none();
        sqlx::query(
            "UPDATE protectors SET disclosed_at = $1, \
             rotation_state = CASE WHEN $2 = 1 THEN 'requested' ELSE rotation_state END, \
             rotation_requested_at = CASE WHEN $2 = 1 THEN $1 ELSE rotation_requested_at END WHERE id = $3",
        )
        .bind(now_us)
        .bind(i64::from(rotate))
        .bind(row_id)
        .execute(&mut **tx)
        .await?;
        let mut rec = base
            .device(cand.device_id, &cand.device_name)
            .detail(json!({
                "reason_text": text, "volume_guid": vg, "volume_type": cand.volume_type,
                "key_package": key_package.is_some(), "rotation_requested": rotate,
            }));
        rec.outcome = AuditOutcome::Success;
        let seq = append_audit(tx, rec, self.now()).await?;
        let updated = sqlx::query(&format!("{CANDIDATE_SELECT} WHERE p.id = $1"))
            .bind(row_id)
            .fetch_one(&mut **tx)
            .await?;
        Ok(Disclosure {
            candidate: candidate_from_row(&updated)?,
            recovery_password: password,
            key_package,
            audit_seq: seq,
        })
    }
}
