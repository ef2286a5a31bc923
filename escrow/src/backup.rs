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
use sqlx::Row;
use time::OffsetDateTime;

use crate::audit::{AuditRecord, ChainVerification, ChainVerifier, action, from_micros};
use crate::error::EscrowError;
use crate::model::{Actor, AuditOutcome, BackupSummary};
use crate::sealing::{Kek, Sealer};
use crate::service::EscrowService;
use crate::store::{Backend, NewAudit, append_audit};

const MAGIC: &[u8; 8] = b"NUESCBK1";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Blob,
}
use Kind::{Blob, Int, Text};

/// Every table in foreign-key order, with its columns. `audit_head` and `keyring` are handled specially.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "operators",
        &[
            ("id", Int),
            ("name", Text),
            ("role", Text),
            ("disabled", Int),
            ("created_at", Int),
            ("disabled_at", Int),
        ],
    ),
    (
        "api_tokens",
        &[
            ("id", Int),
            ("operator_id", Int),
            ("token_hash", Blob),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("last_used_at", Int),
        ],
    ),
    (
        "enrollment_tokens",
        &[
            ("id", Int),
            ("token_hash", Blob),
            ("note", Text),
            ("max_uses", Int),
            ("uses", Int),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("created_by", Text),
        ],
    ),
    (
        "devices",
        &[
            ("id", Int),
            ("computer_name", Text),
            ("domain", Text),
            ("name_key", Text),
            ("serial", Text),
            ("first_seen", Int),
            ("last_check_in", Int),
            ("cert_sha256", Text),
            ("revoked", Int),
            ("revoked_at", Int),
            ("reenroll_allowed", Int),
            ("enrolled_token", Int),
        ],
    ),
    (
        "volumes",
        &[
            ("id", Int),
            ("device_id", Int),
            ("volume_guid", Text),
            ("mount_point", Text),
            ("volume_type", Text),
            ("first_seen", Int),
        ],
    ),
    (
        "protectors",
        &[
            ("id", Int),
            ("device_id", Int),
            ("volume_id", Int),
            ("protector_id", Text),
            ("protector_prefix", Text),
            ("password_sealed", Blob),
            ("password_mac", Blob),
            ("key_package_sealed", Blob),
            ("escrowed_at", Int),
            ("superseded_at", Int),
            ("disclosed_at", Int),
            ("rotation_state", Text),
            ("rotation_requested_at", Int),
            ("rotation_done_at", Int),
            ("replaced_by", Text),
        ],
    ),
    (
        "tpm_owner_auth",
        &[("device_id", Int), ("sealed", Blob), ("updated_at", Int)],
    ),
    (
        "mismatches",
        &[
            ("id", Int),
            ("device_id", Int),
            ("volume_guid", Text),
            ("protector_id", Text),
            ("detected_at", Int),
            ("stored_escrowed_at", Int),
            ("audit_seq", Int),
        ],
    ),
    (
        "audit_log",
        &[
            ("seq", Int),
            ("at", Int),
            ("actor_kind", Text),
            ("actor_id", Int),
            ("actor_name", Text),
            ("action", Text),
            ("device_id", Int),
            ("device_name", Text),
            ("protector_id", Text),
            ("reason", Text),
            ("outcome", Text),
            ("client_addr", Text),
            ("detail", Text),
            ("prev_hash", Blob),
            ("hash", Blob),
        ],
    ),
];

/// Tables with an identity/autoincrement `id` whose sequence must follow restored ids (PostgreSQL).
const ID_TABLES: &[&str] = &[
    "operators",
    "api_tokens",
    "enrollment_tokens",
    "devices",
    "volumes",
    "protectors",
    "mismatches",
];

