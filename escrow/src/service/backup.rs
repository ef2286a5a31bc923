//! Backup and restore: a consistent snapshot of every table (one read transaction) as a versioned JSON
//! document, encrypted as a whole with AES-256-GCM under a backup key. Secrets inside stay sealed under the
//! data key, whose wrapped form (under the KEK) travels with the backup: restoring needs the backup key AND
//! the KEK that was current when the backup was taken.
//!
//! File layout: `NUESCBK1` (8 bytes) || AES-256-GCM(backup key, nonce, AAD = the magic)(JSON document).

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::EscrowService;
use crate::audit::{AuditRecord, ChainVerification, ChainVerifier, action, from_micros};
use crate::error::EscrowError;
use crate::model::{Actor, AuditOutcome, BackupSummary};
use crate::sealing::{Kek, Sealer};
use crate::store::audit::{self as audit_log, NewAudit};
use crate::store::{backup as tables, keyring};

const MAGIC: &[u8; 8] = b"NUESCBK1";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Document {
    format: String,
    version: u32,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    source_backend: String,
    keyring: Keyring,
    audit_head: (i64, String),
    /// table name → rows, each row an array in the column order of `store::backup`.
    tables: serde_json::Map<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct Keyring {
    kek_id: String,
    dek_id: String,
    wrapped_dek: String,
    created_at: i64,
    rewrapped_at: Option<i64>,
}

fn bad(what: &str) -> EscrowError {
    EscrowError::Validation(format!("the backup is malformed: {what}"))
}

impl EscrowService {
    /// Write an encrypted, consistent backup to `out` (created 0600, replaced atomically).
    pub async fn backup(&self, out: &Path, backup_key: &Kek) -> Result<BackupSummary, EscrowError> {
        let mut tx = self.db().begin_read().await?;
        let kr = keyring::get(&mut tx)
            .await?
            .ok_or_else(|| EscrowError::Storage("the keyring row is missing".into()))?;
        let keyring = Keyring {
            kek_id: kr.kek_id,
            dek_id: kr.dek_id,
            wrapped_dek: B64.encode(kr.wrapped_dek),
            created_at: kr.created_at,
            rewrapped_at: kr.rewrapped_at,
        };
        let head = audit_log::read_head(&mut tx).await?;
        let dump = tables::dump(&mut tx).await?;
        tx.commit().await?;
        let mut summary = empty_summary();
        let mut by_table = serde_json::Map::new();
        for (name, rows) in dump {
            count_rows(&mut summary, name, rows.len() as u64);
            by_table.insert(name.to_owned(), Value::Array(rows));
        }
        let doc = Document {
            format: "netunlockd-escrow-backup".into(),
            version: FORMAT_VERSION,
            created_at: self.now(),
            source_backend: format!("{:?}", self.backend()).to_lowercase(),
            keyring,
            audit_head: (head.0, hex::encode(head.1)),
            tables: by_table,
        };
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(&doc)
                .map_err(|e| EscrowError::Io(format!("cannot encode the backup: {e}")))?,
        );
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&backup_key.seal_blob(&plain, MAGIC)?);
        write_atomic(out, &file)?;
        Ok(summary)
    }

    /// Restore a backup into this (empty) database. Needs the backup key, and this service must have been opened
    /// with the KEK that wrapped the backup's data key. Verifies the audit chain before and after writing.
    pub async fn restore(
        &self,
        input: &Path,
        backup_key: &Kek,
    ) -> Result<BackupSummary, EscrowError> {
        let file = std::fs::read(input).map_err(|e| {
            EscrowError::Io(format!("cannot read the backup {}: {e}", input.display()))
        })?;
        if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
            return Err(EscrowError::Validation(format!(
                "{} is not a netunlockd escrow backup",
                input.display()
            )));
        }
        let plain = backup_key.open_blob(&file[MAGIC.len()..], MAGIC).map_err(|_| {
            EscrowError::Crypto(
                "the backup key does not decrypt this backup (wrong key file, or the file is damaged)".into(),
            )
        })?;
        let doc: Document = serde_json::from_slice(&plain).map_err(|e| bad(&e.to_string()))?;
        if doc.format != "netunlockd-escrow-backup" || doc.version != FORMAT_VERSION {
            return Err(bad(&format!(
                "unsupported format {:?} version {}",
                doc.format, doc.version
            )));
        }
        let wrapped = B64
            .decode(&doc.keyring.wrapped_dek)
            .map_err(|_| bad("keyring"))?;
        let kek = self.current_kek()?;
        let dek = kek.unwrap_dek(&wrapped).map_err(|_| {
            EscrowError::Crypto(format!(
                "this backup's data key is wrapped by KEK id {}, but the service runs with KEK id {}; start it with that KEK to restore",
                doc.keyring.kek_id,
                kek.id()
            ))
        })?;
        let sealer = Sealer::new(&dek)?;
        // Check the audit chain of the document before touching the database.
        let audit_rows = doc
            .tables
            .get(tables::AUDIT_TABLE)
            .and_then(Value::as_array)
            .ok_or_else(|| bad("audit_log missing"))?;
        let mut verifier = ChainVerifier::default();
        for r in audit_rows {
            let rec = audit_from_json(r)?;
            if let Err(ChainVerification::Broken { seq, reason }) = verifier.push(&rec) {
                return Err(EscrowError::Validation(format!(
                    "the backup's audit chain is broken at record {seq}: {reason}"
                )));
            }
        }
        let head_hash = hex::decode(&doc.audit_head.1).map_err(|_| bad("audit head"))?;
        if let ChainVerification::Broken { seq, reason } =
            verifier.finish(Some((doc.audit_head.0, head_hash.clone())))
        {
            return Err(EscrowError::Validation(format!(
                "the backup's audit chain is broken at record {seq}: {reason}"
            )));
        }

        let _exclusive = self.seal_lock_write().await;
        let mut tx = self.db().begin_write().await?;
        if let Some((t, n)) = tables::first_non_empty(&mut tx).await? {
            return Err(EscrowError::Conflict(format!(
                "restore needs an empty database, but table {t} has {n} rows"
            )));
        }
        let ring = keyring::Keyring {
            kek_id: doc.keyring.kek_id.clone(),
            dek_id: doc.keyring.dek_id.clone(),
            wrapped_dek: wrapped,
            created_at: doc.keyring.created_at,
            rewrapped_at: doc.keyring.rewrapped_at,
        };
        keyring::replace(&mut tx, &ring).await?;
        let mut summary = empty_summary();
        for name in tables::table_names() {
            let rows = doc
                .tables
                .get(name)
                .and_then(Value::as_array)
                .ok_or_else(|| bad(&format!("table {name} missing")))?;
            tables::load_table(&mut tx, name, rows).await?;
            count_rows(&mut summary, name, rows.len() as u64);
        }
        tables::set_audit_head(&mut tx, doc.audit_head.0, head_hash).await?;
        tables::fix_sequences(&mut tx).await?;
        audit_log::append(
            &mut tx,
            NewAudit::new(&Actor::local("restore"), action::RESTORE, AuditOutcome::Success).detail(json!({
                "backup_created_at": doc.created_at.unix_timestamp(), "source_backend": doc.source_backend,
                "rows": summary.rows, "input": input.display().to_string(),
            })),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        self.devices_changed();
        self.replace_sealer(sealer);
        drop(_exclusive);
        match self.verify_audit_chain().await? {
            ChainVerification::Ok { .. } => Ok(summary),
            ChainVerification::Broken { seq, reason } => Err(EscrowError::Storage(format!(
                "after restore the audit chain is broken at record {seq}: {reason}"
            ))),
        }
    }
}

