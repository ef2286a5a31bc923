//! The DHCPv4/DHCPv6 Network Unlock responder: sockets, receive loops, the bounded queue and the RSA
//! worker pool.
//!
//! Shape of the pipeline: a receive loop per family (tokio task, never does RSA) parses, classifies
//! with [`KeyStore::decide`], rate-limits per client and pushes a job into a bounded queue; `workers`
//! OS threads compute the reply ([`UnlockKey::answer`](crate::crypto::UnlockKey::answer)) and send it
//! out of the arrival interface. A job older than `max_request_age` is dropped, never answered late.

mod error;
pub mod interfaces;
pub mod metrics;
pub mod outcome;
pub mod pktinfo;
pub mod queue;
pub mod ratelimit;
mod receive;
mod sockets;
mod workers;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::Socket;
use tokio_util::sync::CancellationToken;

use crate::keystore::KeyStore;

pub use error::ResponderError;
pub use interfaces::{InterfaceInfo, Served, list_interfaces};
pub use metrics::NetunlockMetrics;
pub use outcome::{Family, Outcome};
pub use ratelimit::RateLimit;
pub use sockets::ALL_DHCP_RELAY_AGENTS_AND_SERVERS;

/// Settings of the responder (the daemon maps its `[unlock]` section onto this).
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    /// Interfaces to serve; empty = all interfaces.
    pub interfaces: Vec<String>,
    /// DHCPv4 listen address; None = v4 off. Normally 0.0.0.0:67 (broadcasts need the wildcard address).
    pub v4: Option<SocketAddrV4>,
    /// DHCPv6 port on [::]; None = v6 off. Normally 547; joins ff02::1:2 on each served interface.
    pub v6_port: Option<u16>,
    /// Port replies go to on a directly attached v4 client (68).
    pub v4_client_port: u16,
    /// Port replies go to on a directly attached v6 client (546).
    pub v6_client_port: u16,
    /// Port of a v4 relay agent (giaddr), 67.
    pub v4_relay_port: u16,
    /// Port of a v6 relay agent, 547.
    pub v6_relay_port: u16,
    /// RSA worker threads; 0 = one per core.
    pub workers: usize,
    /// Capacity of the queue between the receive loops and the workers.
    pub queue_capacity: usize,
    /// Requests older than this when a worker picks them up (or finishes them) are dropped.
    pub max_request_age: Duration,
    /// Per-client token bucket (v4: MAC + ciaddr, v6: DUID); burst 0 = off.
    pub rate_limit: RateLimit,
    /// Requested SO_RCVBUF per socket (SO_RCVBUFFORCE when permitted).
    pub recv_buffer_bytes: usize,
    /// DUID sent in the Server Identifier option of v6 replies (clients ignore replies without one).
    pub server_duid: Vec<u8>,
}

impl ResponderConfig {
    /// The standard ports and sizing; only the server DUID has no sensible default.
    pub fn with_defaults(server_duid: Vec<u8>) -> Self {
        Self {
            interfaces: Vec::new(),
            v4: Some(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67)),
            v6_port: Some(547),
            v4_client_port: 68,
            v6_client_port: 546,
            v4_relay_port: 67,
            v6_relay_port: 547,
            workers: 0,
            queue_capacity: 4096,
            max_request_age: Duration::from_secs(2),
            rate_limit: RateLimit {
                burst: 8,
                per_second: 1.0,
            },
            recv_buffer_bytes: 4 << 20,
            server_duid,
        }
    }

    fn validate(&self) -> Result<(), ResponderError> {
        if self.v4.is_none() && self.v6_port.is_none() {
            return Err(ResponderError::Config(
                "both DHCPv4 and DHCPv6 are off; enable at least one".into(),
            ));
        }
        if self.v6_port.is_some() && self.server_duid.is_empty() {
            return Err(ResponderError::Config(
                "DHCPv6 needs a server DUID (clients ignore replies without a Server Identifier)"
                    .into(),
            ));
        }
        if self.server_duid.len() > 130 {
            return Err(ResponderError::Config(
                "the server DUID is longer than 130 bytes (RFC 8415 §11.1)".into(),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ResponderError::Config(
                "queue_capacity must be at least 1".into(),
            ));
        }
        if self.max_request_age.is_zero() {
            return Err(ResponderError::Config(
                "max_request_age must be above zero".into(),
            ));
        }
        Ok(())
    }

    fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// Liveness of the receive loops, for the systemd watchdog and health checks.
#[derive(Debug)]
pub struct Heartbeat {
    start: Instant,
    /// Milliseconds since `start` of the last beat, +1; 0 = that loop is not running.
    v4: AtomicU64,
    v6: AtomicU64,
}

impl Heartbeat {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            v4: AtomicU64::new(0),
            v6: AtomicU64::new(0),
        }
    }

    fn slot(&self, f: Family) -> &AtomicU64 {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    pub(crate) fn beat(&self, f: Family) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.slot(f).store(ms + 1, Ordering::Relaxed);
    }

    pub(crate) fn stop(&self, f: Family) {
        self.slot(f).store(0, Ordering::Relaxed);
    }

    /// Time since the given loop last showed life; None if it is not running.
    pub fn age(&self, f: Family) -> Option<Duration> {
        match self.slot(f).load(Ordering::Relaxed) {
            0 => None,
            v => {
                let then = Duration::from_millis(v - 1);
                Some(self.start.elapsed().saturating_sub(then))
            }
        }
    }

    /// The oldest beat among running loops; None if no loop runs.
    pub fn stalest(&self) -> Option<Duration> {
        Family::ALL.iter().filter_map(|f| self.age(*f)).max()
    }

    /// Whether every running loop beat within `max_age` (loops beat at least once a second).
    pub fn healthy(&self, max_age: Duration) -> bool {
        self.stalest().is_some_and(|a| a <= max_age)
    }
}

