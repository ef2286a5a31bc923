//! Escrow commands. Operator actions go through the daemon's HTTPS API (same authorisation and
//! audit as every other client); only what must work without the API — creating the first admin,
//! verifying the audit chain, backup, restore and KEK rotation — opens the database directly.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use escrow::client::{ApiClient, ApiClientConfig, ServerTrust};
use escrow::wire;
use serde::Serialize;

use crate::cli::{
    ApiArgs, AuditCommand, ConfigArgs, EnrollTokenCommand, EscrowCommand, OperatorCommand,
};
use crate::config::{Config, EscrowSettings};
use crate::state::StateDir;

fn escrow_settings(cfg: &Config) -> Result<&EscrowSettings> {
    cfg.escrow
        .as_ref()
        .context("escrow is disabled in the configuration ([escrow] enabled = false)")
}

/// Opens the escrow database directly (on the appliance, with the KEK).
async fn open_local(config: &ConfigArgs) -> Result<escrow::EscrowService> {
    let cfg = super::load_config(config)?;
    let e = escrow_settings(&cfg)?;
    let kek = crate::keys::existing_kek(e)?;
    escrow::EscrowService::open(&e.database_url, kek)
        .await
        .with_context(|| {
            format!(
                "cannot open the escrow database {}",
                crate::config::redact_url(&e.database_url)
            )
        })
}

fn api_client(api: &ApiArgs) -> Result<ApiClient> {
    let cfg = super::load_config(&api.config)?;
    let token = api
        .token
        .clone()
        .context("an operator token is needed: pass --token or set NETUNLOCKD_TOKEN (the first one comes from `netunlockd operator bootstrap`)")?;
    let base_url = match &api.url {
        Some(u) => u.clone(),
        None => {
            let e = escrow_settings(&cfg)?;
            let port = e.listen.port();
            if e.listen.is_ipv6() {
                format!("https://[::1]:{port}")
            } else {
                format!("https://127.0.0.1:{port}")
            }
        }
    };
    let trust = match (&api.ca, &api.pin_sha256) {
        (_, Some(pin)) => ServerTrust::PinnedSha256(escrow::client::normalise_fingerprint(pin)?),
        (Some(ca), None) => ServerTrust::CaFile(ca.clone()),
        (None, None) => {
            // The appliance's own (self-generated or configured) certificate, pinned by fingerprint.
            let state = StateDir::new(&cfg.state_dir);
            let cert = match cfg.escrow.as_ref().and_then(|e| e.tls.as_ref()) {
                Some((cert, _)) => cert.clone(),
                None => state.tls_cert(),
            };
            let der = certs::read_certificate_der(&cert).with_context(|| {
                format!(
                    "cannot read the escrow certificate {} to trust it; pass --ca FILE",
                    cert.display()
                )
            })?;
            ServerTrust::PinnedSha256(certs::sha256_fingerprint_hex(&der))
        }
    };
    let config = ApiClientConfig {
        base_url,
        trust,
        token: Some(zeroize::Zeroizing::new(token)),
        identity: None,
        timeout: Duration::from_secs(30),
    };
    Ok(ApiClient::new(&config)?)
}

