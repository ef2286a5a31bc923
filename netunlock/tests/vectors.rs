//! Known-answer tests: every vector of ms-nkpu.md §5.3–5.4, through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::Ipv4Addr;

use common::*;
use netunlock::client::{
    ClientSecrets, V4ClientParams, V6ClientParams, build_v4_request, build_v6_request,
    verify_v4_reply, verify_v6_reply,
};
use netunlock::{ReplyError, open_kpr, seal_kpr, v4, v6};

fn secrets() -> ClientSecrets {
    ClientSecrets {
        ck: arr(CK),
        sk: arr(SK),
    }
}

fn v4_params() -> V4ClientParams {
    V4ClientParams {
        xid: 0x1122_3344,
        mac: [2, 0, 0, 0, 0xab, 0xcd],
        ciaddr: Ipv4Addr::new(192, 0, 2, 10),
        giaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: Ipv4Addr::new(192, 0, 2, 1),
        lease_options: false,
        message_type: None,
    }
}

fn v6_params() -> V6ClientParams {
    let mut duid = vec![0, 4];
    duid.extend(0u8..16);
    V6ClientParams {
        xid: [0xab, 0xcd, 0xef],
        client_duid: duid,
    }
}

#[test]
fn ccm_vectors() {
    assert_eq!(seal_kpr(&arr(CK), &arr(SK)), arr::<60>(KPR));
    let zero = "3b44ef6c773221129aa5cf233647a05eed944044c9e7aa95d4fe9513c7f3dd8ccf5f8ac052dbd31ff1297612437fb1962fbc66abe04708cffa8188e8";
    assert_eq!(seal_kpr(&[0; 32], &[0; 32]), arr::<60>(zero));
    assert_eq!(open_kpr(&arr(KPR), &arr(SK)), Some(arr(CK)));
}

#[test]
fn key_protector_decrypts_to_ck_sk() {
    let key = aws_lc_rs::rsa::Pkcs1PrivateDecryptingKey::new(identity().decrypting_key().clone())
        .unwrap();
    let mut out = [0u8; 256];
    let plain = key.decrypt(&kp()[..], &mut out).unwrap();
    assert_eq!(hex::encode(plain), format!("{CK}{SK}"));
}

#[test]
fn key_protector_decrypts_to_the_vector_kpr() {
    let key = unlock_key(7);
    assert_eq!(hex::encode(key.thumbprint()), THUMBPRINT);
    assert_eq!(key.answer(&kp()), arr::<60>(KPR));
}

