//! DHCPv4 side of MS-NKPU: request parsing (ms-nkpu.md §3.2) and the BOOTREPLY (§2.2).

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::error::NotNkpu;
use crate::nkpu::{
    ENTERPRISE_MICROSOFT, KP_LEN, KPR_LEN, NkpuRequest, THUMBPRINT_LEN, Thumbprint, VENDOR_CLASS,
};
use crate::v4_options::{
    BOOTP_HEADER_LEN, MAGIC_COOKIE, OPT_END, OPT_VENDOR_CLASS, OPT_VENDOR_INFO, OPTIONS_OFFSET,
    is_bitlocker_class, one_sub_option, parse_options, two_sub_options, vivso_block,
};

/// Largest datagram considered. A Windows request is about 600 bytes with its copied lease options; 4096
/// leaves room for relay-agent options and overload while bounding the work an attacker can cause.
pub const MAX_V4_DATAGRAM: usize = 4096;

const HALF_KP: usize = KP_LEN / 2;
const MESSAGE_TYPE_DISCOVER: u8 = 1;
const MESSAGE_TYPE_INFORM: u8 = 8;

/// A decoded DHCPv4 NKPU request, with the header fields the reply and the responder need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4Request {
    pub xid: u32,
    pub htype: u8,
    pub hlen: u8,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub nkpu: NkpuRequest,
}

impl V4Request {
    /// The client hardware address, e.g. "02:00:00:00:ab:cd" (first `hlen` bytes of chaddr).
    pub fn mac(&self) -> String {
        let n = usize::from(self.hlen).min(self.chaddr.len());
        self.chaddr[..n]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Decodes an NKPU request, or says why the datagram is not one.
pub fn parse_request(datagram: &[u8]) -> Result<V4Request, NotNkpu> {
    if datagram.len() < OPTIONS_OFFSET {
        return Err(NotNkpu::TooShort);
    }
    if datagram.len() > MAX_V4_DATAGRAM {
        return Err(NotNkpu::TooLong);
    }
    if datagram[0] != 1 {
        return Err(NotNkpu::NotBootRequest);
    }
    if datagram[2] > 16 {
        return Err(NotNkpu::BadHardwareLength);
    }
    if datagram[BOOTP_HEADER_LEN..OPTIONS_OFFSET] != MAGIC_COOKIE {
        return Err(NotNkpu::BadMagicCookie);
    }
    let opts = parse_options(datagram)?;

    match opts.vendor_class.as_deref() {
        Some(v) if is_bitlocker_class(v) => {}
        _ => return Err(NotNkpu::NotBitlocker),
    }
    match opts.message_type.as_deref() {
        None | Some([MESSAGE_TYPE_DISCOVER]) | Some([MESSAGE_TYPE_INFORM]) => {}
        Some([other]) => return Err(NotNkpu::WrongMessageType(*other)),
        Some(_) => return Err(NotNkpu::WrongMessageType(0)),
    }

    let vendor_info = opts
        .vendor_info
        .as_deref()
        .ok_or(NotNkpu::MissingVendorInfo)?;
    let (thumb, first_half) = two_sub_options(vendor_info, 1, 2)?;
    let thumb = thumb.ok_or(NotNkpu::MissingThumbprint)?;
    let thumbprint: Thumbprint = thumb.try_into().map_err(|_| NotNkpu::BadThumbprintLength)?;
    let first_half = first_half.ok_or(NotNkpu::MissingKeyProtector)?;
    if first_half.len() != HALF_KP {
        return Err(NotNkpu::BadKeyProtectorLength);
    }

    let vivso = opts
        .vivso
        .as_deref()
        .ok_or(NotNkpu::MissingVendorIdentifyingInfo)?;
    let block =
        vivso_block(vivso, ENTERPRISE_MICROSOFT)?.ok_or(NotNkpu::MissingVendorIdentifyingInfo)?;
    let second_half = one_sub_option(block, 1)?;
    let second_half = second_half.ok_or(NotNkpu::MissingKeyProtector)?;
    if second_half.len() != HALF_KP {
        return Err(NotNkpu::BadKeyProtectorLength);
    }

    let mut key_protector = Box::new([0u8; KP_LEN]);
    key_protector[..HALF_KP].copy_from_slice(first_half);
    key_protector[HALF_KP..].copy_from_slice(second_half);

    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&datagram[28..44]);
    Ok(V4Request {
        xid: u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]),
        htype: datagram[1],
        hlen: datagram[2],
        flags: u16::from_be_bytes([datagram[10], datagram[11]]),
        ciaddr: ipv4_at(datagram, 12),
        giaddr: ipv4_at(datagram, 24),
        chaddr,
        nkpu: NkpuRequest {
            thumbprint,
            key_protector,
        },
    })
}

