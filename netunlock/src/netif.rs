//! The host's network interfaces and their addresses (getifaddrs(3)), and which of them the responder
//! serves. Shared by the responder, the probe and the reply-address checks.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{Ipv4Net, Ipv6Net};
use nix::net::if_::InterfaceFlags;

/// Listing or finding interfaces failed.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error(
        "network interface `{0}` (listed in [unlock] interfaces) does not exist; check `ip link`"
    )]
    NoSuchInterface(String),

    #[error("cannot list network interfaces: {0}")]
    List(#[source] std::io::Error),
}

/// One network interface, aggregated from all of its getifaddrs entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    pub up: bool,
    pub loopback: bool,
    pub multicast: bool,
    /// Addresses with their prefix (the interface's subnets).
    pub ipv4: Vec<Ipv4Net>,
    pub ipv6: Vec<Ipv6Net>,
    pub mac: Option<[u8; 6]>,
}

impl InterfaceInfo {
    /// The first IPv6 link-local (fe80::/10) address, which DHCPv6 clients send from.
    pub fn link_local_v6(&self) -> Option<Ipv6Addr> {
        self.ipv6
            .iter()
            .map(Ipv6Net::addr)
            .find(crate::trust::is_link_local_v6)
    }

    /// The first IPv4 address.
    pub fn first_ipv4(&self) -> Option<Ipv4Addr> {
        self.ipv4.first().map(Ipv4Net::addr)
    }
}

fn prefix_len(mask: Option<&nix::sys::socket::SockaddrStorage>, v6: bool) -> u8 {
    let ones = mask.and_then(|m| {
        if v6 {
            m.as_sockaddr_in6().map(|s| u128::from(s.ip()).count_ones())
        } else {
            m.as_sockaddr_in().map(|s| u32::from(s.ip()).count_ones())
        }
    });
    // No netmask reported: treat the address as a host route.
    ones.map_or(if v6 { 128 } else { 32 }, |n| n as u8)
}

/// Lists the host's interfaces (in the current network namespace).
pub fn list_interfaces() -> Result<Vec<InterfaceInfo>, InterfaceError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| InterfaceError::List(e.into()))?;
    let mut by_name: Vec<InterfaceInfo> = Vec::new();
    for a in addrs {
        let pos = match by_name.iter().position(|i| i.name == a.interface_name) {
            Some(p) => p,
            None => {
                let index = nix::net::if_::if_nametoindex(a.interface_name.as_str()).unwrap_or(0);
                by_name.push(InterfaceInfo {
                    name: a.interface_name.clone(),
                    index,
                    up: false,
                    loopback: false,
                    multicast: false,
                    ipv4: Vec::new(),
                    ipv6: Vec::new(),
                    mac: None,
                });
                by_name.len() - 1
            }
        };
        let entry = &mut by_name[pos];
        entry.up |= a.flags.contains(InterfaceFlags::IFF_UP);
        entry.loopback |= a.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        entry.multicast |= a.flags.contains(InterfaceFlags::IFF_MULTICAST);
        if let Some(addr) = a.address {
            if let Some(sin) = addr.as_sockaddr_in() {
                let len = prefix_len(a.netmask.as_ref(), false);
                if let Ok(net) = Ipv4Net::new(sin.ip(), len) {
                    entry.ipv4.push(net);
                }
            } else if let Some(sin6) = addr.as_sockaddr_in6() {
                let len = prefix_len(a.netmask.as_ref(), true);
                if let Ok(net) = Ipv6Net::new(sin6.ip(), len) {
                    entry.ipv6.push(net);
                }
            } else if let Some(link) = addr.as_link_addr()
                && let Some(mac) = link.addr()
                && mac != [0u8; 6]
            {
                entry.mac = Some(mac);
            }
        }
    }
    by_name.retain(|i| i.index != 0);
    Ok(by_name)
}

/// Looks one interface up by name.
pub fn find_interface(name: &str) -> Result<InterfaceInfo, InterfaceError> {
    list_interfaces()?
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| InterfaceError::NoSuchInterface(name.to_string()))
}

/// The set of interfaces requests are accepted from.
#[derive(Debug, Clone)]
pub struct Served {
    /// None = every interface.
    only: Option<HashMap<u32, Arc<str>>>,
    /// Interfaces on which to join ff02::1:2 for DHCPv6.
    pub v6_join: Vec<(u32, Arc<str>)>,
}

