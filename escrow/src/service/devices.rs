//! Enrollment tokens and device enrollment, listing, revocation and re-enrollment.

use std::time::Duration;

use serde_json::json;

use super::{EscrowService, all_pages, clean_text, require_role, resolve_page};
use crate::audit::{action, to_micros};
use crate::error::EscrowError;
use crate::model::{
    Actor, AuditOutcome, DeviceFilter, DeviceInfo, EnrollmentTokenInfo, Page, PageRequest, Role,
};
use crate::sealing::{ct_eq, new_token_secret, token_hash};
use crate::store::audit::{self as audit_log, NewAudit};
use crate::store::devices::{NewDevice, name_key};
use crate::store::{Backend, devices, tokens};

/// Enrollment token secrets start with this prefix.
pub const ENROLLMENT_TOKEN_PREFIX: &str = "nue";

/// A computer name: 1-63 characters of letters, digits, '-', '_' (NetBIOS/DNS host label rules, loosely).
pub(crate) fn validate_computer_name(name: &str) -> Result<String, EscrowError> {
    let n = name.trim();
    if n.is_empty()
        || n.len() > 63
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(EscrowError::Validation(format!(
            "computer name {:?} must be 1-63 ASCII letters, digits, '-' or '_'",
            n.chars().take(80).collect::<String>()
        )));
    }
    Ok(n.to_owned())
}

fn validate_domain(d: &str) -> Result<String, EscrowError> {
    let n = d.trim();
    if n.is_empty()
        || n.len() > 253
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(EscrowError::Validation(format!(
            "domain {:?} must be a DNS or NetBIOS domain name (letters, digits, '-', '_', '.')",
            n.chars().take(80).collect::<String>()
        )));
    }
    Ok(n.to_owned())
}

fn validate_cert_sha256(s: &str) -> Result<String, EscrowError> {
    let t = s.trim().replace(':', "");
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EscrowError::Validation(
            "client certificate SHA-256 must be 64 hex digits".into(),
        ));
    }
    Ok(t.to_ascii_lowercase())
}

/// An admin's change to a device record.
#[derive(Clone, Copy, Debug)]
enum DeviceChange {
    Revoke,
    AllowReenroll,
}

fn to_time_duration(d: Duration, what: &str) -> Result<time::Duration, EscrowError> {
    time::Duration::try_from(d).map_err(|_| EscrowError::Validation(format!("{what} is too long")))
}

