//! Group commit for escrow calls. Agents escrow concurrently, but every write transaction is serialised
//! (audit chain) and each commit waits for an fsync, so one transaction per call caps throughput at the
//! disk's sync rate. One writer task drains the queue: it runs up to `MAX_BATCH` waiting calls in a single
//! transaction (`escrow_batch.rs`; if that fails, each call alone through the same code in a savepoint of
//! its own, so one bad call cannot fail the others), commits once, and only then answers every caller. An
//! acknowledgement still means "durably stored".

use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot};

use super::escrow_batch::{EscrowJob, Outcome};
use super::{EscrowService, Inner};
use crate::error::EscrowError;
use crate::store::audit::AuditCursor;

/// Most escrow calls committed by one transaction.
pub const MAX_BATCH: usize = 128;
/// Calls that may wait for the writer before callers block.
pub(crate) const QUEUE: usize = 4096;

#[derive(Debug)]
pub(crate) struct Queued {
    job: EscrowJob,
    reply: oneshot::Sender<Outcome>,
}

pub(crate) fn spawn(inner: Weak<Inner>, mut rx: mpsc::Receiver<Queued>) {
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            let Some(inner) = inner.upgrade() else {
                for q in batch {
                    let _ = q.reply.send(Err(EscrowError::Storage(
                        "the escrow service is shutting down".into(),
                    )));
                }
                break;
            };
            EscrowService { inner }.commit_batch(batch).await;
        }
    });
}

impl EscrowService {
    /// Queue one escrow call and wait until its batch is committed.
    pub(crate) async fn group_commit(&self, job: EscrowJob) -> Outcome {
        let (reply, answer) = oneshot::channel();
        self.inner
            .committer
            .send(Queued { job, reply })
            .await
            .map_err(|_| EscrowError::Storage("the escrow writer has stopped".into()))?;
        answer.await.map_err(|_| {
            EscrowError::Storage("the escrow writer stopped before answering".into())
        })?
    }

    async fn commit_batch(&self, batch: Vec<Queued>) {
        let _guard = self.inner.seal_lock.read().await;
        let jobs: Vec<&EscrowJob> = batch.iter().map(|q| &q.job).collect();
        // Fast path: the whole batch in a constant number of statements. Calls rarely fail once
        // validated (a storage error, a constraint the fast path did not foresee); if anything does, that
        // transaction is rolled back and the batch runs again call by call, each in its own savepoint.
        let mut results: Vec<Outcome> = Vec::with_capacity(batch.len());
        let mut committed = self.run_fast(&jobs, &mut results).await;
        if let Err(e) = &committed {
            tracing::debug!(error = %e, calls = jobs.len(), "escrow batch fast path failed; retrying call by call");
            results.clear();
            committed = self.run_with_savepoints(&jobs, &mut results).await;
        }
        let shared = committed.err().map(|e| Arc::new(e.to_string()));
        for (i, q) in batch.into_iter().enumerate() {
            let out = match (&shared, results.get_mut(i)) {
                (Some(e), _) => Err(EscrowError::Storage(format!(
                    "the escrow batch was not committed: {e}"
                ))),
                (None, Some(r)) => std::mem::replace(r, Ok(Vec::new())),
                (None, None) => Err(EscrowError::Storage(
                    "the escrow batch was cut short".into(),
                )),
            };
            // The caller may have gone away (client disconnect); its data is committed regardless.
            let _ = q.reply.send(out);
        }
    }

