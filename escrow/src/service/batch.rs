//! The group committer's fast path: a whole batch of escrow calls in a constant number of SQL statements.
//! Each statement is a round trip to the database (on SQLite a hand-off to sqlx's worker thread and back);
//! at about five statements per call those hand-offs, not TLS or crypto, were where the daemon's CPU went.
//! The calls are applied in memory in queue order — exactly what the per-call path (`escrow_in_tx`) does one
//! call after the other — and the resulting rows are written with multi-row statements. Any error aborts
//! the batch; the committer then rolls back and reruns it on the per-call path with savepoints.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use sqlx::Row;

use super::EscrowService;
use super::agent::EscrowJob;
use super::candidates::volume_db;
use crate::audit::{AuditRecord, action};
use crate::error::EscrowError;
use crate::model::{Actor, AuditOutcome, ItemOutcome};
use crate::sealing::{Sealer, aad, ct_eq};
use crate::store::{
    AuditCursor, Backend, NewAudit, Tx, insert_audit_rows, param, values_placeholders,
};

pub(crate) type Outcome = Result<Vec<ItemOutcome>, EscrowError>;

/// (device id, volume GUID) or (volume row id, protector ID) pairs looked up per SELECT.
const KEYS_PER_STATEMENT: usize = 256;
/// Rows per multi-row INSERT (at most 8 parameters each).
const ROWS_PER_INSERT: usize = 128;

struct Volume {
    id: Option<i64>,
    stored: Option<(Option<String>, String)>,
    wanted: (Option<String>, String),
}

#[derive(Clone, Copy)]
enum ProtRow {
    Stored(i64),
    New(usize),
}

struct Protector {
    row: ProtRow,
    mac: Vec<u8>,
    has_key_package: bool,
    escrowed_at: i64,
}

struct NewProtector {
    device_id: i64,
    volume_id: i64,
    protector_id: String,
    prefix: String,
    password_sealed: Vec<u8>,
    password_mac: Vec<u8>,
    key_package_sealed: Option<Vec<u8>>,
}

/// Everything the batch writes, collected in memory first.
#[derive(Default)]
struct Writes {
    protectors: Vec<NewProtector>,
    key_packages: Vec<(i64, Vec<u8>)>,
    tpm: Vec<(i64, Vec<u8>)>,
    audit: Vec<AuditRecord>,
    mismatches: Vec<(i64, String, String, i64, i64)>,
}

