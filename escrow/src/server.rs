//! The escrow HTTPS listener: TCP accept under a connection cap, TLS handshake with a timeout
//! (configuration taken from `TlsReloader` per connection), hyper HTTP/1.1 with keep-alive and a
//! header-read timeout, and a graceful drain on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::auth::ConnInfo;
use crate::api::ratelimit::{RateLimit, RateLimiter};
use crate::api::{AppState, router};
use crate::directory::Directory;
use crate::error::EscrowError;
use crate::metrics::EscrowMetrics;
use crate::service::EscrowService;
use crate::tls::{TlsReloader, cert_sha256_hex};
use crate::web::{self, ConsoleSettings, WebState};

/// What the daemon configures (`[escrow]` in the config file).
#[derive(Debug, Clone)]
pub struct EscrowServerConfig {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub database_url: String,
    pub stale_after: Duration,
    /// Days without an answered Network Unlock request before the fleet report lists an enrolled
    /// device (`unlock_records.no_unlock_days`); None when the daemon records no unlock outcomes.
    pub unlock_window_days: Option<u32>,
}

/// Protective limits with defaults suited to an appliance; only the per-client cap is in the config
/// file (`escrow.max_connections_per_client`: agents behind one NAT or proxy share an address).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Most concurrent connections from one client address (before TLS); more are closed at once.
    pub max_connections_per_client: usize,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub drain_timeout: Duration,
    /// Per-operator limit on find/disclose.
    pub lookup_rate: RateLimit,
    /// How often the fleet gauges are recomputed.
    pub gauge_interval: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_client: 64,
            drain_timeout: Duration::from_secs(10),
            lookup_rate: RateLimit::default(),
            gauge_interval: Duration::from_secs(30),
        }
    }
}

/// A bound, not yet running, escrow server.
pub struct EscrowServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: TlsReloader,
    app: Router,
    state: AppState,
    limits: ServerLimits,
    max_body_bytes: usize,
    console: ConsoleSettings,
    directory: Option<Directory>,
}

impl std::fmt::Debug for EscrowServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscrowServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl EscrowServer {
    /// Loads TLS, registers metrics and binds the TCP listener now (so errors surface at start).
    pub async fn bind(
        config: EscrowServerConfig,
        service: EscrowService,
        registry: &Registry,
    ) -> Result<Self, EscrowError> {
        Self::bind_with_limits(config, ServerLimits::default(), service, registry).await
    }

    /// As `bind`, with explicit limits.
    pub async fn bind_with_limits(
        config: EscrowServerConfig,
        limits: ServerLimits,
        service: EscrowService,
        registry: &Registry,
    ) -> Result<Self, EscrowError> {
        let tls = TlsReloader::new(&config.tls_cert, &config.tls_key)?;
        let metrics = EscrowMetrics::register(registry)?;
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            EscrowError::Io(format!(
                "cannot listen on {} for the escrow API: {e} (port in use, or needs privileges?)",
                config.listen
            ))
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| EscrowError::Io(format!("escrow listener address: {e}")))?;
        let state = AppState {
            service,
            metrics,
            limiter: Arc::new(RateLimiter::new(limits.lookup_rate)),
            request_timeout: config.request_timeout,
            stale_after: config.stale_after,
            unlock_window_days: config.unlock_window_days,
        };
        let console = ConsoleSettings::default();
        let app = app(&state, config.max_body_bytes, console, None);
        Ok(Self {
            listener,
            local_addr,
            tls,
            app,
            state,
            limits,
            max_body_bytes: config.max_body_bytes,
            console,
            directory: None,
        })
    }

    /// Serves the web console with these settings (it is on, with default timeouts, unless this
    /// says otherwise).
    pub fn with_console(mut self, console: ConsoleSettings) -> Self {
        self.console = console;
        self.app = app(
            &self.state,
            self.max_body_bytes,
            console,
            self.directory.clone(),
        );
        self
    }

    /// Lets people sign in to the console with their directory account (`[directory]`).
    pub fn with_directory(mut self, directory: Option<Directory>) -> Self {
        self.directory = directory;
        self.app = app(
            &self.state,
            self.max_body_bytes,
            self.console,
            self.directory.clone(),
        );
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that re-reads the certificate and key (e.g. on SIGHUP) without a restart.
    pub fn tls_reloader(&self) -> TlsReloader {
        self.tls.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests finish
    /// (up to `drain_timeout`) and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), EscrowError> {
        let Self {
            listener,
            local_addr,
            tls,
            app,
            state,
            limits,
            ..
        } = self;
        tracing::info!(%local_addr, "escrow API listening (HTTPS)");
        let gauges = tokio::spawn(refresh_gauges(
            state.clone(),
            limits.gauge_interval,
            shutdown.clone(),
        ));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let builder = Arc::new(builder.http1_only());
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let per_client = PerClientCap::new(limits.max_connections_per_client);

        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "escrow accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some(client_slot) = per_client.try_acquire(peer.ip()) else {
                tracing::debug!(%peer, "escrow connection refused: too many from this address");
                drop(tcp);
                continue;
            };
            let acceptor = tls.acceptor();
            let app = app.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let handshake_timeout = limits.handshake_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                let _client_slot = client_slot;
                let _ = tcp.set_nodelay(true);
                let stream =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "escrow TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "escrow TLS handshake timed out");
                            return;
                        }
                    };
                let info = ConnInfo {
                    peer,
                    client_cert_sha256: stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| cert_sha256_hex(c.as_ref())),
                };
                let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                    req.extensions_mut().insert(info.clone());
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
                let conn = builder
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %e, "escrow connection ended with an error");
                }
            });
        }
        drop(listener);
        tracing::info!("escrow API draining in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("escrow API stopped"),
            () = tokio::time::sleep(limits.drain_timeout) => {
                tracing::warn!(timeout = ?limits.drain_timeout, "escrow API drain timed out; closing remaining connections");
            }
        }
        gauges.abort();
        Ok(())
    }
}

/// The API, and the console beside it when enabled.
fn app(
    state: &AppState,
    max_body_bytes: usize,
    console: ConsoleSettings,
    directory: Option<Directory>,
) -> Router {
    let api = router(state.clone(), max_body_bytes);
    if !console.enabled {
        return api;
    }
    api.merge(web::router(WebState {
        service: state.service.clone(),
        metrics: state.metrics.clone(),
        limiter: state.limiter.clone(),
        sessions: console.sessions,
        request_timeout: state.request_timeout,
        stale_after: state.stale_after,
        unlock_window_days: state.unlock_window_days,
        directory,
    }))
}

/// Keeps the fleet gauges current (they need database queries, so not per scrape).
async fn refresh_gauges(state: AppState, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The console's fleet report is refreshed with the gauges, from the same queries.
        match state
            .service
            .refresh_fleet_snapshot(state.stale_after, state.unlock_window())
            .await
        {
            Ok(s) => state.metrics.set_gauges(&s.gauges, state.stale_after),
            Err(e) => tracing::warn!(error = %e, "cannot refresh escrow fleet gauges"),
        }
    }
}

mod per_client;

use per_client::PerClientCap;

#[cfg(test)]
mod tests;
