//! Creating the DHCP sockets: options first, then bind, so permission problems surface at start-up.
//!
//! No SO_REUSEADDR: on Linux it lets a second UDP socket bind the same port, which would let a second
//! instance (or any process) silently take the traffic — and bypass this one's policy. The port has
//! one owner; a bind that finds it taken fails and says who holds it.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};

use super::error::ResponderError;

pub use crate::v6::ALL_DHCP_RELAY_AGENTS_AND_SERVERS;

fn opt_err(addr: SocketAddr, what: &'static str) -> impl FnOnce(std::io::Error) -> ResponderError {
    move |source| ResponderError::SocketOption { addr, what, source }
}

/// Sizes SO_RCVBUF: SO_RCVBUFFORCE (needs CAP_NET_ADMIN, ignores net.core.rmem_max) first, then
/// SO_RCVBUF (capped by rmem_max). Returns the effective size the kernel reports.
fn size_receive_buffer(
    sock: &Socket,
    addr: SocketAddr,
    bytes: usize,
) -> Result<usize, ResponderError> {
    if bytes > 0 && setsockopt(sock, sockopt::RcvBufForce, &bytes).is_err() {
        sock.set_recv_buffer_size(bytes)
            .map_err(opt_err(addr, "SO_RCVBUF"))?;
    }
    sock.recv_buffer_size().map_err(opt_err(addr, "SO_RCVBUF"))
}

/// The bound DHCPv4 socket: SO_BROADCAST, IP_PKTINFO, SO_TIMESTAMPNS, non-blocking.
pub fn bind_v4(addr: SocketAddrV4, recv_buffer: usize) -> Result<(Socket, usize), ResponderError> {
    let sa = SocketAddr::V4(addr);
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(opt_err(sa, "socket"))?;
    sock.set_broadcast(true)
        .map_err(opt_err(sa, "SO_BROADCAST"))?;
    setsockopt(&sock, sockopt::Ipv4PacketInfo, &true)
        .map_err(|e| opt_err(sa, "IP_PKTINFO")(e.into()))?;
    setsockopt(&sock, sockopt::ReceiveTimestampns, &true)
        .map_err(|e| opt_err(sa, "SO_TIMESTAMPNS")(e.into()))?;
    let effective = size_receive_buffer(&sock, sa, recv_buffer)?;
    sock.set_nonblocking(true)
        .map_err(opt_err(sa, "O_NONBLOCK"))?;
    sock.bind(&sa.into())
        .map_err(|e| ResponderError::from_bind(sa, e))?;
    Ok((sock, effective))
}

/// The bound DHCPv6 socket on [::]:port: IPV6_V6ONLY, IPV6_RECVPKTINFO, SO_TIMESTAMPNS, non-blocking.
pub fn bind_v6(port: u16, recv_buffer: usize) -> Result<(Socket, usize), ResponderError> {
    let sa = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
    let sock = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
        .map_err(opt_err(sa, "socket"))?;
    sock.set_only_v6(true).map_err(opt_err(sa, "IPV6_V6ONLY"))?;
    setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true)
        .map_err(|e| opt_err(sa, "IPV6_RECVPKTINFO")(e.into()))?;
    // Arrival time of each datagram, so time spent in the socket buffer counts against the 2 s window.
    setsockopt(&sock, sockopt::ReceiveTimestampns, &true)
        .map_err(|e| opt_err(sa, "SO_TIMESTAMPNS")(e.into()))?;
    // Replies to link-local clients are sent with an explicit interface; multicast is never sent.
    let effective = size_receive_buffer(&sock, sa, recv_buffer)?;
    sock.set_nonblocking(true)
        .map_err(opt_err(sa, "O_NONBLOCK"))?;
    sock.bind(&sa.into())
        .map_err(|e| ResponderError::from_bind(sa, e))?;
    Ok((sock, effective))
}

/// Joins ff02::1:2 on one interface.
pub fn join_v6(sock: &Socket, ifindex: u32, name: &str) -> Result<(), ResponderError> {
    match sock.join_multicast_v6(&ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ifindex) {
        Ok(()) => Ok(()),
        // Already joined (e.g. a re-scan found the same interface again).
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Ok(()),
        Err(source) => Err(ResponderError::JoinMulticast {
            interface: name.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn v4_socket_binds_and_reports_buffer() {
        let (s, eff) = bind_v4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 1 << 20).unwrap();
        assert!(eff > 0);
        assert!(s.local_addr().unwrap().as_socket_ipv4().unwrap().port() != 0);
    }

    #[test]
    fn a_taken_port_is_an_error_that_names_the_owner() {
        // Another process's socket, even one that asked for SO_REUSEADDR itself, keeps the port.
        let other = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        other.set_reuse_address(true).unwrap();
        other
            .bind(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into())
            .unwrap();
        let taken = other.local_addr().unwrap().as_socket_ipv4().unwrap().port();
        let err = bind_v4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, taken), 0).unwrap_err();
        assert!(matches!(err, ResponderError::AddressInUse { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("port {taken}")), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "names the owner: {text}"
        );
        // And our own socket refuses a second binder in turn.
        let (ours, _) = bind_v4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 0).unwrap();
        let port = ours.local_addr().unwrap().as_socket_ipv4().unwrap().port();
        let second = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        second.set_reuse_address(true).unwrap();
        assert!(
            second
                .bind(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into())
                .is_err(),
            "a second socket must not share our port"
        );
    }

    #[test]
    fn v6_socket_binds_on_a_high_port() {
        // IPv6 may be disabled in some sandboxes; then there is nothing to test here.
        match bind_v6(0, 0) {
            Ok((s, _)) => assert!(s.only_v6().unwrap()),
            Err(e) => eprintln!("SKIP: IPv6 not available: {e}"),
        }
    }
}
