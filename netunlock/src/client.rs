//! A Network Unlock client, pure (no sockets): key protector creation, request builders and reply checks
//! as a Windows/EDK2 client performs them (ms-nkpu.md §4). Used by `netunlockd probe`, the end-to-end
//! tests and the load tool.

use std::fmt;
use std::net::Ipv4Addr;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::rsa::{Pkcs1PublicEncryptingKey, PublicEncryptingKey};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{ClientError, ReplyError};
use crate::nkpu::{ENTERPRISE_MICROSOFT, KP_LEN, KPR_LEN, Thumbprint, VENDOR_CLASS, open_kpr};
use crate::v4_options::{
    BOOTP_HEADER_LEN, MAGIC_COOKIE, OPT_END, OPT_MESSAGE_TYPE, OPT_VENDOR_CLASS, OPT_VENDOR_INFO,
    OPT_VIVSO, OPTIONS_OFFSET, is_bitlocker_class, one_sub_option, parse_options,
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

/// Builds the BOOTREQUEST a Windows client broadcasts (§1.2, §2.1): flags 0x8000, yiaddr = ciaddr, options
/// in ascending code order, END. With the §5.4 inputs it is byte for byte the §5.4 request.
pub fn build_v4_request(
    params: &V4ClientParams,
    thumbprint: &Thumbprint,
    kp: &[u8; KP_LEN],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(600);
    out.extend_from_slice(&[1, 1, 6, 0]);
    out.extend_from_slice(&params.xid.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0x80, 0]); // secs 0, flags broadcast
    out.extend_from_slice(&params.ciaddr.octets());
    out.extend_from_slice(&params.ciaddr.octets()); // yiaddr, copied from the lease like Windows
    out.extend_from_slice(&params.siaddr.octets());
    out.extend_from_slice(&params.giaddr.octets());
    out.extend_from_slice(&params.mac);
    out.resize(BOOTP_HEADER_LEN, 0);
    out.extend_from_slice(&MAGIC_COOKIE);

    let mut options: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut vendor_info = Vec::with_capacity(152);
    vendor_info.extend_from_slice(&[1, 20]);
    vendor_info.extend_from_slice(thumbprint);
    vendor_info.extend_from_slice(&[2, 128]);
    vendor_info.extend_from_slice(&kp[..128]);
    options.push((OPT_VENDOR_INFO, vendor_info));
    options.push((OPT_VENDOR_CLASS, VENDOR_CLASS.to_vec()));
    let mut vivso = Vec::with_capacity(135);
    vivso.extend_from_slice(&ENTERPRISE_MICROSOFT.to_be_bytes());
    vivso.extend_from_slice(&[130, 1, 128]);
    vivso.extend_from_slice(&kp[128..]);
    options.push((OPT_VIVSO, vivso));
    if let Some(t) = params.message_type {
        options.push((OPT_MESSAGE_TYPE, vec![t]));
    }
    if params.lease_options {
        options.extend(lease_options(params));
    }
    options.sort_by_key(|(code, _)| *code);
    for (code, value) in options {
        out.push(code);
        out.push(value.len() as u8);
        out.extend_from_slice(&value);
    }
    out.push(OPT_END);
    out
}

/// Plausible values for the lease options the firmware copies from the DHCPACK.
fn lease_options(p: &V4ClientParams) -> Vec<(u8, Vec<u8>)> {
    let [a, b, c, _] = p.ciaddr.octets();
    vec![
        (1, vec![255, 255, 255, 0]),
        (3, vec![a, b, c, 1]),
        (6, vec![a, b, c, 1]),
        (15, b"example.test".to_vec()),
        (28, vec![a, b, c, 255]),
        (51, 86_400u32.to_be_bytes().to_vec()),
        (54, p.siaddr.octets().to_vec()),
        (58, 43_200u32.to_be_bytes().to_vec()),
        (59, 75_600u32.to_be_bytes().to_vec()),
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
    out.push(v6::MSG_INFORMATION_REQUEST);
    out.extend_from_slice(&params.xid);
    v6::put_option(&mut out, v6::OPT_CLIENTID, &params.client_duid);
    v6::put_option(&mut out, v6::OPT_ELAPSED_TIME, &[0, 0]);
    v6::put_option(&mut out, v6::OPT_ORO, &[0, 16, 0, 17]);
    v6::put_option(&mut out, v6::OPT_VENDOR_CLASS, &v6::vendor_class_value());
    let mut vendor = Vec::with_capacity(288);
    vendor.extend_from_slice(&ENTERPRISE_MICROSOFT.to_be_bytes());
    vendor.extend_from_slice(&[0, 1, 0, 20]);
    vendor.extend_from_slice(thumbprint);
    vendor.extend_from_slice(&[0, 2, 1, 0]);
    vendor.extend_from_slice(kp);
    v6::put_option(&mut out, v6::OPT_VENDOR_OPTS, &vendor);
    out
}

/// For tests of relays: wraps a client (or relay) message in a Relay-Forward for `hop`.
pub fn wrap_relay_forward(inner: &[u8], hop: &RelayHop) -> Vec<u8> {
    v6::wrap_relay(v6::MSG_RELAY_FORW, hop, inner)
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
