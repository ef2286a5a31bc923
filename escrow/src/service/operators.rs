//! Operators and their personal API tokens (stored as SHA-256 hashes only).

use std::time::Duration;

use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{EscrowService, clean_text, require_role};
use crate::audit::{action, from_micros, to_micros};
use crate::error::EscrowError;
use crate::model::{Actor, ApiTokenInfo, AuditOutcome, OperatorInfo, Role};
use crate::sealing::{ct_eq, new_token_secret, token_hash};
use crate::store::{NewAudit, append_audit};

const OPERATOR_COLUMNS: &str = "id, name, role, disabled, created_at";

fn operator_from_row(row: &AnyRow) -> Result<OperatorInfo, EscrowError> {
    let role: String = row.try_get(2)?;
    Ok(OperatorInfo {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        role: role.parse().map_err(EscrowError::Storage)?,
        disabled: row.try_get::<i64, _>(3)? != 0,
        created_at: from_micros(row.try_get(4)?),
    })
}

fn validate_operator_name(name: &str) -> Result<String, EscrowError> {
    let n = clean_text("operator name", name, 64)?;
    if n.is_empty() || !n.chars().all(|c| c.is_alphanumeric() || "._-@".contains(c)) {
        return Err(EscrowError::Validation(format!(
            "operator name {n:?} must be 1-64 letters, digits, '.', '_', '-' or '@'"
        )));
    }
    Ok(n)
}

/// Operator token secrets start with this prefix so leaked tokens are recognisable by secret scanners.
pub const OPERATOR_TOKEN_PREFIX: &str = "nuo";

impl EscrowService {
    /// Create the first admin and a token for it (local CLI only). Refuses if an enabled admin exists.
    pub async fn bootstrap_admin(&self, name: &str) -> Result<(OperatorInfo, String), EscrowError> {
        self.bootstrap_admin_forced(name, false).await
    }

