//! Web console sessions: sign-in with an operator API token starts a server-side session whose
//! secret lives only in the browser's cookie (the database keeps its SHA-256). Each request
//! re-reads the operator, so disabling them or changing their role takes effect at once; sessions
//! end after `idle` without a request or `absolute` after sign-in, whichever comes first.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;
use zeroize::Zeroizing;

use super::EscrowService;
use crate::audit::{action, to_micros};
use crate::error::EscrowError;
use crate::model::{Actor, ActorKind, AuditOutcome};
use crate::sealing::{ct_eq, new_token_secret, token_hash};
use crate::store::audit::{self as audit_log, NewAudit};
use crate::store::sessions::{self, NewSession};

/// Prefix of console session secrets (tells them apart from API tokens in a leaked string).
pub const SESSION_PREFIX: &str = "nus";

/// How long console sessions live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Ends a session this long after its last request.
    pub idle: Duration,
    /// Ends a session this long after sign-in, however active.
    pub absolute: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(15 * 60),
            absolute: Duration::from_secs(8 * 3600),
        }
    }
}

impl SessionPolicy {
    /// Writes of `last_seen_at` are skipped while the previous one is this recent, so reading
    /// pages does not turn into a write per request; the idle timeout is accurate to this much.
    fn touch_every_us(&self) -> i64 {
        micros(self.idle / 10).min(30_000_000)
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 4)
}

/// Why a request carries no usable session (the console words its sign-in page after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// No such session (never existed, signed out, or removed).
    Unknown,
    /// Idle or absolute timeout reached.
    Expired,
    /// The operator was disabled.
    Disabled,
}

impl EscrowService {
    /// Signs in with an operator API token; returns the operator and the new session's secret
    /// (to be put in the cookie, never stored). None when the token is not valid.
    pub async fn console_sign_in_with_token(
        &self,
        api_token: &str,
        policy: &SessionPolicy,
        client: Option<IpAddr>,
    ) -> Result<Option<(Actor, Zeroizing<String>)>, EscrowError> {
        let Some(actor) = self.authenticate_operator(api_token).await? else {
            return Ok(None);
        };
        let secret = self
            .console_start_session(&actor, "api_token", policy, client)
            .await?;
        Ok(Some((actor, secret)))
    }

    /// Starts a session for an operator who has already proved who they are (`method` names how,
    /// for the audit record: "api_token", "directory"). Audited.
    pub async fn console_start_session(
        &self,
        actor: &Actor,
        method: &str,
        policy: &SessionPolicy,
        client: Option<IpAddr>,
    ) -> Result<Zeroizing<String>, EscrowError> {
        let ActorKind::Operator { id, .. } = actor.kind else {
            return Err(EscrowError::Forbidden(
                "only operators can sign in to the console".into(),
            ));
        };
        let secret = new_token_secret(SESSION_PREFIX)?;
        let now = self.now();
        let now_us = to_micros(now);
        let client = client.map(|a| a.to_string());
        let mut tx = self.inner.db.begin_write().await?;
        // Sweep old sessions here rather than from a timer: sign-ins are rare, sessions few.
        sessions::delete_expired(&mut tx, now_us, now_us - micros(policy.idle)).await?;
        sessions::insert(
            &mut tx,
            NewSession {
                hash: token_hash(&secret),
                operator_id: id,
                now: now_us,
                expires_at: now_us.saturating_add(micros(policy.absolute)),
                client_addr: client.as_deref(),
            },
        )
        .await?;
        audit_log::append(
            &mut tx,
            NewAudit::new(actor, action::CONSOLE_SIGN_IN, AuditOutcome::Success)
                .client(client)
                .detail(json!({ "method": method })),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(secret)
    }

    /// The operator behind a session secret, or why there is none. Refreshes the idle timer.
    pub async fn console_session(
        &self,
        secret: &str,
        policy: &SessionPolicy,
    ) -> Result<Result<Actor, SessionEnd>, EscrowError> {
        let s = secret.trim();
        if s.is_empty() || s.len() > 256 {
            return Ok(Err(SessionEnd::Unknown));
        }
        let hash = token_hash(s);
        let mut conn = self.inner.db.conn().await?;
        let Some(row) = sessions::by_hash(&mut conn, &hash).await? else {
            return Ok(Err(SessionEnd::Unknown));
        };
        if !ct_eq(&row.hash, &hash) {
            return Ok(Err(SessionEnd::Unknown));
        }
        let now = self.now_us();
        if row.operator_disabled {
            sessions::delete(&mut conn, row.id).await?;
            return Ok(Err(SessionEnd::Disabled));
        }
        if row.expires_at <= now || row.last_seen_at + micros(policy.idle) <= now {
            sessions::delete(&mut conn, row.id).await?;
            return Ok(Err(SessionEnd::Expired));
        }
        if now - row.last_seen_at >= policy.touch_every_us() {
            sessions::touch(&mut conn, row.id, now).await?;
        }
        Ok(Ok(Actor::operator(
            row.operator_id,
            row.operator_name,
            row.role,
        )))
    }

    /// Ends a session (sign-out). Unknown secrets are ignored: signing out twice is not an error.
    pub async fn console_sign_out(
        &self,
        secret: &str,
        client: Option<IpAddr>,
    ) -> Result<(), EscrowError> {
        let hash = token_hash(secret.trim());
        let mut tx = self.inner.db.begin_write().await?;
        let Some(row) = sessions::by_hash(&mut tx, &hash).await? else {
            return Ok(());
        };
        sessions::delete(&mut tx, row.id).await?;
        let actor = Actor::operator(row.operator_id, row.operator_name, row.role);
        audit_log::append(
            &mut tx,
            NewAudit::new(&actor, action::CONSOLE_SIGN_OUT, AuditOutcome::Success)
                .client(client.map(|a| a.to_string())),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
