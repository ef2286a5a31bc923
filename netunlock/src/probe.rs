//! `netunlockd probe`: act as a Network Unlock client on a real interface — send one real request (and
//! one retransmission after 2 s, as the firmware does), wait for a reply that decrypts to our own CK,
//! and report the round-trip time. Operators use it to check a deployment without rebooting a server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::client::{
    ClientSecrets, V4ClientParams, V6ClientParams, build_v4_request, build_v6_request,
    new_key_protector, verify_v4_reply, verify_v6_reply,
};
use crate::error::{ClientError, ReplyError};
use crate::netif::{InterfaceError, InterfaceInfo, find_interface};
use crate::trust::is_link_local_v6;
use crate::v6::ALL_DHCP_RELAY_AGENTS_AND_SERVERS;

pub use crate::family::Family;

/// The firmware's retransmission delay (ms-nkpu.md §1.4: RDT = 2 s, one retransmission).
pub const RETRANSMIT_AFTER: Duration = Duration::from_secs(2);

/// What to probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub family: Family,
    /// The Network Unlock certificate (DER) the clients have in their Group Policy.
    pub cert_der: Vec<u8>,
    /// Interface to send on (the probe binds to it).
    pub interface: String,
    /// Unicast the request to this server instead of broadcasting (v4) / multicasting to ff02::1:2 (v6).
    pub server: Option<IpAddr>,
    /// Server port (default 67 / 547).
    pub server_port: Option<u16>,
    /// Overall time to wait for a good reply.
    pub timeout: Duration,
    /// v4 only: the client address to send from and claim as ciaddr (default: the interface's first
    /// IPv4 address; another address must be configured on the interface).
    pub ciaddr: Option<Ipv4Addr>,
}

/// A successful probe.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// From the first transmission to the verified reply.
    pub rtt: Duration,
    /// Who answered.
    pub from: SocketAddr,
    /// Transmissions sent (1, or 2 after a retransmission).
    pub attempts: u32,
    /// Datagrams received on the client port that were not a good reply to us (other DHCP traffic).
    pub ignored: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Interface(#[from] InterfaceError),

    #[error(
        "interface `{0}` has no IPv4 address; give one with --ciaddr or configure the interface (the Windows \
         client sends its leased address)"
    )]
    NoIpv4(String),

    #[error("interface `{0}` has no hardware (MAC) address; probe a real Ethernet interface")]
    NoMac(String),

    #[error(
        "interface `{0}` has no IPv6 link-local address (IPv6 disabled on it, or duplicate address detection \
         still running: wait a few seconds)"
    )]
    NoLinkLocal(String),

    #[error("--server {server} is not an {family} address")]
    WrongServerFamily { server: IpAddr, family: Family },

    #[error("the certificate cannot be used to build a request: {0}")]
    Client(#[from] ClientError),

    #[error(
        "cannot bind the client port {addr} on `{interface}`: {source} (the probe needs root or \
         CAP_NET_BIND_SERVICE + CAP_NET_RAW for the DHCP client port and SO_BINDTODEVICE; a DHCP client \
         holding port {port} without SO_REUSEADDR also blocks it)"
    )]
    Bind {
        addr: SocketAddr,
        interface: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot send the request to {to}: {source}")]
    Send {
        to: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("receiving on the client port failed: {0}")]
    Receive(#[source] std::io::Error),

    #[error(
        "no valid Network Unlock reply within {waited:?} ({attempts} request(s) sent to {to}, {ignored} other \
         datagram(s) ignored{last}). Check: netunlockd is running and listening (`journalctl -u netunlockd`), \
         the certificate given here is the one loaded by the server (compare thumbprints with \
         `netunlockd certs inspect`), the subnet policy allows this client's address, the certificate is not \
         disabled, and no firewall drops UDP {ports}"
    )]
    NoReply {
        waited: Duration,
        attempts: u32,
        to: SocketAddr,
        ignored: u32,
        last: String,
        ports: &'static str,
    },
}

