//! The daemon's parts — the Network Unlock responder and the escrow API — started from the
//! validated configuration, and the health task that watches them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use netunlock::KeyStore;
use netunlock::responder::{NetunlockMetrics, RateLimit, Responder, ResponderConfig};
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, EscrowSettings, UnlockSettings};
use crate::health::{Check, Health, HealthReport};
use crate::keys::{self, LoadedCertificate};
use crate::state::StateDir;

/// systemd credential name for the escrow key-encryption key (`LoadCredential[Encrypted]=`).
pub(crate) const KEK_CREDENTIAL: &str = "escrow-kek";

pub(crate) struct UnlockRuntime {
    pub(crate) responder: Responder,
    pub(crate) keys: Arc<ArcSwap<KeyStore>>,
    pub(crate) metrics: Arc<NetunlockMetrics>,
    pub(crate) loaded: Arc<Mutex<Vec<LoadedCertificate>>>,
    pub(crate) rejection_secret: [u8; 32],
    pub(crate) generated_cer: Option<std::path::PathBuf>,
}

pub(crate) struct EscrowRuntime {
    pub(crate) server: escrow::EscrowServer,
    pub(crate) service: escrow::EscrowService,
    pub(crate) backend: &'static str,
    /// 1 while the last audit chain check found the chain intact, 0 once it found it broken.
    pub(crate) audit_chain_ok: prometheus::IntGauge,
    /// SHA-256 of the escrow TLS leaf certificate, for the start-up summary.
    pub(crate) tls_fingerprint: Option<String>,
}

pub(crate) struct Components {
    pub(crate) unlock: Option<UnlockRuntime>,
    pub(crate) escrow: Option<EscrowRuntime>,
}

/// Handles kept by the signal loop after the components were moved into their tasks.
pub(crate) struct Reloaders {
    pub(crate) unlock: Option<UnlockReload>,
    pub(crate) escrow_tls: Option<escrow::TlsReloader>,
    pub(crate) health_sources: HealthSources,
}

pub(crate) struct UnlockReload {
    pub(crate) keys: Arc<ArcSwap<KeyStore>>,
    pub(crate) metrics: Arc<NetunlockMetrics>,
    pub(crate) loaded: Arc<Mutex<Vec<LoadedCertificate>>>,
    pub(crate) rejection_secret: [u8; 32],
}

/// What the health task looks at.
#[derive(Clone)]
pub(crate) struct HealthSources {
    heartbeat: Option<Arc<netunlock::responder::Heartbeat>>,
    loaded: Option<Arc<Mutex<Vec<LoadedCertificate>>>>,
    escrow: Option<(escrow::EscrowService, prometheus::IntGauge)>,
}

impl Components {
    pub(crate) async fn start(
        config: &Config,
        state: &StateDir,
        registry: &Registry,
    ) -> Result<Self> {
        let unlock = match &config.unlock {
            Some(u) => Some(start_unlock(u, state, registry)?),
            None => None,
        };
        let escrow = match &config.escrow {
            Some(e) => Some(start_escrow(e, state, registry).await?),
            None => None,
        };
        Ok(Self { unlock, escrow })
    }

    pub(crate) fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut out = Vec::new();
        if let Some(u) = &self.unlock {
            for a in u.responder.local_addrs() {
                out.push((
                    if a.is_ipv4() {
                        "network unlock (DHCPv4)"
                    } else {
                        "network unlock (DHCPv6)"
                    },
                    a,
                ));
            }
        }
        if let Some(e) = &self.escrow {
            out.push(("escrow API (HTTPS)", e.server.local_addr()));
        }
        out
    }

    pub(crate) fn spawn(
        self,
        tasks: &mut tokio::task::JoinSet<Result<()>>,
        shutdown: &CancellationToken,
    ) -> Reloaders {
        let mut reloaders = Reloaders {
            unlock: None,
            escrow_tls: None,
            health_sources: HealthSources {
                heartbeat: None,
                loaded: None,
                escrow: None,
            },
        };
        if let Some(u) = self.unlock {
            reloaders.health_sources.heartbeat = Some(u.responder.heartbeat());
            reloaders.health_sources.loaded = Some(u.loaded.clone());
            reloaders.unlock = Some(UnlockReload {
                keys: u.keys,
                metrics: u.metrics,
                loaded: u.loaded,
                rejection_secret: u.rejection_secret,
            });
            let token = shutdown.clone();
            tasks.spawn(async move {
                u.responder
                    .run(token)
                    .await
                    .context("the Network Unlock responder failed")
            });
        }
        if let Some(e) = self.escrow {
            reloaders.escrow_tls = Some(e.server.tls_reloader());
            reloaders.health_sources.escrow = Some((e.service.clone(), e.audit_chain_ok.clone()));
            let token = shutdown.clone();
            tasks.spawn(async move { e.server.run(token).await.context("the escrow API failed") });
        }
        reloaders
    }
}

