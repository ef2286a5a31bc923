//! A Network Unlock client, pure (no sockets): key protector creation, request builders and reply checks
//! as a Windows/EDK2 client performs them (ms-nkpu.md §4). Used by `netunlockd probe`, the end-to-end
//! tests and the load tool.

use std::fmt;
use std::net::Ipv4Addr;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::rsa::{Pkcs1PublicEncryptingKey, PublicEncryptingKey};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use dhcproto::v4::{
    self as dhcp4, DhcpOption as Opt4, Flags, MessageType as MessageType4, OptionCode as Code4,
};
use dhcproto::v6::{DhcpOption as Opt6, ORO, OptionCode as Code6};
use dhcproto::{Encodable, Encoder};

use crate::error::{ClientError, ReplyError};
use crate::nkpu::{ENTERPRISE_MICROSOFT, KP_LEN, KPR_LEN, Thumbprint, VENDOR_CLASS, open_kpr};
use crate::v4_options::{
    BOOTP_HEADER_LEN, MAGIC_COOKIE, OPT_VIVSO, OPTIONS_OFFSET, is_bitlocker_class, one_sub_option,
    parse_options,
};
use crate::v6::{self, RelayHop};

/// The client's secrets for one request: network key CK and session key SK. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ClientSecrets {
    pub ck: [u8; 32],
    pub sk: [u8; 32],
}

impl fmt::Debug for ClientSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecrets(<redacted>)")
    }
}

/// Fresh random CK and SK, and the key protector KP = RSA-PKCS#1-v1.5(certificate key, CK ‖ SK).
pub fn new_key_protector(
    cert_der: &[u8],
) -> Result<(ClientSecrets, Box<[u8; KP_LEN]>), ClientError> {
    let mut secrets = ClientSecrets {
        ck: [0; 32],
        sk: [0; 32],
    };
    aws_lc_rs::rand::fill(&mut secrets.ck).map_err(|_| ClientError::Random)?;
    aws_lc_rs::rand::fill(&mut secrets.sk).map_err(|_| ClientError::Random)?;
    let kp = encrypt_key_protector(cert_der, &secrets)?;
    Ok((secrets, kp))
}

/// KP for given secrets (deterministic inputs for tests; the padding itself is random).
pub fn encrypt_key_protector(
    cert_der: &[u8],
    secrets: &ClientSecrets,
) -> Result<Box<[u8; KP_LEN]>, ClientError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| ClientError::BadCertificate(e.to_string()))?;
    let public = PublicEncryptingKey::from_der(cert.tbs_certificate.subject_pki.raw)
        .map_err(|_| ClientError::NotRsa2048)?;
    if public.key_size_bits() != 2048 {
        return Err(ClientError::NotRsa2048);
    }
    let key = Pkcs1PublicEncryptingKey::new(public).map_err(|_| ClientError::Encrypt)?;
    let mut plain = Zeroizing::new([0u8; 64]);
    plain[..32].copy_from_slice(&secrets.ck);
    plain[32..].copy_from_slice(&secrets.sk);
    let mut kp = Box::new([0u8; KP_LEN]);
    let written = key
        .encrypt(&plain[..], &mut kp[..])
        .map_err(|_| ClientError::Encrypt)?
        .len();
    if written != KP_LEN {
        return Err(ClientError::Encrypt);
    }
    Ok(kp)
}

/// Inputs of a DHCPv4 request. `siaddr` is the DHCP server that leased `ciaddr` (Windows copies it from
/// the DHCPACK; 0 is fine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4ClientParams {
    pub xid: u32,
    pub mac: [u8; 6],
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    /// Mimic the capture: add lease options 1, 3, 6, 15, 28, 51, 54, 58, 59 (in ascending code order).
    pub lease_options: bool,
    /// `None` = no option 53, as Windows sends; `Some(1)` = spec-style DISCOVER.
    pub message_type: Option<u8>,
}