fn last_rejection(r: Option<ReplyError>) -> String {
    match r {
        None => String::new(),
        Some(e @ (ReplyError::BadTag | ReplyError::WrongKey)) => format!(
            "; a reply arrived but did not decrypt to this probe's key ({e}): the server answered with a \
             different private key for this certificate's thumbprint"
        ),
        Some(e) => format!("; last rejected reply: {e}"),
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The xid only has to differ between probes; a failed RNG leaves a fixed-but-valid value.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

/// Sends a real request and waits for a reply that decrypts to our own CK.
pub async fn probe(opts: ProbeOptions) -> Result<ProbeResult, ProbeError> {
    let iface = find_interface(&opts.interface)?;
    let thumbprint = certs::thumbprint(&opts.cert_der);
    let (secrets, kp) = new_key_protector(&opts.cert_der)?;
    match opts.family {
        Family::V4 => probe_v4(&opts, &iface, &thumbprint, &secrets, &kp).await,
        Family::V6 => probe_v6(&opts, &iface, &thumbprint, &secrets, &kp).await,
    }
}

fn client_socket(
    bind: SocketAddr,
    interface: &str,
    broadcast: bool,
) -> Result<UdpSocket, ProbeError> {
    let err = |source| ProbeError::Bind {
        addr: bind,
        interface: interface.to_string(),
        port: bind.port(),
        source,
    };
    let domain = if bind.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    if bind.is_ipv6() {
        s.set_only_v6(true).map_err(err)?;
    }
    s.bind_device(Some(interface.as_bytes())).map_err(err)?;
    if broadcast {
        s.set_broadcast(true).map_err(err)?;
    }
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&bind.into()).map_err(err)?;
    UdpSocket::from_std(s.into()).map_err(err)
}

/// Sends `request` to `to`, retransmits once after 2 s, and returns the first datagram `accept` takes.
async fn exchange(
    sock: &UdpSocket,
    request: &[u8],
    to: SocketAddr,
    timeout: Duration,
    ports: &'static str,
    accept: impl Fn(&[u8]) -> Result<(), ReplyError>,
) -> Result<ProbeResult, ProbeError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut attempts = 1u32;
    sock.send_to(request, to)
        .await
        .map_err(|source| ProbeError::Send { to, source })?;
    let mut retransmit_at = Some(start + RETRANSMIT_AFTER);
    let mut ignored = 0u32;
    let mut last = None;
    let mut buf = vec![0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wake = match retransmit_at {
            Some(r) if r < deadline => r,
            _ => deadline,
        };
        match tokio::time::timeout(
            wake.saturating_duration_since(now),
            sock.recv_from(&mut buf),
        )
        .await
        {
            Ok(Ok((n, from))) => match accept(&buf[..n]) {
                Ok(()) => {
                    return Ok(ProbeResult {
                        rtt: start.elapsed(),
                        from,
                        attempts,
                        ignored,
                    });
                }
                Err(e) => {
                    ignored += 1;
                    // Replies for other transactions are normal traffic; remember the interesting ones.
                    if !matches!(e, ReplyError::XidMismatch | ReplyError::ChaddrMismatch) {
                        last = Some(e);
                    }
                }
            },
            Ok(Err(e)) => {
                // ICMP errors (port unreachable on a unicast --server) come back here; keep waiting.
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    return Err(ProbeError::Receive(e));
                }
            }
            Err(_elapsed) => {
                if retransmit_at.is_some_and(|r| Instant::now() >= r) {
                    retransmit_at = None;
                    attempts += 1;
                    sock.send_to(request, to)
                        .await
                        .map_err(|source| ProbeError::Send { to, source })?;
                }
            }
        }
    }
    Err(ProbeError::NoReply {
        waited: timeout,
        attempts,
        to,
        ignored,
        last: last_rejection(last),
        ports,
    })
}