impl EscrowService {
    /// A new enrollment token (secret returned once, stored as a hash) valid for `max_uses` enrollments within `ttl`.
    pub async fn create_enrollment_token(
        &self,
        actor: &Actor,
        max_uses: u32,
        ttl: Duration,
        note: Option<String>,
    ) -> Result<(EnrollmentTokenInfo, String), EscrowError> {
        require_role(actor, &[Role::Admin], "create enrollment tokens")?;
        if max_uses == 0 || max_uses > 100_000 {
            return Err(EscrowError::Validation(
                "max_uses must be between 1 and 100000".into(),
            ));
        }
        if ttl.is_zero() || ttl > Duration::from_secs(366 * 86_400) {
            return Err(EscrowError::Validation(
                "token lifetime must be between 1 second and 366 days".into(),
            ));
        }
        let note = note
            .map(|n| clean_text("note", &n, 200))
            .transpose()?
            .filter(|n| !n.is_empty());
        let now = self.now();
        let expires = now + to_time_duration(ttl, "token lifetime")?;
        let secret = new_token_secret(ENROLLMENT_TOKEN_PREFIX)?;
        let (_, _, creator) = actor.audit_identity();
        let mut tx = self.inner.db.begin_write().await?;
        let info = tokens::insert_enrollment(
            &mut tx,
            tokens::NewEnrollmentToken {
                hash: token_hash(&secret),
                note: note.as_deref(),
                max_uses,
                created_at: to_micros(now),
                expires_at: to_micros(expires),
                created_by: &creator,
            },
        )
        .await?;
        audit_log::append(
            &mut tx,
            NewAudit::new(actor, action::ENROLLMENT_TOKEN_CREATE, AuditOutcome::Success).detail(
                json!({"token_id": info.id, "max_uses": max_uses, "expires_at": to_micros(expires), "note": note}),
            ),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok((info, secret.to_string()))
    }

    /// One page of the enrollment tokens (no secrets), by id. Role: admin.
    pub async fn list_enrollment_tokens_page(
        &self,
        actor: &Actor,
        page: PageRequest,
    ) -> Result<Page<EnrollmentTokenInfo>, EscrowError> {
        require_role(actor, &[Role::Admin], "list enrollment tokens")?;
        let page = resolve_page(&page)?;
        let rows = tokens::list_enrollment(
            &mut *self.inner.db.conn().await?,
            page.after.unwrap_or(0),
            page.fetch(),
        )
        .await?;
        Ok(page.finish(rows, |t| t.id))
    }

    /// Every enrollment token (no secrets).
    pub async fn list_enrollment_tokens(
        &self,
        actor: &Actor,
    ) -> Result<Vec<EnrollmentTokenInfo>, EscrowError> {
        all_pages(|p| self.list_enrollment_tokens_page(actor, p)).await
    }

    pub async fn revoke_enrollment_token(&self, actor: &Actor, id: i64) -> Result<(), EscrowError> {
        require_role(actor, &[Role::Admin], "revoke enrollment tokens")?;
        let mut tx = self.inner.db.begin_write().await?;
        if !tokens::revoke_enrollment(&mut tx, id, self.now_us()).await? {
            return Err(EscrowError::NotFound(format!(
                "active enrollment token {id}"
            )));
        }
        audit_log::append(
            &mut tx,
            NewAudit::new(
                actor,
                action::ENROLLMENT_TOKEN_REVOKE,
                AuditOutcome::Success,
            )
            .detail(json!({"token_id": id})),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Enroll a device with an enrollment token, binding its client certificate (SHA-256 of the DER).
    ///
    /// Rules: a new computer name creates a device; the same name (and domain) with the same certificate
    /// of an active device is an idempotent retry, answered before any token check (no token use); a revoked device, or an active one with another certificate, needs an admin's
    /// `allow_reenroll` first, after which the new certificate is bound to the existing record (history kept).
    pub async fn enroll_device(
        &self,
        token_secret: &str,
        computer_name: &str,
        domain: Option<&str>,
        serial: Option<&str>,
        client_cert_sha256: &str,
    ) -> Result<DeviceInfo, EscrowError> {
        let name = validate_computer_name(computer_name)?;
        let domain = domain.map(validate_domain).transpose()?;
        let serial = serial
            .map(|s| clean_text("serial", s, 128))
            .transpose()?
            .filter(|s| !s.is_empty());
        let cert = validate_cert_sha256(client_cert_sha256)?;
        let hash = token_hash(token_secret.trim());
        let now = self.now_us();
        let mut tx = self.inner.db.begin_write().await?;
        let key = name_key(&name, domain.as_deref());
        let existing = devices::by_name_key(&mut tx, &key).await?;
        if let Some(d) = existing
            .as_ref()
            .filter(|d| !d.revoked && !d.reenroll_allowed && d.client_cert_sha256 == cert)
        {
            // A retried enrollment (the agent lost our answer, or its token has expired since):
            // the certificate already authenticates this active device, so no token is checked
            // or used and nothing changes.
            return Ok(d.clone());
        }
        let tok = tokens::enrollment_by_hash(&mut tx, &hash).await?;
        let Some(tok) = tok.filter(|t| ct_eq(&t.hash, &hash)) else {
            return Err(EscrowError::Unauthorized);
        };
        if tok.revoked {
            return Err(EscrowError::Gone(
                "this enrollment token was revoked; ask an admin for a new one".into(),
            ));
        }
        if tok.expires_at <= now {
            return Err(EscrowError::Gone(
                "this enrollment token has expired; ask an admin for a new one".into(),
            ));
        }
        if tok.uses >= tok.max_uses {
            return Err(EscrowError::Gone(
                "this enrollment token is used up; ask an admin for a new one".into(),
            ));
        }
        if let Some(other_name) = devices::other_active_with_cert(&mut tx, &cert, &key).await? {
            return Err(EscrowError::Conflict(format!(
                "this client certificate is already bound to device {other_name}; each device needs its own certificate"
            )));
        }
        let new = NewDevice {
            computer_name: &name,
            domain: domain.as_deref(),
            serial: serial.as_deref(),
            first_seen: now,
            cert_sha256: &cert,
            reenroll_allowed: false,
            enrolled_token: Some(tok.id),
        };
        let (id, reenrolled) = match existing {
            None => (devices::insert(&mut tx, &new).await?, false),
            Some(d) if d.reenroll_allowed => {
                devices::rebind(&mut tx, d.id, &new).await?;
                (d.id, true)
            }
            Some(d) if d.revoked => {
                return Err(EscrowError::Forbidden(format!(
                    "device {} was revoked; an admin must allow re-enrollment before it can enroll again",
                    d.computer_name
                )));
            }
            Some(d) => {
                return Err(EscrowError::Conflict(format!(
                    "device {} is already enrolled with another certificate; an admin must allow re-enrollment",
                    d.computer_name
                )));
            }
        };
        tokens::count_enrollment_use(&mut tx, tok.id).await?;
        let info = devices::by_id(&mut tx, id)
            .await?
            .ok_or_else(|| EscrowError::Storage("the enrolled device vanished".into()))?;
        audit_log::append(
            &mut tx,
            NewAudit::new(&Actor::device(&info), action::ENROLL, AuditOutcome::Success)
                .device(id, &info.computer_name)
                .detail(json!({"token_id": tok.id, "cert_sha256": cert, "reenrolled": reenrolled, "domain": domain})),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        self.devices_changed();
        Ok(info)
    }

    /// The active device bound to this client certificate; None if unknown or revoked.
    ///
    /// Only a SQLite database is served from the cache: it belongs to this appliance alone, and
    /// this service invalidates the cache on every change. A PostgreSQL database may be shared by
    /// several appliances, and a revocation through one must be refused by all at once, so there
    /// what decides access is read from the database on every request.
    pub async fn device_by_cert(
        &self,
        client_cert_sha256: &str,
    ) -> Result<Option<DeviceInfo>, EscrowError> {
        let Ok(cert) = validate_cert_sha256(client_cert_sha256) else {
            return Ok(None);
        };
        if self.backend() == Backend::Postgres {
            return devices::active_by_cert(&mut *self.inner.db.conn().await?, &cert).await;
        }
        if let Some(d) = self.inner.devices.get(&cert) {
            return Ok(Some(d));
        }
        let generation = self.inner.devices.generation();
        let device = devices::active_by_cert(&mut *self.inner.db.conn().await?, &cert).await?;
        if let Some(d) = &device {
            self.inner.devices.insert(generation, cert, d.clone());
        }
        Ok(device)
    }

    /// Every device matching `filter`.
    pub async fn list_devices(
        &self,
        actor: &Actor,
        filter: DeviceFilter,
    ) -> Result<Vec<DeviceInfo>, EscrowError> {
        all_pages(|p| self.list_devices_page(actor, &filter, p)).await
    }

    /// One page of the devices matching `filter`, by device id. Roles: admin, auditor.
    pub async fn list_devices_page(
        &self,
        actor: &Actor,
        filter: &DeviceFilter,
        page: PageRequest,
    ) -> Result<Page<DeviceInfo>, EscrowError> {
        require_role(actor, &[Role::Admin, Role::Auditor], "list devices")?;
        let page = resolve_page(&page)?;
        let stale_before = filter.stale_for_secs.map(|s| {
            self.now_us().saturating_sub(
                i64::try_from(s)
                    .unwrap_or(i64::MAX / 2)
                    .saturating_mul(1_000_000),
            )
        });
        let rows = devices::list(
            &mut *self.inner.db.conn().await?,
            filter,
            stale_before,
            page.after.unwrap_or(0),
            page.fetch(),
        )
        .await?;
        Ok(page.finish(rows, |d| d.id))
    }

    pub async fn revoke_device(&self, actor: &Actor, device_id: i64) -> Result<(), EscrowError> {
        self.device_admin_update(actor, device_id, DeviceChange::Revoke)
            .await
    }

    /// Let the next enrollment with a valid token bind a new certificate to this device (keys are kept).
    pub async fn allow_reenroll(&self, actor: &Actor, device_id: i64) -> Result<(), EscrowError> {
        self.device_admin_update(actor, device_id, DeviceChange::AllowReenroll)
            .await
    }

    async fn device_admin_update(
        &self,
        actor: &Actor,
        device_id: i64,
        change: DeviceChange,
    ) -> Result<(), EscrowError> {
        require_role(actor, &[Role::Admin], "manage devices")?;
        let mut tx = self.inner.db.begin_write().await?;
        let Some(device) = devices::by_id(&mut tx, device_id).await? else {
            return Err(EscrowError::NotFound(format!("device {device_id}")));
        };
        let act = match change {
            DeviceChange::Revoke => {
                devices::revoke(&mut tx, device_id, self.now_us()).await?;
                action::DEVICE_REVOKE
            }
            DeviceChange::AllowReenroll => {
                devices::allow_reenroll(&mut tx, device_id).await?;
                action::DEVICE_ALLOW_REENROLL
            }
        };
        audit_log::append(
            &mut tx,
            NewAudit::new(actor, act, AuditOutcome::Success)
                .device(device_id, &device.computer_name),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        self.devices_changed();
        Ok(())
    }
}
