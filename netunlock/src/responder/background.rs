//! Small background tasks of a running responder.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::outcome::{LogGate, write_summary};
use super::{ALL_DHCP_RELAY_AGENTS_AND_SERVERS, Family, NetunlockMetrics, ResponderError};
use crate::keystore::KeyStore;
use crate::netif::{Served, list_interfaces};
use crate::trust::HostAddrs;

/// How often the appliance's own addresses are re-read (reply-address checks use them).
const ADDRESS_REFRESH: Duration = Duration::from_secs(2);

pub(crate) fn log_buffer(family: Family, addr: SocketAddr, requested: usize, effective: usize) {
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

/// Keeps the snapshot of the appliance's addresses current and, in "all interfaces" mode, joins
/// ff02::1:2 on interfaces that come up after start (a VLAN added later, a late link).
pub(crate) async fn watch_interfaces(
    host: Arc<ArcSwap<HostAddrs>>,
    mut v6: Option<(Arc<tokio::net::UdpSocket>, HashSet<u32>)>,
    shutdown: CancellationToken,
) -> Result<(), ResponderError> {
    let mut tick = tokio::time::interval(ADDRESS_REFRESH);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let Ok(all) = list_interfaces() else { continue };
        let fresh = HostAddrs::from_interfaces(&all);
        if **host.load() != fresh {
            host.store(Arc::new(fresh));
        }
        let Some((sock, joined)) = &mut v6 else {
            continue;
        };
        let Ok(now) = Served::select(&all, &[]) else {
            continue;
        };
        for (ifindex, name) in now.v6_join {
            if joined.contains(&ifindex) {
                continue;
            }
            match sock.join_multicast_v6(&ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ifindex) {
                Ok(()) => {
                    joined.insert(ifindex);
                    tracing::info!(interface = %name, "DHCPv6: joined ff02::1:2 on a new interface");
                }
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                    joined.insert(ifindex);
                }
                Err(e) => {
                    tracing::debug!(interface = %name, "DHCPv6: cannot join ff02::1:2 yet: {e}")
                }
            }
        }
    }
}

/// Writes the summary of per-request lines the log gate held back, once a burst is over (or every
/// ten seconds while it goes on).
pub(crate) async fn write_log_summaries(
    gate: Arc<LogGate>,
    shutdown: CancellationToken,
) -> Result<(), ResponderError> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => write_summary(&gate, Instant::now()),
        }
    }
}

/// At shutdown: whatever is still held back, regardless of timing.
pub(crate) fn write_final_summary(gate: &LogGate) {
    write_summary(gate, Instant::now() + Duration::from_secs(3600));
}

pub(crate) async fn refresh_certificates(
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