async fn probe_v4(
    opts: &ProbeOptions,
    iface: &InterfaceInfo,
    thumbprint: &[u8; 20],
    secrets: &ClientSecrets,
    kp: &[u8; crate::KP_LEN],
) -> Result<ProbeResult, ProbeError> {
    let Some(ciaddr) = opts.ciaddr.or_else(|| iface.first_ipv4()) else {
        return Err(ProbeError::NoIpv4(iface.name.clone()));
    };
    let mac = iface
        .mac
        .ok_or_else(|| ProbeError::NoMac(iface.name.clone()))?;
    let port = opts.server_port.unwrap_or(67);
    let to = match opts.server {
        None => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, port)),
        Some(IpAddr::V4(a)) => SocketAddr::V4(SocketAddrV4::new(a, port)),
        Some(server) => {
            return Err(ProbeError::WrongServerFamily {
                server,
                family: Family::V4,
            });
        }
    };
    let xid = u32::from_be_bytes(random_bytes::<4>());
    let params = V4ClientParams {
        xid,
        mac,
        ciaddr,
        giaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: Ipv4Addr::UNSPECIFIED,
        lease_options: false,
        message_type: None,
    };
    let request = build_v4_request(&params, thumbprint, kp);
    // Like the firmware: send from ciaddr:68 (the responder answers only a request whose IP source is
    // its ciaddr), and receive the unicast reply there.
    let sock = client_socket(
        SocketAddr::V4(SocketAddrV4::new(ciaddr, 68)),
        &iface.name,
        true,
    )?;
    exchange(&sock, &request, to, opts.timeout, "67/68", |d| {
        verify_v4_reply(d, xid, &mac, secrets)
    })
    .await
}

async fn probe_v6(
    opts: &ProbeOptions,
    iface: &InterfaceInfo,
    thumbprint: &[u8; 20],
    secrets: &ClientSecrets,
    kp: &[u8; crate::KP_LEN],
) -> Result<ProbeResult, ProbeError> {
    let port = opts.server_port.unwrap_or(547);
    let server = match opts.server {
        None => ALL_DHCP_RELAY_AGENTS_AND_SERVERS,
        Some(IpAddr::V6(a)) => a,
        Some(server) => {
            return Err(ProbeError::WrongServerFamily {
                server,
                family: Family::V6,
            });
        }
    };
    let scoped = server.is_multicast() || is_link_local_v6(&server);
    let to = SocketAddr::V6(SocketAddrV6::new(
        server,
        port,
        0,
        if scoped { iface.index } else { 0 },
    ));
    // Like the firmware: send from the link-local address for link-scoped destinations.
    let bind_ip = if scoped {
        iface
            .link_local_v6()
            .ok_or_else(|| ProbeError::NoLinkLocal(iface.name.clone()))?
    } else {
        Ipv6Addr::UNSPECIFIED
    };
    let bind = SocketAddr::V6(SocketAddrV6::new(
        bind_ip,
        546,
        0,
        if scoped { iface.index } else { 0 },
    ));
    let xid = random_bytes::<3>();
    // DUID-LL (type 3, hardware type 1) from the MAC, or a DUID-UUID (type 4) like Windows if none.
    let client_duid = match iface.mac {
        Some(mac) => [&[0u8, 3, 0, 1][..], &mac[..]].concat(),
        None => [&[0u8, 4][..], &random_bytes::<16>()[..]].concat(),
    };
    let request = build_v6_request(&V6ClientParams { xid, client_duid }, thumbprint, kp);
    let sock = client_socket(bind, &iface.name, false)?;
    if scoped {
        let _ = socket2::SockRef::from(&sock).set_multicast_if_v6(iface.index);
    }
    exchange(&sock, &request, to, opts.timeout, "546/547", |d| {
        verify_v6_reply(d, xid, secrets)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_reply_message_names_what_to_check() {
        let e = ProbeError::NoReply {
            waited: Duration::from_secs(5),
            attempts: 2,
            to: "255.255.255.255:67".parse().unwrap(),
            ignored: 0,
            last: last_rejection(None),
            ports: "67/68",
        };
        let s = e.to_string();
        for needle in [
            "running",
            "thumbprint",
            "subnet",
            "disabled",
            "firewall",
            "67/68",
        ] {
            assert!(s.contains(needle), "{needle} missing from: {s}");
        }
        assert!(last_rejection(Some(ReplyError::WrongKey)).contains("did not decrypt"));
    }

    #[test]
    fn unknown_interface_is_reported_by_name() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let opts = ProbeOptions {
            family: Family::V4,
            cert_der: vec![],
            interface: "nosuch-if0".into(),
            server: None,
            server_port: None,
            timeout: Duration::from_millis(10),
            ciaddr: None,
        };
        let err = rt.block_on(probe(opts)).unwrap_err();
        assert!(err.to_string().contains("nosuch-if0"), "{err}");
    }
}
