//! recvmsg/sendmsg with IP_PKTINFO / IPV6_PKTINFO: learn the arrival interface and local address of each
//! datagram, and send the reply out of that same interface from that same address.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, recvmsg, sendmsg,
};

/// Where a v4 datagram arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V4Arrival {
    pub ifindex: u32,
    /// The local address the kernel would use as source for a reply (ipi_spec_dst): for a broadcast
    /// request it is the arrival interface's address, never 255.255.255.255.
    pub local: Ipv4Addr,
    /// Destination address in the IP header (255.255.255.255 for a broadcast).
    pub header_dst: Ipv4Addr,
}

/// Where a v6 datagram arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V6Arrival {
    pub ifindex: u32,
    /// Destination address in the IPv6 header (ff02::1:2 for a multicast request).
    pub header_dst: Ipv6Addr,
}

/// One received datagram.
#[derive(Debug)]
pub struct Received<A, M> {
    pub len: usize,
    pub from: A,
    /// None if the kernel gave no packet-info control message (should not happen once the option is set).
    pub arrival: Option<M>,
    /// The datagram did not fit in the buffer and was cut.
    pub truncated: bool,
    /// How long ago the kernel received the datagram (SO_TIMESTAMPNS), when available. During a storm a
    /// datagram can wait in the socket buffer; the client's 2 s window runs from its arrival, not from
    /// when we read it.
    pub kernel_age: Option<Duration>,
}

/// Age of a datagram from its SO_TIMESTAMPNS (wall clock) timestamp.
fn age_of(ts: &nix::sys::time::TimeSpec) -> Option<Duration> {
    let at = std::time::UNIX_EPOCH.checked_add(Duration::new(
        u64::try_from(ts.tv_sec()).ok()?,
        u32::try_from(ts.tv_nsec()).ok()?,
    ))?;
    // A wall clock stepped backwards gives an error here: treat the datagram as just received.
    std::time::SystemTime::now().duration_since(at).ok()
}

fn no_source() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "datagram without a source address",
    )
}

/// Receives one datagram from a v4 socket with IP_PKTINFO enabled. Non-blocking sockets return WouldBlock.
pub fn recv_v4(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<Received<SocketAddrV4, V4Arrival>> {
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo, libc::timespec);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn>(fd.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let from = msg.address.map(SocketAddrV4::from).ok_or_else(no_source)?;
    let mut arrival = None;
    let mut kernel_age = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    arrival = Some(V4Arrival {
                        ifindex: u32::try_from(info.ipi_ifindex).unwrap_or(0),
                        local: Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr)),
                        header_dst: Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)),
                    });
                }
                ControlMessageOwned::ScmTimestampns(ts) => kernel_age = age_of(&ts),
                _ => {}
            }
        }
    }
    Ok(Received {
        len: msg.bytes,
        from,
        arrival,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        kernel_age,
    })
}

/// Receives one datagram from a v6 socket with IPV6_RECVPKTINFO enabled.
pub fn recv_v6(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<Received<SocketAddrV6, V6Arrival>> {
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::timespec);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn6>(fd.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let from = msg.address.map(SocketAddrV6::from).ok_or_else(no_source)?;
    let mut arrival = None;
    let mut kernel_age = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    arrival = Some(V6Arrival {
                        ifindex: info.ipi6_ifindex,
                        header_dst: Ipv6Addr::from(info.ipi6_addr.s6_addr),
                    });
                }
                ControlMessageOwned::ScmTimestampns(ts) => kernel_age = age_of(&ts),
                _ => {}
            }
        }
    }
    Ok(Received {
        len: msg.bytes,
        from,
        arrival,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        kernel_age,
    })
}

