//! Malformed input: every row must yield `Err(NotNkpu::…)` — the responder's silence — and never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::Ipv6Addr;

use common::*;
use netunlock::client::{V4ClientParams, build_v4_request, wrap_relay_forward};
use netunlock::{NotNkpu, RelayHop, v4, v6};

fn v4_req() -> Vec<u8> {
    hex_file("v4_request.hex")
}

fn v6_req() -> Vec<u8> {
    hex_file("v6_request.hex")
}

/// The §5.4 v4 option bytes, reassembled from parts so rows can rebuild variations.
struct V4Parts {
    header: Vec<u8>,
    thumb: Vec<u8>,
    kp: Vec<u8>,
}

fn parts() -> V4Parts {
    let req = v4_req();
    V4Parts {
        header: req[..240].to_vec(),
        thumb: hex::decode(THUMBPRINT).unwrap(),
        kp: kp().to_vec(),
    }
}

fn opt(code: u8, value: &[u8]) -> Vec<u8> {
    let mut o = vec![code, value.len() as u8];
    o.extend_from_slice(value);
    o
}

fn opt43(thumb: &[u8], half: &[u8]) -> Vec<u8> {
    let mut v = opt(1, thumb);
    v.extend(opt(2, half));
    opt(43, &v)
}

fn opt125(ent: u32, half: &[u8]) -> Vec<u8> {
    let sub = opt(1, half);
    let mut v = ent.to_be_bytes().to_vec();
    v.push(sub.len() as u8);
    v.extend(sub);
    opt(125, &v)
}

fn v4_with(options: &[Vec<u8>]) -> Vec<u8> {
    let mut p = parts().header;
    for o in options {
        p.extend_from_slice(o);
    }
    p.push(255);
    p
}

fn standard_options() -> Vec<Vec<u8>> {
    let p = parts();
    vec![
        opt43(&p.thumb, &p.kp[..128]),
        opt(60, b"BITLOCKER"),
        opt125(311, &p.kp[128..]),
    ]
}

