//! Per-certificate answer policy: enabled flag and allowed client subnets.

use std::net::IpAddr;

use ipnet::IpNet;

/// What one certificate may unlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePolicy {
    pub enabled: bool,
    /// Empty = every client address is allowed.
    pub allowed_subnets: Vec<IpNet>,
}

impl Default for CertificatePolicy {
    fn default() -> Self {
        Self::allow_all()
    }
}

impl CertificatePolicy {
    /// Enabled, no subnet restriction.
    pub fn allow_all() -> Self {
        Self {
            enabled: true,
            allowed_subnets: Vec::new(),
        }
    }

    /// Whether `addr` is in the subnet list (empty = every address). IPv4-mapped IPv6 addresses are
    /// compared as IPv4. No exemption here: see [`Self::allows`].
    pub fn allows_address(&self, addr: IpAddr) -> bool {
        if self.allowed_subnets.is_empty() {
            return true;
        }
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            IpAddr::V4(_) => addr,
        };
        self.allowed_subnets.iter().any(|net| net.contains(&addr))
    }

    /// Whether a request whose policy addresses are `addrs` may be answered: every address must be in
    /// the list. A direct IPv6 link-local client always passes (Windows servers do the same, [MS-NKPU]
    /// Appendix <3>); a request with no address to check passes only an unrestricted certificate.
    pub fn allows(&self, addrs: &PolicyAddrs) -> bool {
        if self.allowed_subnets.is_empty() || addrs.link_local_exempt {
            return true;
        }
        !addrs.addrs.is_empty() && addrs.addrs.iter().all(|a| self.allows_address(*a))
    }

    /// The policy that results from the daemon configuration further restricted by a WDS
    /// `bde-network-unlock.ini` section (both must allow an address; either can disable).
    ///
    /// When both lists are non-empty the result holds their intersection. If that is empty nothing could be
    /// unlocked, so the result is disabled rather than an empty ("allow all") list.
    pub fn merge_wds(config: Self, wds: Option<&Self>) -> Self {
        let Some(wds) = wds else {
            return config;
        };
        let enabled = config.enabled && wds.enabled;
        if config.allowed_subnets.is_empty() {
            return Self {
                enabled,
                allowed_subnets: wds.allowed_subnets.clone(),
            };
        }
        if wds.allowed_subnets.is_empty() {
            return Self {
                enabled,
                allowed_subnets: config.allowed_subnets,
            };
        }
        let mut both = Vec::new();
        for a in &config.allowed_subnets {
            for b in &wds.allowed_subnets {
                // Two prefixes overlap only if one contains the other; the overlap is the longer one.
                let overlap = if a.contains(b) {
                    Some(*b)
                } else if b.contains(a) {
                    Some(*a)
                } else {
                    None
                };
                if let Some(net) = overlap
                    && !both.contains(&net)
                {
                    both.push(net);
                }
            }
        }
        Self {
            enabled: enabled && !both.is_empty(),
            allowed_subnets: both,
        }
    }
}

/// The addresses the subnet policy reads for one request, decided by `trust` from what the kernel
/// says about the datagram (see docs/configuration.md for which address each rule reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyAddrs {
    /// All must be allowed.
    pub addrs: Vec<IpAddr>,
    /// A direct DHCPv6 request from a link-local address on a served interface.
    pub link_local_exempt: bool,
}

impl PolicyAddrs {
    /// A direct request: the client's own (verified) address.
    pub fn direct(addr: IpAddr) -> Self {
        let link_local_exempt = match addr {
            IpAddr::V6(v6) => crate::trust::is_link_local_v6(&v6),
            IpAddr::V4(_) => false,
        };
        Self {
            addrs: vec![addr],
            link_local_exempt,
        }
    }

    /// A relayed request: the client's link as the relay states it (and ciaddr for DHCPv4).
    pub fn relayed(addrs: Vec<IpAddr>) -> Self {
        Self {
            addrs,
            link_local_exempt: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn policy(enabled: bool, list: &[&str]) -> CertificatePolicy {
        CertificatePolicy {
            enabled,
            allowed_subnets: nets(list),
        }
    }

    #[test]
    fn addresses() {
        let p = policy(true, &["10.0.0.0/24", "2001:db8::/64"]);
        assert!(p.allows_address("10.0.0.7".parse().unwrap()));
        assert!(!p.allows_address("10.0.1.7".parse().unwrap()));
        assert!(p.allows_address("2001:db8::1".parse().unwrap()));
        assert!(!p.allows_address("2001:db8:1::1".parse().unwrap()));
        assert!(
            !p.allows_address("fe80::1".parse().unwrap()),
            "no bypass here"
        );
        let direct = |a: &str| PolicyAddrs::direct(a.parse().unwrap());
        assert!(p.allows(&direct("fe80::1")), "direct link-local bypass");
        assert!(p.allows(&direct("febf::1")), "fe80::/10 upper end");
        assert!(!p.allows(&direct("fec0::1")));
        assert!(
            !p.allows(&PolicyAddrs::relayed(vec!["fe80::1".parse().unwrap()])),
            "no bypass for a relayed request"
        );
        let v4 = |a: &str| -> IpAddr { a.parse().unwrap() };
        assert!(p.allows(&PolicyAddrs::relayed(vec![v4("10.0.0.1"), v4("10.0.0.7")])));
        assert!(
            !p.allows(&PolicyAddrs::relayed(vec![v4("10.0.1.1"), v4("10.0.0.7")])),
            "giaddr outside"
        );
        assert!(!p.allows(&PolicyAddrs::relayed(vec![])), "nothing to check");
        assert!(policy(true, &[]).allows(&PolicyAddrs::relayed(vec![])));
        assert!(
            p.allows_address("::ffff:10.0.0.9".parse().unwrap()),
            "v4-mapped"
        );
        assert!(policy(true, &[]).allows_address("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn merge() {
        let all = CertificatePolicy::allow_all();
        assert_eq!(CertificatePolicy::merge_wds(all.clone(), None), all);
        let w = policy(true, &["10.0.0.0/24"]);
        assert_eq!(CertificatePolicy::merge_wds(all.clone(), Some(&w)), w);
        let c = policy(true, &["10.0.0.0/8", "192.0.2.0/24"]);
        assert_eq!(
            CertificatePolicy::merge_wds(c.clone(), Some(&all)),
            c,
            "empty WDS section adds no restriction"
        );
        assert_eq!(CertificatePolicy::merge_wds(c.clone(), Some(&w)), w);
        let disjoint = policy(true, &["172.16.0.0/12"]);
        let m = CertificatePolicy::merge_wds(c.clone(), Some(&disjoint));
        assert!(!m.enabled, "no overlap → nothing may be unlocked");
        let off = policy(false, &[]);
        assert!(!CertificatePolicy::merge_wds(c, Some(&off)).enabled);
        assert!(!CertificatePolicy::merge_wds(off.clone(), Some(&all)).enabled);
    }
}