fn print_json<T: Serialize>(value: &T) -> Result<ExitCode> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("cannot format the answer")?
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_operator(cmd: OperatorCommand) -> Result<ExitCode> {
    super::block_on(async move {
        match cmd {
            OperatorCommand::Bootstrap {
                config,
                name,
                force,
            } => {
                let svc = open_local(&config).await?;
                let (info, secret) = svc.bootstrap_admin_forced(&name, force).await?;
                eprintln!(
                    "created admin operator {:?} (id {}); store this token now, it is not shown again",
                    name, info.id
                );
                println!("token: {}", secret.as_str());
                Ok(ExitCode::SUCCESS)
            }
            OperatorCommand::Create { api, name, role } => {
                let role = serde_json::from_value(serde_json::Value::String(role))
                    .context("unknown role")?;
                print_json(
                    &api_client(&api)?
                        .create_operator(&wire::CreateOperator { name, role })
                        .await?,
                )
            }
            OperatorCommand::List { api } => print_json(&api_client(&api)?.list_operators().await?),
            OperatorCommand::SetRole { api, id, role } => {
                api_client(&api)?.set_operator_role(&id, &role).await?;
                println!("operator {id} is now {role}");
                Ok(ExitCode::SUCCESS)
            }
            OperatorCommand::Disable { api, id } => {
                api_client(&api)?.disable_operator(&id).await?;
                println!("operator {id} disabled");
                Ok(ExitCode::SUCCESS)
            }
            OperatorCommand::Token {
                api,
                operator_id,
                days,
            } => {
                let operator_id = operator_id
                    .parse()
                    .context("operator ids are numbers (see `netunlockd operator list`)")?;
                let body = wire::CreateApiToken {
                    operator_id,
                    ttl_seconds: days.map(|d| u64::from(d) * 86_400),
                };
                print_json(&api_client(&api)?.create_api_token(&body).await?)
            }
            OperatorCommand::Tokens { api, operator_id } => print_json(
                &api_client(&api)?
                    .list_api_tokens(&wire::ApiTokenQuery {
                        operator_id,
                        ..Default::default()
                    })
                    .await?,
            ),
            OperatorCommand::RevokeToken { api, token_id } => {
                api_client(&api)?.revoke_api_token(&token_id).await?;
                println!("token {token_id} revoked");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

pub(crate) fn run_enroll_token(cmd: EnrollTokenCommand) -> Result<ExitCode> {
    super::block_on(async move {
        match cmd {
            EnrollTokenCommand::Create {
                api,
                uses,
                hours,
                note,
            } => {
                if uses == 0 || hours == 0 {
                    bail!("--uses and --hours must be at least 1");
                }
                let body = wire::CreateEnrollmentToken {
                    max_uses: uses,
                    ttl_seconds: u64::from(hours) * 3600,
                    note,
                };
                print_json(&api_client(&api)?.create_enrollment_token(&body).await?)
            }
            EnrollTokenCommand::List { api } => {
                print_json(&api_client(&api)?.list_enrollment_tokens().await?)
            }
            EnrollTokenCommand::Revoke { api, id } => {
                api_client(&api)?.revoke_enrollment_token(&id).await?;
                println!("enrollment token {id} revoked");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

pub(crate) fn run_escrow(cmd: EscrowCommand) -> Result<ExitCode> {
    super::block_on(async move {
        match cmd {
            EscrowCommand::Find {
                api,
                prefix,
                device,
            } => {
                let client = api_client(&api)?;
                match (prefix, device) {
                    (Some(p), _) => print_json(&client.find_by_prefix(&p).await?),
                    (None, Some(d)) => print_json(&client.find_by_device(&d).await?),
                    (None, None) => bail!("pass --prefix XXXXXXXX or --device NAME"),
                }
            }
            EscrowCommand::Disclose {
                api,
                key_id,
                device,
                reason,
                text,
            } => {
                let body = wire::DiscloseBody {
                    device_id: None,
                    device_name: device,
                    reason: Some(reason),
                    reason_text: text,
                };
                print_json(&api_client(&api)?.disclose(&key_id, &body).await?)
            }
            EscrowCommand::Devices { api } => print_json(
                &api_client(&api)?
                    .list_devices(&wire::DeviceQuery::default())
                    .await?,
            ),
            EscrowCommand::RevokeDevice { api, id } => {
                api_client(&api)?.revoke_device(&id).await?;
                println!("device {id} revoked");
                Ok(ExitCode::SUCCESS)
            }
            EscrowCommand::AllowReenroll { api, id } => {
                api_client(&api)?.allow_reenroll(&id).await?;
                println!("device {id} may enroll again");
                Ok(ExitCode::SUCCESS)
            }
            EscrowCommand::Report {
                api,
                kind,
                format,
                stale_days,
            } => {
                let client = api_client(&api)?;
                match (kind.as_str(), format.as_str()) {
                    ("audit", "csv") => {
                        print!(
                            "{}",
                            client
                                .audit_report_csv(&wire::AuditQuery::default())
                                .await?
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    ("audit", "json") => {
                        print_json(&client.audit_report(&wire::AuditQuery::default()).await?)
                    }
                    ("fleet", "json") => print_json(&client.fleet_report(Some(stale_days)).await?),
                    (k, f) => bail!("report {k} has no {f} format (audit: json|csv, fleet: json)"),
                }
            }
            EscrowCommand::Backup { config, out, key } => {
                let svc = open_local(&config).await?;
                let backup_key = escrow::Kek::load_or_create(&key).with_context(|| {
                    format!("cannot load or create the backup key {}", key.display())
                })?;
                let summary = svc.backup(&out, &backup_key).await?;
                println!(
                    "backup written to {}: {}",
                    out.display(),
                    describe_backup(&summary)
                );
                println!(
                    "keep the backup key {} apart from the backup",
                    key.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            EscrowCommand::Restore { config, input, key } => {
                let svc = open_local(&config).await?;
                crate::security::check_private_file(&key, "the backup key")?;
                let backup_key = escrow::Kek::load(&key)
                    .with_context(|| format!("cannot load the backup key {}", key.display()))?;
                let summary = svc.restore(&input, &backup_key).await?;
                println!(
                    "restored from {}: {}",
                    input.display(),
                    describe_backup(&summary)
                );
                Ok(ExitCode::SUCCESS)
            }
            EscrowCommand::RewrapKek { config, new_kek } => {
                let svc = open_local(&config).await?;
                let kek = escrow::Kek::load_or_create(&new_kek).with_context(|| {
                    format!("cannot load or create the new KEK {}", new_kek.display())
                })?;
                let n = svc.rewrap_kek(&kek).await?;
                println!(
                    "re-wrapped {n} secret(s) under the KEK in {}",
                    new_kek.display()
                );
                println!(
                    "now set escrow.kek_file = {:?} (or update the escrow-kek credential) and restart",
                    new_kek.display().to_string()
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

pub(crate) fn run_audit(cmd: AuditCommand) -> Result<ExitCode> {
    super::block_on(async move {
        match cmd {
            AuditCommand::Verify { config } => {
                let svc = open_local(&config).await?;
                let result = svc.verify_audit_chain().await?;
                let text = crate::health::describe_chain(&result);
                if crate::health::chain_intact(&result) {
                    println!("audit chain intact: {text}");
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("audit chain BROKEN: {text}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    })
}

fn describe_backup(s: &escrow::model::BackupSummary) -> String {
    format!(
        "{} device(s), {} protector(s), {} audit record(s), {} row(s) in all (format {})",
        s.devices, s.protectors, s.audit_records, s.rows, s.format_version
    )
}