fn or_pairs(backend: Backend, first_param: usize, n: usize, a: &str, b: &str) -> String {
    (0..n)
        .map(|i| {
            let p = first_param + 2 * i;
            format!(
                "({a} = {} AND {b} = {})",
                param(backend, p),
                param(backend, p + 1)
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

impl EscrowService {
    /// Apply `jobs` in order inside `tx`; pushes one outcome per job. A device revoked (or re-bound) since
    /// its certificate was checked gets its own `Forbidden` and writes nothing; the other calls proceed.
    pub(crate) async fn escrow_batch_in_tx(
        &self,
        tx: &mut Tx,
        sealer: &Sealer,
        audit: &mut AuditCursor,
        jobs: &[&EscrowJob],
        results: &mut Vec<Outcome>,
    ) -> Result<(), EscrowError> {
        let now = self.now();
        let now_us = self.now_us();
        let backend = self.backend();
        let active = touch_devices(tx, backend, jobs, now_us).await?;
        let live =
            |j: &EscrowJob| active.contains(&(j.device.id, j.device.client_cert_sha256.clone()));
        let mut volumes = load_volumes(tx, backend, jobs.iter().filter(|j| live(j))).await?;
        let new_volumes = insert_and_update_volumes(tx, backend, &mut volumes, now_us).await?;
        let keys: Vec<(i64, String)> = jobs
            .iter()
            .filter(|j| live(j))
            .flat_map(|j| {
                j.req.items.iter().filter_map(|item| {
                    let v = volumes.get(&(j.device.id, volume_db(&item.volume_guid)))?;
                    let id = v.id.filter(|id| !new_volumes.contains(id))?;
                    Some((id, item.protector_id.db_string()))
                })
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut protectors = load_protectors(tx, backend, &keys).await?;

        let mut w = Writes::default();
        for job in jobs {
            let device = &job.device;
            if !live(job) {
                results.push(Err(EscrowError::Forbidden(format!(
                    "device {} is revoked or its certificate binding changed; re-enroll",
                    device.computer_name
                ))));
                continue;
            }
            let actor = Actor::device(device);
            let mut out = Vec::with_capacity(job.req.items.len());
            for item in &job.req.items {
                let vg = volume_db(&item.volume_guid);
                let volume_id = volumes
                    .get(&(device.id, vg.clone()))
                    .and_then(|v| v.id)
                    .ok_or_else(|| EscrowError::Storage("a batch volume has no row".into()))?;
                let pid = item.protector_id.db_string();
                let pw = item.recovery_password.expose();
                let mac = sealer.password_mac(pw);
                let outcome = match protectors.get_mut(&(volume_id, pid.clone())) {
                    Some(p) if ct_eq(&p.mac, &mac) => {
                        if let (false, Some(kp)) = (p.has_key_package, item.key_package.as_deref())
                        {
                            let sealed =
                                sealer.seal(kp, &aad::key_package(device.id, &vg, &pid))?;
                            match p.row {
                                ProtRow::Stored(id) => w.key_packages.push((id, sealed)),
                                ProtRow::New(i) => {
                                    w.protectors[i].key_package_sealed = Some(sealed)
                                }
                            }
                            p.has_key_package = true;
                        }
                        ItemOutcome::Unchanged
                    }
                    Some(p) => {
                        let rec = audit.stage(
                            NewAudit::new(&actor, action::ESCROW_MISMATCH, AuditOutcome::Failure)
                                .device(device.id, &device.computer_name)
                                .protector(item.protector_id.to_string())
                                .detail(json!({"volume_guid": vg, "stored_escrowed_at": p.escrowed_at,
                                    "note": "same protector ID sent with a different recovery password; refused"})),
                            now,
                        );
                        w.mismatches
                            .push((device.id, vg, pid, p.escrowed_at, rec.seq));
                        w.audit.push(rec);
                        ItemOutcome::Mismatch
                    }
                    None => {
                        let sealed = sealer
                            .seal(pw.as_bytes(), &aad::recovery_password(device.id, &vg, &pid))?;
                        let kp = item
                            .key_package
                            .as_deref()
                            .map(|k| sealer.seal(k, &aad::key_package(device.id, &vg, &pid)))
                            .transpose()?;
                        protectors.insert(
                            (volume_id, pid.clone()),
                            Protector {
                                row: ProtRow::New(w.protectors.len()),
                                mac: mac.clone(),
                                has_key_package: kp.is_some(),
                                escrowed_at: now_us,
                            },
                        );
                        w.protectors.push(NewProtector {
                            device_id: device.id,
                            volume_id,
                            protector_id: pid,
                            prefix: item.protector_id.prefix8(),
                            password_sealed: sealed,
                            password_mac: mac,
                            key_package_sealed: kp,
                        });
                        w.audit.push(audit.stage(
                            NewAudit::new(&actor, action::ESCROW, AuditOutcome::Success)
                                .device(device.id, &device.computer_name)
                                .protector(item.protector_id.to_string())
                                .detail(json!({"volume_guid": vg, "volume_type": item.volume_type, "key_package": item.key_package.is_some()})),
                            now,
                        ));
                        ItemOutcome::Stored
                    }
                };
                out.push(outcome);
            }
            if let Some(auth) = &job.req.tpm_owner_auth {
                let sealed = sealer.seal(auth.as_bytes(), &aad::tpm_owner_auth(device.id))?;
                w.tpm.push((device.id, sealed));
                w.audit.push(
                    audit.stage(
                        NewAudit::new(&actor, action::TPM_OWNER_AUTH, AuditOutcome::Success)
                            .device(device.id, &device.computer_name),
                        now,
                    ),
                );
            }
            results.push(Ok(out));
        }
        write_all(tx, backend, w, now_us).await
    }
}

/// Refresh `last_check_in` of every active device in the batch; returns the (id, certificate) pairs that
/// are still active and bound (the per-call path's `ensure_active`, one statement per batch).
async fn touch_devices(
    tx: &mut Tx,
    backend: Backend,
    jobs: &[&EscrowJob],
    now_us: i64,
) -> Result<HashSet<(i64, String)>, EscrowError> {
    let pairs: Vec<(i64, String)> = jobs
        .iter()
        .map(|j| (j.device.id, j.device.client_cert_sha256.clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut active = HashSet::with_capacity(pairs.len());
    for chunk in pairs.chunks(KEYS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE devices SET last_check_in = {} WHERE revoked = 0 AND ({}) RETURNING id, cert_sha256",
            param(backend, 1),
            or_pairs(backend, 2, chunk.len(), "id", "cert_sha256")
        );
        let mut q = sqlx::query(&sql).bind(now_us);
        for (id, cert) in chunk {
            q = q.bind(*id).bind(cert.clone());
        }
        for row in q.fetch_all(&mut **tx).await? {
            active.insert((row.try_get(0)?, row.try_get(1)?));
        }
    }
    Ok(active)
}

type VolumeKey = (i64, String);

/// The batch's volumes as stored, with the mount point and type the last call for each one sends.
async fn load_volumes<'a>(
    tx: &mut Tx,
    backend: Backend,
    jobs: impl Iterator<Item = &'a &'a EscrowJob>,
) -> Result<HashMap<VolumeKey, Volume>, EscrowError> {
    let mut volumes: HashMap<VolumeKey, Volume> = HashMap::new();
    for job in jobs {
        for (item, mount) in job.req.items.iter().zip(&job.mounts) {
            let wanted = (mount.clone(), item.volume_type.as_str().to_owned());
            volumes
                .entry((job.device.id, volume_db(&item.volume_guid)))
                .and_modify(|v| v.wanted = wanted.clone())
                .or_insert(Volume {
                    id: None,
                    stored: None,
                    wanted,
                });
        }
    }
    let keys: Vec<VolumeKey> = volumes.keys().cloned().collect();
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id, device_id, volume_guid, mount_point, volume_type FROM volumes WHERE {}",
            or_pairs(backend, 1, chunk.len(), "device_id", "volume_guid")
        );
        let mut q = sqlx::query(&sql);
        for (d, vg) in chunk {
            q = q.bind(*d).bind(vg.clone());
        }
        for row in q.fetch_all(&mut **tx).await? {
            let key: VolumeKey = (row.try_get(1)?, row.try_get(2)?);
            if let Some(v) = volumes.get_mut(&key) {
                v.id = Some(row.try_get(0)?);
                v.stored = Some((row.try_get(3)?, row.try_get(4)?));
            }
        }
    }
    Ok(volumes)
}

/// Insert the volumes seen for the first time (returns their ids) and update changed ones.
async fn insert_and_update_volumes(
    tx: &mut Tx,
    backend: Backend,
    volumes: &mut HashMap<VolumeKey, Volume>,
    now_us: i64,
) -> Result<HashSet<i64>, EscrowError> {
    for v in volumes.values() {
        if let (Some(id), Some(stored)) = (v.id, &v.stored)
            && *stored != v.wanted
        {
            sqlx::query("UPDATE volumes SET mount_point = $1, volume_type = $2 WHERE id = $3")
                .bind(v.wanted.0.clone())
                .bind(v.wanted.1.clone())
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
    }
    let missing: Vec<(VolumeKey, (Option<String>, String))> = volumes
        .iter()
        .filter(|(_, v)| v.id.is_none())
        .map(|(k, v)| (k.clone(), v.wanted.clone()))
        .collect();
    let mut new_ids = HashSet::with_capacity(missing.len());
    for chunk in missing.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO volumes (device_id, volume_guid, mount_point, volume_type, first_seen) VALUES {} \
             RETURNING id, device_id, volume_guid",
            values_placeholders(backend, chunk.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for ((d, vg), (mount, vtype)) in chunk {
            q = q
                .bind(*d)
                .bind(vg.clone())
                .bind(mount.clone())
                .bind(vtype.clone())
                .bind(now_us);
        }
        for row in q.fetch_all(&mut **tx).await? {
            let id: i64 = row.try_get(0)?;
            let key: VolumeKey = (row.try_get(1)?, row.try_get(2)?);
            if let Some(v) = volumes.get_mut(&key) {
                v.id = Some(id);
                new_ids.insert(id);
            }
        }
    }
    Ok(new_ids)
}

/// The stored protectors with these (volume row id, protector ID) keys.
async fn load_protectors(
    tx: &mut Tx,
    backend: Backend,
    keys: &[(i64, String)],
) -> Result<HashMap<(i64, String), Protector>, EscrowError> {
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
        for row in q.fetch_all(&mut **tx).await? {
            found.insert(
                (row.try_get(1)?, row.try_get(2)?),
                Protector {
                    row: ProtRow::Stored(row.try_get(0)?),
                    mac: row.try_get(3)?,
                    has_key_package: row.try_get::<i64, _>(4)? == 1,
                    escrowed_at: row.try_get(5)?,
                },
            );
        }
    }
    Ok(found)
}

/// Write what the batch produced: new protectors and audit records with multi-row INSERTs; the rare
/// key-package additions, TPM owner-auth values and mismatch rows one by one.
async fn write_all(
    tx: &mut Tx,
    backend: Backend,
    w: Writes,
    now_us: i64,
) -> Result<(), EscrowError> {
    for chunk in w.protectors.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO protectors (device_id, volume_id, protector_id, protector_prefix, password_sealed, \
             password_mac, key_package_sealed, escrowed_at, rotation_state) VALUES {}",
            placeholders_with_literal(backend, chunk.len(), 8, "'none'")
        );
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
                .bind(now_us);
        }
        q.execute(&mut **tx).await?;
    }
    for (id, sealed) in w.key_packages {
        sqlx::query("UPDATE protectors SET key_package_sealed = $1 WHERE id = $2")
            .bind(sealed)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    for (device_id, sealed) in w.tpm {
        let n = sqlx::query(
            "UPDATE tpm_owner_auth SET sealed = $1, updated_at = $2 WHERE device_id = $3",
        )
        .bind(sealed.clone())
        .bind(now_us)
        .bind(device_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if n == 0 {
            sqlx::query(
                "INSERT INTO tpm_owner_auth (device_id, sealed, updated_at) VALUES ($1, $2, $3)",
            )
            .bind(device_id)
            .bind(sealed)
            .bind(now_us)
            .execute(&mut **tx)
            .await?;
        }
    }
    insert_audit_rows(tx, &w.audit).await?;
    for (device_id, vg, pid, stored_at, seq) in w.mismatches {
        sqlx::query(
            "INSERT INTO mismatches (device_id, volume_guid, protector_id, detected_at, stored_escrowed_at, audit_seq) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(device_id)
        .bind(vg)
        .bind(pid)
        .bind(now_us)
        .bind(stored_at)
        .bind(seq)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// As `values_placeholders`, with one SQL literal appended to every row.
fn placeholders_with_literal(backend: Backend, rows: usize, cols: usize, literal: &str) -> String {
    values_placeholders(backend, rows, cols).replace(')', &format!(", {literal})"))
}
