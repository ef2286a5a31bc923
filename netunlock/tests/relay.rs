//! DHCPv6 Relay-Forward → Relay-Reply, one and two relays deep; DHCPv4 relay addressing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::*;
use netunlock::client::{
    ClientSecrets, V4ClientParams, build_v4_request, unwrap_relay_reply, verify_v4_reply,
    verify_v6_reply, wrap_relay_forward,
};
use netunlock::{RelayHop, v4, v6};

fn secrets() -> ClientSecrets {
    ClientSecrets {
        ck: arr(CK),
        sk: arr(SK),
    }
}

fn hop(hop_count: u8, link: &str, peer: &str, interface_id: Option<&[u8]>) -> RelayHop {
    RelayHop {
        hop_count,
        link_address: link.parse().unwrap(),
        peer_address: peer.parse().unwrap(),
        interface_id: interface_id.map(<[u8]>::to_vec),
    }
}

#[test]
fn one_relay() {
    let h = hop(
        0,
        "2001:db8:1::1",
        "fe80::216:3eff:fe01:1122",
        Some(b"eth0.42"),
    );
    let forward = wrap_relay_forward(&hex_file("v6_request.hex"), &h);
    let req = v6::parse_request(&forward).unwrap();
    assert_eq!(req.relay_hops, vec![h.clone()]);
    assert_eq!(
        req.innermost_peer(),
        Some("fe80::216:3eff:fe01:1122".parse::<Ipv6Addr>().unwrap())
    );
    assert_eq!(req.nkpu.key_protector, kp());

    let reply = v6::build_reply(
        &req,
        &server_duid(),
        &unlock_key(1).answer(&req.nkpu.key_protector),
    )
    .unwrap();
    assert_eq!(reply[0], 13, "Relay-Reply");
    let (echoed, inner) = unwrap_relay_reply(&reply).unwrap();
    assert_eq!(echoed, h);
    assert_eq!(hex::encode(&inner), hex::encode(hex_file("v6_reply.hex")));
    verify_v6_reply(&inner, [0xab, 0xcd, 0xef], &secrets()).unwrap();
}

#[test]
fn two_nested_relays_without_interface_id() {
    let near = hop(0, "2001:db8:1::1", "fe80::1", None);
    let far = hop(1, "::", "2001:db8:1::1", Some(&[0, 0, 0, 7]));
    let forward = wrap_relay_forward(
        &wrap_relay_forward(&hex_file("v6_request.hex"), &near),
        &far,
    );
    let req = v6::parse_request(&forward).unwrap();
    assert_eq!(
        req.relay_hops,
        vec![far.clone(), near.clone()],
        "outermost first"
    );
    assert_eq!(req.innermost_peer(), Some("fe80::1".parse().unwrap()));

    let reply = v6::build_reply(
        &req,
        &server_duid(),
        &unlock_key(1).answer(&req.nkpu.key_protector),
    )
    .unwrap();
    let (outer_hop, middle) = unwrap_relay_reply(&reply).unwrap();
    assert_eq!(outer_hop, far);
    let (inner_hop, inner) = unwrap_relay_reply(&middle).unwrap();
    assert_eq!(inner_hop, near);
    assert_eq!(hex::encode(&inner), hex::encode(hex_file("v6_reply.hex")));
    // The inner Reply is not a Relay-Reply, and a Relay-Reply is not the Reply a client accepts.
    assert!(unwrap_relay_reply(&inner).is_err());
    assert!(verify_v6_reply(&reply, [0xab, 0xcd, 0xef], &secrets()).is_err());
}

#[test]
fn v4_relay_gets_giaddr_echoed() {
    let params = V4ClientParams {
        xid: 0x0102_0304,
        mac: [2, 0, 0, 0, 0xab, 0xcd],
        ciaddr: Ipv4Addr::new(10, 1, 2, 3),
        giaddr: Ipv4Addr::new(10, 1, 2, 1),
        siaddr: Ipv4Addr::UNSPECIFIED,
        lease_options: true,
        message_type: None,
    };
    let request = build_v4_request(&params, &arr(THUMBPRINT), &kp());
    let req = v4::parse_request(&request).unwrap();
    assert!(req.is_relayed());
    let reply = v4::build_reply(&req, &unlock_key(1).answer(&req.nkpu.key_protector)).unwrap();
    assert_eq!(
        &reply[24..28],
        &[10, 1, 2, 1],
        "giaddr echoed for the relay"
    );
    assert_eq!(&reply[16..20], &[10, 1, 2, 3], "yiaddr = client address");
    assert_eq!(&reply[10..12], &[0x80, 0], "broadcast flag echoed");
    verify_v4_reply(&reply, params.xid, &params.mac, &secrets()).unwrap();
}
