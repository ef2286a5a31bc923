//! The one write path of escrow calls: a batch of calls applied in queue order inside one transaction.
//! The rules run in memory over what the store loaded for the whole batch (a constant number of
//! statements, `store::keys` set-based functions), and the resulting rows are written at the end. The
//! group committer runs a whole batch through it; when that fails it runs each call alone (a batch of
//! one) in a savepoint, so both paths apply exactly the same rules.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::EscrowService;
use crate::audit::{AuditRecord, action};
use crate::error::EscrowError;
use crate::model::{Actor, AuditOutcome, DeviceInfo, EscrowRequest, ItemOutcome};
use crate::sealing::{Sealer, aad, ct_eq};
use crate::store::audit::{self as audit_log, AuditCursor, NewAudit};
use crate::store::keys::{self, NewConflict, NewMismatch, NewProtector, StoredVolume, volume_db};
use crate::store::{Tx, devices};

pub(crate) type Outcome = Result<Vec<ItemOutcome>, EscrowError>;

/// One escrow call waiting for the group committer.
#[derive(Debug)]
pub(crate) struct EscrowJob {
    pub device: DeviceInfo,
    pub req: EscrowRequest,
    /// The cleaned mount point of each item.
    pub mounts: Vec<Option<String>>,
}

/// A protector as the batch sees it: stored before the batch, or added by an earlier call of it.
enum Known {
    Stored { row_id: i64 },
    New { index: usize },
}

struct Protector {
    known: Known,
    mac: Vec<u8>,
    has_key_package: bool,
    escrowed_at: i64,
}

