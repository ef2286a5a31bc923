//! The two DHCP families behind one trait, so the receive loop, the checks and the workers are written
//! once: receive, parse, client identity, trust (policy addresses and reply target), build, send.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::BorrowedFd;

use super::config::ResponderConfig;
use super::hooks::ClientIdentity;
use super::pktinfo::{self, Received, V4Arrival, V6Arrival};
use crate::error::NotNkpu;
use crate::family::Family;
use crate::nkpu::{KPR_LEN, NkpuRequest};
use crate::trust::{Admission, Ports, Refusal, TrustEnv};
use crate::v4::{BuildError, V4Request};
use crate::v6::V6Request;
use crate::{trust, v4, v6};

/// One DHCP family as the pipeline sees it.
pub(crate) trait Dhcp: Send + Sync + 'static {
    const FAMILY: Family;
    /// The sender's socket address.
    type Peer: Copy + Into<SocketAddr> + Send;
    /// What the kernel says about the arrival (interface, local address).
    type Arrival: Copy + Send;
    type Request: Send + 'static;
    /// Where a reply goes.
    type Dest: Copy + Into<SocketAddr> + Send + 'static;
    /// The local address a reply is sent from.
    type Local: Copy + Send + 'static;

    fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received<Self::Peer, Self::Arrival>>;
    fn ifindex(arrival: &Self::Arrival) -> u32;
    fn reply_source(arrival: &Self::Arrival) -> Self::Local;
    fn parse(datagram: &[u8]) -> Result<Self::Request, NotNkpu>;
    fn nkpu(req: &Self::Request) -> &NkpuRequest;
    fn identity(req: &Self::Request) -> ClientIdentity;
    fn ports(config: &ResponderConfig) -> Ports;
    fn admit(
        req: &Self::Request,
        from: Self::Peer,
        arrival_if: u32,
        ports: Ports,
        env: TrustEnv<'_>,
    ) -> Result<Admission<Self::Dest>, Refusal>;
    fn build(
        req: &Self::Request,
        kpr: &[u8; KPR_LEN],
        server_duid: &[u8],
    ) -> Result<Vec<u8>, BuildError>;
    fn send(
        fd: BorrowedFd<'_>,
        datagram: &[u8],
        dest: Self::Dest,
        oif: u32,
        local: Self::Local,
    ) -> io::Result<usize>;
}

/// DHCPv4 (UDP 67/68).
pub(crate) struct V4;

impl Dhcp for V4 {
    const FAMILY: Family = Family::V4;
    type Peer = SocketAddrV4;
    type Arrival = V4Arrival;
    type Request = V4Request;
    type Dest = SocketAddrV4;
    type Local = Ipv4Addr;

    fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received<Self::Peer, Self::Arrival>> {
        pktinfo::recv_v4(fd, buf)
    }
    fn ifindex(arrival: &V4Arrival) -> u32 {
        arrival.ifindex
    }
    fn reply_source(arrival: &V4Arrival) -> Ipv4Addr {
        // ipi_spec_dst: the arrival interface's address even for a broadcast request.
        arrival.local
    }
    fn parse(datagram: &[u8]) -> Result<V4Request, NotNkpu> {
        v4::parse_request(datagram)
    }
    fn nkpu(req: &V4Request) -> &NkpuRequest {
        &req.nkpu
    }
    fn identity(req: &V4Request) -> ClientIdentity {
        ClientIdentity::Mac(req.hardware_address().to_vec())
    }
    fn ports(config: &ResponderConfig) -> Ports {
        Ports {
            client: config.v4_client_port,
            relay: config.v4_relay_port,
        }
    }
    fn admit(
        req: &V4Request,
        from: SocketAddrV4,
        arrival_if: u32,
        ports: Ports,
        env: TrustEnv<'_>,
    ) -> Result<Admission<SocketAddrV4>, Refusal> {
        trust::admit_v4(req, *from.ip(), arrival_if, ports, env)
    }
    fn build(req: &V4Request, kpr: &[u8; KPR_LEN], _: &[u8]) -> Result<Vec<u8>, BuildError> {
        v4::build_reply(req, kpr)
    }
    fn send(
        fd: BorrowedFd<'_>,
        datagram: &[u8],
        dest: SocketAddrV4,
        oif: u32,
        local: Ipv4Addr,
    ) -> io::Result<usize> {
        pktinfo::send_v4(fd, datagram, dest, oif, local)
    }
}

/// DHCPv6 (UDP 546/547).
pub(crate) struct V6;

impl Dhcp for V6 {
    const FAMILY: Family = Family::V6;
    type Peer = SocketAddrV6;
    type Arrival = V6Arrival;
    type Request = V6Request;
    type Dest = SocketAddrV6;
    type Local = Ipv6Addr;

    fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received<Self::Peer, Self::Arrival>> {
        pktinfo::recv_v6(fd, buf)
    }
    fn ifindex(arrival: &V6Arrival) -> u32 {
        arrival.ifindex
    }
    fn reply_source(arrival: &V6Arrival) -> Ipv6Addr {
        pktinfo::v6_reply_source(arrival.header_dst)
    }
    fn parse(datagram: &[u8]) -> Result<V6Request, NotNkpu> {
        v6::parse_request(datagram)
    }
    fn nkpu(req: &V6Request) -> &NkpuRequest {
        &req.nkpu
    }
    fn identity(req: &V6Request) -> ClientIdentity {
        match &req.client_id {
            Some(duid) => ClientIdentity::Duid(duid.clone()),
            None => ClientIdentity::Unknown,
        }
    }
    fn ports(config: &ResponderConfig) -> Ports {
        Ports {
            client: config.v6_client_port,
            relay: config.v6_relay_port,
        }
    }
    fn admit(
        req: &V6Request,
        from: SocketAddrV6,
        arrival_if: u32,
        ports: Ports,
        env: TrustEnv<'_>,
    ) -> Result<Admission<SocketAddrV6>, Refusal> {
        trust::admit_v6(req, *from.ip(), arrival_if, ports, env)
    }
    fn build(
        req: &V6Request,
        kpr: &[u8; KPR_LEN],
        server_duid: &[u8],
    ) -> Result<Vec<u8>, BuildError> {
        v6::build_reply(req, server_duid, kpr)
    }
    fn send(
        fd: BorrowedFd<'_>,
        datagram: &[u8],
        dest: SocketAddrV6,
        oif: u32,
        local: Ipv6Addr,
    ) -> io::Result<usize> {
        pktinfo::send_v6(fd, datagram, dest, oif, local)
    }
}

/// The IP source of a peer, for logs, limits and records.
pub(crate) fn peer_ip<P: Into<SocketAddr>>(peer: P) -> IpAddr {
    peer.into().ip()
}