fn start_unlock(
    u: &UnlockSettings,
    state: &StateDir,
    registry: &Registry,
) -> Result<UnlockRuntime> {
    let mut generated_cer = None;
    if u.certificates.is_empty() && state.ensure_unlock_certificate()? {
        generated_cer = Some(state.unlock_cer());
    }
    // Per-boot secret for implicit rejection: a forged key protector gets a reply derived from it.
    let mut rejection_secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut rejection_secret)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    let (store, loaded) = keys::load(u, state, rejection_secret)?;
    let metrics = NetunlockMetrics::register(registry)
        .context("cannot register the Network Unlock metrics")?;
    metrics.set_certificates(&store, time::OffsetDateTime::now_utc());
    let keys = Arc::new(ArcSwap::from_pointee(store));
    let responder_config = ResponderConfig {
        interfaces: u.interfaces.clone(),
        v4: u.v4_listen,
        v6_port: u.v6_port,
        v4_client_port: u.v4_client_port,
        v6_client_port: u.v6_client_port,
        v4_relay_port: u.v4_relay_port,
        v6_relay_port: u.v6_relay_port,
        workers: u.workers,
        queue_capacity: u.queue_capacity,
        max_request_age: u.max_request_age,
        rate_limit: RateLimit {
            burst: u.rate_limit_burst,
            per_second: u.rate_limit_per_second,
        },
        recv_buffer_bytes: u.receive_buffer_bytes,
        server_duid: state.server_duid(true)?,
    };
    let responder = Responder::bind(responder_config, keys.clone(), metrics.clone())?;
    Ok(UnlockRuntime {
        responder,
        keys,
        metrics,
        loaded: Arc::new(Mutex::new(loaded)),
        rejection_secret,
        generated_cer,
    })
}

/// The KEK: a systemd credential when one is provided, else the configured file (created on
/// first start with mode 0600).
pub(crate) fn load_kek(e: &EscrowSettings, create: bool) -> Result<escrow::Kek> {
    if let Some(kek) = escrow::Kek::from_credentials_dir(KEK_CREDENTIAL)? {
        return Ok(kek);
    }
    if create {
        escrow::Kek::load_or_create(&e.kek_file).with_context(|| {
            format!(
                "cannot load or create the key-encryption key {}",
                e.kek_file.display()
            )
        })
    } else {
        crate::security::check_private_file(&e.kek_file, "the key-encryption key")?;
        escrow::Kek::load(&e.kek_file).with_context(|| {
            format!(
                "cannot load the key-encryption key {}",
                e.kek_file.display()
            )
        })
    }
}

pub(crate) fn backend_name(database_url: &str) -> &'static str {
    if database_url.starts_with("sqlite:") {
        "SQLite"
    } else {
        "PostgreSQL"
    }
}

async fn start_escrow(
    e: &EscrowSettings,
    state: &StateDir,
    registry: &Registry,
) -> Result<EscrowRuntime> {
    let (tls_cert, tls_key) = match &e.tls {
        Some(pair) => pair.clone(),
        None => {
            state.ensure_tls_certificate(&e.tls_names)?;
            (state.tls_cert(), state.tls_key())
        }
    };
    crate::security::check_private_file(&tls_key, "the escrow TLS private key")?;
    let tls_fingerprint = certs::load_certificate_chain(&tls_cert)
        .ok()
        .and_then(|chain| {
            chain
                .first()
                .map(|leaf| certs::sha256_fingerprint_hex(leaf))
        });
    let kek = load_kek(e, true)?;
    if e.kek_file.exists() {
        crate::security::check_private_file(&e.kek_file, "the key-encryption key")?;
    }
    let service = escrow::EscrowService::open(&e.database_url, kek)
        .await
        .with_context(|| {
            format!(
                "cannot open the escrow database {}",
                crate::config::redact_url(&e.database_url)
            )
        })?;
    let server_config = escrow::EscrowServerConfig {
        listen: e.listen,
        tls_cert,
        tls_key,
        max_body_bytes: e.max_body_bytes,
        request_timeout: e.request_timeout,
        database_url: e.database_url.clone(),
        stale_after: e.stale_after,
    };
    let server = escrow::EscrowServer::bind(server_config, service.clone(), registry)
        .await
        .with_context(|| format!("cannot start the escrow API on {}", e.listen))?;
    let audit_chain_ok = prometheus::IntGauge::new(
        "netunlockd_audit_chain_ok",
        "1 if the last check of the escrow audit hash chain found it intact, 0 if it found it broken.",
    )
    .context("cannot create netunlockd_audit_chain_ok")?;
    audit_chain_ok.set(1);
    registry
        .register(Box::new(audit_chain_ok.clone()))
        .context("cannot register netunlockd_audit_chain_ok")?;
    Ok(EscrowRuntime {
        server,
        service,
        backend: backend_name(&e.database_url),
        audit_chain_ok,
        tls_fingerprint,
    })
}

