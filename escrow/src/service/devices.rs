//! Enrollment tokens and device enrollment, listing, revocation and re-enrollment.

use std::time::Duration;

use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{EscrowService, clean_text, require_role};
use crate::audit::{action, from_micros, to_micros};
use crate::error::EscrowError;
use crate::model::{Actor, AuditOutcome, DeviceFilter, DeviceInfo, EnrollmentTokenInfo, Role};
use crate::sealing::{ct_eq, new_token_secret, token_hash};
use crate::store::{NewAudit, append_audit, b2i};

pub(crate) const DEVICE_COLUMNS: &str = "id, computer_name, domain, serial, first_seen, last_check_in, cert_sha256, revoked, reenroll_allowed";

pub(crate) fn device_from_row(row: &AnyRow) -> Result<DeviceInfo, EscrowError> {
    Ok(DeviceInfo {
        id: row.try_get(0)?,
        computer_name: row.try_get(1)?,
        domain: row.try_get(2)?,
        serial: row.try_get(3)?,
        first_seen: from_micros(row.try_get(4)?),
        last_check_in: row.try_get::<Option<i64>, _>(5)?.map(from_micros),
        client_cert_sha256: row.try_get(6)?,
        revoked: row.try_get::<i64, _>(7)? != 0,
        reenroll_allowed: row.try_get::<i64, _>(8)? != 0,
    })
}

const TOKEN_COLUMNS: &str = "id, note, max_uses, uses, created_at, expires_at, revoked_at";

fn token_from_row(row: &AnyRow) -> Result<EnrollmentTokenInfo, EscrowError> {
    let max: i64 = row.try_get(2)?;
    let uses: i64 = row.try_get(3)?;
    Ok(EnrollmentTokenInfo {
        id: row.try_get(0)?,
        note: row.try_get(1)?,
        max_uses: u32::try_from(max).unwrap_or(u32::MAX),
        uses: u32::try_from(uses).unwrap_or(u32::MAX),
        created_at: from_micros(row.try_get(4)?),
        expires_at: from_micros(row.try_get(5)?),
        revoked: row.try_get::<Option<i64>, _>(6)?.is_some(),
    })
}

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

