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
use crate::output::{self, OutputFormat};
use crate::state::StateDir;

mod people;

fn escrow_settings(cfg: &Config) -> Result<&EscrowSettings> {
    cfg.escrow
        .as_ref()
        .context("escrow is disabled in the configuration ([escrow] enabled = false)")
}

/// Opens the escrow database directly (on the appliance, with the KEK).
async fn open_local(config: &ConfigArgs) -> Result<escrow::EscrowService> {
    crate::security::private_umask();
    let cfg = super::load_config(config)?;
    let e = escrow_settings(&cfg)?;
    let kek = crate::keys::existing_kek(e)?;
    let svc = escrow::EscrowService::open(&e.database_url, kek)
        .await
        .with_context(|| {
            format!(
                "cannot open the escrow database {}",
                crate::config::redact_url(&e.database_url)
            )
        })?;
    svc.set_default_api_token_lifetime(e.api_token_lifetime);
    Ok(svc)
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

/// JSON for scripts, or the people form `text` renders.
fn show<T: Serialize>(
    format: OutputFormat,
    value: &T,
    text: impl FnOnce(&T) -> Result<()>,
) -> Result<ExitCode> {
    match format {
        OutputFormat::Json => output::json(value)?,
        OutputFormat::Text => text(value)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A one-line confirmation, or `{"ok": true, …}` for scripts.
fn done(format: OutputFormat, sentence: &str, json: serde_json::Value) -> Result<ExitCode> {
    match format {
        OutputFormat::Json => output::json(&json)?,
        OutputFormat::Text => output::line(sentence)?,
    }
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
                output::line(format_args!("token: {}", secret.as_str()))?;
                Ok(ExitCode::SUCCESS)
            }
            OperatorCommand::Create { api, name, role } => {
                let role = role
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--role must be admin, helpdesk or auditor"))?;
                let created = api_client(&api)?
                    .create_operator(&wire::CreateOperator { name, role })
                    .await?;
                show(api.output.output, &created, people::operator_created)
            }
            OperatorCommand::List { api } => show(
                api.output.output,
                &api_client(&api)?.list_operators().await?,
                people::operators,
            ),
            OperatorCommand::SetRole { api, id, role } => {
                api_client(&api)?.set_operator_role(&id, &role).await?;
                done(
                    api.output.output,
                    &format!("operator {id} is now {role}"),
                    serde_json::json!({"ok": true, "operator_id": id, "role": role}),
                )
            }
            OperatorCommand::Disable { api, id } => {
                api_client(&api)?.disable_operator(&id).await?;
                done(
                    api.output.output,
                    &format!("operator {id} disabled"),
                    serde_json::json!({"ok": true, "operator_id": id, "disabled": true}),
                )
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
                let created = api_client(&api)?.create_api_token(&body).await?;
                show(api.output.output, &created, people::api_token_created)
            }
            OperatorCommand::Tokens { api, operator_id } => {
                let list = api_client(&api)?
                    .list_api_tokens(&wire::ApiTokenQuery {
                        operator_id,
                        ..Default::default()
                    })
                    .await?;
                show(api.output.output, &list, people::api_tokens)
            }
            OperatorCommand::RevokeToken { api, token_id } => {
                api_client(&api)?.revoke_api_token(&token_id).await?;
                done(
                    api.output.output,
                    &format!("token {token_id} revoked"),
                    serde_json::json!({"ok": true, "token_id": token_id, "revoked": true}),
                )
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
                let created = api_client(&api)?.create_enrollment_token(&body).await?;
                show(
                    api.output.output,
                    &created,
                    people::enrollment_token_created,
                )
            }
            EnrollTokenCommand::List { api } => show(
                api.output.output,
                &api_client(&api)?.list_enrollment_tokens().await?,
                people::enrollment_tokens,
            ),
            EnrollTokenCommand::Revoke { api, id } => {
                api_client(&api)?.revoke_enrollment_token(&id).await?;
                done(
                    api.output.output,
                    &format!("enrollment token {id} revoked"),
                    serde_json::json!({"ok": true, "enrollment_token_id": id, "revoked": true}),
                )
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
                let found = match (prefix, device) {
                    (Some(p), _) => client.find_by_prefix(&p).await?,
                    (None, Some(d)) => client.find_by_device(&d).await?,
                    (None, None) => bail!("pass --prefix XXXXXXXX or --device NAME"),
                };
                show(api.output.output, &found, people::keys)
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
                let disclosed = api_client(&api)?.disclose(&key_id, &body).await?;
                show(api.output.output, &disclosed, people::disclosure)
            }
            EscrowCommand::Devices { api } => show(
                api.output.output,
                &api_client(&api)?
                    .list_devices(&wire::DeviceQuery::default())
                    .await?,
                people::devices,
            ),
            EscrowCommand::RevokeDevice { api, id } => {
                api_client(&api)?.revoke_device(&id).await?;
                done(
                    api.output.output,
                    &format!("device {id} revoked"),
                    serde_json::json!({"ok": true, "device_id": id, "revoked": true}),
                )
            }
            EscrowCommand::AllowReenroll { api, id } => {
                api_client(&api)?.allow_reenroll(&id).await?;
                done(
                    api.output.output,
                    &format!("device {id} may enroll again"),
                    serde_json::json!({"ok": true, "device_id": id, "reenroll_allowed": true}),
                )
            }
            EscrowCommand::Report {
                api,
                kind,
                format,
                stale_days,
                days,
            } => {
                let client = api_client(&api)?;
                let format = match format.as_deref() {
                    Some("csv") if kind == "audit" => {
                        output::raw(
                            &client
                                .audit_report_csv(&wire::AuditQuery::default())
                                .await?,
                        )?;
                        return Ok(ExitCode::SUCCESS);
                    }
                    Some("csv") => bail!("only the audit report has a csv form; use --output json"),
                    Some(_) => OutputFormat::Json,
                    None => api.output.output,
                };
                if kind == "audit" {
                    let report = client.audit_report(&wire::AuditQuery::default()).await?;
                    show(format, &report, people::audit_records)
                } else if kind == "unlocks" {
                    show(format, &client.unlock_report(days).await?, people::unlocks)
                } else {
                    show(
                        format,
                        &client.fleet_report(Some(stale_days)).await?,
                        people::fleet,
                    )
                }
            }
            EscrowCommand::Backup { config, out, key } => {
                let svc = open_local(&config).await?;
                let backup_key = escrow::Kek::load_or_create_named(&key, "backup key file")?;
                let summary = svc.backup(&out, &backup_key).await?;
                output::line(format_args!(
                    "backup written to {}: {}",
                    out.display(),
                    describe_backup(&summary)
                ))?;
                output::line(format_args!(
                    "keep the backup key {} apart from the backup",
                    key.display()
                ))?;
                Ok(ExitCode::SUCCESS)
            }
            EscrowCommand::Restore { config, input, key } => {
                // The backup holds the data key wrapped by the KEK, not the KEK: without the
                // appliance's KEK nothing restored could be decrypted, so say where it goes.
                let cfg = super::load_config(&config)?;
                let e = escrow_settings(&cfg)?;
                if escrow::Kek::from_credentials_dir(crate::keys::KEK_CREDENTIAL)?.is_none()
                    && !e.kek_file.exists()
                {
                    anyhow::bail!(
                        "restore needs the key-encryption key the backup was taken with, and {} does not exist: \
                         put your offline copy of kek.bin there (mode 0600, owned by the service user) or \
                         provide the escrow-kek systemd credential, then run restore again",
                        e.kek_file.display()
                    );
                }
                let svc = open_local(&config).await?;
                crate::security::check_private_file(&key, "the backup key file")?;
                let backup_key = escrow::Kek::load_named(&key, "backup key file")?;
                let summary = svc.restore(&input, &backup_key).await?;
                output::line(format_args!(
                    "restored from {}: {}",
                    input.display(),
                    describe_backup(&summary)
                ))?;
                Ok(ExitCode::SUCCESS)
            }
            EscrowCommand::RewrapKek { config, new_kek } => {
                let svc = open_local(&config).await?;
                let kek = escrow::Kek::load_or_create(&new_kek).with_context(|| {
                    format!("cannot load or create the new KEK {}", new_kek.display())
                })?;
                let n = svc.rewrap_kek(&kek).await?;
                output::line(format_args!(
                    "re-wrapped {n} secret(s) under the KEK in {}",
                    new_kek.display()
                ))?;
                output::line(format_args!(
                    "now set escrow.kek_file = {:?} (or update the escrow-kek credential) and restart",
                    new_kek.display().to_string()
                ))?;
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

pub(crate) fn run_audit(cmd: AuditCommand) -> Result<ExitCode> {
    super::block_on(async move {
        match cmd {
            AuditCommand::Verify {
                config,
                output: out,
            } => {
                let svc = open_local(&config).await?;
                let result = svc.verify_audit_chain().await?;
                let text = crate::health::describe_chain(&result);
                let intact = crate::health::chain_intact(&result);
                match out.output {
                    OutputFormat::Json => output::json(&result)?,
                    OutputFormat::Text if intact => {
                        output::line(format_args!("audit chain intact: {text}"))?;
                    }
                    OutputFormat::Text => eprintln!("audit chain BROKEN: {text}"),
                }
                Ok(crate::exit::code(if intact {
                    crate::exit::SUCCESS
                } else {
                    crate::exit::UNHEALTHY
                }))
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