/// How often the health report is refreshed, and how often the (costlier) audit chain check runs.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
const AUDIT_CHECK_EVERY: u32 = 60;
/// A receive loop that has not turned over for this long counts as stalled.
const HEARTBEAT_STALE: Duration = Duration::from_secs(30);

/// Evaluates every check once. `audit` is the last audit-chain result, refreshed when
/// `check_audit` is set (it reads the whole chain, so it runs less often).
async fn evaluate(sources: &HealthSources, audit: &mut Check, check_audit: bool) -> HealthReport {
    let responder = match &sources.heartbeat {
        None => Check::disabled(),
        Some(hb) => match hb.stalest() {
            Some(age) if age <= HEARTBEAT_STALE => Check::ok("receive loops alive"),
            Some(age) => {
                Check::failed(format!("a receive loop has stalled for {}s", age.as_secs()))
            }
            None => Check::failed("the receive loops are not running"),
        },
    };
    let certificates = match &sources.loaded {
        None => Check::disabled(),
        Some(loaded) => certificate_check(
            &loaded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ),
    };
    let database = match &sources.escrow {
        None => Check::disabled(),
        Some((svc, _)) => match svc.ping().await {
            Ok(_) => Check::ok("reachable"),
            Err(e) => Check::failed(format!("unreachable: {e}")),
        },
    };
    if let Some((svc, gauge)) = &sources.escrow
        && check_audit
    {
        *audit = match svc.verify_audit_chain().await {
            Ok(v) if chain_intact(&v) => {
                gauge.set(1);
                Check::ok(describe_chain(&v))
            }
            Ok(v) => {
                gauge.set(0);
                tracing::error!("audit chain check failed: {}", describe_chain(&v));
                Check::failed(describe_chain(&v))
            }
            Err(e) => Check::failed(format!("cannot read the audit log: {e}")),
        };
    }
    HealthReport::new(responder, database, certificates, audit.clone())
}

/// The first health report, computed before READY so `/healthz` and `netunlockd status` are
/// meaningful as soon as systemd reports the unit started. Waits briefly for the receive loops'
/// first heartbeat.
pub(crate) async fn initial_health(sources: &HealthSources, health: &Health) -> Check {
    let mut audit = if sources.escrow.is_some() {
        Check::unknown()
    } else {
        Check::disabled()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut report = evaluate(sources, &mut audit, true).await;
    while report.responder.state == crate::health::CheckState::Failed
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        report = evaluate(sources, &mut audit, false).await;
    }
    health.set(report);
    audit
}

pub(crate) async fn health_task(
    sources: HealthSources,
    health: Health,
    mut audit: Check,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + HEALTH_INTERVAL,
        HEALTH_INTERVAL,
    );
    let mut round: u32 = 1;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let report = evaluate(
            &sources,
            &mut audit,
            round.is_multiple_of(AUDIT_CHECK_EVERY),
        )
        .await;
        round = round.wrapping_add(1);
        health.set(report);
    }
}

fn certificate_check(loaded: &[LoadedCertificate]) -> Check {
    let now = time::OffsetDateTime::now_utc();
    let enabled: Vec<_> = loaded.iter().filter(|c| c.enabled).collect();
    let expired: Vec<_> = enabled
        .iter()
        .filter(|c| c.not_after <= now)
        .map(|c| c.thumbprint_hex.clone())
        .collect();
    if enabled.is_empty() {
        Check::failed("no enabled Network Unlock certificate")
    } else if !expired.is_empty() {
        Check::failed(format!("expired: {}", expired.join(", ")))
    } else {
        Check::ok(format!("{} enabled certificate(s) valid", enabled.len()))
    }
}

/// `config check`: everything `serve` loads, without binding or writing anything.
pub(crate) async fn check_without_binding(
    config: &Config,
    state: &StateDir,
) -> Result<Vec<String>> {
    let mut report = Vec::new();
    if let Some(u) = &config.unlock {
        let generated_missing = u.certificates.is_empty() && !state.unlock_cert().exists();
        if generated_missing {
            report.push(format!(
                "network unlock: no certificate configured; one will be generated on first start in {}",
                state.unlock_cert().parent().map(|p| p.display().to_string()).unwrap_or_default()
            ));
        } else {
            let (store, loaded) = keys::load(u, state, [0u8; 32])?;
            for c in &loaded {
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
            backend_name(&e.database_url),
            crate::config::redact_url(&e.database_url)
        ));
    }
    Ok(report)
}

pub(crate) fn chain_intact(v: &escrow::ChainVerification) -> bool {
    matches!(v, escrow::ChainVerification::Ok { .. })
}

pub(crate) fn describe_chain(v: &escrow::ChainVerification) -> String {
    match v {
        escrow::ChainVerification::Ok { records, head_hash } => {
            format!("{records} record(s), head {head_hash}")
        }
        escrow::ChainVerification::Broken { seq, reason } => {
            format!("broken at record {seq}: {reason}")
        }
    }
}
