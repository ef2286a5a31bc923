//! SIGHUP: re-read the configuration file and reload the Network Unlock certificates, the subnet
//! policy and the trusted relays (keeping the old set if the new one is broken) and the escrow TLS
//! certificate, without dropping any listener; then say what changed and what only a restart applies.

use std::sync::Arc;

use crate::config::{self, Config};
use crate::keys;
use crate::state::StateDir;

use super::ConfigSource;
use super::changes;
use super::components::Reloaders;

pub(super) fn reload(
    started_with: &Config,
    source: &ConfigSource,
    state: &StateDir,
    reloaders: &Reloaders,
) {
    tracing::info!(
        "SIGHUP: reloading certificates, subnet policy, trusted relays and TLS certificate"
    );
    let fresh = match config::load(source.path.as_deref(), &source.overrides) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "reload failed, the configuration file is invalid; still serving the previous set: {e:#}"
            );
            return;
        }
    };
    let restart = changes::restart_needed(started_with, &fresh);
    if !restart.is_empty() {
        tracing::warn!(
            "changed settings that take effect only at the next restart: {}",
            restart.join(", ")
        );
    }
    if let (Some(unlock), Some(rt)) = (&fresh.unlock, &reloaders.unlock) {
        match keys::load(unlock, state, &rt.rejection_secret) {
            Ok((store, loaded)) => {
                let now = time::OffsetDateTime::now_utc();
                rt.metrics.set_certificates(&store, now);
                rt.keys.store(Arc::new(store));
                let relays = netunlock::TrustedRelays::new(unlock.trusted_relays.clone());
                let mut lines =
                    changes::relay_change(rt.trusted_relays.load().nets(), relays.nets())
                        .into_iter()
                        .collect::<Vec<_>>();
                rt.trusted_relays.store(Arc::new(relays));
                for c in &loaded.certificates {
                    tracing::info!(thumbprint = %c.thumbprint_hex, subject = %c.subject, enabled = c.enabled, "certificate loaded");
                }
                for warning in loaded.warnings(now) {
                    tracing::warn!("{warning}");
                }
                let mut current = rt
                    .loaded
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                lines.splice(0..0, changes::key_changes(&current, &loaded));
                *current = loaded;
                drop(current);
                if lines.is_empty() {
                    tracing::info!(
                        "reload: no change to certificates, subnet policy or trusted relays"
                    );
                }
                for line in lines {
                    tracing::info!("reload: {line}");
                }
            }
            Err(e) => {
                tracing::error!(
                    "reload failed, still serving the previous certificates and trusted relays: {e:#}"
                )
            }
        }
    }
    if let Some(tls) = &reloaders.escrow_tls {
        match tls.reload() {
            Ok(()) => tracing::info!("escrow TLS certificate reloaded"),
            Err(e) => tracing::error!(
                "escrow TLS reload failed, still serving the previous certificate: {e}"
            ),
        }
    }
}
