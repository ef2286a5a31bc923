//! `netunlockd certs new-unlock|inspect`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::CertsCommand;
use crate::exit;
use crate::output::{self, OutputFormat};

pub(crate) fn run(cmd: CertsCommand) -> Result<ExitCode> {
    match cmd {
        CertsCommand::NewUnlock {
            out_dir,
            name,
            common_name,
            days,
        } => {
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("cannot create {}", out_dir.display()))?;
            let generated = certs::generate_unlock_certificate(&common_name, days)?;
            let files = certs::write_unlock_files(&out_dir, &name, &generated)?;
            let thumbprint = hex::encode(generated.thumbprint);
            output::line(format_args!("thumbprint: {thumbprint}"))?;
            output::line(format_args!(
                "private key: {} (mode 0600; keep it on this appliance)",
                files.key.display()
            ))?;
            output::line(format_args!("certificate: {}", files.cert_pem.display()))?;
            output::line(format_args!(
                "certificate for the Group Policy: {}",
                files.cert_cer.display()
            ))?;
            output::line("")?;
            output::line(certs::gpo_instructions(&files, &thumbprint))?;
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Inspect {
            file,
            password_file,
            output: out,
        } => {
            let password = match &password_file {
                Some(p) => Some(crate::keys::read_pfx_password(p)?),
                None => None,
            };
            let der = certs::read_certificate_der_with_password(
                &file,
                password.as_ref().map(|p| p.as_str()),
            )
            .map_err(|e| match (&password_file, e) {
                // Without --password-file only the empty password was tried; say what to pass.
                (None, e @ certs::CertError::PfxPassword { .. }) => anyhow::anyhow!(
                    "{e}: pass the password with --password-file FILE (first line of a 0600 file)"
                ),
                (_, e) => e.into(),
            })?;
            let inspection = certs::inspect_certificate(&der, time::OffsetDateTime::now_utc())?;
            let sha256 = certs::sha256_fingerprint_hex(&der);
            match out.output {
                OutputFormat::Json => output::json(&inspection_json(&inspection, &sha256))?,
                OutputFormat::Text => {
                    output::line(&inspection)?;
                    output::line(format_args!("SHA-256 fingerprint: {sha256}"))?;
                }
            }
            // Non-zero when something would stop Network Unlock, so scripts can check a certificate.
            Ok(exit::code(if inspection.warnings.is_empty() {
                exit::SUCCESS
            } else {
                exit::WARNINGS
            }))
        }
    }
}

fn inspection_json(i: &certs::Inspection, sha256: &str) -> serde_json::Value {
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| t.to_string())
    };
    serde_json::json!({
        "thumbprint_sha1": i.thumbprint_hex,
        "sha256_fingerprint": sha256,
        "subject": i.subject,
        "issuer": i.issuer,
        "serial": i.serial_hex,
        "not_before": rfc3339(i.not_before),
        "not_after": rfc3339(i.not_after),
        "key_algorithm": i.key_algorithm,
        "key_bits": i.key_bits,
        "extended_key_usages": i.extended_key_usages,
        "application_policies": i.application_policies,
        "key_encipherment": i.key_encipherment,
        "warnings": i.warnings,
    })
}
