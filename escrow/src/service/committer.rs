//! Group commit for escrow calls. Agents escrow concurrently, but every write transaction is serialised
//! (audit chain) and each commit waits for an fsync, so one transaction per call caps throughput at the
//! disk's sync rate. One writer task drains the queue: it runs up to `MAX_BATCH` waiting calls in a single
//! transaction (set-based, `batch.rs`; call by call with a savepoint each if that fails, so one bad call
//! cannot fail the others), commits once, and only then answers every caller. An acknowledgement still
//! means "durably stored".

use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot};

use super::agent::EscrowJob;
use super::{EscrowService, Inner};
use crate::error::EscrowError;
use crate::store::AuditCursor;

/// Most escrow calls committed by one transaction.
pub const MAX_BATCH: usize = 128;
/// Calls that may wait for the writer before callers block.
pub(crate) const QUEUE: usize = 4096;

use super::batch::Outcome;

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
        // Fast path: the whole batch in a constant number of statements (`batch.rs`). Calls rarely fail once
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
    async fn run_fast(
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
    /// with its own error, and commit.
    async fn run_with_savepoints(
        &self,
        jobs: &[&EscrowJob],
        results: &mut Vec<Outcome>,
    ) -> Result<(), EscrowError> {
        let sealer = self.sealer();
        let mut tx = self.inner.db.begin_write().await?;
        let mut audit = AuditCursor::read(&mut tx).await?;
        for job in jobs {
            sqlx::query("SAVEPOINT escrow_call")
                .execute(&mut *tx)
                .await?;
            let before = audit.clone();
            let r = self.escrow_in_tx(&mut tx, &sealer, &mut audit, job).await;
            if r.is_err() {
                sqlx::query("ROLLBACK TO SAVEPOINT escrow_call")
                    .execute(&mut *tx)
                    .await?;
                audit = before;
            }
            sqlx::query("RELEASE SAVEPOINT escrow_call")
                .execute(&mut *tx)
                .await?;
            results.push(r);
        }
        audit.store(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
