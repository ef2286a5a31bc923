//! Help-desk lookups and disclosure. A disclosure decrypts, marks, queues rotation and appends its audit
//! record in one transaction; the password leaves this function only after that commit (fail closed).

use std::net::IpAddr;

use serde_json::json;
use zeroize::Zeroizing;

use super::disclose_target::{Choice, DeviceSelector, choose};
use super::{EscrowService, all_pages, clean_text, require_role, resolve_page};
use crate::audit::action;
use crate::error::EscrowError;
use crate::guid::parse_prefix8;
use crate::model::{
    Actor, AuditOutcome, DiscloseRequest, Disclosure, DisclosureReason, KeyCandidate, Page,
    PageRequest, ProtectorId, Role, parse_recovery_password,
};
use crate::sealing::aad;
use crate::store::Tx;
use crate::store::audit::{self as audit_log, NewAudit};
use crate::store::keys::{self, volume_db};

fn reason_codes() -> String {
    DisclosureReason::ALL
        .iter()
        .map(DisclosureReason::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl EscrowService {
    /// One page of the keys of active devices whose recovery key ID starts with these 8 hex
    /// digits (indexed lookup), newest first, each with its device's id, name, domain, enrolment
    /// time, certificate fingerprint and last check-in (what tells a clone from the real server).
    /// No secrets. Roles: admin, helpdesk.
    pub async fn find_by_prefix_page(
        &self,
        actor: &Actor,
        prefix8: &str,
        page: PageRequest,
    ) -> Result<Page<KeyCandidate>, EscrowError> {
        require_role(
            actor,
            &[Role::Admin, Role::Helpdesk],
            "look up recovery keys",
        )?;
        let prefix = parse_prefix8(prefix8).map_err(EscrowError::Validation)?;
        let page = resolve_page(&page)?;
        let rows = keys::by_prefix(
            &mut *self.inner.db.conn().await?,
            &prefix,
            page.after.unwrap_or(i64::MAX),
            page.fetch(),
        )
        .await?;
        Ok(page.finish(rows, |(_, row)| *row).map(|(c, _)| c))
    }

    /// Every key of [`Self::find_by_prefix_page`].
    pub async fn find_by_prefix(
        &self,
        actor: &Actor,
        prefix8: &str,
    ) -> Result<Vec<KeyCandidate>, EscrowError> {
        all_pages(|p| self.find_by_prefix_page(actor, prefix8, p)).await
    }

    /// One page of the keys of active devices with this computer name (any case, any domain),
    /// newest first, history included. Roles: admin, helpdesk.
    pub async fn find_by_device_page(
        &self,
        actor: &Actor,
        device_name: &str,
        page: PageRequest,
    ) -> Result<Page<KeyCandidate>, EscrowError> {
        require_role(
            actor,
            &[Role::Admin, Role::Helpdesk],
            "look up recovery keys",
        )?;
        let name = super::devices::validate_computer_name(device_name)?;
        let page = resolve_page(&page)?;
        let rows = keys::by_device_name(
            &mut *self.inner.db.conn().await?,
            &name,
            page.after.unwrap_or(i64::MAX),
            page.fetch(),
        )
        .await?;
        Ok(page.finish(rows, |(_, row)| *row).map(|(c, _)| c))
    }

    /// Every key of [`Self::find_by_device_page`].
    pub async fn find_by_device(
        &self,
        actor: &Actor,
        device_name: &str,
    ) -> Result<Vec<KeyCandidate>, EscrowError> {
        all_pages(|p| self.find_by_device_page(actor, device_name, p)).await
    }

    /// Disclose one recovery password (convenience form of [`Self::disclose_request`]).
    pub async fn disclose(
        &self,
        actor: &Actor,
        protector_id: &ProtectorId,
        device_name: Option<&str>,
        reason: DisclosureReason,
        reason_text: Option<&str>,
        client_addr: Option<IpAddr>,
    ) -> Result<Disclosure, EscrowError> {
        self.disclose_request(
            actor,
            &DiscloseRequest {
                protector_id: *protector_id,
                device_id: None,
                device_name: device_name.map(str::to_owned),
                reason: Some(reason.as_str().to_owned()),
                reason_text: reason_text.map(str::to_owned),
                client_addr,
            },
        )
        .await
    }

    /// Disclose one recovery password. The reason is mandatory (`other` needs text); helpdesk must
    /// name the device (by id, `NAME` or `DOMAIN\NAME`); when several active devices hold the key
    /// ID, the device must be named unambiguously. Revoked devices are ignored. Every refusal is
    /// audited, with the key's device when the request identifies it (or only one device holds it).
    pub async fn disclose_request(
        &self,
        actor: &Actor,
        req: &DiscloseRequest,
    ) -> Result<Disclosure, EscrowError> {
        let now = self.now();
        let now_us = self.now_us();
        let client = req.client_addr.map(|a| a.to_string());
        let selector = DeviceSelector::new(req.device_id, req.device_name.as_deref());
        // Not while a DEK rotation swaps keys (it holds this lock exclusively).
        let _keys = self.inner.seal_lock.read().await;
        let mut tx = self.inner.db.begin_write().await?;
        let given_reason = req
            .reason
            .as_deref()
            .map(|r| r.chars().take(64).collect::<String>());
        let base = NewAudit::new(actor, action::DISCLOSE, AuditOutcome::Failure)
            .protector(req.protector_id.to_string())
            .reason(given_reason)
            .client(client.clone());
        match self
            .disclose_in_tx(&mut tx, actor, req, &selector, base.clone(), now_us)
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
                let holders = keys::holders(&mut tx, &req.protector_id).await?;
                let holder_ids: Vec<i64> = holders.iter().map(|(c, _)| c.device_id).collect();
                // The key's device: the one the request selects, else the only holder (a request
                // naming the wrong device is still found under the key's device in the report).
                let only_holder = match holders.as_slice() {
                    [(c, _)] => Some((c.device_id, c.device_name.clone())),
                    _ => None,
                };
                let device = match choose(holders, &selector) {
                    Choice::One((c, _)) => Some((c.device_id, c.device_name)),
                    Choice::NoMatch | Choice::Ambiguous(_) => only_holder,
                };
                let mut rec = base.detail(json!({
                    "error": e.public_message(),
                    "device_name_given": req.device_name,
                    "device_id_given": req.device_id,
                    "holder_device_ids": holder_ids,
                }));
                if let Some((id, name)) = device {
                    rec = rec.device(id, &name);
                }
                audit_log::append(&mut tx, rec, now).await?;
                tx.commit().await?;
                Err(e)
            }
        }
    }

    async fn disclose_in_tx(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        req: &DiscloseRequest,
        selector: &DeviceSelector,
        base: NewAudit,
        now_us: i64,
    ) -> Result<Disclosure, EscrowError> {
        let protector_id = &req.protector_id;
        let role = require_role(
            actor,
            &[Role::Admin, Role::Helpdesk],
            "disclose recovery keys",
        )?;
        let reason: DisclosureReason = req
            .reason
            .as_deref()
            .ok_or_else(|| {
                EscrowError::Validation(format!("reason is required: one of {}", reason_codes()))
            })?
            .parse()
            .map_err(|e: String| EscrowError::Validation(format!("reason: {e}")))?;
        let text = req
            .reason_text
            .as_deref()
            .map(|t| clean_text("reason text", t, 500))
            .transpose()?
            .filter(|t| !t.is_empty());
        if reason == DisclosureReason::Other && text.is_none() {
            return Err(EscrowError::Validation(
                "reason 'other' needs a free-text explanation".into(),
            ));
        }
        if role == Role::Helpdesk && selector.is_empty() {
            return Err(EscrowError::Validation(
                "the helpdesk role must name the device (device_id, or device_name as NAME or DOMAIN\\NAME) as well as the key ID".into(),
            ));
        }
        let holders = keys::holders(tx, protector_id).await?;
        if holders.is_empty() {
            return Err(EscrowError::NotFound(format!(
                "no escrowed key with ID {protector_id}"
            )));
        }
        let (cand, row_id) = match choose(holders, selector) {
            Choice::One(c) => c,
            Choice::NoMatch => {
                return Err(EscrowError::Forbidden(format!(
                    "key {protector_id} does not belong to the device named"
                )));
            }
            Choice::Ambiguous(devices) => {
                let listed: Vec<String> = devices
                    .iter()
                    .map(|(id, name)| format!("device_id {id} ({name})"))
                    .collect();
                return Err(EscrowError::Conflict(format!(
                    "key ID {protector_id} is escrowed by {} devices: {}; give device_id (listed by GET /keys?prefix=) to choose",
                    devices.len(),
                    listed.join(", ")
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
            reason,
            recovery_password: password,
            key_package,
            audit_seq: seq,
        })
    }
}
