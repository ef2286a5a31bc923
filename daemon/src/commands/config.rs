//! `netunlockd config check`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::ConfigCommand;
use crate::config::Config;
use crate::keys;
use crate::output;
use crate::state::StateDir;

pub(crate) fn run(cmd: ConfigCommand) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { config } => {
            let cfg = super::load_config(&config)?;
            let state = StateDir::new(&cfg.state_dir);
            let report = super::block_on(check_without_binding(&cfg, &state))?;
            match &cfg.source {
                Some(p) => output::line(format_args!("configuration {} is valid", p.display()))?,
                None => output::line("no configuration file; built-in defaults are valid")?,
            }
            output::line(format_args!("state directory: {}", cfg.state_dir.display()))?;
            for line in report {
                output::line(line)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Everything `serve` loads, without binding or writing anything.
async fn check_without_binding(config: &Config, state: &StateDir) -> Result<Vec<String>> {
    let mut report = Vec::new();
    if let Some(u) = &config.unlock {
        let generated_missing = u.certificates.is_empty() && !state.unlock_cert().exists();
        if generated_missing {
            report.push(format!(
                "network unlock: no certificate configured; one will be generated on first start in {}",
                state.unlock_cert().parent().map(|p| p.display().to_string()).unwrap_or_default()
            ));
        } else {
            let (store, loaded) =
                keys::load(u, state, &netunlock::RejectionSecret::from_bytes([0; 32]))?;
            for c in &loaded.certificates {
                report.push(format!(
                    "network unlock certificate {} ({}) expires {} {}{}",
                    c.thumbprint_hex,
                    c.subject,
                    c.not_after.date(),
                    if c.enabled { "enabled" } else { "DISABLED" },
                    if c.allowed_subnets.is_empty() {
                        String::new()
                    } else {
                        format!(", subnets {}", c.allowed_subnets.join(" "))
                    }
                ));
            }
            report.push(format!(
                "network unlock: {} certificate(s) loaded",
                store.len()
            ));
            for warning in loaded.warnings(time::OffsetDateTime::now_utc()) {
                report.push(format!("WARNING: {warning}"));
            }
        }
        if let Some(p) = &u.subnet_policy {
            report.push(format!("subnet policy {} is valid", p.display()));
        }
    }
    if let Some(e) = &config.escrow {
        if let Some((cert, key)) = &e.tls {
            certs::load_certificate_chain(cert)
                .with_context(|| format!("escrow.tls_cert {}", cert.display()))?;
            crate::security::check_private_file(key, "the escrow TLS private key")?;
            certs::load_private_key(key)
                .with_context(|| format!("escrow.tls_key {}", key.display()))?;
            report.push(format!("escrow TLS certificate {} loads", cert.display()));
        }
        report.push(format!(
            "escrow database: {} ({})",
            e.backend,
            crate::config::redact_url(&e.database_url)
        ));
    }
    if let Some(d) = &config.directory {
        // Reads the password file and the CA file; does not contact the directory.
        d.load()?;
        report.push(d.describe());
    }
    Ok(report)
}