/// Everything the batch writes, collected in memory first.
#[derive(Default)]
struct Writes {
    protectors: Vec<NewProtector>,
    key_packages: Vec<(i64, Vec<u8>)>,
    tpm: Vec<(i64, Vec<u8>)>,
    audit: Vec<AuditRecord>,
    mismatches: Vec<NewMismatch>,
    conflicts: Vec<NewConflict>,
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
        let pairs: Vec<(i64, String)> = jobs
            .iter()
            .map(|j| (j.device.id, j.device.client_cert_sha256.clone()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let active = devices::touch_many_if_bound(tx, &pairs, now_us).await?;
        let live =
            |j: &EscrowJob| active.contains(&(j.device.id, j.device.client_cert_sha256.clone()));
        let volume_ids =
            ensure_volumes(tx, jobs.iter().copied().filter(|j| live(j)), now_us).await?;
        let keys: Vec<(i64, String)> = jobs
            .iter()
            .filter(|j| live(j))
            .flat_map(|j| {
                j.req.items.iter().filter_map(|item| {
                    let id = volume_ids.get(&(j.device.id, volume_db(&item.volume_guid)))?;
                    Some((*id, item.protector_id.db_string()))
                })
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut protectors: HashMap<(i64, String), Protector> = keys::load_protectors(tx, &keys)
            .await?
            .into_iter()
            .map(|(k, p)| {
                (
                    k,
                    Protector {
                        known: Known::Stored { row_id: p.row_id },
                        mac: p.password_mac,
                        has_key_package: p.has_key_package,
                        escrowed_at: p.escrowed_at,
                    },
                )
            })
            .collect();

        // Who already holds each protector ID: a device escrowing an ID another device holds is a
        // conflict (cloned VM or rogue device), recorded next to the stored row.
        let pids: Vec<String> = keys
            .iter()
            .map(|(_, pid)| pid.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut holders = keys::devices_holding(tx, &pids).await?;

        let mut w = Writes::default();
        for job in jobs {
            let device = &job.device;
            if !live(job) {
                results.push(Err(super::agent::not_active(device)));
                continue;
            }
            let actor = Actor::device(device);
            let mut out = Vec::with_capacity(job.req.items.len());
            for item in &job.req.items {
                let vg = volume_db(&item.volume_guid);
                let volume_id = *volume_ids
                    .get(&(device.id, vg.clone()))
                    .ok_or_else(|| EscrowError::Storage("a batch volume has no row".into()))?;
                let pid = item.protector_id.db_string();
                let pw = item.recovery_password.expose();
                let mac = sealer.password_mac(pw);
                let outcome = match protectors.get_mut(&(volume_id, pid.clone())) {
                    Some(p) if ct_eq(&p.mac, &mac) => {
                        // Same protector, same password: nothing new, except a key package sent late.
                        if let (false, Some(kp)) = (p.has_key_package, item.key_package.as_deref())
                        {
                            let sealed =
                                sealer.seal(kp, &aad::key_package(device.id, &vg, &pid))?;
                            match p.known {
                                Known::Stored { row_id } => w.key_packages.push((row_id, sealed)),
                                Known::New { index } => {
                                    w.protectors[index].key_package_sealed = Some(sealed)
                                }
                            }
                            p.has_key_package = true;
                        }
                        ItemOutcome::Unchanged
                    }
                    Some(p) => {
                        // Same protector ID, another password: the stored key is kept, the attempt recorded.
                        let rec = audit.stage(
                            NewAudit::new(&actor, action::ESCROW_MISMATCH, AuditOutcome::Failure)
                                .device(device.id, &device.computer_name)
                                .protector(item.protector_id.to_string())
                                .detail(json!({"volume_guid": vg, "stored_escrowed_at": p.escrowed_at,
                                    "note": "same protector ID sent with a different recovery password; refused"})),
                            now,
                        );
                        w.mismatches.push(NewMismatch {
                            device_id: device.id,
                            volume_guid: vg,
                            protector_id: pid,
                            stored_escrowed_at: p.escrowed_at,
                            audit_seq: rec.seq,
                        });
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
                                known: Known::New {
                                    index: w.protectors.len(),
                                },
                                mac: mac.clone(),
                                has_key_package: kp.is_some(),
                                escrowed_at: now_us,
                            },
                        );
                        w.protectors.push(NewProtector {
                            device_id: device.id,
                            volume_id,
                            protector_id: pid.clone(),
                            prefix: item.protector_id.prefix8(),
                            password_sealed: sealed,
                            password_mac: mac,
                            key_package_sealed: kp,
                            escrowed_at: now_us,
                        });
                        w.audit.push(audit.stage(
                            NewAudit::new(&actor, action::ESCROW, AuditOutcome::Success)
                                .device(device.id, &device.computer_name)
                                .protector(item.protector_id.to_string())
                                .detail(json!({"volume_guid": vg, "volume_type": item.volume_type, "key_package": item.key_package.is_some()})),
                            now,
                        ));
                        let held_by = holders.entry(pid.clone()).or_default();
                        let others: Vec<i64> = held_by
                            .iter()
                            .copied()
                            .filter(|d| *d != device.id)
                            .collect();
                        if !held_by.contains(&device.id) {
                            held_by.push(device.id);
                        }
                        if !others.is_empty() {
                            let rec = audit.stage(
                                NewAudit::new(&actor, action::ESCROW_CONFLICT, AuditOutcome::Failure)
                                    .device(device.id, &device.computer_name)
                                    .protector(item.protector_id.to_string())
                                    .detail(json!({"volume_guid": vg, "other_device_ids": others,
                                        "note": "protector ID already escrowed by another device; both kept, disclose by device_id"})),
                                now,
                            );
                            w.conflicts.extend(others.iter().map(|other| NewConflict {
                                protector_id: pid.clone(),
                                device_id: device.id,
                                other_device_id: *other,
                                audit_seq: rec.seq,
                            }));
                            w.audit.push(rec);
                        }
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
        write_all(tx, w, now_us).await
    }
}

/// The volume row id of every (device, volume GUID) in `jobs`: existing rows get the mount point and type
/// the last call for them sends; new ones are inserted.
async fn ensure_volumes<'a>(
    tx: &mut Tx,
    jobs: impl Iterator<Item = &'a EscrowJob>,
    now_us: i64,
) -> Result<HashMap<(i64, String), i64>, EscrowError> {
    let mut wanted: HashMap<(i64, String), (Option<String>, String)> = HashMap::new();
    let mut order = Vec::new();
    for job in jobs {
        for (item, mount) in job.req.items.iter().zip(&job.mounts) {
            let key = (job.device.id, volume_db(&item.volume_guid));
            let want = (mount.clone(), item.volume_type.as_str().to_owned());
            if wanted.insert(key.clone(), want).is_none() {
                order.push(key);
            }
        }
    }
    let stored = keys::load_volumes(tx, &order).await?;
    let mut ids = HashMap::with_capacity(order.len());
    let mut missing = Vec::new();
    for key in order {
        let (mount, vtype) = wanted.remove(&key).unwrap_or_default();
        match stored.get(&key) {
            Some(StoredVolume {
                id,
                mount_point,
                volume_type,
            }) => {
                if *mount_point != mount || *volume_type != vtype {
                    keys::update_volume(tx, *id, mount.as_deref(), &vtype).await?;
                }
                ids.insert(key, *id);
            }
            None => missing.push((key.0, key.1, mount, vtype)),
        }
    }
    ids.extend(keys::insert_volumes(tx, &missing, now_us).await?);
    Ok(ids)
}

/// Write what the batch produced: new protectors and audit records with multi-row INSERTs; the rare
/// key-package additions, TPM owner-auth values and mismatch rows one by one.
async fn write_all(tx: &mut Tx, w: Writes, now_us: i64) -> Result<(), EscrowError> {
    keys::insert_protectors(tx, &w.protectors, false).await?;
    for (row_id, sealed) in w.key_packages {
        keys::set_key_package(tx, row_id, sealed).await?;
    }
    for (device_id, sealed) in w.tpm {
        keys::upsert_tpm(tx, device_id, sealed, now_us).await?;
    }
    audit_log::insert_rows(tx, &w.audit).await?;
    keys::insert_mismatches(tx, &w.mismatches, now_us).await?;
    keys::insert_conflicts(tx, &w.conflicts, now_us).await
}
