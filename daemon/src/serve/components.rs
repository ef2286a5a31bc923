//! The daemon's parts — the Network Unlock responder and the escrow API — started from the
//! validated configuration, and the handles kept for reloads and health.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use netunlock::responder::{Hooks, NetunlockMetrics, RateLimit, Responder, ResponderConfig};
use netunlock::{KeyStore, RejectionSecret, TrustedRelays};
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, EscrowSettings, UnlockSettings};
use crate::health::HealthSources;
use crate::keys::{self, LoadedKeys};
use crate::state::{StateDir, TlsCertificate};

pub(crate) struct UnlockRuntime {
    pub(crate) responder: Responder,
    pub(crate) keys: Arc<ArcSwap<KeyStore>>,
    pub(crate) metrics: Arc<NetunlockMetrics>,
    pub(crate) loaded: Arc<Mutex<LoadedKeys>>,
    pub(crate) rejection_secret: Arc<RejectionSecret>,
    pub(crate) trusted_relays: Arc<ArcSwap<TrustedRelays>>,
    pub(crate) generated_cer: Option<std::path::PathBuf>,
    /// The group heartbeat engine, when this appliance shares the work (issue 11).
    pub(crate) group: Option<crate::group::Engine>,
}

pub(crate) struct EscrowRuntime {
    pub(crate) server: escrow::EscrowServer,
    pub(crate) service: escrow::EscrowService,
    pub(crate) backend: escrow::Backend,
    /// 1 while the last audit chain check found the chain intact, 0 once it found it broken.
    pub(crate) audit_chain_ok: prometheus::IntGauge,
    /// SHA-256 of the escrow TLS leaf certificate, for the start-up summary.
    pub(crate) tls_fingerprint: Option<String>,
}

pub(crate) struct Components {
    pub(crate) unlock: Option<UnlockRuntime>,
    pub(crate) escrow: Option<EscrowRuntime>,
    /// A group member's escrow service, started in the background (see `late_escrow`).
    pub(crate) escrow_later: Option<(
        EscrowSettings,
        StateDir,
        Registry,
        Option<escrow::directory::Directory>,
    )>,
    /// Writes Network Unlock outcomes into the escrow database (both parts enabled).
    pub(crate) unlock_records: Option<crate::unlock_records::RecorderWriter>,
    /// `[directory]`, loaded (password and CA read) at start so a broken setting stops the start;
    /// the console signs people in with it (`EscrowService::sign_in_directory`).
    pub(crate) directory: Option<escrow::directory::Directory>,
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
    pub(crate) loaded: Arc<Mutex<LoadedKeys>>,
    pub(crate) rejection_secret: Arc<RejectionSecret>,
    pub(crate) trusted_relays: Arc<ArcSwap<TrustedRelays>>,
}