/// Sends `data` to `to` out of interface `ifindex`, with source address `source` (UNSPECIFIED lets the
/// kernel choose the interface's address).
pub fn send_v4(
    fd: BorrowedFd<'_>,
    data: &[u8],
    to: SocketAddrV4,
    ifindex: u32,
    source: Ipv4Addr,
) -> io::Result<usize> {
    let info = libc::in_pktinfo {
        ipi_ifindex: i32::try_from(ifindex).unwrap_or(0),
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(source).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let cmsgs = [ControlMessage::Ipv4PacketInfo(&info)];
    let addr = SockaddrIn::from(to);
    sendmsg(
        fd.as_raw_fd(),
        &[IoSlice::new(data)],
        &cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )
    .map_err(io::Error::from)
}

/// Sends `data` to `to` out of interface `ifindex`, with source address `source` (UNSPECIFIED lets the
/// kernel choose, e.g. the link-local address for a link-local destination).
pub fn send_v6(
    fd: BorrowedFd<'_>,
    data: &[u8],
    to: SocketAddrV6,
    ifindex: u32,
    source: Ipv6Addr,
) -> io::Result<usize> {
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: source.octets(),
        },
        ipi6_ifindex: ifindex,
    };
    let cmsgs = [ControlMessage::Ipv6PacketInfo(&info)];
    let addr = SockaddrIn6::from(to);
    sendmsg(
        fd.as_raw_fd(),
        &[IoSlice::new(data)],
        &cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )
    .map_err(io::Error::from)
}

/// Source address for a v6 reply: answer from the address the request was sent to when that was one of
/// ours (unicast), otherwise (multicast) let the kernel pick one on the arrival interface.
pub fn v6_reply_source(header_dst: Ipv6Addr) -> Ipv6Addr {
    if header_dst.is_multicast() || header_dst.is_unspecified() {
        Ipv6Addr::UNSPECIFIED
    } else {
        header_dst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::AsFd;

    #[test]
    fn v6_reply_source_rules() {
        assert_eq!(
            v6_reply_source("ff02::1:2".parse().unwrap()),
            Ipv6Addr::UNSPECIFIED
        );
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        assert_eq!(v6_reply_source(ll), ll);
    }

    /// Real sockets on loopback: the arrival interface and local address come back, and a reply sent with
    /// packet info arrives from that address.
    #[test]
    fn loopback_round_trip_v4_with_pktinfo() {
        let server = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        nix::sys::socket::setsockopt(&server, nix::sys::socket::sockopt::Ipv4PacketInfo, &true)
            .unwrap();
        nix::sys::socket::setsockopt(
            &server,
            nix::sys::socket::sockopt::ReceiveTimestampns,
            &true,
        )
        .unwrap();
        server
            .bind(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into())
            .unwrap();
        let server_addr = server.local_addr().unwrap().as_socket_ipv4().unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // The kernel turns receive timestamps on from deferred work after the first socket asks for
        // them; a datagram that arrives before then is stamped when it is read.
        std::thread::sleep(Duration::from_millis(100));
        client.send_to(b"hello", server_addr).unwrap();
        let mut buf = [0u8; 64];
        std::thread::sleep(Duration::from_millis(50));
        let got = recv_v4(server.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got.len], b"hello");
        assert!(!got.truncated);
        let age = got.kernel_age.expect("SO_TIMESTAMPNS age");
        assert!(
            age >= Duration::from_millis(40),
            "waited in the buffer: {age:?}"
        );
        assert!(age < Duration::from_secs(5));
        let arrival = got.arrival.unwrap();
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        assert_eq!(arrival.ifindex, lo);
        assert_eq!(arrival.local, Ipv4Addr::LOCALHOST);
        let sent = send_v4(
            server.as_fd(),
            b"reply",
            got.from,
            arrival.ifindex,
            arrival.local,
        )
        .unwrap();
        assert_eq!(sent, 5);
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"reply");
        assert_eq!(from, std::net::SocketAddr::V4(server_addr));
    }

    #[test]
    fn truncation_is_reported() {
        let server = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        nix::sys::socket::setsockopt(&server, nix::sys::socket::sockopt::Ipv4PacketInfo, &true)
            .unwrap();
        server
            .bind(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into())
            .unwrap();
        let server_addr = server.local_addr().unwrap().as_socket_ipv4().unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(&[7u8; 100], server_addr).unwrap();
        let mut buf = [0u8; 10];
        let got = recv_v4(server.as_fd(), &mut buf).unwrap();
        assert!(got.truncated);
    }
}
