//! Operators and their personal API tokens (stored as SHA-256 hashes only).

use std::time::Duration;

use serde_json::json;

use super::{EscrowService, all_pages, clean_text, require_role, resolve_page};
use crate::audit::{action, from_micros, to_micros};
use crate::error::EscrowError;
use crate::model::{Actor, ApiTokenInfo, AuditOutcome, OperatorInfo, Page, PageRequest, Role};
use crate::sealing::{ct_eq, new_token_secret, token_hash};
use crate::store::audit::{self as audit_log, NewAudit};
use crate::store::{Tx, operators, tokens};

pub(super) fn validate_operator_name(name: &str) -> Result<String, EscrowError> {
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
        if operators::count_enabled_admins(&mut tx, None).await? > 0 && !force {
            return Err(EscrowError::Conflict(
                "an admin operator already exists; ask an admin for a token, or, if every admin token is lost, run `netunlockd operator bootstrap --force --name <admin>` on the appliance (audited)".into(),
            ));
        }
        let id = match operators::by_name(&mut tx, &name).await? {
            Some(existing) => {
                operators::reinstate_admin(&mut tx, existing.id).await?;
                existing.id
            }
            None => {
                operators::insert(&mut tx, &name, Role::Admin, now)
                    .await?
                    .id
            }
        };
        let secret = new_token_secret(OPERATOR_TOKEN_PREFIX)?;
        // The first (or recovery) admin token is the most powerful one: the default lifetime
        // applies to it as well.
        let expires = self
            .default_api_token_lifetime()
            .and_then(|d| time::Duration::try_from(d).ok())
            .map(|d| to_micros(self.now() + d));
        let token_id = tokens::insert_api(&mut tx, id, token_hash(&secret), now, expires).await?;
        let actor = Actor::local(format!("bootstrap:{name}"));
        audit_log::append(
            &mut tx,
            NewAudit::new(&actor, action::OPERATOR_BOOTSTRAP, AuditOutcome::Success).detail(
                json!({"operator_id": id, "operator": name, "role": "admin", "token_id": token_id, "forced": force}),
            ),
            self.now(),
        )
        .await?;
        let info = operators::by_id(&mut tx, id)
            .await?
            .ok_or_else(|| EscrowError::Storage("the bootstrapped operator vanished".into()))?;
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
        if operators::by_name(&mut tx, &name).await?.is_some() {
            return Err(EscrowError::Conflict(format!(
                "an operator named {name:?} already exists"
            )));
        }
        let info = operators::insert(&mut tx, &name, role, self.now_us()).await?;
        audit_log::append(
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
        let Some(old) = operators::by_id(&mut tx, id).await? else {
            return Err(EscrowError::NotFound(format!("operator {id}")));
        };
        if old.role == Role::Admin && role != Role::Admin {
            ensure_other_admin(&mut tx, id).await?;
        }
        operators::set_role(&mut tx, id, role).await?;
        audit_log::append(
            &mut tx,
            NewAudit::new(actor, action::OPERATOR_ROLE, AuditOutcome::Success).detail(
                json!({"operator_id": id, "operator": old.name, "from": old.role, "to": role}),
            ),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn disable_operator(&self, actor: &Actor, id: i64) -> Result<(), EscrowError> {
        require_role(actor, &[Role::Admin], "manage operators")?;
        let mut tx = self.inner.db.begin_write().await?;
        let Some(op) = operators::by_id(&mut tx, id).await? else {
            return Err(EscrowError::NotFound(format!("operator {id}")));
        };
        if op.role == Role::Admin {
            ensure_other_admin(&mut tx, id).await?;
        }
        let now = self.now_us();
        operators::disable(&mut tx, id, now).await?;
        tokens::revoke_all_api_of(&mut tx, id, now).await?;
        // Their console sessions end now too (each request re-checks as well).
        crate::store::sessions::delete_for_operator(&mut tx, id).await?;
        audit_log::append(
            &mut tx,
            NewAudit::new(actor, action::OPERATOR_DISABLE, AuditOutcome::Success)
                .detail(json!({"operator_id": id, "operator": op.name})),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One page of the operators, by id. Role: admin.
    pub async fn list_operators_page(
        &self,
        actor: &Actor,
        page: PageRequest,
    ) -> Result<Page<OperatorInfo>, EscrowError> {
        require_role(actor, &[Role::Admin], "list operators")?;
        let page = resolve_page(&page)?;
        let rows = operators::list(
            &mut *self.inner.db.conn().await?,
            page.after.unwrap_or(0),
            page.fetch(),
        )
        .await?;
        Ok(page.finish(rows, |o| o.id))
    }

    /// Every operator.
    pub async fn list_operators(&self, actor: &Actor) -> Result<Vec<OperatorInfo>, EscrowError> {
        all_pages(|p| self.list_operators_page(actor, p)).await
    }

    /// A new personal API token for `operator_id`; the secret is returned once and stored only as a
    /// hash. Without `ttl` it gets the configured default lifetime, if any.
    pub async fn create_api_token(
        &self,
        actor: &Actor,
        operator_id: i64,
        ttl: Option<Duration>,
    ) -> Result<(ApiTokenInfo, String), EscrowError> {
        require_role(actor, &[Role::Admin], "manage API tokens")?;
        let now = self.now();
        let expires = match ttl.or_else(|| self.default_api_token_lifetime()) {
            Some(d) => Some(
                now + time::Duration::try_from(d)
                    .map_err(|_| EscrowError::Validation("token lifetime is too long".into()))?,
            ),
            None => None,
        };
        let mut tx = self.inner.db.begin_write().await?;
        let Some(op) = operators::by_id(&mut tx, operator_id).await? else {
            return Err(EscrowError::NotFound(format!("operator {operator_id}")));
        };
        if op.disabled {
            return Err(EscrowError::Conflict(format!(
                "operator {operator_id} is disabled"
            )));
        }
        let secret = new_token_secret(OPERATOR_TOKEN_PREFIX)?;
        let id = tokens::insert_api(
            &mut tx,
            operator_id,
            token_hash(&secret),
            to_micros(now),
            expires.map(to_micros),
        )
        .await?;
        audit_log::append(
            &mut tx,
            NewAudit::new(actor, action::API_TOKEN_CREATE, AuditOutcome::Success)
                .detail(json!({"token_id": id, "operator_id": operator_id, "operator": op.name})),
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

    /// One page of the API tokens (never secrets nor hashes), by id; only those of `operator_id`
    /// when given — to find a leaked token and revoke it. Role: admin.
    pub async fn list_api_tokens_page(
        &self,
        actor: &Actor,
        operator_id: Option<i64>,
        page: PageRequest,
    ) -> Result<Page<ApiTokenInfo>, EscrowError> {
        require_role(actor, &[Role::Admin], "list API tokens")?;
        let page = resolve_page(&page)?;
        let rows = tokens::list_api(
            &mut *self.inner.db.conn().await?,
            operator_id,
            page.after.unwrap_or(0),
            page.fetch(),
        )
        .await?;
        Ok(page.finish(rows, |t| t.id))
    }

    pub async fn revoke_api_token(&self, actor: &Actor, token_id: i64) -> Result<(), EscrowError> {
        require_role(actor, &[Role::Admin], "manage API tokens")?;
        let mut tx = self.inner.db.begin_write().await?;
        if !tokens::revoke_api(&mut tx, token_id, self.now_us()).await? {
            return Err(EscrowError::NotFound(format!(
                "active API token {token_id}"
            )));
        }
        audit_log::append(
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
        let Some(owner) = tokens::api_by_hash(&mut *self.inner.db.conn().await?, &hash).await?
        else {
            return Ok(None);
        };
        if !ct_eq(&owner.hash, &hash)
            || owner.revoked
            || owner.operator_disabled
            || owner.expires_at.is_some_and(|e| e <= self.now_us())
        {
            return Ok(None);
        }
        Ok(Some(Actor::operator(
            owner.operator_id,
            owner.operator_name,
            owner.role.parse().map_err(EscrowError::Storage)?,
        )))
    }
}

/// Refuse to demote or disable the last enabled admin (nobody could manage operators any more).
async fn ensure_other_admin(tx: &mut Tx, id: i64) -> Result<(), EscrowError> {
    if operators::count_enabled_admins(tx, Some(id)).await? == 0 {
        return Err(EscrowError::Conflict(
            "this is the last enabled admin; create another admin first".into(),
        ));
    }
    Ok(())
}