pub(crate) fn name_key(computer_name: &str, domain: Option<&str>) -> String {
    format!(
        "{}\\{}",
        computer_name.to_ascii_lowercase(),
        domain.unwrap_or("").to_ascii_lowercase()
    )
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
        let row = sqlx::query(&format!(
            "INSERT INTO enrollment_tokens (token_hash, note, max_uses, uses, created_at, expires_at, created_by) \
             VALUES ($1, $2, $3, 0, $4, $5, $6) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(token_hash(&secret))
        .bind(note.clone())
        .bind(i64::from(max_uses))
        .bind(to_micros(now))
        .bind(to_micros(expires))
        .bind(creator)
        .fetch_one(&mut *tx)
        .await?;
        let info = token_from_row(&row)?;
        append_audit(
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

    pub async fn list_enrollment_tokens(
        &self,
        actor: &Actor,
    ) -> Result<Vec<EnrollmentTokenInfo>, EscrowError> {
        require_role(actor, &[Role::Admin], "list enrollment tokens")?;
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens ORDER BY id"
        ))
        .fetch_all(&self.inner.db.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    pub async fn revoke_enrollment_token(&self, actor: &Actor, id: i64) -> Result<(), EscrowError> {
        require_role(actor, &[Role::Admin], "revoke enrollment tokens")?;
        let mut tx = self.inner.db.begin_write().await?;
        let n = sqlx::query(
            "UPDATE enrollment_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(self.now_us())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(EscrowError::NotFound(format!(
                "active enrollment token {id}"
            )));
        }
        append_audit(
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
    /// Rules: a new computer name creates a device; the same name with the same certificate is an idempotent
    /// retry (no token use); a revoked device, or an active one with another certificate, needs an admin's
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
        let tok = sqlx::query("SELECT id, token_hash, max_uses, uses, expires_at, revoked_at FROM enrollment_tokens WHERE token_hash = $1")
            .bind(hash.clone())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(tok) = tok.filter(|t| t.try_get::<Vec<u8>, _>(1).is_ok_and(|h| ct_eq(&h, &hash)))
        else {
            return Err(EscrowError::Unauthorized);
        };
        let token_id: i64 = tok.try_get(0)?;
        let (max, uses): (i64, i64) = (tok.try_get(2)?, tok.try_get(3)?);
        if tok.try_get::<Option<i64>, _>(5)?.is_some() {
            return Err(EscrowError::Gone(
                "this enrollment token was revoked; ask an admin for a new one".into(),
            ));
        }
        if tok.try_get::<i64, _>(4)? <= now {
            return Err(EscrowError::Gone(
                "this enrollment token has expired; ask an admin for a new one".into(),
            ));
        }
        let key = name_key(&name, domain.as_deref());
        let existing = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE name_key = $1"
        ))
        .bind(key.clone())
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| device_from_row(&r))
        .transpose()?;
        if let Some(d) = existing
            .as_ref()
            .filter(|d| !d.revoked && !d.reenroll_allowed && d.client_cert_sha256 == cert)
        {
            // A retried enrollment (the agent lost our answer): same binding, nothing to change.
            return Ok(d.clone());
        }
        if uses >= max {
            return Err(EscrowError::Gone(
                "this enrollment token is used up; ask an admin for a new one".into(),
            ));
        }
        let other =
            sqlx::query("SELECT computer_name FROM devices WHERE cert_sha256 = $1 AND revoked = 0 AND name_key <> $2")
                .bind(cert.clone())
                .bind(key.clone())
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(o) = other {
            let other_name: String = o.try_get(0)?;
            return Err(EscrowError::Conflict(format!(
                "this client certificate is already bound to device {other_name}; each device needs its own certificate"
            )));
        }
        let (id, reenrolled) = match existing {
            None => {
                let id: i64 = sqlx::query(
                    "INSERT INTO devices (computer_name, domain, name_key, serial, first_seen, cert_sha256, revoked, reenroll_allowed, enrolled_token) \
                     VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7) RETURNING id",
                )
                .bind(name.clone())
                .bind(domain.clone())
                .bind(key)
                .bind(serial.clone())
                .bind(now)
                .bind(cert.clone())
                .bind(token_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
                (id, false)
            }
            Some(d) if d.reenroll_allowed => {
                sqlx::query(
                    "UPDATE devices SET cert_sha256 = $1, revoked = 0, revoked_at = NULL, reenroll_allowed = 0, \
                     serial = COALESCE($2, serial), enrolled_token = $3, computer_name = $4, domain = $5 WHERE id = $6",
                )
                .bind(cert.clone())
                .bind(serial.clone())
                .bind(token_id)
                .bind(name.clone())
                .bind(domain.clone())
                .bind(d.id)
                .execute(&mut *tx)
                .await?;
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
        sqlx::query("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = $1")
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let info = device_from_row(&row)?;
        append_audit(
            &mut tx,
            NewAudit::new(&Actor::device(&info), action::ENROLL, AuditOutcome::Success)
                .device(id, &info.computer_name)
                .detail(json!({"token_id": token_id, "cert_sha256": cert, "reenrolled": reenrolled, "domain": domain})),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        self.devices_changed();
        Ok(info)
    }

    /// The active device bound to this client certificate; None if unknown or revoked.
    pub async fn device_by_cert(
        &self,
        client_cert_sha256: &str,
    ) -> Result<Option<DeviceInfo>, EscrowError> {
        let Ok(cert) = validate_cert_sha256(client_cert_sha256) else {
            return Ok(None);
        };
        if let Some(d) = self.inner.devices.get(&cert) {
            return Ok(Some(d));
        }
        let generation = self.inner.devices.generation();
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE cert_sha256 = $1 AND revoked = 0"
        ))
        .bind(cert.clone())
        .fetch_optional(&self.inner.db.pool)
        .await?;
        let device = row.map(|r| device_from_row(&r)).transpose()?;
        if let Some(d) = &device {
            self.inner.devices.insert(generation, cert, d.clone());
        }
        Ok(device)
    }

    pub async fn list_devices(
        &self,
        actor: &Actor,
        filter: DeviceFilter,
    ) -> Result<Vec<DeviceInfo>, EscrowError> {
        require_role(actor, &[Role::Admin, Role::Auditor], "list devices")?;
        let pattern = filter.name_contains.as_deref().map(|s| {
            format!(
                "%{}%",
                s.trim().to_ascii_lowercase().replace(['%', '_', '\\'], "")
            )
        });
        let stale_before = filter.stale_for_secs.map(|s| {
            self.now_us().saturating_sub(
                i64::try_from(s)
                    .unwrap_or(i64::MAX / 2)
                    .saturating_mul(1_000_000),
            )
        });
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE ($1 = 1 OR revoked = 0) \
             AND ($2 IS NULL OR name_key LIKE $2) \
             AND ($3 IS NULL OR last_check_in IS NULL OR last_check_in < $3) ORDER BY computer_name, id"
        ))
        .bind(b2i(filter.include_revoked))
        .bind(pattern)
        .bind(stale_before)
        .fetch_all(&self.inner.db.pool)
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    pub async fn revoke_device(&self, actor: &Actor, device_id: i64) -> Result<(), EscrowError> {
        self.device_admin_update(
            actor,
            device_id,
            "UPDATE devices SET revoked = 1, revoked_at = $1, reenroll_allowed = 0 WHERE id = $2",
            action::DEVICE_REVOKE,
        )
        .await
    }

    /// Let the next enrollment with a valid token bind a new certificate to this device (keys are kept).
    pub async fn allow_reenroll(&self, actor: &Actor, device_id: i64) -> Result<(), EscrowError> {
        self.device_admin_update(
            actor,
            device_id,
            "UPDATE devices SET reenroll_allowed = 1 WHERE id = $2 AND $1 IS NOT NULL",
            action::DEVICE_ALLOW_REENROLL,
        )
        .await
    }

    async fn device_admin_update(
        &self,
        actor: &Actor,
        device_id: i64,
        sql: &str,
        act: &'static str,
    ) -> Result<(), EscrowError> {
        require_role(actor, &[Role::Admin], "manage devices")?;
        let mut tx = self.inner.db.begin_write().await?;
        let name: Option<String> = sqlx::query("SELECT computer_name FROM devices WHERE id = $1")
            .bind(device_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let Some(name) = name else {
            return Err(EscrowError::NotFound(format!("device {device_id}")));
        };
        sqlx::query(sql)
            .bind(self.now_us())
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            NewAudit::new(actor, act, AuditOutcome::Success).device(device_id, &name),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        self.devices_changed();
        Ok(())
    }
}
