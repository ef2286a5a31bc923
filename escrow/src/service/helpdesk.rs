//! Help-desk lookups and disclosure. A disclosure decrypts, marks, queues rotation and appends its audit
//! record in one transaction; the password leaves this function only after that commit (fail closed).

use std::net::IpAddr;

use serde_json::json;
use zeroize::Zeroizing;

use super::{EscrowService, clean_text, require_role};
use crate::audit::action;
use crate::error::EscrowError;
use crate::guid::parse_prefix8;
use crate::model::{
    Actor, AuditOutcome, Disclosure, DisclosureReason, KeyCandidate, ProtectorId, Role,
    parse_recovery_password,
};
use crate::sealing::aad;
use crate::store::Tx;
use crate::store::audit::{self as audit_log, NewAudit};
use crate::store::keys::{self, volume_db};

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
        keys::by_prefix(&mut *self.inner.db.conn().await?, &prefix, MAX_CANDIDATES).await
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
        keys::by_device_name(&mut *self.inner.db.conn().await?, &name, 1000).await
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
                audit_log::append(&mut tx, rec, now).await?;
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
        let holders = keys::holders(tx, protector_id).await?;
        if holders.is_empty() {
            return Err(EscrowError::NotFound(format!(
                "no escrowed key with ID {protector_id}"
            )));
        }
        let mut matching: Vec<(KeyCandidate, i64)> = holders
            .into_iter()
            .filter(|(c, _)| device_name.is_none_or(|n| c.device_name.eq_ignore_ascii_case(n)))
            .collect();
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
        let secret = keys::sealed_secret(tx, row_id).await?;
        let vg = volume_db(&cand.volume_guid);
        let pid = protector_id.db_string();
        let sealer = self.sealer();
        let plain = sealer.open(
            &secret.password,
            &aad::recovery_password(cand.device_id, &vg, &pid),
        )?;
        let pw_text = Zeroizing::new(
            String::from_utf8(plain.to_vec())
                .map_err(|_| EscrowError::Crypto("stored password is not text".into()))?,
        );
        let password = parse_recovery_password(&pw_text)
            .map_err(|e| EscrowError::Crypto(format!("stored password is invalid: {e}")))?;
        let key_package = secret
            .key_package
            .map(|k| {
                sealer
                    .open(&k, &aad::key_package(cand.device_id, &vg, &pid))
                    .map(|p| p.to_vec())
            })
            .transpose()?;
        // A superseded (historical) key is no longer on the disk: nothing to rotate.
        let rotate = !secret.superseded;
        keys::mark_disclosed(tx, row_id, now_us, rotate).await?;
        let mut rec = base
            .device(cand.device_id, &cand.device_name)
            .detail(json!({
                "reason_text": text, "volume_guid": vg, "volume_type": cand.volume_type,
                "key_package": key_package.is_some(), "rotation_requested": rotate,
            }));
        rec.outcome = AuditOutcome::Success;
        let seq = audit_log::append(tx, rec, self.now()).await?;
        Ok(Disclosure {
            candidate: keys::by_row(tx, row_id).await?,
            recovery_password: password,
            key_package,
            audit_seq: seq,
        })
    }
}