type Row = (&'static str, Vec<u8>, NotNkpu);

fn v4_rows() -> Vec<Row> {
    let p = parts();
    let (t, k1, k2) = (&p.thumb, &p.kp[..128], &p.kp[128..]);
    let class = opt(60, b"BITLOCKER");
    let o43 = opt43(t, k1);
    let o125 = opt125(311, k2);
    let mut rows: Vec<Row> = vec![
        ("empty datagram", vec![], NotNkpu::TooShort),
        (
            "header only, no cookie",
            v4_req()[..236].to_vec(),
            NotNkpu::TooShort,
        ),
        ("zero-filled 240", vec![0; 240], NotNkpu::NotBootRequest),
        ("zero-filled 4096", vec![0; 4096], NotNkpu::NotBootRequest),
        (
            "oversized",
            {
                let mut v = v4_req();
                v.resize(4097, 0);
                v
            },
            NotNkpu::TooLong,
        ),
        (
            "op = 2",
            {
                let mut v = v4_req();
                v[0] = 2;
                v
            },
            NotNkpu::NotBootRequest,
        ),
        (
            "hlen = 17",
            {
                let mut v = v4_req();
                v[2] = 17;
                v
            },
            NotNkpu::BadHardwareLength,
        ),
        (
            "bad cookie",
            {
                let mut v = v4_req();
                v[239] = 0x64;
                v
            },
            NotNkpu::BadMagicCookie,
        ),
        ("no options at all", v4_with(&[]), NotNkpu::NotBitlocker),
        (
            "missing option 60",
            v4_with(&[o43.clone(), o125.clone()]),
            NotNkpu::NotBitlocker,
        ),
        (
            "option 60 misspelled",
            v4_with(&[o43.clone(), opt(60, b"BITLOCKR"), o125.clone()]),
            NotNkpu::NotBitlocker,
        ),
        (
            "option 60 lowercase",
            v4_with(&[o43.clone(), opt(60, b"bitlocker"), o125.clone()]),
            NotNkpu::NotBitlocker,
        ),
        (
            "option 60 other vendor",
            v4_with(&[o43.clone(), opt(60, b"MSFT 5.0"), o125.clone()]),
            NotNkpu::NotBitlocker,
        ),
        (
            "option 60 zero length",
            v4_with(&[o43.clone(), opt(60, b""), o125.clone()]),
            NotNkpu::NotBitlocker,
        ),
        (
            "option 53 = 3 (REQUEST)",
            v4_with(&[o43.clone(), opt(53, &[3]), class.clone(), o125.clone()]),
            NotNkpu::WrongMessageType(3),
        ),
        (
            "option 53 = 5 (ACK)",
            v4_with(&[o43.clone(), opt(53, &[5]), class.clone(), o125.clone()]),
            NotNkpu::WrongMessageType(5),
        ),
        (
            "option 53 zero length",
            v4_with(&[o43.clone(), opt(53, &[]), class.clone(), o125.clone()]),
            NotNkpu::WrongMessageType(0),
        ),
        (
            "option 53 two bytes",
            v4_with(&[o43.clone(), opt(53, &[1, 1]), class.clone(), o125.clone()]),
            NotNkpu::WrongMessageType(0),
        ),
        (
            "missing option 43",
            v4_with(&[class.clone(), o125.clone()]),
            NotNkpu::MissingVendorInfo,
        ),
        (
            "missing option 125",
            v4_with(&[o43.clone(), class.clone()]),
            NotNkpu::MissingVendorIdentifyingInfo,
        ),
        (
            "option 43 zero length",
            v4_with(&[opt(43, &[]), class.clone(), o125.clone()]),
            NotNkpu::MissingThumbprint,
        ),
        (
            "option 125 zero length",
            v4_with(&[o43.clone(), class.clone(), opt(125, &[])]),
            NotNkpu::MissingVendorIdentifyingInfo,
        ),
        (
            "thumbprint 19 bytes",
            v4_with(&[opt43(&t[..19], k1), class.clone(), o125.clone()]),
            NotNkpu::BadThumbprintLength,
        ),
        (
            "thumbprint 21 bytes",
            v4_with(&[
                opt43(&[t.as_slice(), &[0]].concat(), k1),
                class.clone(),
                o125.clone(),
            ]),
            NotNkpu::BadThumbprintLength,
        ),
        (
            "thumbprint zero length",
            v4_with(&[opt43(&[], k1), class.clone(), o125.clone()]),
            NotNkpu::BadThumbprintLength,
        ),
        (
            "43.2 127 bytes",
            v4_with(&[opt43(t, &k1[..127]), class.clone(), o125.clone()]),
            NotNkpu::BadKeyProtectorLength,
        ),
        (
            "43.2 zero length",
            v4_with(&[opt43(t, &[]), class.clone(), o125.clone()]),
            NotNkpu::BadKeyProtectorLength,
        ),
        (
            "125[311].1 127 bytes",
            v4_with(&[o43.clone(), class.clone(), opt125(311, &k2[..127])]),
            NotNkpu::BadKeyProtectorLength,
        ),
        (
            "125[311].1 zero length",
            v4_with(&[o43.clone(), class.clone(), opt125(311, &[])]),
            NotNkpu::BadKeyProtectorLength,
        ),
        (
            "option 125 wrong enterprise",
            v4_with(&[o43.clone(), class.clone(), opt125(312, k2)]),
            NotNkpu::MissingVendorIdentifyingInfo,
        ),
        (
            "missing 43.1",
            v4_with(&[opt(43, &opt(2, k1)), class.clone(), o125.clone()]),
            NotNkpu::MissingThumbprint,
        ),
        (
            "missing 43.2",
            v4_with(&[opt(43, &opt(1, t)), class.clone(), o125.clone()]),
            NotNkpu::MissingKeyProtector,
        ),
        (
            "duplicate 43.1",
            v4_with(&[
                opt(43, &[opt(1, t), opt(1, t), opt(2, &k1[..100])].concat()),
                class.clone(),
                o125.clone(),
            ]),
            NotNkpu::DuplicateSubOption,
        ),
        (
            "duplicate 125[311].1",
            v4_with(&[
                o43.clone(),
                class.clone(),
                opt(
                    125,
                    &[
                        311u32.to_be_bytes().as_slice(),
                        &[8],
                        &opt(1, &[1; 2]),
                        &opt(1, &[2; 2]),
                    ]
                    .concat(),
                ),
            ]),
            NotNkpu::DuplicateSubOption,
        ),
        (
            "125 sub-option 1 missing",
            v4_with(&[
                o43.clone(),
                class.clone(),
                opt(
                    125,
                    &[311u32.to_be_bytes().as_slice(), &[4], &opt(2, &[1; 2])].concat(),
                ),
            ]),
            NotNkpu::MissingKeyProtector,
        ),
        (
            "two enterprise-311 blocks",
            v4_with(&[
                o43.clone(),
                class.clone(),
                opt(
                    125,
                    &[
                        311u32.to_be_bytes().as_slice(),
                        &[0],
                        &311u32.to_be_bytes(),
                        &[0],
                    ]
                    .concat(),
                ),
            ]),
            NotNkpu::DuplicateOption,
        ),
        (
            "125 block data-len past end",
            v4_with(&[
                o43.clone(),
                class.clone(),
                opt(
                    125,
                    &[311u32.to_be_bytes().as_slice(), &[9, 1, 1, 0]].concat(),
                ),
            ]),
            NotNkpu::Truncated,
        ),
        (
            "125 block header cut",
            v4_with(&[o43.clone(), class.clone(), opt(125, &[0, 0, 1])]),
            NotNkpu::Truncated,
        ),
        (
            "43 sub-option length past end",
            v4_with(&[opt(43, &[1, 20, 1, 2]), class.clone(), o125.clone()]),
            NotNkpu::Truncated,
        ),
        (
            "43 sub-option without length",
            v4_with(&[opt(43, &[1]), class.clone(), o125.clone()]),
            NotNkpu::Truncated,
        ),
        (
            "option length past the end",
            {
                let mut v = v4_with(std::slice::from_ref(&class));
                v.pop();
                v.extend_from_slice(&[43, 200, 1]);
                v
            },
            NotNkpu::Truncated,
        ),
        (
            "option code without length",
            {
                let mut v = v4_with(std::slice::from_ref(&class));
                v.pop();
                v.push(43);
                v
            },
            NotNkpu::Truncated,
        ),
        (
            "overload value 4",
            v4_with(&[opt(52, &[4]), o43.clone(), class.clone(), o125.clone()]),
            NotNkpu::BadOverload,
        ),
        (
            "overload zero length",
            v4_with(&[opt(52, &[]), o43.clone(), class.clone(), o125.clone()]),
            NotNkpu::BadOverload,
        ),
        (
            "overload twice",
            v4_with(&[
                opt(52, &[1]),
                opt(52, &[1]),
                o43.clone(),
                class.clone(),
                o125.clone(),
            ]),
            NotNkpu::BadOverload,
        ),
        (
            "overloaded file field truncated option",
            {
                let mut v = v4_with(&[opt(52, &[1]), class.clone()]);
                v[235] = 43;
                v
            },
            NotNkpu::Truncated,
        ),
    ];
    // END before the NKPU options: what follows is not an option.
    rows.push((
        "END before options",
        {
            let mut v = parts().header;
            v.push(255);
            v.extend(o43.clone());
            v.extend(class.clone());
            v.extend(o125.clone());
            v
        },
        NotNkpu::NotBitlocker,
    ));
    rows
}

fn v6_opt(code: u16, value: &[u8]) -> Vec<u8> {
    let mut o = code.to_be_bytes().to_vec();
    o.extend_from_slice(&(value.len() as u16).to_be_bytes());
    o.extend_from_slice(value);
    o
}

fn v6_class(ent: u32, items: &[&[u8]]) -> Vec<u8> {
    let mut v = ent.to_be_bytes().to_vec();
    for i in items {
        v.extend_from_slice(&(i.len() as u16).to_be_bytes());
        v.extend_from_slice(i);
    }
    v6_opt(16, &v)
}

fn v6_vendor(ent: u32, subs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut v = ent.to_be_bytes().to_vec();
    for (c, d) in subs {
        v.extend(v6_opt(*c, d));
    }
    v6_opt(17, &v)
}

fn v6_with(msg_type: u8, options: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![msg_type, 0xab, 0xcd, 0xef];
    for o in options {
        v.extend_from_slice(o);
    }
    v
}

fn hop(n: u8) -> RelayHop {
    RelayHop {
        hop_count: n,
        link_address: Ipv6Addr::new(0x2001, 0xdb8, 0, u16::from(n), 0, 0, 0, 1),
        peer_address: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(n) + 2),
        interface_id: Some(vec![n; 4]),
    }
}

