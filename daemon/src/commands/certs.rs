//! `netunlockd certs new-unlock|inspect`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::CertsCommand;

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
            println!("thumbprint: {thumbprint}");
            println!(
                "private key: {} (mode 0600; keep it on this appliance)",
                files.key.display()
            );
            println!("certificate: {}", files.cert_pem.display());
            println!(
                "certificate for the Group Policy: {}",
                files.cert_cer.display()
            );
            println!();
            println!("{}", certs::gpo_instructions(&files, &thumbprint));
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Inspect { file } => {
            let der = certs::read_certificate_der(&file)?;
            let inspection = certs::inspect_certificate(&der, time::OffsetDateTime::now_utc())?;
            println!("{inspection}");
            println!(
                "SHA-256 fingerprint: {}",
                certs::sha256_fingerprint_hex(&der)
            );
            // Non-zero when something would stop Network Unlock, so scripts can check a certificate.
            Ok(if inspection.warnings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}
