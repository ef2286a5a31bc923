//! The escrow service of a group member starts beside the responder, not before it (issue 11:
//! unlock availability beats escrow). Start-up does not wait for the escrow database: the service is
//! opened in the background, retried while the database cannot be reached, and then served. Any
//! other start-up error (TLS files, key-encryption key, listener) still stops the daemon.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::EscrowSettings;
use crate::state::StateDir;
use crate::unlock_records::RecorderWriter;

/// How long to wait between attempts while the database cannot be reached.
const RETRY: Duration = Duration::from_secs(5);

/// The service and its audit gauge once started, for the health checks.
pub(crate) type LateEscrow = Arc<OnceLock<(escrow::EscrowService, prometheus::IntGauge)>>;

/// Whether an error is the database being out of reach (worth retrying) rather than a mistake.
fn database_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        matches!(
            c.downcast_ref::<escrow::EscrowError>(),
            Some(escrow::EscrowError::Storage(_))
        )
    })
}

pub(crate) async fn run(
    settings: EscrowSettings,
    state: StateDir,
    registry: Registry,
    directory: Option<escrow::directory::Directory>,
    started: LateEscrow,
    unlock_records: Option<RecorderWriter>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut logged = false;
    let runtime = loop {
        match super::components::start_escrow(&settings, &state, &registry, directory.clone()).await
        {
            Ok(rt) => break rt,
            Err(e) if database_unreachable(&e) => {
                if !logged {
                    tracing::warn!(
                        "the escrow service waits for its database (Network Unlock is served meanwhile); retrying every {}s: {e:#}",
                        RETRY.as_secs()
                    );
                    logged = true;
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(RETRY) => {}
        }
    };
    tracing::info!(
        listen = %runtime.server.local_addr(),
        backend = %runtime.backend,
        "escrow service started"
    );
    let _ = started.set((runtime.service.clone(), runtime.audit_chain_ok.clone()));
    // Outcomes queued while the database was out of reach are written now (the queue is bounded;
    // what overflowed it is counted as dropped).
    if let Some(writer) = unlock_records {
        let (service, token) = (runtime.service.clone(), shutdown.clone());
        tokio::spawn(async move { writer.run(service, token).await });
    }
    runtime
        .server
        .run(shutdown)
        .await
        .context("the escrow API failed")
}