/// Builds the BOOTREQUEST a Windows client broadcasts (§1.2, §2.1) with dhcproto: flags 0x8000,
/// yiaddr = ciaddr, options in ascending code order (dhcproto's option map is ordered, as EDK2's
/// `DhcpBuild` output is), END. With the §5.4 inputs it is byte for byte the §5.4 request.
pub fn build_v4_request(
    params: &V4ClientParams,
    thumbprint: &Thumbprint,
    kp: &[u8; KP_LEN],
) -> Vec<u8> {
    let mut msg = dhcp4::Message::new_with_id(
        params.xid,
        params.ciaddr,
        params.ciaddr, // yiaddr, copied from the lease like Windows
        params.siaddr,
        params.giaddr,
        &params.mac,
    );
    msg.set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    let mut vendor_info = Vec::with_capacity(152);
    vendor_info.extend_from_slice(&[1, 20]);
    vendor_info.extend_from_slice(thumbprint);
    vendor_info.extend_from_slice(&[2, 128]);
    vendor_info.extend_from_slice(&kp[..128]);
    opts.insert(Opt4::VendorExtensions(vendor_info));
    opts.insert(Opt4::ClassIdentifier(VENDOR_CLASS.to_vec()));
    let mut vivso = Vec::with_capacity(135);
    vivso.extend_from_slice(&ENTERPRISE_MICROSOFT.to_be_bytes());
    vivso.extend_from_slice(&[130, 1, 128]);
    vivso.extend_from_slice(&kp[128..]);
    opts.insert(Opt4::Unknown(dhcp4::UnknownOption::new(
        Code4::from(OPT_VIVSO),
        vivso,
    )));
    if let Some(t) = params.message_type {
        opts.insert(Opt4::MessageType(MessageType4::from(t)));
    }
    if params.lease_options {
        for o in lease_options(params) {
            opts.insert(o);
        }
    }
    encode(&msg)
}

/// Encodes a message into a fresh buffer. dhcproto's encoder only fails on a `usize` overflow of
/// its offset, which a buffer of a few hundred bytes cannot reach.
fn encode(msg: &impl Encodable) -> Vec<u8> {
    let mut out = Vec::with_capacity(600);
    match msg.encode(&mut Encoder::new(&mut out)) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// Plausible values for the lease options the firmware copies from the DHCPACK.
fn lease_options(p: &V4ClientParams) -> Vec<Opt4> {
    let [a, b, c, _] = p.ciaddr.octets();
    vec![
        Opt4::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
        Opt4::Router(vec![Ipv4Addr::new(a, b, c, 1)]),
        Opt4::DomainNameServer(vec![Ipv4Addr::new(a, b, c, 1)]),
        Opt4::DomainName("example.test".into()),
        Opt4::BroadcastAddr(Ipv4Addr::new(a, b, c, 255)),
        Opt4::AddressLeaseTime(86_400),
        Opt4::ServerIdentifier(p.siaddr),
        Opt4::Renewal(43_200),
        Opt4::Rebinding(75_600),
    ]
}

/// Accepts a reply the way an EDK2 client does (op 2, xid, chaddr, cookie, options closed by END) and
/// then checks it is a Network Unlock reply whose KPR opens under SK to this client's CK.
pub fn verify_v4_reply(
    datagram: &[u8],
    xid: u32,
    mac: &[u8; 6],
    secrets: &ClientSecrets,
) -> Result<(), ReplyError> {
    if datagram.len() < OPTIONS_OFFSET {
        return Err(ReplyError::Malformed("shorter than a BOOTP header"));
    }
    if datagram[0] != 2 {
        return Err(ReplyError::WrongMessageType);
    }
    if datagram[4..8] != xid.to_be_bytes() {
        return Err(ReplyError::XidMismatch);
    }
    let mut chaddr = [0u8; 16];
    chaddr[..6].copy_from_slice(mac);
    let n = usize::from(datagram[2]).min(16);
    if datagram[28..28 + n] != chaddr[..n] {
        return Err(ReplyError::ChaddrMismatch);
    }
    if datagram[BOOTP_HEADER_LEN..OPTIONS_OFFSET] != MAGIC_COOKIE {
        return Err(ReplyError::Malformed("no magic cookie"));
    }
    let opts =
        parse_options(datagram).map_err(|_| ReplyError::Malformed("options do not parse"))?;
    if !opts.saw_end {
        return Err(ReplyError::Malformed("options not terminated by END"));
    }
    match opts.vendor_class.as_deref() {
        Some(v) if is_bitlocker_class(v) => {}
        _ => return Err(ReplyError::NotNkpu),
    }
    let vendor = opts.vendor_info.as_deref().ok_or(ReplyError::NotNkpu)?;
    let kpr = one_sub_option(vendor, 2)
        .map_err(|_| ReplyError::Malformed("option 43 sub-options do not parse"))?
        .ok_or(ReplyError::NotNkpu)?;
    check_kpr(kpr, secrets)
}

fn check_kpr(kpr: &[u8], secrets: &ClientSecrets) -> Result<(), ReplyError> {
    let kpr: &[u8; KPR_LEN] = kpr
        .try_into()
        .map_err(|_| ReplyError::Malformed("KPR is not 60 bytes"))?;
    let ck = Zeroizing::new(open_kpr(kpr, &secrets.sk).ok_or(ReplyError::BadTag)?);
    verify_slices_are_equal(&ck[..], &secrets.ck).map_err(|_| ReplyError::WrongKey)
}

/// Inputs of a DHCPv6 Information-Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V6ClientParams {
    pub xid: [u8; 3],
    pub client_duid: Vec<u8>,
}

