//! The audit aggregate: appending to the hash chain inside a write transaction, and reading it.

use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use super::{backend_of, values_placeholders};
use crate::audit::{AuditFilter, AuditRecord, from_micros, to_micros};
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
pub(crate) async fn read_head(conn: &mut AnyConnection) -> Result<(i64, Vec<u8>), EscrowError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(conn)
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// The chain head as seen inside one write transaction. Several appends in the same transaction advance
/// it in memory; `store` writes it back once (compare-and-set on the head it started from).
#[derive(Clone, Debug)]
pub(crate) struct AuditCursor {
    seq: i64,
    hash: Vec<u8>,
    start_seq: i64,
}

impl AuditCursor {
    /// Read the head. The caller holds a write transaction (see `Db::begin_write`), so it cannot move.
    pub(crate) async fn read(conn: &mut AnyConnection) -> Result<Self, EscrowError> {
        let (seq, hash) = read_head(conn).await?;
        Ok(Self {
            seq,
            hash,
            start_seq: seq,
        })
    }

    pub(crate) async fn store(&self, conn: &mut AnyConnection) -> Result<(), EscrowError> {
        if self.seq == self.start_seq {
            return Ok(());
        }
        let n = sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3")
            .bind(self.seq)
            .bind(self.hash.clone())
            .bind(self.start_seq)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if n != 1 {
            return Err(EscrowError::Storage(
                "the audit chain head moved during an append; retry".into(),
            ));
        }
        Ok(())
    }
}

/// Append one record to the chain (read head, insert, move head); returns its sequence number.
pub(crate) async fn append(
    conn: &mut AnyConnection,
    a: NewAudit,
    now: OffsetDateTime,
) -> Result<i64, EscrowError> {
    let mut cursor = AuditCursor::read(conn).await?;
    let seq = append_at(conn, &mut cursor, a, now).await?;
    cursor.store(conn).await?;
    Ok(seq)
}

/// Insert one record after `cursor` and advance it (the head row is written by `AuditCursor::store`).
pub(crate) async fn append_at(
    conn: &mut AnyConnection,
    cursor: &mut AuditCursor,
    a: NewAudit,
    now: OffsetDateTime,
) -> Result<i64, EscrowError> {
    let r = cursor.stage(a, now);
    let seq = r.seq;
    insert_rows(conn, std::slice::from_ref(&r)).await?;
    Ok(seq)
}

impl AuditCursor {
    /// Build the next record of the chain in memory and advance the cursor; the caller inserts it with
    /// [`insert_rows`] in the same transaction (group commit inserts a whole batch at once).
    pub(crate) fn stage(&mut self, a: NewAudit, now: OffsetDateTime) -> AuditRecord {
        let mut r = AuditRecord {
            seq: self.seq + 1,
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
            prev_hash: std::mem::take(&mut self.hash),
            hash: Vec::new(),
        };
        r.hash = r.compute_hash();
        self.seq = r.seq;
        self.hash = r.hash.clone();
        r
    }
}

/// Bulk append: chains `records` after the head in order — each gets the next seq, the previous
/// hash and its own hash; what the caller put in `seq`, `prev_hash` and `hash` is ignored — and
/// inserts them, many per statement, in the caller's write transaction. Returns the last seq.
/// The one bulk path of the audit log (imports, load tools), beside [`append`] for one record.
pub(crate) async fn append_records(
    conn: &mut AnyConnection,
    records: Vec<AuditRecord>,
) -> Result<i64, EscrowError> {
    let mut cursor = AuditCursor::read(conn).await?;
    let staged: Vec<AuditRecord> = records
        .into_iter()
        .map(|r| cursor.stage_record(r))
        .collect();
    insert_rows(conn, &staged).await?;
    cursor.store(conn).await?;
    Ok(cursor.seq)
}

impl AuditCursor {
    /// Chain an already-built record after the cursor (see [`append_records`]).
    fn stage_record(&mut self, mut r: AuditRecord) -> AuditRecord {
        r.seq = self.seq + 1;
        r.at = from_micros(to_micros(r.at));
        r.prev_hash = std::mem::take(&mut self.hash);
        r.hash = r.compute_hash();
        self.seq = r.seq;
        self.hash = r.hash.clone();
        r
    }
}

/// Audit rows per INSERT statement (15 parameters each; well under both backends' bind limits).
const AUDIT_ROWS_PER_INSERT: usize = 64;

/// Insert staged records, several per statement (one channel round trip to the database instead of one per
/// record).
pub(crate) async fn insert_rows(
    conn: &mut AnyConnection,
    rows: &[AuditRecord],
) -> Result<(), EscrowError> {
    for chunk in rows.chunks(AUDIT_ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES {}",
            values_placeholders(backend_of(conn), chunk.len(), 15)
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
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
                .bind(r.hash.clone());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

const AUDIT_COLUMNS: &str = "seq, at, actor_kind, actor_id, actor_name, action, device_id, device_name, \
     protector_id, reason, outcome, client_addr, detail, prev_hash, hash";

/// Decode a row selected with [`AUDIT_COLUMNS`].
fn audit_from_row(row: &sqlx::any::AnyRow) -> Result<AuditRecord, EscrowError> {
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

/// The [`AuditFilter`] as a WHERE clause over `$1`…`$6`, bound by [`bind_filter`].
const FILTER_WHERE: &str = "($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at < $2) \
     AND ($3 IS NULL OR (actor_kind = 'operator' AND actor_name = $3)) \
     AND ($4 IS NULL OR lower(device_name) = lower($4)) AND ($5 IS NULL OR action = $5) \
     AND ($6 IS NULL OR outcome = $6)";

fn bind_filter<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    filter: &AuditFilter,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(filter.from.map(to_micros))
        .bind(filter.to.map(to_micros))
        .bind(filter.operator.clone())
        .bind(filter.device.clone())
        .bind(filter.kind.clone())
        .bind(filter.outcome.map(|o| o.as_str().to_owned()))
}

/// Records matching `filter` with `after_seq < seq <= upto_seq`, in chain order, at most `limit`.
pub(crate) async fn query(
    conn: &mut AnyConnection,
    filter: &AuditFilter,
    after_seq: i64,
    upto_seq: i64,
    limit: i64,
) -> Result<Vec<AuditRecord>, EscrowError> {
    let sql = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE {FILTER_WHERE} \
         AND seq > $7 AND seq <= $8 ORDER BY seq LIMIT $9"
    );
    let rows = bind_filter(sqlx::query(&sql), filter)
        .bind(after_seq)
        .bind(upto_seq)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(audit_from_row).collect()
}

/// As [`query`], newest first: up to `limit` records with `seq < before_seq`.
pub(crate) async fn query_newest_first(
    conn: &mut AnyConnection,
    filter: &AuditFilter,
    before_seq: i64,
    limit: i64,
) -> Result<Vec<AuditRecord>, EscrowError> {
    let sql = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE {FILTER_WHERE} \
         AND seq < $7 ORDER BY seq DESC LIMIT $8"
    );
    let rows = bind_filter(sqlx::query(&sql), filter)
        .bind(before_seq)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(audit_from_row).collect()
}

/// Up to `limit` records with `seq > after`, in chain order (verification walks the chain this way).
pub(crate) async fn after(
    conn: &mut AnyConnection,
    after: i64,
    limit: i64,
) -> Result<Vec<AuditRecord>, EscrowError> {
    let rows = sqlx::query(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(audit_from_row).collect()
}
