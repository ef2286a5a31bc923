//! TPM owner authorisation retrieval (the MBAM "Manage TPM" page): audited like a recovery
//! password disclosure, with MBAM's reasons; the value leaves only after its audit record commits.

use std::net::IpAddr;

use serde_json::json;
use zeroize::Zeroizing;

use super::{EscrowService, clean_text, require_role};
use crate::audit::{action, from_micros};
use crate::error::EscrowError;
use crate::model::{Actor, AuditOutcome, Role, TpmReason};
use crate::sealing::aad;
use crate::store::audit::{self as audit_log, NewAudit};
use crate::store::tpm;

/// A retrieved TPM owner authorisation.
#[derive(Debug)]
pub struct TpmOwnerAuth {
    pub device_id: i64,
    pub device_name: String,
    pub domain: Option<String>,
    pub escrowed_at: time::OffsetDateTime,
    pub owner_auth: Zeroizing<String>,
    pub audit_seq: i64,
}

impl EscrowService {
    /// The TPM owner authorisation a device escrowed. Failures are audited too.
    pub async fn disclose_tpm_owner_auth(
        &self,
        actor: &Actor,
        device_name: &str,
        reason: TpmReason,
        reason_text: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<TpmOwnerAuth, EscrowError> {
        let now = self.now();
        let client = client.map(|a| a.to_string());
        let base = NewAudit::new(
            actor,
            action::TPM_OWNER_AUTH_DISCLOSE,
            AuditOutcome::Failure,
        )
        .reason(Some(reason.as_str().to_owned()))
        .client(client);
        let _keys = self.seal_lock_read().await;
        let mut tx = self.inner.db.begin_write().await?;
        let result: Result<_, EscrowError> = async {
            require_role(actor, &[Role::Admin, Role::Helpdesk], "retrieve TPM owner authorisation")?;
            let text = reason_text
                .map(|t| clean_text("reason text", t, 500))
                .transpose()?
                .filter(|t| !t.is_empty());
            if reason == TpmReason::Other && text.is_none() {
                return Err(EscrowError::Validation("reason 'other' needs a free-text explanation".into()));
            }
            let name = super::devices::validate_computer_name(device_name)?;
            let found = tpm::devices_named(&mut tx, &name).await?;
            let (id, dev_name, domain) = match found.as_slice() {
                [] => return Err(EscrowError::NotFound(format!("no enrolled device named {name}"))),
                [one] => one.clone(),
                _ => return Err(EscrowError::Conflict(format!("several enrolled devices are named {name}; ask an admin to revoke the stale one"))),
            };
            let Some((sealed, updated_at)) = tpm::for_device(&mut tx, id).await? else {
                return Err(EscrowError::NotFound(format!(
                    "{dev_name} never escrowed a TPM owner authorisation (Windows 10 1607 and later do not keep it)"
                )));
            };
            let plain = self.sealer().open(&sealed, &aad::tpm_owner_auth(id))?;
            let value = Zeroizing::new(
                String::from_utf8(plain.to_vec())
                    .map_err(|_| EscrowError::Crypto("stored TPM owner authorisation is not text".into()))?,
            );
            Ok((id, dev_name, domain, updated_at, value, text))
        }
        .await;
        match result {
            Ok((id, dev_name, domain, updated_at, value, text)) => {
                let mut rec = base
                    .device(id, &dev_name)
                    .detail(json!({ "reason_text": text }));
                rec.outcome = AuditOutcome::Success;
                let seq = audit_log::append(&mut tx, rec, now).await?;
                tx.commit().await?;
                Ok(TpmOwnerAuth {
                    device_id: id,
                    device_name: dev_name,
                    domain,
                    escrowed_at: from_micros(updated_at),
                    owner_auth: value,
                    audit_seq: seq,
                })
            }
            Err(e) => {
                drop(tx);
                let mut tx = self.inner.db.begin_write().await?;
                let rec = base
                    .detail(json!({"error": e.public_message(), "device_name_given": device_name}));
                audit_log::append(&mut tx, rec, now).await?;
                tx.commit().await?;
                Err(e)
            }
        }
    }
}
