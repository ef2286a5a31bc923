//! The DHCPv4/DHCPv6 Network Unlock responder: sockets, one receive loop per family, the fair queue
//! and the RSA worker pool.
//!
//! Shape of the pipeline, written once over the [`dhcp::Dhcp`] family trait: receive → parse
//! (`v4`/`v6`) → trust (`trust`: is the sender believed, which addresses does the subnet policy
//! read, where may the reply go) → [`KeyStore::decide`] → ownership ([`Hooks`]) → rate limits per
//! source and client → the fair queue; `workers` OS threads compute the reply
//! ([`UnlockKey::answer`](crate::crypto::UnlockKey::answer)) and send it. A job older than
//! `max_request_age` is dropped, never answered late. Every request ends in one
//! [`Outcome`], counted, offered to the outcome sink and logged within a budget.

mod background;
mod config;
mod dhcp;
mod error;
mod fairq;
mod heartbeat;
mod hooks;
mod limits;
pub mod metrics;
pub mod outcome;
pub mod pktinfo;
mod port_owner;
mod receive;
mod sockets;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::Socket;
use tokio_util::sync::CancellationToken;

use crate::keystore::KeyStore;
use crate::netif::{Served, list_interfaces};
use crate::trust::{HostAddrs, TrustedRelays};

pub use crate::family::Family;
pub use crate::netif::{InterfaceInfo, list_interfaces as interfaces};
pub use config::ResponderConfig;
pub use error::ResponderError;
pub use fairq::{FairQueue, PushError};
pub use heartbeat::Heartbeat;
pub use hooks::{AllMine, ClientIdentity, Hooks, NoRecords, OutcomeRecord, OutcomeSink, Ownership};
pub use limits::{Limits, RateLimit, Source};
pub use metrics::NetunlockMetrics;
pub use outcome::{LogGate, LogSummary, Outcome, SummaryRow};
pub use sockets::ALL_DHCP_RELAY_AGENTS_AND_SERVERS;

/// Per-source queue share of a host, in requests (a relay holds `relay_share` times as many).
const PER_SOURCE_QUEUE: usize = 8;

/// The bound responder. Create with [`Responder::bind`], then [`Responder::run`].
pub struct Responder {
    config: ResponderConfig,
    keys: Arc<ArcSwap<KeyStore>>,
    relays: Arc<ArcSwap<TrustedRelays>>,
    host: Arc<ArcSwap<HostAddrs>>,
    metrics: Arc<NetunlockMetrics>,
    hooks: Hooks,
    served: Served,
    v4: Option<Socket>,
    v6: Option<Socket>,
    heartbeat: Arc<Heartbeat>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("local_addrs", &self.local_addrs())
            .field("interfaces", &self.config.interfaces)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Binds every socket now, so privilege and address-in-use errors surface before the daemon says
    /// READY.
    pub fn bind(
        config: ResponderConfig,
        keys: Arc<ArcSwap<KeyStore>>,
        metrics: Arc<NetunlockMetrics>,
        hooks: Hooks,
    ) -> Result<Self, ResponderError> {
        config.validate()?;
        let all = list_interfaces()?;
        let served = Served::select(&all, &config.interfaces)?;
        let host = Arc::new(ArcSwap::from_pointee(HostAddrs::from_interfaces(&all)));
        let relays = Arc::new(ArcSwap::from_pointee(TrustedRelays::new(
            config.trusted_relays.clone(),
        )));
        let v4 = match config.v4 {
            Some(addr) => {
                let (s, eff) = sockets::bind_v4(addr, config.recv_buffer_bytes)?;
                metrics.set_receive_buffer(Family::V4, eff);
                background::log_buffer(Family::V4, addr.into(), config.recv_buffer_bytes, eff);
                Some(s)
            }
            None => None,
        };
        let v6 = match config.v6_port {
            Some(port) => {
                let (s, eff) = sockets::bind_v6(port, config.recv_buffer_bytes)?;
                metrics.set_receive_buffer(Family::V6, eff);
                let addr = s
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .unwrap_or_else(|| SocketAddr::from(([0u16; 8], port)));
                background::log_buffer(Family::V6, addr, config.recv_buffer_bytes, eff);
                let mut joined = 0usize;
                for (ifindex, name) in &served.v6_join {
                    match sockets::join_v6(&s, *ifindex, name) {
                        Ok(()) => {
                            joined += 1;
                            tracing::info!(interface = %name, "DHCPv6: joined ff02::1:2");
                        }
                        // One interface without IPv6 must not stop the others being served.
                        Err(e) => tracing::warn!("{e}"),
                    }
                }
                if joined == 0 {
                    tracing::warn!(
                        "DHCPv6: no interface joined ff02::1:2; only unicast and relayed requests will arrive \
                         (configure [unlock] interfaces, or bring up an interface with IPv6)"
                    );
                }
                Some(s)
            }
            None => None,
        };
        metrics.set_certificates(&keys.load(), time::OffsetDateTime::now_utc());
        Ok(Self {
            config,
            keys,
            relays,
            host,
            metrics,
            hooks,
            served,
            v4,
            v6,
            heartbeat: Arc::new(Heartbeat::new()),
        })
    }