#[test]
fn v4_request_parses() {
    let req = v4::parse_request(&hex_file("v4_request.hex")).unwrap();
    assert_eq!(req.xid, 0x1122_3344);
    assert_eq!((req.htype, req.hlen, req.flags), (1, 6, 0x8000));
    assert_eq!(req.ciaddr, Ipv4Addr::new(192, 0, 2, 10));
    assert_eq!(req.giaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(req.mac(), "02:00:00:00:ab:cd");
    assert_eq!(hex::encode(req.nkpu.thumbprint), THUMBPRINT);
    assert_eq!(req.nkpu.key_protector, kp());
    assert!(!req.is_relayed());
}

#[test]
fn v4_reply_bytes_exact() {
    let req = v4::parse_request(&hex_file("v4_request.hex")).unwrap();
    let kpr = unlock_key(1).answer(&req.nkpu.key_protector);
    let reply = v4::build_reply(&req, &kpr).unwrap();
    assert_eq!(hex::encode(&reply), hex::encode(hex_file("v4_reply.hex")));
    assert_eq!(reply.len(), v4::V4_REPLY_LEN);
}

#[test]
fn v6_request_parses() {
    let req = v6::parse_request(&hex_file("v6_request.hex")).unwrap();
    assert_eq!(req.xid, [0xab, 0xcd, 0xef]);
    assert_eq!(req.client_id, Some(v6_params().client_duid));
    assert_eq!(
        req.client_duid_hex().as_deref(),
        Some("0004000102030405060708090a0b0c0d0e0f")
    );
    assert!(req.relay_hops.is_empty());
    assert_eq!(req.innermost_peer(), None);
    assert_eq!(hex::encode(req.nkpu.thumbprint), THUMBPRINT);
    assert_eq!(req.nkpu.key_protector, kp());
}

#[test]
fn v6_reply_bytes_exact() {
    let req = v6::parse_request(&hex_file("v6_request.hex")).unwrap();
    let kpr = unlock_key(1).answer(&req.nkpu.key_protector);
    let reply = v6::build_reply(&req, &server_duid(), &kpr).unwrap();
    assert_eq!(hex::encode(reply), hex::encode(hex_file("v6_reply.hex")));
}

#[test]
fn client_builders_reproduce_the_requests() {
    let thumb = arr::<20>(THUMBPRINT);
    assert_eq!(
        hex::encode(build_v4_request(&v4_params(), &thumb, &kp())),
        hex::encode(hex_file("v4_request.hex"))
    );
    assert_eq!(
        hex::encode(build_v6_request(&v6_params(), &thumb, &kp())),
        hex::encode(hex_file("v6_request.hex"))
    );
}

#[test]
fn client_verifies_the_expected_replies() {
    let s = secrets();
    let mac = v4_params().mac;
    verify_v4_reply(&hex_file("v4_reply.hex"), 0x1122_3344, &mac, &s).unwrap();
    verify_v6_reply(&hex_file("v6_reply.hex"), [0xab, 0xcd, 0xef], &s).unwrap();

    let other = ClientSecrets {
        ck: [9; 32],
        sk: arr(SK),
    };
    assert_eq!(
        verify_v4_reply(&hex_file("v4_reply.hex"), 0x1122_3344, &mac, &other),
        Err(ReplyError::WrongKey)
    );
    let wrong_sk = ClientSecrets {
        ck: arr(CK),
        sk: [9; 32],
    };
    assert_eq!(
        verify_v6_reply(&hex_file("v6_reply.hex"), [0xab, 0xcd, 0xef], &wrong_sk),
        Err(ReplyError::BadTag)
    );
    assert_eq!(
        verify_v4_reply(&hex_file("v4_reply.hex"), 0x1122_3345, &mac, &s),
        Err(ReplyError::XidMismatch)
    );
    assert_eq!(
        verify_v4_reply(
            &hex_file("v4_reply.hex"),
            0x1122_3344,
            &[2, 0, 0, 0, 0xab, 0xce],
            &s
        ),
        Err(ReplyError::ChaddrMismatch)
    );
    assert_eq!(
        verify_v6_reply(&hex_file("v6_reply.hex"), [0xab, 0xcd, 0xee], &s),
        Err(ReplyError::XidMismatch)
    );
    // The request itself is not a reply.
    assert_eq!(
        verify_v4_reply(&hex_file("v4_request.hex"), 0x1122_3344, &mac, &s),
        Err(ReplyError::WrongMessageType)
    );
    // EDK2 drops a v4 reply whose options are not closed by END, and a v6 reply without Server-ID.
    let mut no_end = hex_file("v4_reply.hex");
    no_end.pop();
    assert!(matches!(
        verify_v4_reply(&no_end, 0x1122_3344, &mac, &s),
        Err(ReplyError::Malformed(_))
    ));
    let req = v6::parse_request(&hex_file("v6_request.hex")).unwrap();
    let without_server_id = v6::build_reply(&req, &[], &arr(KPR)).unwrap();
    let mut stripped = without_server_id[..4].to_vec();
    stripped.extend_from_slice(&without_server_id[8..]);
    assert_eq!(
        verify_v6_reply(&stripped, [0xab, 0xcd, 0xef], &s),
        Err(ReplyError::MissingServerId)
    );
}

#[test]
fn full_round_trip_with_fresh_secrets() {
    let key = unlock_key(3);
    let (secrets, kp) = netunlock::client::new_key_protector(&data("vector54_cert.der")).unwrap();
    let mut params = v4_params();
    params.lease_options = true;
    params.message_type = Some(1);
    let request = build_v4_request(&params, &key.thumbprint(), &kp);
    let req = v4::parse_request(&request).unwrap();
    let reply = v4::build_reply(&req, &key.answer(&req.nkpu.key_protector)).unwrap();
    verify_v4_reply(&reply, params.xid, &params.mac, &secrets).unwrap();

    let request = build_v6_request(&v6_params(), &key.thumbprint(), &kp);
    let req = v6::parse_request(&request).unwrap();
    let reply =
        v6::build_reply(&req, &server_duid(), &key.answer(&req.nkpu.key_protector)).unwrap();
    verify_v6_reply(&reply, [0xab, 0xcd, 0xef], &secrets).unwrap();
}

#[test]
fn client_refuses_a_non_certificate() {
    assert!(matches!(
        netunlock::client::new_key_protector(b"not a certificate"),
        Err(netunlock::ClientError::BadCertificate(_))
    ));
}