    /// Run `jobs` set-based in one transaction and commit.
    pub(crate) async fn run_fast(
        &self,
        jobs: &[&EscrowJob],
        results: &mut Vec<Outcome>,
    ) -> Result<(), EscrowError> {
        let sealer = self.sealer();
        let mut tx = self.inner.db.begin_write().await?;
        // The audit head is read once per batch and written back once before the commit.
        let mut audit = AuditCursor::read(&mut tx).await?;
        self.escrow_batch_in_tx(&mut tx, &sealer, &mut audit, jobs, results)
            .await?;
        audit.store(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Run `jobs` one by one in one transaction, each in a savepoint so a failing call is rolled back alone
    /// with its own error, and commit. Each call goes through the same code as a batch (a batch of one).
    pub(crate) async fn run_with_savepoints(
        &self,
        jobs: &[&EscrowJob],
        results: &mut Vec<Outcome>,
    ) -> Result<(), EscrowError> {
        let sealer = self.sealer();
        let mut tx = self.inner.db.begin_write().await?;
        let mut audit = AuditCursor::read(&mut tx).await?;
        for job in jobs {
            tx.savepoint().await?;
            let before = audit.clone();
            let mut one = Vec::with_capacity(1);
            let r = match self
                .escrow_batch_in_tx(&mut tx, &sealer, &mut audit, &[*job], &mut one)
                .await
            {
                Ok(()) => one.pop().unwrap_or_else(|| {
                    Err(EscrowError::Storage(
                        "an escrow call produced no outcome".into(),
                    ))
                }),
                Err(e) => Err(e),
            };
            // A call refused on its own (revoked device) wrote nothing either: keep the savepoint only on success.
            tx.end_savepoint(r.is_ok()).await?;
            if r.is_err() {
                audit = before;
            }
            results.push(r);
        }
        audit.store(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Both ways a batch can be committed must give the same answers and leave the same rows: the
    //! set-based fast path, and the per-call fallback (each call a batch of one in its own savepoint).
    use std::sync::Arc;

    use time::OffsetDateTime;
    use zeroize::Zeroizing;

    use super::*;
    use crate::model::{
        Actor, DeviceInfo, EscrowItem, EscrowRequest, ProtectorId, Role, VolumeType,
        parse_recovery_password,
    };
    use crate::sealing::Kek;
    use crate::service::ManualClock;

    fn password(n: u32) -> String {
        (0..8u32)
            .map(|i| format!("{:06}", 11 * ((n * 7919 + i * 104_729) % 65_536)))
            .collect::<Vec<_>>()
            .join("-")
    }

    fn item(volume: u32, protector: u32, pw: u32, key_package: Option<&[u8]>) -> EscrowItem {
        EscrowItem {
            volume_guid: uuid::Uuid::from_u128(u128::from(volume)),
            mount_point: Some(format!("V{volume}:")),
            volume_type: VolumeType::FixedData,
            protector_id: ProtectorId(uuid::Uuid::from_u128((1 << 64) + u128::from(protector))),
            recovery_password: parse_recovery_password(&password(pw)).unwrap(),
            key_package: key_package.map(<[u8]>::to_vec),
        }
    }

    fn job(device: &DeviceInfo, items: Vec<EscrowItem>, tpm: bool) -> EscrowJob {
        let mounts = items.iter().map(|i| i.mount_point.clone()).collect();
        EscrowJob {
            device: device.clone(),
            req: EscrowRequest {
                items,
                tpm_owner_auth: tpm.then(|| Zeroizing::new("owner-auth".to_owned())),
            },
            mounts,
        }
    }

    /// A database with three enrolled devices (the third revoked) and some keys escrowed.
    async fn setup(dir: &std::path::Path) -> (EscrowService, Vec<DeviceInfo>) {
        let url = format!("sqlite://{}?mode=rwc", dir.join("e.db").display());
        let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let svc = EscrowService::open_with_clock(
            &url,
            Kek::generate(),
            Arc::new(ManualClock::new(start)),
        )
        .await
        .unwrap();
        let admin = Actor::local("test");
        let mut devices = Vec::new();
        for n in 1..=3u32 {
            let (_, token) = svc
                .create_enrollment_token(&admin, 1, std::time::Duration::from_secs(60), None)
                .await
                .unwrap();
            let d = svc
                .enroll_device(
                    &token,
                    &format!("SRV{n}"),
                    Some("corp"),
                    None,
                    &format!("{n:064x}"),
                )
                .await
                .unwrap();
            devices.push(d);
        }
        let first = job(
            &devices[0],
            vec![item(1, 1, 1, None), item(1, 2, 2, None)],
            false,
        );
        let mut results = Vec::new();
        svc.run_fast(&[&first], &mut results).await.unwrap();
        assert!(results[0].is_ok());
        svc.revoke_device(&admin, devices[2].id).await.unwrap();
        (svc, devices)
    }

    /// Every kind of item in one batch: new, unchanged, mismatch, a key package sent late, the same
    /// protector twice, a TPM owner authorisation, a new volume, and a revoked device.
    fn mixed_jobs(d: &[DeviceInfo]) -> Vec<EscrowJob> {
        vec![
            job(
                &d[0],
                vec![item(1, 1, 1, Some(b"kp-late")), item(1, 2, 9, None)],
                true,
            ),
            job(
                &d[1],
                vec![item(2, 3, 3, None), item(3, 4, 4, Some(b"kp"))],
                false,
            ),
            job(&d[2], vec![item(4, 5, 5, None)], false),
            job(
                &d[1],
                vec![item(2, 3, 3, Some(b"kp-second")), item(2, 6, 6, None)],
                false,
            ),
            job(&d[0], vec![item(1, 7, 7, None)], true),
        ]
    }

    fn shown(results: &[Outcome]) -> Vec<String> {
        results
            .iter()
            .map(|r| match r {
                Ok(v) => format!("{v:?}"),
                Err(e) => e.to_string(),
            })
            .collect()
    }

    #[tokio::test]
    async fn fast_path_and_per_call_fallback_give_the_same_answers_and_rows() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (fast, devices_a) = setup(dir_a.path()).await;
        let (fallback, devices_b) = setup(dir_b.path()).await;
        assert_eq!(devices_a, devices_b);
        let jobs = mixed_jobs(&devices_a);
        let refs: Vec<&EscrowJob> = jobs.iter().collect();
        let (mut ra, mut rb) = (Vec::new(), Vec::new());
        fast.run_fast(&refs, &mut ra).await.unwrap();
        fallback.run_with_savepoints(&refs, &mut rb).await.unwrap();
        assert_eq!(shown(&ra), shown(&rb));
        assert!(shown(&ra)[2].contains("revoked"), "{:?}", shown(&ra));
        assert!(shown(&ra)[0].contains("Mismatch"), "{:?}", shown(&ra));

        let admin = Actor::operator(0, "t", Role::Admin);
        let everything = crate::audit::AuditFilter::default();
        let audit_a = fast.audit_report(&admin, everything.clone()).await.unwrap();
        let audit_b = fallback.audit_report(&admin, everything).await.unwrap();
        // Same records with the same times chain to the same hashes.
        assert_eq!(audit_a, audit_b);
        assert!(audit_a.len() > 12, "{}", audit_a.len());
        for name in ["SRV1", "SRV2", "SRV3"] {
            assert_eq!(
                fast.find_by_device(&admin, name).await.unwrap(),
                fallback.find_by_device(&admin, name).await.unwrap(),
                "{name}"
            );
        }
        let report_a = fast
            .fleet_report(&admin, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let report_b = fallback
            .fleet_report(&admin, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(report_a.mismatches, report_b.mismatches);
        assert_eq!(report_a.mismatches.len(), 1);
        // The late key packages were stored by both: the disclosures return them.
        for svc in [&fast, &fallback] {
            let d = svc
                .disclose(
                    &admin,
                    &item(1, 1, 1, None).protector_id,
                    None,
                    crate::model::DisclosureReason::TpmReset,
                    None,
                    None,
                )
                .await
                .unwrap();
            assert_eq!(d.key_package.as_deref(), Some(&b"kp-late"[..]));
            let d = svc
                .disclose(
                    &admin,
                    &item(2, 3, 3, None).protector_id,
                    None,
                    crate::model::DisclosureReason::TpmReset,
                    None,
                    None,
                )
                .await
                .unwrap();
            assert_eq!(d.key_package.as_deref(), Some(&b"kp-second"[..]));
        }
    }
}
