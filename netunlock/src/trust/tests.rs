//! Table tests of the trust decisions: which requests are believed and where replies may go.

use std::net::{SocketAddrV4, SocketAddrV6};

use super::*;
use crate::nkpu::NkpuRequest;
use crate::v6::RelayHop;

const IF_LAN: u32 = 2;
const IF_OTHER: u32 = 3;
const PORTS4: Ports = Ports {
    client: 68,
    relay: 67,
};
const PORTS6: Ports = Ports {
    client: 546,
    relay: 547,
};

fn host() -> HostAddrs {
    HostAddrs::new(vec![
        IfAddrs {
            index: 1,
            v4: vec!["127.0.0.1/8".parse().unwrap()],
            v6: vec!["::1/128".parse().unwrap()],
        },
        IfAddrs {
            index: IF_LAN,
            v4: vec!["10.77.0.1/24".parse().unwrap()],
            v6: vec!["fd77::1/64".parse().unwrap(), "fe80::1/64".parse().unwrap()],
        },
        IfAddrs {
            index: IF_OTHER,
            v4: vec!["192.168.5.1/24".parse().unwrap()],
            v6: vec!["fe80::2/64".parse().unwrap()],
        },
    ])
}

fn relays() -> TrustedRelays {
    TrustedRelays::new(vec![
        "10.77.0.254/32".parse().unwrap(),
        "172.16.0.0/12".parse().unwrap(),
        "fd77::fe/128".parse().unwrap(),
        "fe80::fe/128".parse().unwrap(),
    ])
}

fn nkpu() -> NkpuRequest {
    NkpuRequest {
        thumbprint: [1; 20],
        key_protector: Box::new([2; 256]),
    }
}

