//! Appending to and reading the audit chain inside a transaction.

use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use crate::audit::{AuditRecord, from_micros, to_micros};
use crate::error::EscrowError;
use crate::model::{Actor, AuditOutcome};

/// An audit record to append; seq, timestamp and hashes are filled in by [`append_audit`].
#[derive(Debug, Clone)]
pub(crate) struct NewAudit {
    pub actor_kind: &'static str,
    pub actor_id: Option<i64>,
    pub actor_name: String,
    pub action: &'static str,
    pub device_id: Option<i64>,
    pub device_name: Option<String>,
    pub protector_id: Option<String>,
    pub reason: Option<String>,
    pub outcome: AuditOutcome,
    pub client_addr: Option<String>,
    pub detail: serde_json::Value,
}

impl NewAudit {
    pub fn new(actor: &Actor, action: &'static str, outcome: AuditOutcome) -> Self {
        let (actor_kind, actor_id, actor_name) = actor.audit_identity();
        Self {
            actor_kind,
            actor_id,
            actor_name,
            action,
            device_id: None,
            device_name: None,
            protector_id: None,
            reason: None,
            outcome,
            client_addr: None,
            detail: serde_json::Value::Object(serde_json::Map::new()),
        }
    }
    pub fn device(mut self, id: i64, name: &str) -> Self {
        self.device_id = Some(id);
        self.device_name = Some(name.to_owned());
        self
    }
    pub fn protector(mut self, p: String) -> Self {
        self.protector_id = Some(p);
        self
    }
    pub fn reason(mut self, r: Option<String>) -> Self {
        self.reason = r;
        self
    }
    pub fn client(mut self, a: Option<String>) -> Self {
        self.client_addr = a;
        self
    }
    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = d;
        self
    }
}

/// The stored chain head (seq, hash).
pub(crate) async fn read_audit_head(
    conn: &mut AnyConnection,
) -> Result<(i64, Vec<u8>), EscrowError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(conn)
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Append one record to the chain. The caller holds a write transaction (see `Db::begin_write`), so the
/// head cannot move underneath us.
pub(crate) async fn append_audit(
    conn: &mut AnyConnection,
    a: NewAudit,
    now: OffsetDateTime,
) -> Result<i64, EscrowError> {
    let (head_seq, head_hash) = read_audit_head(conn).await?;
    let mut r = AuditRecord {
        seq: head_seq + 1,
        // Truncate to the stored precision so the hash verifies after a round trip.
        at: from_micros(to_micros(now)),
        actor_kind: a.actor_kind.to_owned(),
        actor_id: a.actor_id,
        actor_name: a.actor_name,
        action: a.action.to_owned(),
        device_id: a.device_id,
        device_name: a.device_name,
        protector_id: a.protector_id,
        reason: a.reason,
        outcome: a.outcome,
        client_addr: a.client_addr,
        detail: a.detail.to_string(),
        prev_hash: head_hash,
        hash: Vec::new(),
    };
    r.hash = r.compute_hash();
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor_kind, actor_id, actor_name, action, device_id, device_name, \
         protector_id, reason, outcome, client_addr, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(r.seq)
    .bind(to_micros(r.at))
    .bind(r.actor_kind.clone())
    .bind(r.actor_id)
    .bind(r.actor_name.clone())
    .bind(r.action.clone())
    .bind(r.device_id)
    .bind(r.device_name.clone())
    .bind(r.protector_id.clone())
    .bind(r.reason.clone())
    .bind(r.outcome.as_str())
    .bind(r.client_addr.clone())
    .bind(r.detail.clone())
    .bind(r.prev_hash.clone())
    .bind(r.hash.clone())
    .execute(&mut *conn)
    .await?;
    let n = sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3")
        .bind(r.seq)
        .bind(r.hash.clone())
        .bind(head_seq)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if n != 1 {
        return Err(EscrowError::Storage(
            "the audit chain head moved during an append; retry".into(),
        ));
    }
    Ok(r.seq)
}

pub(crate) const AUDIT_COLUMNS: &str = "seq, at, actor_kind, actor_id, actor_name, action, device_id, device_name, \
     protector_id, reason, outcome, client_addr, detail, prev_hash, hash";

/// Decode a row selected with [`AUDIT_COLUMNS`].
pub(crate) fn audit_from_row(row: &sqlx::any::AnyRow) -> Result<AuditRecord, EscrowError> {
    let outcome: String = row.try_get(10)?;
    Ok(AuditRecord {
        seq: row.try_get(0)?,
        at: from_micros(row.try_get(1)?),
        actor_kind: row.try_get(2)?,
        actor_id: row.try_get(3)?,
        actor_name: row.try_get(4)?,
        action: row.try_get(5)?,
        device_id: row.try_get(6)?,
        device_name: row.try_get(7)?,
        protector_id: row.try_get(8)?,
        reason: row.try_get(9)?,
        outcome: outcome.parse().map_err(EscrowError::Storage)?,
        client_addr: row.try_get(11)?,
        detail: row.try_get(12)?,
        prev_hash: row.try_get(13)?,
        hash: row.try_get(14)?,
    })
}