fn v6_rows() -> Vec<Row> {
    let p = parts();
    let (t, k) = (p.thumb.as_slice(), p.kp.as_slice());
    let cid = v6_opt(1, &[0, 4, 1, 2, 3]);
    let class = v6_class(311, &[b"BITLOCKER"]);
    let vendor = v6_vendor(311, &[(1, t), (2, k)]);
    let mut deep = v6_req();
    for i in 0..33 {
        deep = wrap_relay_forward(&deep, &hop(i));
    }
    let mut rows: Vec<Row> = vec![
        ("v6 empty", vec![], NotNkpu::TooShort),
        ("v6 three bytes", vec![11, 0, 0], NotNkpu::TooShort),
        (
            "v6 oversized",
            {
                let mut v = v6_req();
                v.resize(4097, 0);
                v
            },
            NotNkpu::TooLong,
        ),
        (
            "v6 Solicit",
            {
                let mut v = v6_req();
                v[0] = 1;
                v
            },
            NotNkpu::WrongV6MessageType(1),
        ),
        (
            "v6 Request",
            {
                let mut v = v6_req();
                v[0] = 3;
                v
            },
            NotNkpu::WrongV6MessageType(3),
        ),
        (
            "v6 Reply",
            {
                let mut v = v6_req();
                v[0] = 7;
                v
            },
            NotNkpu::WrongV6MessageType(7),
        ),
        (
            "v6 Relay-Reply",
            {
                let mut v = v6_req();
                v[0] = 13;
                v
            },
            NotNkpu::WrongV6MessageType(13),
        ),
        ("v6 no options", v6_with(11, &[]), NotNkpu::NotBitlocker),
        (
            "v6 missing 16",
            v6_with(11, &[cid.clone(), vendor.clone()]),
            NotNkpu::NotBitlocker,
        ),
        (
            "v6 missing 17",
            v6_with(11, &[cid.clone(), class.clone()]),
            NotNkpu::MissingVendorInfo,
        ),
        (
            "v6 16 wrong enterprise",
            v6_with(11, &[v6_class(312, &[b"BITLOCKER"]), vendor.clone()]),
            NotNkpu::NotBitlocker,
        ),
        (
            "v6 16 misspelled",
            v6_with(11, &[v6_class(311, &[b"BITLOCKR"]), vendor.clone()]),
            NotNkpu::NotBitlocker,
        ),
        (
            "v6 16 empty list",
            v6_with(11, &[v6_class(311, &[]), vendor.clone()]),
            NotNkpu::NotBitlocker,
        ),
        (
            "v6 16 zero length",
            v6_with(11, &[v6_opt(16, &[]), vendor.clone()]),
            NotNkpu::Truncated,
        ),
        (
            "v6 16 item past end",
            v6_with(
                11,
                &[v6_opt(16, &[0, 0, 1, 0x37, 0, 10, b'B']), vendor.clone()],
            ),
            NotNkpu::Truncated,
        ),
        (
            "v6 16 item length cut",
            v6_with(11, &[v6_opt(16, &[0, 0, 1, 0x37, 0]), vendor.clone()]),
            NotNkpu::Truncated,
        ),
        (
            "v6 17 wrong enterprise",
            v6_with(11, &[class.clone(), v6_vendor(312, &[(1, t), (2, k)])]),
            NotNkpu::MissingVendorInfo,
        ),
        (
            "v6 17 zero length",
            v6_with(11, &[class.clone(), v6_opt(17, &[])]),
            NotNkpu::Truncated,
        ),
        (
            "v6 17 duplicate 311",
            v6_with(11, &[class.clone(), vendor.clone(), vendor.clone()]),
            NotNkpu::DuplicateOption,
        ),
        (
            "v6 17.1 missing",
            v6_with(11, &[class.clone(), v6_vendor(311, &[(2, k)])]),
            NotNkpu::MissingThumbprint,
        ),
        (
            "v6 17.2 missing",
            v6_with(11, &[class.clone(), v6_vendor(311, &[(1, t)])]),
            NotNkpu::MissingKeyProtector,
        ),
        (
            "v6 17.1 19 bytes",
            v6_with(
                11,
                &[class.clone(), v6_vendor(311, &[(1, &t[..19]), (2, k)])],
            ),
            NotNkpu::BadThumbprintLength,
        ),
        (
            "v6 17.2 255 bytes",
            v6_with(
                11,
                &[class.clone(), v6_vendor(311, &[(1, t), (2, &k[..255])])],
            ),
            NotNkpu::BadKeyProtectorLength,
        ),
        (
            "v6 17.2 128 bytes (v4 split)",
            v6_with(
                11,
                &[class.clone(), v6_vendor(311, &[(1, t), (2, &k[..128])])],
            ),
            NotNkpu::BadKeyProtectorLength,
        ),
        (
            "v6 17 duplicate sub-option",
            v6_with(
                11,
                &[class.clone(), v6_vendor(311, &[(1, t), (1, t), (2, k)])],
            ),
            NotNkpu::DuplicateSubOption,
        ),
        (
            "v6 17 sub-option past end",
            v6_with(
                11,
                &[class.clone(), v6_opt(17, &[0, 0, 1, 0x37, 0, 1, 0, 20, 1])],
            ),
            NotNkpu::Truncated,
        ),
        (
            "v6 duplicate Client-ID",
            v6_with(
                11,
                &[cid.clone(), cid.clone(), class.clone(), vendor.clone()],
            ),
            NotNkpu::DuplicateOption,
        ),
        (
            "v6 option length past end",
            {
                let mut v = v6_req();
                v.extend_from_slice(&[0, 99, 0, 9, 1]);
                v
            },
            NotNkpu::Truncated,
        ),
        (
            "v6 option header cut",
            {
                let mut v = v6_req();
                v.extend_from_slice(&[0, 99, 0]);
                v
            },
            NotNkpu::Truncated,
        ),
        ("v6 relay nesting 33", deep, NotNkpu::RelayTooDeep),
        (
            "v6 relay header cut",
            {
                let mut v = wrap_relay_forward(&v6_req(), &hop(0));
                v.truncate(20);
                v
            },
            NotNkpu::TooShort,
        ),
        (
            "v6 relay without relay-message",
            {
                let mut v = wrap_relay_forward(&v6_req(), &hop(0));
                v.truncate(34);
                v
            },
            NotNkpu::MissingRelayMessage,
        ),
        (
            "v6 relay wrapping a Solicit",
            {
                let mut inner = v6_req();
                inner[0] = 1;
                wrap_relay_forward(&inner, &hop(0))
            },
            NotNkpu::WrongV6MessageType(1),
        ),
        (
            "v6 relay wrapping nothing",
            wrap_relay_forward(&[], &hop(0)),
            NotNkpu::TooShort,
        ),
        (
            "v6 relay two relay-messages",
            {
                let mut v = wrap_relay_forward(&v6_req(), &hop(0));
                v.extend(v6_opt(9, &v6_req()));
                v
            },
            NotNkpu::DuplicateOption,
        ),
    ];
    rows.push((
        "v6 zero-filled",
        vec![0; 351],
        NotNkpu::WrongV6MessageType(0),
    ));
    rows
}

