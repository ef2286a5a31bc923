//! Set-based reads and writes of volumes and protectors: a whole batch of escrow calls (or an import) in
//! a constant number of statements. Each statement is a round trip to the database (on SQLite a hand-off
//! to sqlx's worker thread and back); at about five statements per call those hand-offs, not TLS or
//! crypto, were where the daemon's CPU went.

use std::collections::HashMap;

use sqlx::{AnyConnection, Row};

use crate::error::EscrowError;
use crate::store::{backend_of, or_pairs, values_placeholders};

/// (device id, volume GUID) or (volume row id, protector ID) pairs looked up per SELECT.
const KEYS_PER_STATEMENT: usize = 256;
/// Rows per multi-row INSERT (at most 9 parameters each; far below both backends' bind limits).
const ROWS_PER_INSERT: usize = 128;

/// A stored volume row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredVolume {
    pub id: i64,
    pub mount_point: Option<String>,
    pub volume_type: String,
}

/// The volumes stored under these (device id, volume GUID) keys.
pub(crate) async fn load_volumes(
    c: &mut AnyConnection,
    keys: &[(i64, String)],
) -> Result<HashMap<(i64, String), StoredVolume>, EscrowError> {
    let backend = backend_of(c);
    let mut found = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id, device_id, volume_guid, mount_point, volume_type FROM volumes WHERE {}",
            or_pairs(backend, 1, chunk.len(), "device_id", "volume_guid")
        );
        let mut q = sqlx::query(&sql);
        for (d, vg) in chunk {
            q = q.bind(*d).bind(vg.clone());
        }
        for row in q.fetch_all(&mut *c).await? {
            found.insert(
                (row.try_get(1)?, row.try_get(2)?),
                StoredVolume {
                    id: row.try_get(0)?,
                    mount_point: row.try_get(3)?,
                    volume_type: row.try_get(4)?,
                },
            );
        }
    }
    Ok(found)
}

pub(crate) async fn update_volume(
    c: &mut AnyConnection,
    id: i64,
    mount_point: Option<&str>,
    volume_type: &str,
) -> Result<(), EscrowError> {
    sqlx::query("UPDATE volumes SET mount_point = $1, volume_type = $2 WHERE id = $3")
        .bind(mount_point.map(str::to_owned))
        .bind(volume_type.to_owned())
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// Insert volumes `(device id, volume GUID, mount point, type)`; returns the new row ids by key.
pub(crate) async fn insert_volumes(
    c: &mut AnyConnection,
    rows: &[(i64, String, Option<String>, String)],
    now: i64,
) -> Result<HashMap<(i64, String), i64>, EscrowError> {
    let backend = backend_of(c);
    let mut ids = HashMap::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO volumes (device_id, volume_guid, mount_point, volume_type, first_seen) VALUES {} \
             RETURNING id, device_id, volume_guid",
            values_placeholders(backend, chunk.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for (d, vg, mount, vtype) in chunk {
            q = q
                .bind(*d)
                .bind(vg.clone())
                .bind(mount.clone())
                .bind(vtype.clone())
                .bind(now);
        }
        for row in q.fetch_all(&mut *c).await? {
            ids.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
        }
    }
    Ok(ids)
}

/// A stored protector, as the escrow rules compare it.
#[derive(Clone, Debug)]
pub(crate) struct StoredProtector {
    pub row_id: i64,
    pub password_mac: Vec<u8>,
    pub has_key_package: bool,
    pub escrowed_at: i64,
}

/// The protectors stored under these (volume row id, protector ID) keys.
pub(crate) async fn load_protectors(
    c: &mut AnyConnection,
    keys: &[(i64, String)],
) -> Result<HashMap<(i64, String), StoredProtector>, EscrowError> {
    let backend = backend_of(c);
    let mut found = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id, volume_id, protector_id, password_mac, CASE WHEN key_package_sealed IS NULL THEN 0 ELSE 1 END, \
             escrowed_at FROM protectors WHERE {}",
            or_pairs(backend, 1, chunk.len(), "volume_id", "protector_id")
        );
        let mut q = sqlx::query(&sql);
        for (v, pid) in chunk {
            q = q.bind(*v).bind(pid.clone());
        }
        for row in q.fetch_all(&mut *c).await? {
            found.insert(
                (row.try_get(1)?, row.try_get(2)?),
                StoredProtector {
                    row_id: row.try_get(0)?,
                    password_mac: row.try_get(3)?,
                    has_key_package: row.try_get::<i64, _>(4)? == 1,
                    escrowed_at: row.try_get(5)?,
                },
            );
        }
    }
    Ok(found)
}

/// A protector row to insert (secrets already sealed).
#[derive(Clone, Debug)]
pub(crate) struct NewProtector {
    pub device_id: i64,
    pub volume_id: i64,
    /// Storage form (upper-case hyphenated).
    pub protector_id: String,
    pub prefix: String,
    pub password_sealed: Vec<u8>,
    pub password_mac: Vec<u8>,
    pub key_package_sealed: Option<Vec<u8>>,
    pub escrowed_at: i64,
}