    /// Addresses the sockets are bound to (useful when port 0 was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        [&self.v4, &self.v6]
            .into_iter()
            .flatten()
            .filter_map(|s| s.local_addr().ok().and_then(|a| a.as_socket()))
            .collect()
    }

    /// Last time each receive loop was alive (for the systemd watchdog / health).
    pub fn heartbeat(&self) -> Arc<Heartbeat> {
        self.heartbeat.clone()
    }

    /// The trusted relays in force; store a new set to change them without a restart (SIGHUP).
    pub fn trusted_relays(&self) -> Arc<ArcSwap<TrustedRelays>> {
        self.relays.clone()
    }

    /// Runs until `shutdown` is cancelled, then lets workers finish queued jobs that are still fresh
    /// (bounded by `max_request_age` plus a second) and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ResponderError> {
        let Self {
            config,
            keys,
            relays,
            host,
            metrics,
            hooks,
            served,
            v4,
            v6,
            heartbeat,
        } = self;
        let queue = Arc::new(receive::WorkQueue::new(
            config.queue_capacity,
            PER_SOURCE_QUEUE,
        ));
        // Registered with tokio here (bind may run outside a runtime); already non-blocking.
        let to_tokio = |s: Socket| {
            tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s))
                .map(Arc::new)
                .map_err(ResponderError::Receive)
        };
        let v4 = v4.map(to_tokio).transpose()?;
        let v6 = v6.map(to_tokio).transpose()?;
        let gate = Arc::new(LogGate::default());
        let shared = Arc::new(workers::Shared::new(
            metrics.clone(),
            config.server_duid.clone(),
            config.max_request_age,
            gate.clone(),
            hooks.clone(),
        ));
        let n = config.worker_count();
        let pool = workers::Pool::start(n, queue.clone(), shared)?;
        tracing::info!(
            workers = n,
            queue_capacity = config.queue_capacity,
            max_request_age_ms = config.max_request_age.as_millis() as u64,
            trusted_relays = relays.load().nets().len(),
            "Network Unlock responder running"
        );

        let ctx = Arc::new(receive::Context {
            config: config.clone(),
            keys: keys.clone(),
            relays,
            host: host.clone(),
            metrics: metrics.clone(),
            served,
            queue: queue.clone(),
            heartbeat: heartbeat.clone(),
            gate: gate.clone(),
            hooks,
        });
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(s) = v4 {
            tasks.spawn(receive::run::<dhcp::V4>(ctx.clone(), s, shutdown.clone()));
        }
        let v6_joins = match &v6 {
            Some(s) if config.interfaces.is_empty() => Some((
                s.clone(),
                ctx.served.v6_join.iter().map(|(i, _)| *i).collect(),
            )),
            _ => None,
        };
        if let Some(s) = v6 {
            tasks.spawn(receive::run::<dhcp::V6>(ctx.clone(), s, shutdown.clone()));
        }
        tasks.spawn(background::watch_interfaces(
            host,
            v6_joins,
            shutdown.clone(),
        ));
        tasks.spawn(background::write_log_summaries(gate, shutdown.clone()));
        // Seconds-until-expiry moves with the clock: refresh it while running.
        tasks.spawn(background::refresh_certificates(
            keys,
            metrics,
            shutdown.clone(),
        ));

        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!("{e}");
                    shutdown.cancel();
                    result = Err(e);
                }
                Err(e) => {
                    tracing::error!("responder task failed: {e}");
                    shutdown.cancel();
                    result = Err(ResponderError::Receive(std::io::Error::other(
                        e.to_string(),
                    )));
                }
            }
        }
        queue.close();
        let grace = config.max_request_age + Duration::from_secs(1);
        let joined = tokio::task::spawn_blocking(move || pool.join(grace)).await;
        if !matches!(joined, Ok(true)) {
            tracing::warn!("responder workers did not finish within {grace:?}; exiting anyway");
        }
        background::write_final_summary(&ctx.gate);
        tracing::info!("Network Unlock responder stopped");
        result
    }
}