#[test]
fn malformed_table() {
    let mut failures = Vec::new();
    for (name, packet, expected) in v4_rows() {
        let got = v4::parse_request(&packet).map(|_| ());
        if got != Err(expected) {
            failures.push(format!("v4 `{name}`: expected {expected:?}, got {got:?}"));
        }
    }
    for (name, packet, expected) in v6_rows() {
        let got = v6::parse_request(&packet).map(|_| ());
        if got != Err(expected) {
            failures.push(format!("v6 `{name}`: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_tables_base_packets_are_valid() {
    // Guards the table: its building blocks must form a valid request, so each row tests one defect.
    let req = v4::parse_request(&v4_with(&standard_options())).unwrap();
    assert_eq!(hex::encode(req.nkpu.thumbprint), THUMBPRINT);
    let p = parts();
    let v6 = v6_with(
        11,
        &[
            v6_class(311, &[b"BITLOCKER"]),
            v6_vendor(311, &[(1, &p.thumb), (2, &p.kp)]),
        ],
    );
    assert_eq!(v6::parse_request(&v6).unwrap().nkpu.key_protector, kp());
}

#[test]
fn every_truncation_of_the_requests_is_rejected() {
    let v4 = v4_req();
    for len in 0..v4.len() {
        // Cutting only the final END still leaves every NKPU option intact (END is optional on input).
        if len == v4.len() - 1 {
            assert!(v4::parse_request(&v4[..len]).is_ok());
            continue;
        }
        assert!(
            v4::parse_request(&v4[..len]).is_err(),
            "v4 prefix of {len} bytes accepted"
        );
    }
    let v6 = v6_req();
    for len in 0..v6.len() {
        assert!(
            v6::parse_request(&v6[..len]).is_err(),
            "v6 prefix of {len} bytes accepted"
        );
    }
}

#[test]
fn accepted_variations() {
    let p = parts();
    let (t, k1, k2) = (&p.thumb, &p.kp[..128], &p.kp[128..]);
    let class = opt(60, b"BITLOCKER");
    let o125 = opt125(311, k2);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "sub-option 2 before 1",
            v4_with(&[
                opt(43, &[opt(2, k1), opt(1, t)].concat()),
                class.clone(),
                o125.clone(),
            ]),
        ),
        (
            "option 53 = DISCOVER",
            v4_with(&[opt(53, &[1]), opt43(t, k1), class.clone(), o125.clone()]),
        ),
        (
            "option 53 = INFORM",
            v4_with(&[opt(53, &[8]), opt43(t, k1), class.clone(), o125.clone()]),
        ),
        (
            "option 60 with trailing NULs",
            v4_with(&[opt43(t, k1), opt(60, b"BITLOCKER\0\0"), o125.clone()]),
        ),
        (
            "PAD bytes between options",
            v4_with(&[opt43(t, k1), vec![0, 0, 0], class.clone(), o125.clone()]),
        ),
        (
            "several option 125 blocks",
            v4_with(&[
                opt43(t, k1),
                class.clone(),
                opt(
                    125,
                    &[
                        [0, 0, 0, 9, 2, 7, 7].as_slice(),
                        &311u32.to_be_bytes(),
                        &[130],
                        &opt(1, k2),
                    ]
                    .concat(),
                ),
            ]),
        ),
        (
            "unknown 43 sub-option",
            v4_with(&[
                opt(43, &[opt(9, &[1, 2]), opt(1, t), opt(2, k1)].concat()),
                class.clone(),
                o125.clone(),
            ]),
        ),
        (
            "relay option 82 and lease options",
            v4_with(&[
                opt(1, &[255, 255, 255, 0]),
                opt43(t, k1),
                opt(54, &[192, 0, 2, 1]),
                class.clone(),
                opt(82, &[1, 3, 0x65, 0x74, 0x68]),
                o125.clone(),
            ]),
        ),
        ("no END", {
            let mut v = v4_with(&standard_options());
            v.pop();
            v
        }),
    ];
    // RFC 3396: option 43 split in two, option 125 split in three pieces.
    let full43 = [opt(1, t), opt(2, k1)].concat();
    let full125 = [311u32.to_be_bytes().as_slice(), &[130], &opt(1, k2)].concat();
    cases.push((
        "RFC 3396 split options",
        v4_with(&[
            opt(43, &full43[..50]),
            opt(43, &full43[50..]),
            class.clone(),
            opt(125, &full125[..3]),
            opt(125, &full125[3..70]),
            opt(125, &full125[70..]),
        ]),
    ));
    // Option 52 overload: option 60 moved into the `file` field, and option 43's tail into `sname`.
    let mut overloaded = v4_with(&[opt(52, &[3]), opt(43, &full43[..100]), o125.clone()]);
    let in_file = class.clone();
    overloaded[108..108 + in_file.len()].copy_from_slice(&in_file);
    overloaded[108 + in_file.len()] = 255;
    let tail = opt(43, &full43[100..]);
    overloaded[44..44 + tail.len()].copy_from_slice(&tail);
    cases.push(("option 52 overload (file + sname)", overloaded));
    for (name, packet) in cases {
        let req = v4::parse_request(&packet).unwrap_or_else(|e| panic!("`{name}` rejected: {e:?}"));
        assert_eq!(req.nkpu.key_protector, kp(), "`{name}`: wrong KP");
        assert_eq!(hex::encode(req.nkpu.thumbprint), THUMBPRINT, "`{name}`");
    }

    let mut vendor_swapped = vec![0, 0, 1, 0x37];
    vendor_swapped.extend(v6_opt(2, &p.kp));
    vendor_swapped.extend(v6_opt(1, &p.thumb));
    let v6_cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "v6 17.2 before 17.1",
            v6_with(
                11,
                &[v6_class(311, &[b"BITLOCKER"]), v6_opt(17, &vendor_swapped)],
            ),
        ),
        (
            "v6 several class items and enterprises",
            v6_with(
                11,
                &[
                    v6_class(9, &[b"X"]),
                    v6_class(311, &[b"MSFT", b"BITLOCKER"]),
                    v6_vendor(9, &[(1, b"x")]),
                    v6_vendor(311, &[(1, &p.thumb), (2, &p.kp)]),
                ],
            ),
        ),
        (
            "v6 no Client-ID",
            v6_with(
                11,
                &[
                    v6_class(311, &[b"BITLOCKER"]),
                    v6_vendor(311, &[(1, &p.thumb), (2, &p.kp)]),
                ],
            ),
        ),
    ];
    for (name, packet) in v6_cases {
        let req = v6::parse_request(&packet).unwrap_or_else(|e| panic!("`{name}` rejected: {e:?}"));
        assert_eq!(req.nkpu.key_protector, kp(), "`{name}`: wrong KP");
    }
}