fn empty_summary() -> BackupSummary {
    BackupSummary {
        format_version: FORMAT_VERSION,
        devices: 0,
        protectors: 0,
        audit_records: 0,
        rows: 0,
    }
}

fn count_rows(summary: &mut BackupSummary, table: &str, n: u64) {
    summary.rows += n;
    match table {
        "devices" => summary.devices = n,
        "protectors" => summary.protectors = n,
        "audit_log" => summary.audit_records = n,
        _ => {}
    }
}

fn audit_from_json(v: &Value) -> Result<AuditRecord, EscrowError> {
    let a = v
        .as_array()
        .filter(|a| a.len() == 15)
        .ok_or_else(|| bad("audit row"))?;
    let int = |i: usize| a[i].as_i64();
    let text = |i: usize| a[i].as_str().map(str::to_owned);
    let blob = |i: usize| a[i].as_str().and_then(|s| B64.decode(s).ok());
    Ok(AuditRecord {
        seq: int(0).ok_or_else(|| bad("audit seq"))?,
        at: from_micros(int(1).ok_or_else(|| bad("audit at"))?),
        actor_kind: text(2).ok_or_else(|| bad("audit actor"))?,
        actor_id: int(3),
        actor_name: text(4).ok_or_else(|| bad("audit actor"))?,
        action: text(5).ok_or_else(|| bad("audit action"))?,
        device_id: int(6),
        device_name: text(7),
        protector_id: text(8),
        reason: text(9),
        outcome: text(10)
            .ok_or_else(|| bad("audit outcome"))?
            .parse()
            .map_err(|e: String| bad(&e))?,
        client_addr: text(11),
        detail: text(12).ok_or_else(|| bad("audit detail"))?,
        prev_hash: blob(13).ok_or_else(|| bad("audit prev_hash"))?,
        hash: blob(14).ok_or_else(|| bad("audit hash"))?,
    })
}

/// Write `data` to `path` via a 0600 temporary file, fsync, rename.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), EscrowError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp-write");
    let io = |e: std::io::Error| {
        EscrowError::Io(format!("cannot write the backup {}: {e}", path.display()))
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
