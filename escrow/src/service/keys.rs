//! Key management: KEK re-wrap with data-key rotation, and bulk import of existing escrow records.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use sqlx::Row;

use super::candidates::volume_db;
use super::devices::{name_key, validate_computer_name};
use super::{EscrowService, require_role};
use crate::audit::{action, to_micros};
use crate::error::EscrowError;
use crate::model::{Actor, AuditOutcome, ImportRecord, Role};
use crate::sealing::{Dek, Kek, Sealer, aad};
use crate::store::{NewAudit, Tx, append_audit};

/// Rows per multi-row INSERT (keeps bound parameters far below SQLite's limit).
const INSERT_BATCH: usize = 200;

impl EscrowService {
    /// Wrap the data under `new_kek`: generates a new data key, re-seals every secret (recomputing password MACs)
    /// and stores the new key wrapped by `new_kek`, all in one transaction. Returns the number of re-sealed values.
    /// Afterwards the old KEK opens nothing; replace the KEK file/credential with the new one before restarting.
    pub async fn rewrap_kek(&self, new_kek: &Kek) -> Result<u64, EscrowError> {
        let _exclusive = self.inner.seal_lock.write().await;
        let old = self.sealer();
        let dek = Dek::generate()?;
        let new = Sealer::new(&dek)?;
        let mut tx = self.inner.db.begin_write().await?;
        let mut count = 0u64;
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(
                "SELECT p.id, p.device_id, v.volume_guid, p.protector_id, p.password_sealed, p.key_package_sealed \
                 FROM protectors p JOIN volumes v ON v.id = p.volume_id WHERE p.id > $1 ORDER BY p.id LIMIT 1000",
            )
            .bind(after)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let id: i64 = r.try_get(0)?;
                let device_id: i64 = r.try_get(1)?;
                let vg: String = r.try_get(2)?;
                let pid: String = r.try_get(3)?;
                let pw_aad = aad::recovery_password(device_id, &vg, &pid);
                let pw = old.open(&r.try_get::<Vec<u8>, _>(4)?, &pw_aad)?;
                let pw_text = std::str::from_utf8(&pw).map_err(|_| {
                    EscrowError::Crypto(format!("stored password of row {id} is not text"))
                })?;
                let kp_aad = aad::key_package(device_id, &vg, &pid);
                let kp = r
                    .try_get::<Option<Vec<u8>>, _>(5)?
                    .map(|k| old.open(&k, &kp_aad).and_then(|p| new.seal(&p, &kp_aad)))
                    .transpose()?;
                count += 1 + u64::from(kp.is_some());
                sqlx::query("UPDATE protectors SET password_sealed = $1, password_mac = $2, key_package_sealed = $3 WHERE id = $4")
                    .bind(new.seal(pw_text.as_bytes(), &pw_aad)?)
                    .bind(new.password_mac(pw_text))
                    .bind(kp)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                after = id;
            }
        }
        for r in sqlx::query("SELECT device_id, sealed FROM tpm_owner_auth")
            .fetch_all(&mut *tx)
            .await?
        {
            let device_id: i64 = r.try_get(0)?;
            let a = aad::tpm_owner_auth(device_id);
            let plain = old.open(&r.try_get::<Vec<u8>, _>(1)?, &a)?;
            sqlx::query("UPDATE tpm_owner_auth SET sealed = $1 WHERE device_id = $2")
                .bind(new.seal(&plain, &a)?)
                .bind(device_id)
                .execute(&mut *tx)
                .await?;
            count += 1;
        }
        let old_kek_id = self.kek_id();
        sqlx::query("UPDATE keyring SET kek_id = $1, dek_id = $2, wrapped_dek = $3, rewrapped_at = $4 WHERE id = 1")
            .bind(new_kek.id())
            .bind(new.dek_id().to_owned())
            .bind(new_kek.wrap(&dek)?)
            .bind(self.now_us())
            .execute(&mut *tx)
            .await?;
        append_audit(
            &mut tx,
            NewAudit::new(&Actor::local("kek-rewrap"), action::KEK_REWRAP, AuditOutcome::Success)
                .detail(json!({"old_kek_id": old_kek_id, "new_kek_id": new_kek.id(), "resealed": count, "dek_id": new.dek_id()})),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        self.inner.sealer.store(std::sync::Arc::new(new));
        if let Ok(mut k) = self.inner.kek.lock() {
            *k = new_kek.clone();
        }
        Ok(count)
    }

    /// Import already-escrowed keys (e.g. from an MBAM or AD DS export) in one transaction, sealing each.
    /// Devices that do not exist are created unbound (they bind a certificate at their first enrollment).
    /// Existing (device, volume, protector) rows are left as they are. Returns the number of new protectors.
    pub async fn bulk_import(
        &self,
        actor: &Actor,
        records: &[ImportRecord],
    ) -> Result<u64, EscrowError> {
        require_role(actor, &[Role::Admin], "import keys")?;
        let _guard = self.inner.seal_lock.read().await;
        let sealer = self.sealer();
        let now_us = self.now_us();
        let mut tx = self.inner.db.begin_write().await?;
        // 1. devices
        let mut devices: HashMap<String, i64> = HashMap::new();
        // Devices created by this import have no volumes yet: no need to look theirs up.
        let mut created: HashSet<i64> = HashSet::new();
        for r in records {
            let name = validate_computer_name(&r.computer_name)?;
            let key = name_key(&name, r.domain.as_deref());
            if devices.contains_key(&key) {
                continue;
            }
            let id = match sqlx::query("SELECT id FROM devices WHERE name_key = $1").bind(key.clone()).fetch_optional(&mut *tx).await? {
                Some(row) => row.try_get(0)?,
                None => sqlx::query(
                    "INSERT INTO devices (computer_name, domain, name_key, first_seen, cert_sha256, revoked, reenroll_allowed) \
                     VALUES ($1, $2, $3, $4, '', 0, 1) RETURNING id",
                )
                .bind(name)
                .bind(r.domain.clone())
                .bind(key.clone())
                .bind(now_us)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)
                .inspect(|id| {
                    created.insert(*id);
                })?,
            };
            devices.insert(key, id);
        }
        // 2. volumes
        let mut volumes: HashMap<(i64, String), i64> = HashMap::new();
        let mut missing: Vec<(i64, &ImportRecord)> = Vec::new();
        let mut pending: HashSet<(i64, String)> = HashSet::new();
        for r in records {
            let dev = device_of(&devices, r)?;
            let vg = volume_db(&r.item.volume_guid);
            let key = (dev, vg);
            if volumes.contains_key(&key) || pending.contains(&key) {
                continue;
            }
            let (dev, vg) = key;
            if created.contains(&dev) {
                pending.insert((dev, vg));
                missing.push((dev, r));
                continue;
            }
            match sqlx::query("SELECT id FROM volumes WHERE device_id = $1 AND volume_guid = $2")
                .bind(dev)
                .bind(vg.clone())
                .fetch_optional(&mut *tx)
                .await?
            {
                Some(row) => {
                    volumes.insert((dev, vg), row.try_get(0)?);
                }
                None => {
                    pending.insert((dev, vg));
                    missing.push((dev, r));
                }
            }
        }
        for chunk in missing.chunks(INSERT_BATCH) {
            insert_volumes(&mut tx, chunk, now_us, &mut volumes).await?;
        }
        // 3. protectors
        let mut inserted = 0u64;
        for chunk in records.chunks(INSERT_BATCH) {
            let mut sql = String::from(
                "INSERT INTO protectors (device_id, volume_id, protector_id, protector_prefix, password_sealed, password_mac, \
                 key_package_sealed, escrowed_at, rotation_state) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 8;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, 'none')",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8
                ));
            }
            sql.push_str(" ON CONFLICT (volume_id, protector_id) DO NOTHING");
            let mut q = sqlx::query(&sql);
            for r in chunk {
                let dev = device_of(&devices, r)?;
                let vg = volume_db(&r.item.volume_guid);
                let vol = volumes
                    .get(&(dev, vg.clone()))
                    .copied()
                    .ok_or_else(|| EscrowError::Storage("volume vanished during import".into()))?;
                let pid = r.item.protector_id.db_string();
                let pw = r.item.recovery_password.expose();
                q = q
                    .bind(dev)
                    .bind(vol)
                    .bind(pid.clone())
                    .bind(r.item.protector_id.prefix8())
                    .bind(sealer.seal(pw.as_bytes(), &aad::recovery_password(dev, &vg, &pid))?)
                    .bind(sealer.password_mac(pw))
                    .bind(
                        r.item
                            .key_package
                            .as_deref()
                            .map(|k| sealer.seal(k, &aad::key_package(dev, &vg, &pid)))
                            .transpose()?,
                    )
                    .bind(to_micros(r.escrowed_at));
            }
            inserted += q.execute(&mut *tx).await?.rows_affected();
        }
        append_audit(
            &mut tx,
            NewAudit::new(actor, action::IMPORT, AuditOutcome::Success).detail(
                json!({"records": records.len(), "inserted": inserted, "devices": devices.len()}),
            ),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        self.devices_changed();
        Ok(inserted)
    }
}

fn device_of(devices: &HashMap<String, i64>, r: &ImportRecord) -> Result<i64, EscrowError> {
    devices
        .get(&name_key(r.computer_name.trim(), r.domain.as_deref()))
        .copied()
        .ok_or_else(|| EscrowError::Storage("device vanished during import".into()))
}

async fn insert_volumes(
    tx: &mut Tx,
    chunk: &[(i64, &ImportRecord)],
    now_us: i64,
    volumes: &mut HashMap<(i64, String), i64>,
) -> Result<(), EscrowError> {
    let mut sql = String::from(
        "INSERT INTO volumes (device_id, volume_guid, mount_point, volume_type, first_seen) VALUES ",
    );
    for i in 0..chunk.len() {
        let b = i * 5;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5
        ));
    }
    sql.push_str(" RETURNING id, device_id, volume_guid");
    let mut q = sqlx::query(&sql);
    for (dev, r) in chunk {
        q = q
            .bind(*dev)
            .bind(volume_db(&r.item.volume_guid))
            .bind(r.item.mount_point.clone())
            .bind(r.item.volume_type.as_str())
            .bind(now_us);
    }
    for row in q.fetch_all(&mut **tx).await? {
        volumes.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
    }
    Ok(())
}
