//! Group commit for escrow calls. Agents escrow concurrently, but every write transaction is serialised
//! (audit chain) and each commit waits for an fsync, so one transaction per call caps throughput at the
//! disk's sync rate. One writer task drains the queue: it runs up to `MAX_BATCH` waiting calls in a single
//! transaction, each inside its own savepoint (one bad call cannot fail the others), commits once, and only
//! then answers every caller. An acknowledgement still means "durably stored".

use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot};

use super::agent::EscrowJob;
use super::{EscrowService, Inner};
use crate::error::EscrowError;
use crate::model::ItemOutcome;
use crate::store::AuditCursor;

/// Most escrow calls committed by one transaction.
pub const MAX_BATCH: usize = 128;
/// Calls that may wait for the writer before callers block.
pub(crate) const QUEUE: usize = 4096;

type Outcome = Result<Vec<ItemOutcome>, EscrowError>;

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
        // Fast path without savepoints (two statements fewer per call). Calls rarely fail once validated
        // (a device revoked meanwhile, a storage error); if one does, that transaction is rolled back and
        // the batch runs again with a savepoint per call.
        let mut results: Vec<Outcome> = Vec::with_capacity(batch.len());
        let mut committed = self.run_batch(&jobs, false, &mut results).await;
        if matches!(committed, Err(BatchError::CallFailed)) {
            results.clear();
            committed = self.run_batch(&jobs, true, &mut results).await;
        }
        let committed = committed.map_err(|e| match e {
            BatchError::Storage(e) => e,
            BatchError::CallFailed => {
                EscrowError::Storage("a call failed without a savepoint".into())
            }
        });
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

    /// Run `jobs` in one transaction and commit. With `savepoints`, a failing call is rolled back alone and
    /// its error recorded; without, the first failing call aborts the transaction (`CallFailed`).
    async fn run_batch(
        &self,
        jobs: &[&EscrowJob],
        savepoints: bool,
        results: &mut Vec<Outcome>,
    ) -> Result<(), BatchError> {
        let sealer = self.sealer();
        let mut tx = self.inner.db.begin_write().await?;
        // The audit head is read once per batch and written back once before the commit.
        let mut audit = AuditCursor::read(&mut tx).await?;
        for job in jobs {
            if savepoints {
                sqlx::query("SAVEPOINT escrow_call")
                    .execute(&mut *tx)
                    .await
                    .map_err(EscrowError::from)?;
            }
            let before = audit.clone();
            let r = self.escrow_in_tx(&mut tx, &sealer, &mut audit, job).await;
            if r.is_err() {
                if !savepoints {
                    return Err(BatchError::CallFailed);
                }
                sqlx::query("ROLLBACK TO SAVEPOINT escrow_call")
                    .execute(&mut *tx)
                    .await
                    .map_err(EscrowError::from)?;
                audit = before;
            }
            if savepoints {
                sqlx::query("RELEASE SAVEPOINT escrow_call")
                    .execute(&mut *tx)
                    .await
                    .map_err(EscrowError::from)?;
            }
            results.push(r);
        }
        audit.store(&mut tx).await?;
        tx.commit().await.map_err(EscrowError::from)?;
        Ok(())
    }
}

enum BatchError {
    /// A call failed on the fast path; rerun the batch with savepoints.
    CallFailed,
    Storage(EscrowError),
}

impl From<EscrowError> for BatchError {
    fn from(e: EscrowError) -> Self {
        Self::Storage(e)
    }
}