impl Served {
    /// Picks the served interfaces. `configured` empty = all interfaces; DHCPv6 then joins the multicast
    /// group on every interface that is up, multicast-capable, not loopback and has IPv6. A configured
    /// name that does not exist is an error (a typo must not silently serve nothing).
    pub fn select(all: &[InterfaceInfo], configured: &[String]) -> Result<Self, InterfaceError> {
        if configured.is_empty() {
            let v6_join = all
                .iter()
                .filter(|i| i.up && i.multicast && !i.loopback && !i.ipv6.is_empty())
                .map(|i| (i.index, Arc::from(i.name.as_str())))
                .collect();
            return Ok(Self {
                only: None,
                v6_join,
            });
        }
        let mut only = HashMap::new();
        let mut v6_join = Vec::new();
        for name in configured {
            let info = all
                .iter()
                .find(|i| &i.name == name)
                .ok_or_else(|| InterfaceError::NoSuchInterface(name.clone()))?;
            let shared: Arc<str> = Arc::from(info.name.as_str());
            if only.insert(info.index, shared.clone()).is_none() {
                v6_join.push((info.index, shared));
            }
        }
        Ok(Self {
            only: Some(only),
            v6_join,
        })
    }

    /// Whether a datagram that arrived on `ifindex` is served.
    pub fn serves(&self, ifindex: u32) -> bool {
        match &self.only {
            None => true,
            Some(map) => map.contains_key(&ifindex),
        }
    }

    /// The configured name of a served interface (None in "all interfaces" mode).
    pub fn name_of(&self, ifindex: u32) -> Option<Arc<str>> {
        self.only.as_ref().and_then(|m| m.get(&ifindex).cloned())
    }
}

/// Caches ifindex → name for logging (interfaces come and go rarely; a miss costs one syscall).
#[derive(Debug, Default)]
pub struct NameCache {
    names: HashMap<u32, Arc<str>>,
}

impl NameCache {
    pub fn name(&mut self, served: &Served, ifindex: u32) -> Arc<str> {
        if let Some(n) = served.name_of(ifindex) {
            return n;
        }
        if let Some(n) = self.names.get(&ifindex) {
            return n.clone();
        }
        let name: Arc<str> = match nix::net::if_::if_indextoname(ifindex) {
            Ok(c) => Arc::from(c.to_string_lossy().as_ref()),
            Err(_) => Arc::from(format!("if#{ifindex}").as_str()),
        };
        // Bounded: a host has a handful of interfaces; never grow without limit.
        if self.names.len() < 1024 {
            self.names.insert(ifindex, name.clone());
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, index: u32, up: bool, v6: bool) -> InterfaceInfo {
        InterfaceInfo {
            name: name.into(),
            index,
            up,
            loopback: name == "lo",
            multicast: name != "lo",
            ipv4: vec![Ipv4Net::new(Ipv4Addr::new(10, 0, 0, index as u8), 24).unwrap()],
            ipv6: if v6 {
                vec!["fe80::1/64".parse().unwrap()]
            } else {
                vec![]
            },
            mac: Some([2, 0, 0, 0, 0, index as u8]),
        }
    }

    fn host() -> Vec<InterfaceInfo> {
        vec![
            iface("lo", 1, true, true),
            iface("eth0", 2, true, true),
            iface("eth1", 3, false, true),
            iface("eth2", 4, true, false),
        ]
    }

    #[test]
    fn all_interfaces_serves_everything_and_joins_up_v6_non_loopback() {
        let s = Served::select(&host(), &[]).unwrap();
        assert!(s.serves(1) && s.serves(2) && s.serves(99));
        let joined: Vec<u32> = s.v6_join.iter().map(|(i, _)| *i).collect();
        assert_eq!(joined, vec![2]);
    }

    #[test]
    fn configured_interfaces_filter_and_join_even_if_no_v6_yet() {
        let s = Served::select(&host(), &["eth1".into(), "eth2".into(), "eth1".into()]).unwrap();
        assert!(!s.serves(1));
        assert!(!s.serves(2));
        assert!(s.serves(3));
        assert!(s.serves(4));
        assert_eq!(s.v6_join.len(), 2, "duplicates are joined once");
        assert_eq!(s.name_of(3).as_deref(), Some("eth1"));
    }

    #[test]
    fn unknown_configured_interface_is_an_error() {
        let err = Served::select(&host(), &["eth9".into()]).unwrap_err();
        assert!(err.to_string().contains("eth9"), "{err}");
    }

    #[test]
    fn link_local_is_found() {
        let mut i = iface("eth0", 2, true, false);
        i.ipv6 = vec![
            "fd00::1/64".parse().unwrap(),
            "fe80::abcd/64".parse().unwrap(),
        ];
        assert_eq!(i.link_local_v6(), Some("fe80::abcd".parse().unwrap()));
    }

    #[test]
    fn real_host_has_loopback() {
        let all = list_interfaces().unwrap();
        let lo = all
            .iter()
            .find(|i| i.loopback)
            .expect("a loopback interface");
        assert!(lo.ipv4.iter().any(|n| n.addr() == Ipv4Addr::LOCALHOST));
        assert!(
            lo.ipv4.iter().any(|n| n.prefix_len() == 8),
            "the netmask is read: {:?}",
            lo.ipv4
        );
    }
}