fn v4(ciaddr: &str, giaddr: &str) -> V4Request {
    V4Request {
        xid: 1,
        htype: 1,
        hlen: 6,
        flags: 0x8000,
        ciaddr: ciaddr.parse().unwrap(),
        giaddr: giaddr.parse().unwrap(),
        chaddr: [2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        nkpu: nkpu(),
    }
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn direct_v4_table() {
    let (h, r) = (host(), relays());
    let env = TrustEnv {
        host: &h,
        relays: &r,
    };
    // (what, ciaddr, IP source, arrival interface, expected: Ok(reply addr) / Err(kind))
    type Expect = Result<&'static str, &'static str>;
    let rows: &[(&str, &str, &str, u32, Expect)] = &[
        (
            "the real client",
            "10.77.0.50",
            "10.77.0.50",
            IF_LAN,
            Ok("10.77.0.50:68"),
        ),
        (
            "forged ciaddr",
            "10.77.0.200",
            "10.77.0.50",
            IF_LAN,
            Err("mismatch"),
        ),
        ("no lease", "0.0.0.0", "0.0.0.0", IF_LAN, Err("dest")),
        (
            "limited broadcast",
            "255.255.255.255",
            "255.255.255.255",
            IF_LAN,
            Err("dest"),
        ),
        (
            "subnet broadcast",
            "10.77.0.255",
            "10.77.0.255",
            IF_LAN,
            Err("dest"),
        ),
        (
            "network address",
            "10.77.0.0",
            "10.77.0.0",
            IF_LAN,
            Err("dest"),
        ),
        ("multicast", "224.0.0.1", "224.0.0.1", IF_LAN, Err("dest")),
        ("loopback", "127.0.0.1", "127.0.0.1", IF_LAN, Err("dest")),
        ("class E", "250.0.0.1", "250.0.0.1", IF_LAN, Err("dest")),
        ("this network", "0.1.2.3", "0.1.2.3", IF_LAN, Err("dest")),
        (
            "the appliance itself",
            "10.77.0.1",
            "10.77.0.1",
            IF_LAN,
            Err("dest"),
        ),
        ("off-link", "192.0.2.99", "192.0.2.99", IF_LAN, Err("dest")),
        (
            "on another interface's subnet",
            "192.168.5.9",
            "192.168.5.9",
            IF_LAN,
            Err("dest"),
        ),
        (
            "other interface, own subnet",
            "192.168.5.9",
            "192.168.5.9",
            IF_OTHER,
            Ok("192.168.5.9:68"),
        ),
    ];
    for (what, ciaddr, source, ifindex, expect) in rows {
        let got = admit_v4(&v4(ciaddr, "0.0.0.0"), ip4(source), *ifindex, PORTS4, env);
        match (expect, &got) {
            (Ok(addr), Ok(a)) => {
                assert_eq!(a.reply_to, addr.parse::<SocketAddrV4>().unwrap(), "{what}");
                assert_eq!(a.oif, *ifindex, "{what}: out of the arrival interface");
                assert_eq!(a.path, Path::Direct, "{what}");
                assert_eq!(
                    a.policy,
                    PolicyAddrs::direct(IpAddr::V4(ip4(source))),
                    "{what}"
                );
            }
            (Err("mismatch"), Err(Refusal::SourceMismatch { .. }))
            | (Err("dest"), Err(Refusal::BadDestination { .. })) => {}
            _ => panic!("{what}: expected {expect:?}, got {got:?}"),
        }
    }
}

#[test]
fn relayed_v4_table() {
    let (h, r) = (host(), relays());
    let env = TrustEnv {
        host: &h,
        relays: &r,
    };
    type Expect = Result<&'static str, &'static str>;
    // (what, ciaddr, giaddr, IP source, expected)
    let rows: &[(&str, &str, &str, &str, Expect)] = &[
        (
            "trusted relay",
            "10.200.3.7",
            "10.200.3.1",
            "10.77.0.254",
            Ok("10.77.0.254:67"),
        ),
        (
            "trusted relay range",
            "10.200.3.7",
            "10.200.3.1",
            "172.20.0.1",
            Ok("172.20.0.1:67"),
        ),
        (
            "any host claiming to relay",
            "10.200.3.7",
            "10.77.0.50",
            "10.77.0.50",
            Err("untrusted"),
        ),
        (
            "giaddr = the appliance",
            "10.200.3.7",
            "10.77.0.1",
            "10.77.0.50",
            Err("untrusted"),
        ),
        (
            "trusted, giaddr = the appliance",
            "10.200.3.7",
            "10.77.0.1",
            "10.77.0.254",
            Err("dest"),
        ),
        (
            "trusted, giaddr broadcast",
            "10.200.3.7",
            "255.255.255.255",
            "10.77.0.254",
            Err("dest"),
        ),
        (
            "trusted, no ciaddr",
            "0.0.0.0",
            "10.200.3.1",
            "10.77.0.254",
            Err("dest"),
        ),
        (
            "trusted, ciaddr multicast",
            "239.1.1.1",
            "10.200.3.1",
            "10.77.0.254",
            Err("dest"),
        ),
    ];
    for (what, ciaddr, giaddr, source, expect) in rows {
        let got = admit_v4(&v4(ciaddr, giaddr), ip4(source), IF_LAN, PORTS4, env);
        match (expect, &got) {
            (Ok(addr), Ok(a)) => {
                assert_eq!(a.reply_to, addr.parse::<SocketAddrV4>().unwrap(), "{what}");
                assert_eq!(a.oif, 0, "{what}: routed");
                assert_eq!(a.path, Path::Relayed(IpAddr::V4(ip4(source))), "{what}");
                assert_eq!(
                    a.policy.addrs,
                    vec![IpAddr::V4(ip4(giaddr)), IpAddr::V4(ip4(ciaddr))],
                    "{what}: the policy reads giaddr and ciaddr"
                );
                assert!(!a.policy.link_local_exempt);
            }
            (Err("untrusted"), Err(Refusal::UntrustedRelay { .. }))
            | (Err("dest"), Err(Refusal::BadDestination { .. })) => {}
            _ => panic!("{what}: expected {expect:?}, got {got:?}"),
        }
    }
    // With no trusted relays at all, every relayed request is refused.
    let none = TrustedRelays::default();
    let env = TrustEnv {
        host: &h,
        relays: &none,
    };
    assert!(matches!(
        admit_v4(
            &v4("10.200.3.7", "10.200.3.1"),
            ip4("10.77.0.254"),
            IF_LAN,
            PORTS4,
            env
        ),
        Err(Refusal::UntrustedRelay { .. })
    ));
}

fn v6(hops: Vec<RelayHop>) -> V6Request {
    V6Request {
        xid: [1, 2, 3],
        client_id: Some(vec![0, 4, 1]),
        relay_hops: hops,
        nkpu: nkpu(),
    }
}

fn hop(link: &str, peer: &str) -> RelayHop {
    RelayHop {
        hop_count: 0,
        link_address: link.parse().unwrap(),
        peer_address: peer.parse().unwrap(),
        interface_id: None,
    }
}

#[test]
fn direct_v6_table() {
    let (h, r) = (host(), relays());
    let env = TrustEnv {
        host: &h,
        relays: &r,
    };
    type Expect = Result<&'static str, ()>;
    let rows: &[(&str, &str, u32, Expect)] = &[
        (
            "link-local client",
            "fe80::216:3eff:fe01:1122",
            IF_LAN,
            Ok("[fe80::216:3eff:fe01:1122%2]:546"),
        ),
        ("on-link global", "fd77::50", IF_LAN, Ok("[fd77::50]:546")),
        ("off-link global", "2001:db8::50", IF_LAN, Err(())),
        ("multicast", "ff02::1", IF_LAN, Err(())),
        ("unspecified", "::", IF_LAN, Err(())),
        ("loopback", "::1", IF_LAN, Err(())),
        ("v4-mapped", "::ffff:10.77.0.50", IF_LAN, Err(())),
        ("own link-local", "fe80::1", IF_LAN, Err(())),
        ("own global", "fd77::1", IF_LAN, Err(())),
    ];
    for (what, source, ifindex, expect) in rows {
        let source: Ipv6Addr = source.parse().unwrap();
        let got = admit_v6(&v6(vec![]), source, *ifindex, PORTS6, env);
        match (expect, &got) {
            (Ok(addr), Ok(a)) => {
                assert_eq!(a.reply_to, addr.parse::<SocketAddrV6>().unwrap(), "{what}");
                assert_eq!(a.oif, *ifindex, "{what}");
                assert_eq!(
                    a.policy.link_local_exempt,
                    is_link_local_v6(&source),
                    "{what}: exemption only for link-local"
                );
            }
            (Err(()), Err(Refusal::BadDestination { .. })) => {}
            _ => panic!("{what}: expected {expect:?}, got {got:?}"),
        }
    }
}

#[test]
fn relayed_v6_table() {
    let (h, r) = (host(), relays());
    let env = TrustEnv {
        host: &h,
        relays: &r,
    };
    // An untrusted source, whatever the peer: refused (the old link-local bypass).
    let forged = v6(vec![hop("fd77::2", "fe80::1")]);
    assert!(matches!(
        admit_v6(&forged, "fd77::2".parse().unwrap(), IF_LAN, PORTS6, env),
        Err(Refusal::UntrustedRelay { .. })
    ));
    // A trusted relay: the policy reads the link-address, with no link-local exemption.
    let a = admit_v6(&forged, "fd77::fe".parse().unwrap(), IF_LAN, PORTS6, env).unwrap();
    assert_eq!(
        a.policy,
        PolicyAddrs::relayed(vec!["fd77::2".parse().unwrap()])
    );
    assert_eq!(
        a.reply_to,
        "[fd77::fe]:547".parse::<SocketAddrV6>().unwrap()
    );
    assert_eq!(a.oif, 0, "a routable relay is reached by routing");
    assert_eq!(a.client, "fe80::1".parse::<IpAddr>().unwrap());
    // A link-local trusted relay is answered on the arrival link.
    let a = admit_v6(&forged, "fe80::fe".parse().unwrap(), IF_LAN, PORTS6, env).unwrap();
    assert_eq!(
        a.reply_to,
        "[fe80::fe%2]:547".parse::<SocketAddrV6>().unwrap()
    );
    assert_eq!(a.oif, IF_LAN);
    // Nested relays: the nearest relay's link-address, or the next one out when it is ::.
    let nested = v6(vec![hop("2001:db8:1::1", "fd77::2"), hop("::", "fe80::9")]);
    let a = admit_v6(&nested, "fd77::fe".parse().unwrap(), IF_LAN, PORTS6, env).unwrap();
    assert_eq!(
        a.policy.addrs,
        vec!["2001:db8:1::1".parse::<IpAddr>().unwrap()]
    );
    // No relay names a link: nothing to check (only an unrestricted certificate answers).
    let unnamed = v6(vec![hop("::", "fe80::9")]);
    let a = admit_v6(&unnamed, "fd77::fe".parse().unwrap(), IF_LAN, PORTS6, env).unwrap();
    assert!(a.policy.addrs.is_empty());
    // A relay that is the appliance itself, or multicast: never a reply address.
    assert!(matches!(
        admit_v6(&forged, "fd77::1".parse().unwrap(), IF_LAN, PORTS6, env),
        Err(Refusal::BadDestination { .. })
    ));
}

#[test]
fn trusted_relays_match_v4_mapped_sources() {
    let r = relays();
    assert!(r.contains("::ffff:10.77.0.254".parse().unwrap()));
    assert!(!r.contains("10.77.0.253".parse().unwrap()));
    assert!(TrustedRelays::default().is_empty());
}