/// Insert protectors; with `skip_existing`, rows whose (volume, protector ID) exists are left alone.
/// Returns the number of rows inserted.
pub(crate) async fn insert_protectors(
    c: &mut AnyConnection,
    rows: &[NewProtector],
    skip_existing: bool,
) -> Result<u64, EscrowError> {
    let backend = backend_of(c);
    let mut inserted = 0;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = format!(
            "INSERT INTO protectors (device_id, volume_id, protector_id, protector_prefix, password_sealed, \
             password_mac, key_package_sealed, escrowed_at) VALUES {}",
            values_placeholders(backend, chunk.len(), 8)
        );
        if skip_existing {
            sql.push_str(" ON CONFLICT (volume_id, protector_id) DO NOTHING");
        }
        let mut q = sqlx::query(&sql);
        for p in chunk {
            q = q
                .bind(p.device_id)
                .bind(p.volume_id)
                .bind(p.protector_id.clone())
                .bind(p.prefix.clone())
                .bind(p.password_sealed.clone())
                .bind(p.password_mac.clone())
                .bind(p.key_package_sealed.clone())
                .bind(p.escrowed_at);
        }
        inserted += q.execute(&mut *c).await?.rows_affected();
    }
    Ok(inserted)
}

/// Add a key package to a protector stored without one.
pub(crate) async fn set_key_package(
    c: &mut AnyConnection,
    row_id: i64,
    sealed: Vec<u8>,
) -> Result<(), EscrowError> {
    sqlx::query("UPDATE protectors SET key_package_sealed = $1 WHERE id = $2")
        .bind(sealed)
        .bind(row_id)
        .execute(c)
        .await?;
    Ok(())
}

/// Store (or replace) a device's sealed TPM owner authorisation.
pub(crate) async fn upsert_tpm(
    c: &mut AnyConnection,
    device_id: i64,
    sealed: Vec<u8>,
    now: i64,
) -> Result<(), EscrowError> {
    let n =
        sqlx::query("UPDATE tpm_owner_auth SET sealed = $1, updated_at = $2 WHERE device_id = $3")
            .bind(sealed.clone())
            .bind(now)
            .bind(device_id)
            .execute(&mut *c)
            .await?
            .rows_affected();
    if n == 0 {
        sqlx::query(
            "INSERT INTO tpm_owner_auth (device_id, sealed, updated_at) VALUES ($1, $2, $3)",
        )
        .bind(device_id)
        .bind(sealed)
        .bind(now)
        .execute(c)
        .await?;
    }
    Ok(())
}

/// A refused escrow of a known protector ID with another password.
#[derive(Clone, Debug)]
pub(crate) struct NewMismatch {
    pub device_id: i64,
    pub volume_guid: String,
    pub protector_id: String,
    pub stored_escrowed_at: i64,
    pub audit_seq: i64,
}

pub(crate) async fn insert_mismatches(
    c: &mut AnyConnection,
    rows: &[NewMismatch],
    now: i64,
) -> Result<(), EscrowError> {
    for m in rows {
        sqlx::query(
            "INSERT INTO mismatches (device_id, volume_guid, protector_id, detected_at, stored_escrowed_at, audit_seq) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(m.device_id)
        .bind(m.volume_guid.clone())
        .bind(m.protector_id.clone())
        .bind(now)
        .bind(m.stored_escrowed_at)
        .bind(m.audit_seq)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// A protector ID escrowed by `device_id` while `other_device_id` already held it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewConflict {
    pub protector_id: String,
    pub device_id: i64,
    pub other_device_id: i64,
    pub audit_seq: i64,
}

/// The devices holding each of these protector IDs (storage form), any state.
pub(crate) async fn devices_holding(
    c: &mut AnyConnection,
    protector_ids: &[String],
) -> Result<HashMap<String, Vec<i64>>, EscrowError> {
    let backend = backend_of(c);
    let mut found: HashMap<String, Vec<i64>> = HashMap::new();
    for chunk in protector_ids.chunks(KEYS_PER_STATEMENT) {
        let list = (1..=chunk.len())
            .map(|i| crate::store::param(backend, i))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT DISTINCT protector_id, device_id FROM protectors WHERE protector_id IN ({list})"
        );
        let mut q = sqlx::query(&sql);
        for pid in chunk {
            q = q.bind(pid.clone());
        }
        for row in q.fetch_all(&mut *c).await? {
            found
                .entry(row.try_get(0)?)
                .or_default()
                .push(row.try_get(1)?);
        }
    }
    Ok(found)
}

pub(crate) async fn insert_conflicts(
    c: &mut AnyConnection,
    rows: &[NewConflict],
    now: i64,
) -> Result<(), EscrowError> {
    for r in rows {
        sqlx::query(
            "INSERT INTO protector_conflicts (protector_id, device_id, other_device_id, detected_at, audit_seq) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(r.protector_id.clone())
        .bind(r.device_id)
        .bind(r.other_device_id)
        .bind(now)
        .bind(r.audit_seq)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}
