//! Which requests are believed, and where their replies may go (pure; no I/O, table-tested).
//!
//! Every decision rests on what the kernel says about a datagram — its IP source and the interface it
//! arrived on — checked against the appliance's own addresses and the operator's trusted relays,
//! never on a header field alone:
//!
//! * **Direct DHCPv4** (giaddr = 0): a real client holds a lease and sends from `ciaddr`:68 (EDK2
//!   refuses to send with `ciaddr` = 0), so the IP source must equal `ciaddr`, and it must be a
//!   unicast host address on the subnet of the interface the request arrived on. The subnet policy
//!   reads that address; the reply goes to it, port 68, out of that interface.
//! * **Relayed DHCPv4 and DHCPv6**: accepted only when the IP source is a trusted relay
//!   (`[unlock] trusted_relays`). The policy must hold for the client's link as the relay states it
//!   (`giaddr`; the DHCPv6 `link-address`) and, for DHCPv4, for `ciaddr` too. The reply goes to
//!   that relay, port 67/547.
//! * **Direct DHCPv6**: the source (normally link-local) is the client on the arrival link; the
//!   Windows rule that link-local clients bypass the subnet list applies here only.
//!
//! A reply never goes to a broadcast, multicast, loopback, unspecified or reserved address, nor to
//! one of the appliance's own addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::netif::InterfaceInfo;
use crate::policy::PolicyAddrs;
use crate::v4::V4Request;
use crate::v6::V6Request;

/// fe80::/10.
pub fn is_link_local_v6(a: &Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

/// The addresses of one interface, with their prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfAddrs {
    pub index: u32,
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
}

/// A snapshot of the appliance's own addresses, per interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAddrs {
    interfaces: Vec<IfAddrs>,
}

impl HostAddrs {
    pub fn new(interfaces: Vec<IfAddrs>) -> Self {
        Self { interfaces }
    }

    pub fn from_interfaces(all: &[InterfaceInfo]) -> Self {
        Self::new(
            all.iter()
                .map(|i| IfAddrs {
                    index: i.index,
                    v4: i.ipv4.clone(),
                    v6: i.ipv6.clone(),
                })
                .collect(),
        )
    }

    /// Whether `ip` is one of this host's addresses (on any interface).
    pub fn is_own(&self, ip: IpAddr) -> bool {
        self.interfaces.iter().any(|i| match ip {
            IpAddr::V4(a) => i.v4.iter().any(|n| n.addr() == a),
            IpAddr::V6(a) => i.v6.iter().any(|n| n.addr() == a),
        })
    }

    /// Whether `ip` is the broadcast or network address of a subnet of any interface.
    fn is_subnet_edge(&self, ip: Ipv4Addr) -> bool {
        self.interfaces
            .iter()
            .flat_map(|i| &i.v4)
            .any(|n| n.prefix_len() <= 30 && (n.broadcast() == ip || n.network() == ip))
    }

    /// Whether `ip` lies in a subnet of interface `ifindex`.
    fn v4_on_link(&self, ifindex: u32, ip: Ipv4Addr) -> bool {
        self.interfaces
            .iter()
            .filter(|i| i.index == ifindex)
            .flat_map(|i| &i.v4)
            .any(|n| n.contains(&ip))
    }

    fn v6_on_link(&self, ifindex: u32, ip: Ipv6Addr) -> bool {
        self.interfaces
            .iter()
            .filter(|i| i.index == ifindex)
            .flat_map(|i| &i.v6)
            .any(|n| n.prefix_len() < 128 && n.contains(&ip))
    }
}

/// The operator's `trusted_relays`: sources allowed to send relayed requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedRelays(Vec<IpNet>);

impl TrustedRelays {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets.into_iter().map(|n| n.trunc()).collect())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

/// What the checks read besides the request.
#[derive(Debug, Clone, Copy)]
pub struct TrustEnv<'a> {
    pub host: &'a HostAddrs,
    pub relays: &'a TrustedRelays,
}

/// How a request reached the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// From the client itself, on the arrival link.
    Direct,
    /// Through this trusted relay (the IP source).
    Relayed(IpAddr),
}

/// Why a request is not believed or cannot be answered (always silence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Direct DHCPv4 whose IP source is not its `ciaddr`.
    SourceMismatch { source: Ipv4Addr, ciaddr: Ipv4Addr },
    /// A relayed request from a source not in `trusted_relays`.
    UntrustedRelay { source: IpAddr },
    /// The reply would have to go somewhere a reply never goes.
    BadDestination { addr: IpAddr, why: &'static str },
}

/// A believed request: how it came, which addresses the subnet policy reads, and where the reply
/// goes (`oif` 0 = by the routing table; otherwise out of that interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission<A> {
    pub path: Path,
    pub policy: PolicyAddrs,
    /// The client's own address, for logs and outcome records (v6 relayed: the innermost peer).
    pub client: IpAddr,
    pub reply_to: A,
    pub oif: u32,
}

/// Ports replies go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub client: u16,
    pub relay: u16,
}

