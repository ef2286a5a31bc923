//! The responder's settings and their validation.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use ipnet::IpNet;

use super::{RateLimit, ResponderError};

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
    /// Per-source (host or relay) and per-client request rate; burst 0 = off.
    pub rate_limit: RateLimit,
    /// Sources allowed to send relayed requests (DHCPv4 giaddr ≠ 0, DHCPv6 Relay-Forward).
    pub trusted_relays: Vec<IpNet>,
    /// How many hosts' worth of rate limit and queue share a trusted relay gets (it carries many
    /// clients).
    pub relay_share: u32,
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
            trusted_relays: Vec::new(),
            relay_share: 64,
            recv_buffer_bytes: 4 << 20,
            server_duid,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ResponderError> {
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
        if self.relay_share == 0 {
            return Err(ResponderError::Config(
                "relay_share must be at least 1".into(),
            ));
        }
        if self.max_request_age.is_zero() {
            return Err(ResponderError::Config(
                "max_request_age must be above zero".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
