//! The start-up summary: what an operator needs to see at a glance in the journal.

use std::net::SocketAddr;

use crate::config::Config;

use super::Components;

pub(super) fn log(config: &Config, components: &Components, metrics: Option<SocketAddr>) {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.source.as_ref().map_or_else(|| "built-in defaults".to_string(), |p| p.display().to_string()),
        state_dir = %config.state_dir.display(),
        "netunlockd starting"
    );
    for (what, addr) in components.listeners() {
        tracing::info!(%addr, "listening: {what}");
    }
    if let Some(addr) = metrics {
        tracing::info!(%addr, "listening: metrics and health (HTTP) at /metrics and /healthz");
    }
    if let Some(u) = &components.unlock {
        let loaded = u
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in loaded.iter() {
            let subnets = if c.allowed_subnets.is_empty() {
                "all".to_string()
            } else {
                c.allowed_subnets.join(" ")
            };
            tracing::info!(
                thumbprint = %c.thumbprint_hex,
                subject = %c.subject,
                expires = %c.not_after.date(),
                enabled = c.enabled,
                subnets = %subnets,
                file = %c.source.display(),
                "network unlock certificate"
            );
        }
        match config
            .unlock
            .as_ref()
            .and_then(|u| u.subnet_policy.as_ref())
        {
            Some(p) => {
                tracing::info!(file = %p.display(), "subnet policy (WDS bde-network-unlock.ini) applied")
            }
            None => tracing::info!(
                "no subnet policy file: every client on a served interface may unlock"
            ),
        }
        if let Some(cer) = &u.generated_cer {
            tracing::info!(
                cer = %cer.display(),
                "generated a new Network Unlock certificate: deploy this .cer to the clients by Group Policy \
                 (Computer Configuration > Policies > Windows Settings > Security Settings > Public Key Policies > \
                 BitLocker Drive Encryption Network Unlock Certificate)"
            );
        }
    }
    if let (Some(d), Some(_)) = (&config.directory, &components.directory) {
        tracing::info!("{}", d.describe());
    }
    if let Some(e) = &components.escrow {
        tracing::info!(backend = %e.backend, "escrow database open");
        if let Some(fp) = &e.tls_fingerprint {
            tracing::info!(
                sha256 = %fp,
                "escrow TLS certificate fingerprint (agents and the CLI pin this when the certificate is self-generated)"
            );
        }
    }
}