/// Why a v4 address cannot receive a reply, if it cannot.
fn bad_v4(ip: Ipv4Addr, host: &HostAddrs) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("no address (0.0.0.0)")
    } else if ip.is_broadcast() {
        Some("the limited broadcast address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.octets()[0] == 0 || ip.octets()[0] >= 240 {
        Some("a reserved address")
    } else if host.is_own(IpAddr::V4(ip)) {
        Some("one of this appliance's own addresses")
    } else if host.is_subnet_edge(ip) {
        Some("the broadcast or network address of a local subnet")
    } else {
        None
    }
}

/// Why a v6 address cannot receive a reply, if it cannot.
fn bad_v6(ip: Ipv6Addr, host: &HostAddrs) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("no address (::)")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_loopback() {
        Some("the loopback address")
    } else if ip.to_ipv4_mapped().is_some() || ip.segments()[..6] == [0; 6] {
        Some("an IPv4-mapped or -compatible address")
    } else if host.is_own(IpAddr::V6(ip)) {
        Some("one of this appliance's own addresses")
    } else {
        None
    }
}

fn refuse(addr: impl Into<IpAddr>, why: &'static str) -> Refusal {
    Refusal::BadDestination {
        addr: addr.into(),
        why,
    }
}

/// Decides whether a DHCPv4 request is believed and where its reply goes. `source` is the IP source
/// and `arrival_if` the interface it arrived on (both from the kernel).
pub fn admit_v4(
    req: &V4Request,
    source: Ipv4Addr,
    arrival_if: u32,
    ports: Ports,
    env: TrustEnv<'_>,
) -> Result<Admission<std::net::SocketAddrV4>, Refusal> {
    if req.is_relayed() {
        if !env.relays.contains(IpAddr::V4(source)) {
            return Err(Refusal::UntrustedRelay {
                source: IpAddr::V4(source),
            });
        }
        if let Some(why) = bad_v4(source, env.host) {
            return Err(refuse(source, why));
        }
        // The relay delivers the reply by giaddr and the client keeps ciaddr: both must be hosts.
        for addr in [req.giaddr, req.ciaddr] {
            if let Some(why) = bad_v4(addr, env.host) {
                return Err(refuse(addr, why));
            }
        }
        return Ok(Admission {
            path: Path::Relayed(IpAddr::V4(source)),
            policy: PolicyAddrs::relayed(vec![IpAddr::V4(req.giaddr), IpAddr::V4(req.ciaddr)]),
            client: IpAddr::V4(req.ciaddr),
            reply_to: std::net::SocketAddrV4::new(source, ports.relay),
            oif: 0,
        });
    }
    if source != req.ciaddr {
        return Err(Refusal::SourceMismatch {
            source,
            ciaddr: req.ciaddr,
        });
    }
    if let Some(why) = bad_v4(source, env.host) {
        return Err(refuse(source, why));
    }
    if !env.host.v4_on_link(arrival_if, source) {
        return Err(refuse(
            source,
            "not on a subnet of the interface the request arrived on",
        ));
    }
    Ok(Admission {
        path: Path::Direct,
        policy: PolicyAddrs::direct(IpAddr::V4(source)),
        client: IpAddr::V4(source),
        reply_to: std::net::SocketAddrV4::new(source, ports.client),
        oif: arrival_if,
    })
}

/// Decides whether a DHCPv6 request is believed and where its reply goes. The reply address carries
/// the arrival interface as scope when it is link-local.
pub fn admit_v6(
    req: &V6Request,
    source: Ipv6Addr,
    arrival_if: u32,
    ports: Ports,
    env: TrustEnv<'_>,
) -> Result<Admission<std::net::SocketAddrV6>, Refusal> {
    if let Some(why) = bad_v6(source, env.host) {
        return Err(refuse(source, why));
    }
    let link_local = is_link_local_v6(&source);
    let scope = if link_local { arrival_if } else { 0 };
    if req.relay_hops.is_empty() {
        if !link_local && !env.host.v6_on_link(arrival_if, source) {
            return Err(refuse(
                source,
                "not link-local and not on a prefix of the interface the request arrived on",
            ));
        }
        return Ok(Admission {
            path: Path::Direct,
            policy: PolicyAddrs::direct(IpAddr::V6(source)),
            client: IpAddr::V6(source),
            reply_to: std::net::SocketAddrV6::new(source, ports.client, 0, scope),
            oif: arrival_if,
        });
    }
    if !env.relays.contains(IpAddr::V6(source)) {
        return Err(Refusal::UntrustedRelay {
            source: IpAddr::V6(source),
        });
    }
    let link = req.client_link().map(IpAddr::V6).into_iter().collect();
    Ok(Admission {
        path: Path::Relayed(IpAddr::V6(source)),
        policy: PolicyAddrs::relayed(link),
        client: IpAddr::V6(req.innermost_peer().unwrap_or(source)),
        reply_to: std::net::SocketAddrV6::new(source, ports.relay, 0, scope),
        // A link-local relay is reached on the arrival link; a routable one by the routing table.
        oif: if link_local { arrival_if } else { 0 },
    })
}

#[cfg(test)]
mod tests;