#[test]
fn fuzz_mutations_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let params = V4ClientParams {
        xid: 1,
        mac: [2, 0, 0, 0, 0, 1],
        ciaddr: std::net::Ipv4Addr::new(192, 0, 2, 10),
        giaddr: std::net::Ipv4Addr::UNSPECIFIED,
        siaddr: std::net::Ipv4Addr::UNSPECIFIED,
        lease_options: true,
        message_type: None,
    };
    let with_lease = build_v4_request(&params, &[1; 20], &kp());
    let relayed = wrap_relay_forward(&wrap_relay_forward(&v6_req(), &hop(0)), &hop(1));
    let seeds = [v4_req(), with_lease, v6_req(), relayed];
    let mut accepted = 0usize;
    for i in 0..100_000 {
        let mut p = seeds[i % seeds.len()].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(5) {
                0 => {
                    let at = rng.below(p.len());
                    p[at] = rng.next() as u8;
                }
                1 => {
                    let at = rng.below(p.len());
                    p[at] ^= 1 << rng.below(8);
                }
                2 => p.truncate(rng.below(p.len() + 1)),
                3 => {
                    let at = rng.below(p.len() + 1);
                    let n = rng.below(8);
                    for _ in 0..n {
                        p.insert(at, rng.next() as u8);
                    }
                }
                _ => {
                    // Length bytes are where parsers break: hit a byte right after a known code.
                    let code = [43, 125, 60, 17][rng.below(4)];
                    if let Some(at) = p.iter().position(|&b| b == code)
                        && at + 1 < p.len()
                    {
                        p[at + 1] = rng.next() as u8;
                    }
                }
            }
            if p.is_empty() {
                break;
            }
        }
        accepted += usize::from(v4::parse_request(&p).is_ok());
        accepted += usize::from(v6::parse_request(&p).is_ok());
    }
    // Many mutations hit bytes inside the KP and stay valid; the loop must have exercised both paths.
    assert!(
        accepted > 1_000 && accepted < 100_000,
        "accepted {accepted}"
    );
}
