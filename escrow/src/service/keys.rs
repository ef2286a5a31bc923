//! Key management: KEK re-wrap with data-key rotation, and bulk import of existing escrow records.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::devices::validate_computer_name;
use super::{EscrowService, require_role};
use crate::audit::{action, to_micros};
use crate::error::EscrowError;
use crate::model::{Actor, AuditOutcome, ImportRecord, Role};
use crate::sealing::{Dek, Kek, Sealer, aad};
use crate::store::audit::{self as audit_log, NewAudit};
use crate::store::devices::{NewDevice, name_key};
use crate::store::keys::{self, NewProtector, volume_db};
use crate::store::{devices, keyring};

/// Protector rows re-sealed per read.
const RESEAL_PAGE: i64 = 1000;

impl EscrowService {
    /// Wrap the data under `new_kek`: generates a new data key, re-seals every secret (recomputing password MACs)
    /// and stores the new key wrapped by `new_kek`, all in one transaction. Returns the number of re-sealed values.
    /// Afterwards the old KEK opens nothing; replace the KEK file/credential with the new one before restarting.
    pub async fn rewrap_kek(&self, new_kek: &Kek) -> Result<u64, EscrowError> {
        let _exclusive = self.seal_lock_write().await;
        let old = self.sealer();
        let dek = Dek::generate()?;
        let new = Sealer::new(&dek)?;
        let mut tx = self.inner.db.begin_write().await?;
        let mut count = 0u64;
        let mut after = 0i64;
        loop {
            let rows = keys::protectors_after(&mut tx, after, RESEAL_PAGE).await?;
            if rows.is_empty() {
                break;
            }
            for r in rows {
                let pw_aad = aad::recovery_password(r.device_id, &r.volume_guid, &r.protector_id);
                let pw = old.open(&r.password_sealed, &pw_aad)?;
                let pw_text = std::str::from_utf8(&pw).map_err(|_| {
                    EscrowError::Crypto(format!("stored password of row {} is not text", r.id))
                })?;
                let kp_aad = aad::key_package(r.device_id, &r.volume_guid, &r.protector_id);
                let kp = r
                    .key_package_sealed
                    .map(|k| old.open(&k, &kp_aad).and_then(|p| new.seal(&p, &kp_aad)))
                    .transpose()?;
                count += 1 + u64::from(kp.is_some());
                keys::reseal_protector(
                    &mut tx,
                    r.id,
                    new.seal(pw_text.as_bytes(), &pw_aad)?,
                    new.password_mac(pw_text),
                    kp,
                )
                .await?;
                after = r.id;
            }
        }
        for (device_id, sealed) in keys::tpm_all(&mut tx).await? {
            let a = aad::tpm_owner_auth(device_id);
            let plain = old.open(&sealed, &a)?;
            keys::reseal_tpm(&mut tx, device_id, new.seal(&plain, &a)?).await?;
            count += 1;
        }
        let old_kek_id = self.kek_id();
        let mut ring = keyring::get(&mut tx)
            .await?
            .ok_or_else(|| EscrowError::Storage("the keyring row is missing".into()))?;
        ring.kek_id = new_kek.id();
        ring.dek_id = new.dek_id().to_owned();
        ring.wrapped_dek = new_kek.wrap(&dek)?;
        ring.rewrapped_at = Some(self.now_us());
        keyring::replace(&mut tx, &ring).await?;
        audit_log::append(
            &mut tx,
            NewAudit::new(&Actor::local("kek-rewrap"), action::KEK_REWRAP, AuditOutcome::Success)
                .detail(json!({"old_kek_id": old_kek_id, "new_kek_id": new_kek.id(), "resealed": count, "dek_id": new.dek_id()})),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        self.replace_sealer(new);
        self.set_kek(new_kek);
        Ok(count)
    }

    /// Append audit records taken from elsewhere (a migrated log, a load tool), chained after the
    /// current head in one transaction: sequence numbers and hashes are assigned here, whatever
    /// the records carry. Local only (run on the appliance, like `operator bootstrap`); the import
    /// itself is audited as one more record after them. Returns the last sequence number.
    pub async fn import_audit_records(
        &self,
        records: Vec<crate::audit::AuditRecord>,
    ) -> Result<i64, EscrowError> {
        let n = records.len();
        let mut tx = self.inner.db.begin_write().await?;
        audit_log::append_records(&mut tx, records).await?;
        let seq = audit_log::append(
            &mut tx,
            NewAudit::new(
                &Actor::local("audit import".to_string()),
                action::IMPORT,
                AuditOutcome::Success,
            )
            .detail(serde_json::json!({"audit_records": n})),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(seq)
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
        let names = records
            .iter()
            .map(|r| validate_computer_name(&r.computer_name))
            .collect::<Result<Vec<_>, _>>()?;
        let _guard = self.seal_lock_read().await;
        let sealer = self.sealer();
        let now_us = self.now_us();
        let mut tx = self.inner.db.begin_write().await?;
        // 1. devices (created unbound: they bind a certificate at their first enrollment)
        let mut device_ids: HashMap<String, i64> = HashMap::new();
        for (r, name) in records.iter().zip(&names) {
            let key = name_key(name, r.domain.as_deref());
            if device_ids.contains_key(&key) {
                continue;
            }
            let id = match devices::by_name_key(&mut tx, &key).await? {
                Some(d) => d.id,
                None => {
                    let new = NewDevice {
                        computer_name: name,
                        domain: r.domain.as_deref(),
                        serial: None,
                        first_seen: now_us,
                        cert_sha256: "",
                        reenroll_allowed: true,
                        enrolled_token: None,
                    };
                    devices::insert(&mut tx, &new).await?
                }
            };
            device_ids.insert(key, id);
        }
        let device_of = |r: &ImportRecord, name: &str| {
            device_ids
                .get(&name_key(name, r.domain.as_deref()))
                .copied()
                .ok_or_else(|| EscrowError::Storage("device vanished during import".into()))
        };
        // 2. volumes: the first record of each (device, volume) gives its mount point and type
        let mut wanted = Vec::new();
        let mut seen = HashSet::new();
        for (r, name) in records.iter().zip(&names) {
            let key = (device_of(r, name)?, volume_db(&r.item.volume_guid));
            if seen.insert(key.clone()) {
                wanted.push((key, r));
            }
        }
        let lookup: Vec<(i64, String)> = wanted.iter().map(|(k, _)| k.clone()).collect();
        let mut volumes: HashMap<(i64, String), i64> = keys::load_volumes(&mut tx, &lookup)
            .await?
            .into_iter()
            .map(|(k, v)| (k, v.id))
            .collect();
        let missing: Vec<(i64, String, Option<String>, String)> = wanted
            .iter()
            .filter(|(k, _)| !volumes.contains_key(k))
            .map(|((d, vg), r)| {
                (
                    *d,
                    vg.clone(),
                    r.item.mount_point.clone(),
                    r.item.volume_type.as_str().to_owned(),
                )
            })
            .collect();
        volumes.extend(keys::insert_volumes(&mut tx, &missing, now_us).await?);
        // 3. protectors (existing ones are left as they are)
        let mut rows = Vec::with_capacity(records.len());
        for (r, name) in records.iter().zip(&names) {
            let dev = device_of(r, name)?;
            let vg = volume_db(&r.item.volume_guid);
            let volume_id = volumes
                .get(&(dev, vg.clone()))
                .copied()
                .ok_or_else(|| EscrowError::Storage("volume vanished during import".into()))?;
            let pid = r.item.protector_id.db_string();
            let pw = r.item.recovery_password.expose();
            rows.push(NewProtector {
                device_id: dev,
                volume_id,
                prefix: r.item.protector_id.prefix8(),
                password_sealed: sealer
                    .seal(pw.as_bytes(), &aad::recovery_password(dev, &vg, &pid))?,
                password_mac: sealer.password_mac(pw),
                key_package_sealed: r
                    .item
                    .key_package
                    .as_deref()
                    .map(|k| sealer.seal(k, &aad::key_package(dev, &vg, &pid)))
                    .transpose()?,
                escrowed_at: to_micros(r.escrowed_at),
                protector_id: pid,
            });
        }
        let inserted = keys::insert_protectors(&mut tx, &rows, true).await?;
        audit_log::append(
            &mut tx,
            NewAudit::new(actor, action::IMPORT, AuditOutcome::Success).detail(
                json!({"records": records.len(), "inserted": inserted, "devices": device_ids.len()}),
            ),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        self.devices_changed();
        Ok(inserted)
    }
}