    /// As [`EscrowService::bootstrap_admin`]; `force` creates another admin even if one exists (lost token).
    pub async fn bootstrap_admin_forced(
        &self,
        name: &str,
        force: bool,
    ) -> Result<(OperatorInfo, String), EscrowError> {
        let name = validate_operator_name(name)?;
        let now = self.now_us();
        let mut tx = self.inner.db.begin_write().await?;
        let admins: i64 =
            sqlx::query("SELECT COUNT(*) FROM operators WHERE role = 'admin' AND disabled = 0")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        if admins > 0 && !force {
            return Err(EscrowError::Conflict(
                "an admin operator already exists; ask an admin for a token, or bootstrap with --force on the appliance".into(),
            ));
        }
        let exists = sqlx::query("SELECT id FROM operators WHERE name = $1")
            .bind(name.clone())
            .fetch_optional(&mut *tx)
            .await?;
        let id: i64 = match exists {
            Some(r) => {
                let id: i64 = r.try_get(0)?;
                sqlx::query("UPDATE operators SET role = 'admin', disabled = 0, disabled_at = NULL WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                id
            }
            None => sqlx::query(
                "INSERT INTO operators (name, role, disabled, created_at) VALUES ($1, 'admin', 0, $2) RETURNING id",
            )
            .bind(name.clone())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?,
        };
        let secret = new_token_secret(OPERATOR_TOKEN_PREFIX)?;
        let token_id: i64 = sqlx::query(
            "INSERT INTO api_tokens (operator_id, token_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(id)
        .bind(token_hash(&secret))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let actor = Actor::local(format!("bootstrap:{name}"));
        append_audit(
            &mut tx,
            NewAudit::new(&actor, action::OPERATOR_BOOTSTRAP, AuditOutcome::Success).detail(
                json!({"operator_id": id, "operator": name, "role": "admin", "token_id": token_id, "forced": force}),
            ),
            self.now(),
        )
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let info = operator_from_row(&row)?;
        tx.commit().await?;
        Ok((info, secret.to_string()))
    }

    pub async fn create_operator(
        &self,
        actor: &Actor,
        name: &str,
        role: Role,
    ) -> Result<OperatorInfo, EscrowError> {
        require_role(actor, &[Role::Admin], "manage operators")?;
        let name = validate_operator_name(name)?;
        let mut tx = self.inner.db.begin_write().await?;
        if sqlx::query("SELECT id FROM operators WHERE name = $1")
            .bind(name.clone())
            .fetch_optional(&mut *tx)
            .await?
            .is_some()
        {
            return Err(EscrowError::Conflict(format!(
                "an operator named {name:?} already exists"
            )));
        }
        let row = sqlx::query(&format!(
            "INSERT INTO operators (name, role, disabled, created_at) VALUES ($1, $2, 0, $3) RETURNING {OPERATOR_COLUMNS}"
        ))
        .bind(name.clone())
        .bind(role.as_str())
        .bind(self.now_us())
        .fetch_one(&mut *tx)
        .await?;
        let info = operator_from_row(&row)?;
        append_audit(
            &mut tx,
            NewAudit::new(actor, action::OPERATOR_CREATE, AuditOutcome::Success)
                .detail(json!({"operator_id": info.id, "operator": name, "role": role})),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(info)
    }

    pub async fn set_operator_role(
        &self,
        actor: &Actor,
        id: i64,
        role: Role,
    ) -> Result<(), EscrowError> {
        require_role(actor, &[Role::Admin], "manage operators")?;
        let mut tx = self.inner.db.begin_write().await?;
        let old = sqlx::query("SELECT role, name FROM operators WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(old) = old else {
            return Err(EscrowError::NotFound(format!("operator {id}")));
        };
        let old_role: String = old.try_get(0)?;
        let name: String = old.try_get(1)?;
        if old_role == Role::Admin.as_str() && role != Role::Admin {
            ensure_other_admin(&mut tx, id).await?;
        }
        sqlx::query("UPDATE operators SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            NewAudit::new(actor, action::OPERATOR_ROLE, AuditOutcome::Success)
                .detail(json!({"operator_id": id, "operator": name, "from": old_role, "to": role})),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn disable_operator(&self, actor: &Actor, id: i64) -> Result<(), EscrowError> {
        require_role(actor, &[Role::Admin], "manage operators")?;
        let mut tx = self.inner.db.begin_write().await?;
        let row = sqlx::query("SELECT role, name FROM operators WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(EscrowError::NotFound(format!("operator {id}")));
        };
        let role: String = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        if role == Role::Admin.as_str() {
            ensure_other_admin(&mut tx, id).await?;
        }
        let now = self.now_us();
        sqlx::query("UPDATE operators SET disabled = 1, disabled_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE operator_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        append_audit(
            &mut tx,
            NewAudit::new(actor, action::OPERATOR_DISABLE, AuditOutcome::Success)
                .detail(json!({"operator_id": id, "operator": name})),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_operators(&self, actor: &Actor) -> Result<Vec<OperatorInfo>, EscrowError> {
        require_role(actor, &[Role::Admin], "list operators")?;
        let rows = sqlx::query(&format!(
            "SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY id"
        ))
        .fetch_all(&self.inner.db.pool)
        .await?;
        rows.iter().map(operator_from_row).collect()
    }

    /// A new personal API token for `operator_id`; the secret is returned once and stored only as a hash.
    pub async fn create_api_token(
        &self,
        actor: &Actor,
        operator_id: i64,
        ttl: Option<Duration>,
    ) -> Result<(ApiTokenInfo, String), EscrowError> {
        require_role(actor, &[Role::Admin], "manage API tokens")?;
        let now = self.now();
        let expires = match ttl {
            Some(d) => Some(
                now + time::Duration::try_from(d)
                    .map_err(|_| EscrowError::Validation("token lifetime is too long".into()))?,
            ),
            None => None,
        };
        let mut tx = self.inner.db.begin_write().await?;
        let op = sqlx::query("SELECT disabled, name FROM operators WHERE id = $1")
            .bind(operator_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(op) = op else {
            return Err(EscrowError::NotFound(format!("operator {operator_id}")));
        };
        if op.try_get::<i64, _>(0)? != 0 {
            return Err(EscrowError::Conflict(format!(
                "operator {operator_id} is disabled"
            )));
        }
        let name: String = op.try_get(1)?;
        let secret = new_token_secret(OPERATOR_TOKEN_PREFIX)?;
        let id: i64 = sqlx::query("INSERT INTO api_tokens (operator_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(operator_id)
            .bind(token_hash(&secret))
            .bind(to_micros(now))
            .bind(expires.map(to_micros))
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        append_audit(
            &mut tx,
            NewAudit::new(actor, action::API_TOKEN_CREATE, AuditOutcome::Success)
                .detail(json!({"token_id": id, "operator_id": operator_id, "operator": name})),
            now,
        )
        .await?;
        tx.commit().await?;
        let info = ApiTokenInfo {
            id,
            operator_id,
            created_at: from_micros(to_micros(now)),
            expires_at: expires.map(|e| from_micros(to_micros(e))),
            revoked: false,
        };
        Ok((info, secret.to_string()))
    }

    pub async fn revoke_api_token(&self, actor: &Actor, token_id: i64) -> Result<(), EscrowError> {
        require_role(actor, &[Role::Admin], "manage API tokens")?;
        let mut tx = self.inner.db.begin_write().await?;
        let n = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(self.now_us())
        .bind(token_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(EscrowError::NotFound(format!(
                "active API token {token_id}"
            )));
        }
        append_audit(
            &mut tx,
            NewAudit::new(actor, action::API_TOKEN_REVOKE, AuditOutcome::Success)
                .detail(json!({"token_id": token_id})),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The operator behind a bearer token, or None if unknown, revoked, expired or disabled.
    pub async fn authenticate_operator(
        &self,
        token_secret: &str,
    ) -> Result<Option<Actor>, EscrowError> {
        let t = token_secret.trim();
        if t.is_empty() || t.len() > 256 {
            return Ok(None);
        }
        let hash = token_hash(t);
        let row = sqlx::query(
            "SELECT t.token_hash, t.expires_at, t.revoked_at, o.id, o.name, o.role, o.disabled \
             FROM api_tokens t JOIN operators o ON o.id = t.operator_id WHERE t.token_hash = $1",
        )
        .bind(hash.clone())
        .fetch_optional(&self.inner.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: Vec<u8> = row.try_get(0)?;
        if !ct_eq(&stored, &hash) {
            return Ok(None);
        }
        let expires: Option<i64> = row.try_get(1)?;
        let revoked: Option<i64> = row.try_get(2)?;
        let disabled: i64 = row.try_get(6)?;
        if revoked.is_some() || disabled != 0 || expires.is_some_and(|e| e <= self.now_us()) {
            return Ok(None);
        }
        let role: String = row.try_get(5)?;
        Ok(Some(Actor::operator(
            row.try_get(3)?,
            row.try_get::<String, _>(4)?,
            role.parse().map_err(EscrowError::Storage)?,
        )))
    }
}

/// Refuse to demote or disable the last enabled admin (nobody could manage operators any more).
async fn ensure_other_admin(tx: &mut crate::store::Tx, id: i64) -> Result<(), EscrowError> {
    let others: i64 = sqlx::query(
        "SELECT COUNT(*) FROM operators WHERE role = 'admin' AND disabled = 0 AND id <> $1",
    )
    .bind(id)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    if others == 0 {
        return Err(EscrowError::Conflict(
            "this is the last enabled admin; create another admin first".into(),
        ));
    }
    Ok(())
}
