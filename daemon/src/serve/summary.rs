//! The start-up summary: what an operator needs to see at a glance in the journal.

use std::net::SocketAddr;

use crate::config::Config;

use super::Components;

/// Where the Group Policy takes the Network Unlock certificate.
const GPO_PATH: &str = "Computer Configuration > Policies > Windows Settings > Security Settings > \
                        Public Key Policies > BitLocker Drive Encryption Network Unlock Certificate";

pub(super) async fn log(config: &Config, components: &Components, metrics: Option<SocketAddr>) {
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
        for c in &loaded.certificates {
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
        for warning in loaded.warnings(time::OffsetDateTime::now_utc()) {
            tracing::warn!("{warning}");
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
        // Said at every start while the appliance uses its own generated certificate: the .cer is
        // what the clients' Group Policy needs, and a restart must not hide where it is.
        if let Some(cer) = &u.generated_cer {
            tracing::info!(
                cer = %cer.display(),
                "generated a new Network Unlock certificate: deploy {} to the clients by Group Policy ({GPO_PATH})",
                cer.display()
            );
        } else if config
            .unlock
            .as_ref()
            .is_some_and(|s| s.certificates.is_empty())
        {
            let cer = crate::state::StateDir::new(&config.state_dir).unlock_cer();
            tracing::info!(
                cer = %cer.display(),
                "Network Unlock certificate for the clients: {} (if the Group Policy does not carry it yet, \
                 deploy it there: {GPO_PATH})",
                cer.display()
            );
        }
    }
    if let (Some(d), Some(_)) = (&config.directory, &components.directory) {
        tracing::info!("{}", d.describe());
    }
    if let Some(e) = &components.escrow {
        tracing::info!(backend = %e.backend, "escrow database open");
        let local = escrow::model::Actor::local("start-up summary");
        match e.service.list_operators(&local).await {
            Ok(ops)
                if !ops
                    .iter()
                    .any(|o| o.role == escrow::model::Role::Admin && !o.disabled) =>
            {
                tracing::info!(
                    "no admin operator yet: create the first one on this appliance, as the user the daemon runs as \
                     (packaged: sudo -u netunlockd), with `{}`; it prints the admin's API token once",
                    bootstrap_command(config)
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("cannot count the operators: {err}"),
        }
        if let Some(fp) = &e.tls_fingerprint {
            tracing::info!(
                sha256 = %fp,
                "escrow TLS certificate fingerprint (agents and the CLI pin this when the certificate is self-generated)"
            );
        }
    }
}

/// The `operator bootstrap` command line that reaches this daemon's database.
fn bootstrap_command(config: &Config) -> String {
    let mut cmd = String::from("netunlockd operator bootstrap --name <you>");
    match &config.source {
        Some(p) if p != std::path::Path::new(crate::config::DEFAULT_CONFIG_PATH) => {
            cmd.push_str(&format!(" --config {}", p.display()));
        }
        Some(_) => {}
        None if config.state_dir != std::path::Path::new(crate::config::DEFAULT_STATE_DIR) => {
            cmd.push_str(&format!(" --state-dir {}", config.state_dir.display()));
        }
        None => {}
    }
    cmd
}