/// The bound responder. Create with [`Responder::bind`], then [`Responder::run`].
pub struct Responder {
    config: ResponderConfig,
    keys: Arc<ArcSwap<KeyStore>>,
    metrics: Arc<NetunlockMetrics>,
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
    ) -> Result<Self, ResponderError> {
        config.validate()?;
        let all = list_interfaces()?;
        let served = Served::select(&all, &config.interfaces)?;
        let v4 = match config.v4 {
            Some(addr) => {
                let (s, eff) = sockets::bind_v4(addr, config.recv_buffer_bytes)?;
                metrics.set_receive_buffer(Family::V4, eff);
                log_buffer(Family::V4, addr.into(), config.recv_buffer_bytes, eff);
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
                log_buffer(Family::V6, addr, config.recv_buffer_bytes, eff);
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
            metrics,
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

    /// Runs until `shutdown` is cancelled, then lets workers finish queued jobs that are still fresh
    /// (bounded by `max_request_age` plus a second) and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ResponderError> {
        let Self {
            config,
            keys,
            metrics,
            served,
            v4,
            v6,
            heartbeat,
        } = self;
        let queue = Arc::new(queue::BoundedQueue::new(config.queue_capacity));
        // Registered with tokio here (bind may run outside a runtime); already non-blocking.
        let to_tokio = |s: Socket| {
            tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s))
                .map(Arc::new)
                .map_err(ResponderError::Receive)
        };
        let v4 = v4.map(to_tokio).transpose()?;
        let v6 = v6.map(to_tokio).transpose()?;
        let shared = Arc::new(workers::Shared::new(
            v4.clone(),
            v6.clone(),
            metrics.clone(),
            config.server_duid.clone(),
            config.max_request_age,
        ));
        let n = config.worker_count();
        let pool = workers::Pool::start(n, queue.clone(), shared)?;
        tracing::info!(
            workers = n,
            queue_capacity = config.queue_capacity,
            max_request_age_ms = config.max_request_age.as_millis() as u64,
            "Network Unlock responder running"
        );

        let ctx = Arc::new(receive::Context {
            config: config.clone(),
            keys: keys.clone(),
            metrics: metrics.clone(),
            served,
            queue: queue.clone(),
            heartbeat: heartbeat.clone(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(s) = v4 {
            tasks.spawn(receive::run_v4(ctx.clone(), s, shutdown.clone()));
        }
        if let Some(s) = v6 {
            tasks.spawn(receive::run_v6(ctx.clone(), s, shutdown.clone()));
        }
        // Seconds-until-expiry moves with the clock: refresh it while running.
        tasks.spawn(refresh_certificates(keys, metrics, shutdown.clone()));

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
        tracing::info!("Network Unlock responder stopped");
        result
    }
}

fn log_buffer(family: Family, addr: SocketAddr, requested: usize, effective: usize) {
    // Linux reports twice the requested size (bookkeeping overhead); less than requested means
    // net.core.rmem_max capped it and SO_RCVBUFFORCE was not permitted.
    if requested > 0 && effective < requested {
        tracing::warn!(
            %family, %addr, requested, effective,
            "DHCP socket receive buffer is smaller than configured (raise net.core.rmem_max or grant CAP_NET_ADMIN); \
             a boot storm may overflow it"
        );
    } else {
        tracing::info!(%family, %addr, receive_buffer_bytes = effective, "DHCP socket bound");
    }
}

async fn refresh_certificates(
    keys: Arc<ArcSwap<KeyStore>>,
    metrics: Arc<NetunlockMetrics>,
    shutdown: CancellationToken,
) -> Result<(), ResponderError> {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => metrics.set_certificates(&keys.load(), time::OffsetDateTime::now_utc()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_reports_running_loops_only() {
        let h = Heartbeat::new();
        assert_eq!(h.stalest(), None);
        assert!(!h.healthy(Duration::from_secs(5)));
        h.beat(Family::V4);
        assert!(h.age(Family::V4).unwrap() < Duration::from_secs(1));
        assert_eq!(h.age(Family::V6), None);
        assert!(h.healthy(Duration::from_secs(5)));
        h.stop(Family::V4);
        assert_eq!(h.stalest(), None);
    }

    #[test]
    fn config_validation() {
        let mut c = ResponderConfig::with_defaults(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
        assert!(c.validate().is_ok());
        c.server_duid.clear();
        assert!(c.validate().unwrap_err().to_string().contains("DUID"));
        c.v6_port = None;
        assert!(c.validate().is_ok(), "v4 only needs no DUID");
        c.v4 = None;
        assert!(c.validate().is_err());
        let mut c = ResponderConfig::with_defaults(vec![1]);
        c.queue_capacity = 0;
        assert!(c.validate().is_err());
        let mut c = ResponderConfig::with_defaults(vec![1]);
        c.max_request_age = Duration::ZERO;
        assert!(c.validate().is_err());
    }

    #[test]
    fn zero_workers_means_one_per_core() {
        let mut c = ResponderConfig::with_defaults(vec![1]);
        assert!(c.worker_count() >= 1);
        c.workers = 3;
        assert_eq!(c.worker_count(), 3);
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod pipeline_tests;
