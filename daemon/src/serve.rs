//! `netunlockd serve`: start-up in the order load → bind → READY → serve → drain, with SIGHUP
//! reloads and the systemd watchdog.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::cli::{LogFormatArg, ServeArgs};
use crate::config::{self, Config, LogFormat, Overrides};
use crate::health::Health;
use crate::state::StateDir;
use crate::{logging, security};

mod changes;
mod components;
mod late_escrow;
mod reload;
mod summary;

pub(crate) use components::Components;
pub(crate) use late_escrow::LateEscrow;

/// How long in-flight work may take to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn run(args: ServeArgs) -> Result<ExitCode> {
    let overrides = Overrides {
        state_dir: args.config.state_dir.clone(),
        log_format: args.log_format.map(|f| match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }),
    };
    let config = config::load(args.config.config.as_deref(), &overrides)?;
    logging::init(&config.log_filter, config.log_format)?;
    security::make_undumpable()?;
    security::warn_if_root();
    security::private_umask();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("netunlockd")
        .build()
        .context("cannot start the async runtime")?;
    let source = ConfigSource {
        path: args.config.config.clone(),
        overrides,
    };
    runtime.block_on(serve(config, source))?;
    Ok(ExitCode::SUCCESS)
}

/// Where the configuration came from, so SIGHUP can read it again.
struct ConfigSource {
    path: Option<std::path::PathBuf>,
    overrides: Overrides,
}

async fn serve(config: Config, source: ConfigSource) -> Result<()> {
    let state = StateDir::new(&config.state_dir);
    state.ensure()?;
    let registry = crate::metrics::registry()?;
    let health = Health::new();
    let shutdown = CancellationToken::new();

    // Everything that can fail (keys, database, privileged ports) fails here, before READY.
    let components = Components::start(&config, &state, &registry).await?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            crate::metrics_http::MetricsServer::bind(addr, registry.clone(), health.clone())
                .await?,
        ),
        None => None,
    };
    let metrics_addr: Option<SocketAddr> = metrics.as_ref().map(|m| m.local_addr()).transpose()?;
    summary::log(&config, &components, metrics_addr).await;

    let mut tasks = tokio::task::JoinSet::new();
    let reloaders = components.spawn(&mut tasks, &shutdown);
    if let Some(m) = metrics {
        let token = shutdown.clone();
        tasks.spawn(async move { m.run(token).await });
    }
    let audit = crate::health::initial_health(&reloaders.health_sources, &health).await;
    tasks.spawn(crate::health::health_task(
        reloaders.health_sources.clone(),
        health.clone(),
        audit,
        shutdown.clone(),
    ));
    if let Some(interval) = watchdog_interval() {
        tasks.spawn(watchdog(interval, health.clone(), shutdown.clone()));
    }

    tracing::info!("netunlockd ready");
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("serving"),
        ],
    );

    let outcome = signals(&config, &source, &state, &reloaders, &shutdown, &mut tasks).await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(res) = tasks.join_next().await {
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("a component stopped with an error: {e:#}"),
                Err(e) => tracing::error!("a component task failed: {e}"),
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("in-flight work did not finish within {DRAIN_TIMEOUT:?}; exiting anyway");
    }
    tracing::info!("netunlockd stopped");
    outcome
}

/// Waits for SIGTERM/SIGINT (stop) while handling SIGHUP (reload). A component that stops on its
/// own with an error ends the daemon too, so systemd can restart it.
async fn signals(
    config: &Config,
    source: &ConfigSource,
    state: &StateDir,
    reloaders: &components::Reloaders,
    shutdown: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<Result<()>>,
) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining and stopping"); return Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT: draining and stopping"); return Ok(()); }
            _ = hup.recv() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                reload::reload(config, source, state, reloaders);
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
            Some(res) = tasks.join_next() => {
                let err = match res {
                    Ok(Ok(())) if shutdown.is_cancelled() => return Ok(()),
                    Ok(Ok(())) => anyhow::anyhow!("a component stopped unexpectedly"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::anyhow!("a component task failed: {e}"),
                };
                tracing::error!("stopping: {err:#}");
                return Err(err);
            }
        }
    }
}

fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec) / 2)
    } else {
        None
    }
}

/// Pings systemd only while the health task says the responder and database are alive, so a
/// stalled receive loop or a lost database gets the daemon restarted.
async fn watchdog(interval: Duration, health: Health, shutdown: CancellationToken) -> Result<()> {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let report = health.get();
                if report.alive() {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                } else {
                    tracing::warn!("not feeding the watchdog: responder {:?}, database {:?}", report.responder, report.database);
                }
            }
        }
    }
}