/// Builds the Information-Request of §2.3 (options 1, 8, 6, 16, 17 in the capture's order). With the
/// §5.4 inputs it is byte for byte the §5.4 request.
pub fn build_v6_request(
    params: &V6ClientParams,
    thumbprint: &Thumbprint,
    kp: &[u8; KP_LEN],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(351 + params.client_duid.len());
    let mut e = Encoder::new(&mut out);
    let written = (|| -> Result<(), crate::v4::BuildError> {
        e.write_u8(v6::MSG_INFORMATION_REQUEST)?;
        e.write_slice(&params.xid)?;
        Opt6::ClientId(params.client_duid.clone()).encode(&mut e)?;
        Opt6::ElapsedTime(0).encode(&mut e)?;
        Opt6::ORO(ORO {
            opts: vec![
                Code6::from(v6::OPT_VENDOR_CLASS),
                Code6::from(v6::OPT_VENDOR_OPTS),
            ],
        })
        .encode(&mut e)?;
        v6::encode_vendor_class(&mut e)?;
        v6::vendor_opts(&[(1, &thumbprint[..]), (2, &kp[..])]).encode(&mut e)?;
        Ok(())
    })();
    // Encoding into a Vec fails only on a usize overflow of dhcproto's offset.
    if written.is_err() {
        return Vec::new();
    }
    out
}

/// For tests of relays: wraps a client (or relay) message in a Relay-Forward for `hop`.
pub fn wrap_relay_forward(inner: &[u8], hop: &RelayHop) -> Vec<u8> {
    // As above: the only encoding failure is an offset overflow.
    v6::wrap_relay(v6::MSG_RELAY_FORW, hop, inner).unwrap_or_default()
}

/// Splits a Relay-Reply into the hop it echoes and the message it carries.
pub fn unwrap_relay_reply(datagram: &[u8]) -> Result<(RelayHop, Vec<u8>), ReplyError> {
    if datagram.first() != Some(&v6::MSG_RELAY_REPL) {
        return Err(ReplyError::WrongMessageType);
    }
    let (hop, inner) = v6::parse_relay(datagram, v6::MSG_RELAY_REPL)
        .map_err(|_| ReplyError::Malformed("Relay-Reply does not parse"))?;
    Ok((hop, inner.to_vec()))
}

/// Accepts a Reply the way an EDK2 client does (type 7, xid, a Server-ID), then checks options 16 and
/// 17 and that the KPR opens under SK to this client's CK.
pub fn verify_v6_reply(
    datagram: &[u8],
    xid: [u8; 3],
    secrets: &ClientSecrets,
) -> Result<(), ReplyError> {
    if datagram.len() < 4 {
        return Err(ReplyError::Malformed("shorter than a DHCPv6 header"));
    }
    if datagram[0] != v6::MSG_REPLY {
        return Err(ReplyError::WrongMessageType);
    }
    if datagram[1..4] != xid {
        return Err(ReplyError::XidMismatch);
    }
    let malformed = |_| ReplyError::Malformed("options do not parse");
    let (mut server_id, mut bitlocker, mut kpr) = (false, false, None);
    for item in v6::options(&datagram[4..]) {
        let (code, value) = item.map_err(malformed)?;
        match code {
            v6::OPT_SERVERID => server_id = true,
            v6::OPT_VENDOR_CLASS => {
                let (ent, data) = v6::enterprise_of(value).map_err(malformed)?;
                if ent == ENTERPRISE_MICROSOFT {
                    bitlocker |= v6::class_data_has_bitlocker(data).map_err(malformed)?;
                }
            }
            v6::OPT_VENDOR_OPTS => {
                let (ent, data) = v6::enterprise_of(value).map_err(malformed)?;
                if ent == ENTERPRISE_MICROSOFT {
                    for sub in v6::options(data) {
                        let (c, v) = sub.map_err(malformed)?;
                        if c == 2 {
                            kpr = Some(v);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if !server_id {
        return Err(ReplyError::MissingServerId);
    }
    if !bitlocker {
        return Err(ReplyError::NotNkpu);
    }
    check_kpr(kpr.ok_or(ReplyError::NotNkpu)?, secrets)
}