fn ipv4_at(d: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(d[at], d[at + 1], d[at + 2], d[at + 3])
}

/// Length of the reply: 236 header + 4 cookie + 11 (option 60) + 64 (option 43) + 1 (END).
pub const V4_REPLY_LEN: usize = 316;

/// Builds the BOOTREPLY: op 2, the request's htype/hlen/xid/flags/chaddr, options 60 "BITLOCKER", 43
/// (sub-option 2 = KPR) and END; no option 53 and no 125 (ms-nkpu.md §2.2 errata).
///
/// Relayed requests (giaddr ≠ 0) get giaddr echoed, which RFC 1542 relays require to pick the client's
/// interface, and yiaddr = ciaddr so a relay honouring a clear broadcast flag can unicast to the client.
/// A direct request has giaddr = 0, so the reply is byte for byte the §5.4 one.
pub fn build_reply(req: &V4Request, kpr: &[u8; KPR_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(V4_REPLY_LEN);
    out.extend_from_slice(&[2, req.htype, req.hlen, 0]);
    out.extend_from_slice(&req.xid.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // secs
    out.extend_from_slice(&req.flags.to_be_bytes());
    let relayed = !req.giaddr.is_unspecified();
    let yiaddr = if relayed {
        req.ciaddr
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    out.extend_from_slice(&[0; 4]); // ciaddr
    out.extend_from_slice(&yiaddr.octets());
    out.extend_from_slice(&[0; 4]); // siaddr
    out.extend_from_slice(&req.giaddr.octets());
    out.extend_from_slice(&req.chaddr);
    out.resize(BOOTP_HEADER_LEN, 0); // sname, file
    out.extend_from_slice(&MAGIC_COOKIE);
    out.push(OPT_VENDOR_CLASS);
    out.push(VENDOR_CLASS.len() as u8);
    out.extend_from_slice(VENDOR_CLASS);
    out.push(OPT_VENDOR_INFO);
    out.push((2 + KPR_LEN) as u8);
    out.push(2);
    out.push(KPR_LEN as u8);
    out.extend_from_slice(kpr);
    out.push(OPT_END);
    out
}

/// Where a reply goes (RFC 2131 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyTarget {
    /// giaddr:67 — the relay agent delivers it.
    Relay(SocketAddrV4),
    /// ciaddr:68 — the Windows client holds a lease and listens there.
    Client(SocketAddrV4),
}

/// `None` when both giaddr and ciaddr are 0: a client without an address cannot be a real NKPU client
/// (EDK2 refuses to send then), so the responder stays silent rather than broadcasting key material.
pub fn reply_target(req: &V4Request) -> Option<ReplyTarget> {
    if !req.giaddr.is_unspecified() {
        Some(ReplyTarget::Relay(SocketAddrV4::new(req.giaddr, 67)))
    } else if !req.ciaddr.is_unspecified() {
        Some(ReplyTarget::Client(SocketAddrV4::new(req.ciaddr, 68)))
    } else {
        None
    }
}

// Keep the thumbprint length and the sub-option layout in one place for readers of this file.
const _: () = assert!(THUMBPRINT_LEN == 20 && HALF_KP == 128);