#[derive(Serialize, Deserialize)]
struct Document {
    format: String,
    version: u32,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    source_backend: String,
    keyring: Keyring,
    audit_head: (i64, String),
    /// table name → rows, each row an array in the column order of `TABLES`.
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

fn cell(row: &sqlx::any::AnyRow, i: usize, kind: Kind) -> Result<Value, EscrowError> {
    Ok(match kind {
        Int => row
            .try_get::<Option<i64>, _>(i)?
            .map_or(Value::Null, Value::from),
        Text => row
            .try_get::<Option<String>, _>(i)?
            .map_or(Value::Null, Value::from),
        Blob => row
            .try_get::<Option<Vec<u8>>, _>(i)?
            .map_or(Value::Null, |b| Value::from(B64.encode(b))),
    })
}

fn bad(what: &str) -> EscrowError {
    EscrowError::Validation(format!("the backup is malformed: {what}"))
}

impl EscrowService {
    /// Write an encrypted, consistent backup to `out` (created 0600, replaced atomically).
    pub async fn backup(&self, out: &Path, backup_key: &Kek) -> Result<BackupSummary, EscrowError> {
        let mut tx = self.db().begin_read().await?;
        let kr = sqlx::query("SELECT kek_id, dek_id, wrapped_dek, created_at, rewrapped_at FROM keyring WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let keyring = Keyring {
            kek_id: kr.try_get(0)?,
            dek_id: kr.try_get(1)?,
            wrapped_dek: B64.encode(kr.try_get::<Vec<u8>, _>(2)?),
            created_at: kr.try_get(3)?,
            rewrapped_at: kr.try_get(4)?,
        };
        let head = crate::store::read_audit_head(&mut tx).await?;
        let mut tables = serde_json::Map::new();
        let mut summary = BackupSummary {
            format_version: FORMAT_VERSION,
            devices: 0,
            protectors: 0,
            audit_records: 0,
            rows: 0,
        };
        for (name, cols) in TABLES {
            let list = cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
            let rows = sqlx::query(&format!("SELECT {list} FROM {name} ORDER BY {}", cols[0].0))
                .fetch_all(&mut *tx)
                .await?;
            let mut out_rows = Vec::with_capacity(rows.len());
            for r in &rows {
                let vals = cols
                    .iter()
                    .enumerate()
                    .map(|(i, (_, k))| cell(r, i, *k))
                    .collect::<Result<Vec<_>, _>>()?;
                out_rows.push(Value::Array(vals));
            }
            let n = rows.len() as u64;
            summary.rows += n;
            match *name {
                "devices" => summary.devices = n,
                "protectors" => summary.protectors = n,
                "audit_log" => summary.audit_records = n,
                _ => {}
            }
            tables.insert((*name).to_owned(), Value::Array(out_rows));
        }
        tx.commit().await?;
        let doc = Document {
            format: "netunlockd-escrow-backup".into(),
            version: FORMAT_VERSION,
            created_at: self.now(),
            source_backend: format!("{:?}", self.backend()).to_lowercase(),
            keyring,
            audit_head: (head.0, hex::encode(head.1)),
            tables,
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
            .get("audit_log")
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
        for t in [
            "operators",
            "devices",
            "protectors",
            "audit_log",
            "enrollment_tokens",
        ] {
            let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {t}"))
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            if n > 0 {
                return Err(EscrowError::Conflict(format!(
                    "restore needs an empty database, but table {t} has {n} rows"
                )));
            }
        }
        sqlx::query("UPDATE keyring SET kek_id = $1, dek_id = $2, wrapped_dek = $3, created_at = $4, rewrapped_at = $5 WHERE id = 1")
            .bind(doc.keyring.kek_id.clone())
            .bind(doc.keyring.dek_id.clone())
            .bind(wrapped)
            .bind(doc.keyring.created_at)
            .bind(doc.keyring.rewrapped_at)
            .execute(&mut *tx)
            .await?;
        let mut summary = BackupSummary {
            format_version: FORMAT_VERSION,
            devices: 0,
            protectors: 0,
            audit_records: 0,
            rows: 0,
        };
        for (name, cols) in TABLES {
            let rows = doc
                .tables
                .get(*name)
                .and_then(Value::as_array)
                .ok_or_else(|| bad(&format!("table {name} missing")))?;
            let list = cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
            let params = (1..=cols.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("INSERT INTO {name} ({list}) VALUES ({params})");
            for row in rows {
                let vals = row
                    .as_array()
                    .filter(|a| a.len() == cols.len())
                    .ok_or_else(|| bad(&format!("row of {name}")))?;
                let mut q = sqlx::query(&sql);
                for ((_, kind), v) in cols.iter().zip(vals) {
                    q = match kind {
                        Int => q.bind(if v.is_null() {
                            None
                        } else {
                            Some(v.as_i64().ok_or_else(|| bad(name))?)
                        }),
                        Text => q.bind(if v.is_null() {
                            None
                        } else {
                            Some(v.as_str().ok_or_else(|| bad(name))?.to_owned())
                        }),
                        Blob => q.bind(if v.is_null() {
                            None
                        } else {
                            Some(
                                B64.decode(v.as_str().ok_or_else(|| bad(name))?)
                                    .map_err(|_| bad(name))?,
                            )
                        }),
                    };
                }
                q.execute(&mut *tx).await?;
            }
            let n = rows.len() as u64;
            summary.rows += n;
            match *name {
                "devices" => summary.devices = n,
                "protectors" => summary.protectors = n,
                "audit_log" => summary.audit_records = n,
                _ => {}
            }
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(doc.audit_head.0)
            .bind(head_hash)
            .execute(&mut *tx)
            .await?;
        if self.backend() == Backend::Postgres {
            for t in ID_TABLES {
                sqlx::query(&format!(
                    "SELECT setval(pg_get_serial_sequence('{t}', 'id'), COALESCE((SELECT MAX(id) FROM {t}), 0) + 1, false)"
                ))
                .execute(&mut *tx)
                .await?;
            }
        }
        append_audit(
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