impl Components {
    pub(crate) async fn start(
        config: &Config,
        state: &StateDir,
        registry: &Registry,
    ) -> Result<Self> {
        let mut hooks = Hooks::default();
        let unlock_records = match &config.unlock_records {
            Some(settings) => {
                let (sink, writer) = crate::unlock_records::recorder(settings, registry)?;
                hooks.outcomes = sink;
                Some(writer)
            }
            None => None,
        };
        let unlock = match &config.unlock {
            Some(u) => Some(start_unlock(u, state, registry, hooks)?),
            None => None,
        };
        // Loaded before the escrow part: the console's sign-in page needs it.
        let directory = match &config.directory {
            Some(d) => Some(d.load()?),
            None => None,
        };
        let group_member = config.unlock.as_ref().is_some_and(|u| u.group.is_some());
        let escrow_later = match &config.escrow {
            Some(e) if group_member => Some((
                e.clone(),
                state.clone(),
                registry.clone(),
                directory.clone(),
            )),
            _ => None,
        };
        let escrow = match &config.escrow {
            Some(_) if group_member => None,
            Some(e) => Some(start_escrow(e, state, registry, directory.clone()).await?),
            None => None,
        };
        Ok(Self {
            unlock,
            escrow,
            unlock_records,
            directory,
            escrow_later,
        })
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
            health_sources: HealthSources::default(),
        };
        if let Some(u) = self.unlock {
            reloaders.health_sources.heartbeat = Some(u.responder.heartbeat());
            reloaders.health_sources.loaded = Some(u.loaded.clone());
            if let Some(engine) = u.group {
                reloaders.health_sources.group = Some(engine.state());
                let token = shutdown.clone();
                tasks.spawn(async move { engine.run(token).await });
            }
            reloaders.unlock = Some(UnlockReload {
                keys: u.keys,
                metrics: u.metrics,
                loaded: u.loaded,
                rejection_secret: u.rejection_secret,
                trusted_relays: u.trusted_relays,
            });
            let token = shutdown.clone();
            tasks.spawn(async move {
                u.responder
                    .run(token)
                    .await
                    .context("the Network Unlock responder failed")
            });
        }
        // The unlock-record writer follows the escrow service, whenever that one starts.
        let mut unlock_records = self.unlock_records;
        if let Some((settings, state, registry, directory)) = self.escrow_later {
            let started = super::late_escrow::LateEscrow::default();
            reloaders.health_sources.escrow_later = Some(started.clone());
            let token = shutdown.clone();
            tasks.spawn(super::late_escrow::run(
                settings,
                state,
                registry,
                directory,
                started,
                unlock_records.take(),
                token,
            ));
        }
        if let (Some(writer), Some(e)) = (unlock_records, &self.escrow) {
            let service = e.service.clone();
            let token = shutdown.clone();
            tasks.spawn(async move {
                writer.run(service, token).await;
                Ok(())
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
    hooks: Hooks,
) -> Result<UnlockRuntime> {
    let mut generated_cer = None;
    if u.certificates.is_empty() && state.ensure_unlock_certificate()? {
        generated_cer = Some(state.unlock_cer());
    }
    // Per-boot secret for implicit rejection: a forged key protector gets a reply derived from it.
    let rejection_secret = Arc::new(RejectionSecret::generate()?);
    let (store, loaded) = keys::load(u, state, &rejection_secret)?;
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
        trusted_relays: u.trusted_relays.clone(),
        relay_share: u.relay_share,
        recv_buffer_bytes: u.receive_buffer_bytes,
        server_duid: state.server_duid(true)?,
    };
    // A group member answers only its share; the engine never blocks start-up on the database.
    let group = u
        .group
        .as_ref()
        .map(|g| crate::group::Engine::new(g, registry))
        .transpose()?;
    let mut hooks = hooks;
    if let Some(engine) = &group {
        hooks.ownership = engine.state();
    }
    let responder = Responder::bind(responder_config, keys.clone(), metrics.clone(), hooks)?;
    let trusted_relays = responder.trusted_relays();
    Ok(UnlockRuntime {
        responder,
        keys,
        metrics,
        loaded: Arc::new(Mutex::new(loaded)),
        rejection_secret,
        trusted_relays,
        generated_cer,
        group,
    })
}

pub(super) async fn start_escrow(
    e: &EscrowSettings,
    state: &StateDir,
    registry: &Registry,
    directory: Option<escrow::directory::Directory>,
) -> Result<EscrowRuntime> {
    let (tls_cert, tls_key, generated) = match &e.tls {
        Some((cert, key)) => (cert.clone(), key.clone(), TlsCertificate::Kept),
        None => {
            let outcome = state.ensure_tls_certificate(&e.tls_names)?;
            (state.tls_cert(), state.tls_key(), outcome)
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
    let shown = tls_fingerprint.as_deref().unwrap_or("unknown");
    match generated {
        TlsCertificate::Kept => {}
        TlsCertificate::Created => tracing::info!(
            cert = %tls_cert.display(),
            sha256 = shown,
            "generated a new self-signed escrow HTTPS certificate"
        ),
        // Agents and CLIs pinning the old fingerprint need this one: say it where operators look.
        TlsCertificate::Regenerated { missing } => tracing::warn!(
            cert = %tls_cert.display(),
            sha256 = shown,
            names_added = %missing.join(", "),
            "escrow.tls_names changed: regenerated the self-signed escrow HTTPS certificate; \
             give agents (-ServerCertSha256) and CLIs (--pin-sha256) the new fingerprint"
        ),
    }
    let kek = keys::kek_for_serve(e)?;
    let service = escrow::EscrowService::open(&e.database_url, kek)
        .await
        .with_context(|| {
            format!(
                "cannot open the escrow database {}",
                crate::config::redact_url(&e.database_url)
            )
        })?;
    service.set_default_api_token_lifetime(e.api_token_lifetime);
    let server_config = escrow::EscrowServerConfig {
        listen: e.listen,
        tls_cert,
        tls_key,
        max_body_bytes: e.max_body_bytes,
        request_timeout: e.request_timeout,
        database_url: e.database_url.clone(),
        stale_after: e.stale_after,
        unlock_window_days: e.unlock_window_days,
    };
    let limits = escrow::ServerLimits {
        max_connections_per_client: e.max_connections_per_client,
        ..escrow::ServerLimits::default()
    };
    let server =
        escrow::EscrowServer::bind_with_limits(server_config, limits, service.clone(), registry)
            .await
            .with_context(|| format!("cannot start the escrow API on {}", e.listen))?
            .with_console(e.console)
            .with_directory(directory);
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
        backend: e.backend,
        audit_chain_ok,
        tls_fingerprint,
    })
}
