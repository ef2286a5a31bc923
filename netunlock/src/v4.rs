//! DHCPv4 side of MS-NKPU: request parsing (ms-nkpu.md §3.2) and the BOOTREPLY (§2.2).
//!
//! The BOOTP header is read and written by `dhcproto` (zero-copy `borrowed::Message` in, `Message`
//! out); options go through [`crate::v4_options`]. Ours are the MS-NKPU parts: option 43 and 125
//! sub-options, and the order of the reply's options (60 before 43, as the known-working JNKPU reply
//! and the §5.4 vector have it; dhcproto's option map would sort 43 first).

use std::net::Ipv4Addr;

use dhcproto::v4::borrowed::Message as Borrowed;
use dhcproto::v4::{DhcpOption, Flags, HType, Message, Opcode};
use dhcproto::{Encodable, Encoder};

use crate::error::NotNkpu;
use crate::nkpu::{
    ENTERPRISE_MICROSOFT, KP_LEN, KPR_LEN, NkpuRequest, THUMBPRINT_LEN, Thumbprint, VENDOR_CLASS,
};
use crate::v4_options::{
    BOOTP_HEADER_LEN, MAGIC_COOKIE, OPTIONS_OFFSET, is_bitlocker_class, one_sub_option,
    parse_options, two_sub_options, vivso_block,
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
    /// The first `hlen` bytes of chaddr; the rest is zero.
    pub chaddr: [u8; 16],
    pub nkpu: NkpuRequest,
}

impl V4Request {
    /// The client hardware address (first `hlen` bytes of chaddr).
    pub fn hardware_address(&self) -> &[u8] {
        &self.chaddr[..usize::from(self.hlen).min(self.chaddr.len())]
    }

    /// The client hardware address, e.g. "02:00:00:00:ab:cd".
    pub fn mac(&self) -> String {
        self.hardware_address()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Whether a relay agent forwarded the request (RFC 2131: giaddr ≠ 0).
    pub fn is_relayed(&self) -> bool {
        !self.giaddr.is_unspecified()
    }
}

/// Decodes an NKPU request, or says why the datagram is not one.
pub fn parse_request(datagram: &[u8]) -> Result<V4Request, NotNkpu> {
    if datagram.len() > MAX_V4_DATAGRAM {
        return Err(NotNkpu::TooLong);
    }
    let msg = Borrowed::new(datagram).map_err(|_| NotNkpu::TooShort)?;
    if msg.opcode() != Opcode::BootRequest {
        return Err(NotNkpu::NotBootRequest);
    }
    if msg.hlen() > 16 {
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
    let hardware = msg.chaddr();
    chaddr[..hardware.len()].copy_from_slice(hardware);
    Ok(V4Request {
        xid: msg.xid(),
        htype: u8::from(msg.htype()),
        hlen: msg.hlen(),
        flags: u16::from(msg.flags()),
        ciaddr: msg.ciaddr(),
        giaddr: msg.giaddr(),
        chaddr,
        nkpu: NkpuRequest {
            thumbprint,
            key_protector,
        },
    })
}

/// Length of the reply: 236 header + 4 cookie + 11 (option 60) + 64 (option 43) + 1 (END).
pub const V4_REPLY_LEN: usize = 316;

/// Encoding a reply failed (dhcproto's encoder refused a value; cannot happen for the fixed-size
/// values a reply carries, but it is reported rather than assumed).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the DHCP reply: {0}")]
pub struct BuildError(#[from] pub dhcproto::error::EncodeError);

/// Builds the BOOTREPLY: op 2, the request's htype/hlen/xid/flags/chaddr, options 60 "BITLOCKER", 43
/// (sub-option 2 = KPR) and END; no option 53 and no 125 (ms-nkpu.md §2.2 errata).
///
/// Relayed requests (giaddr ≠ 0) get giaddr echoed, which RFC 1542 relays require to pick the client's
/// interface, and yiaddr = ciaddr so a relay honouring a clear broadcast flag can unicast to the client.
/// A direct request has giaddr = 0, so the reply is byte for byte the §5.4 one.
pub fn build_reply(req: &V4Request, kpr: &[u8; KPR_LEN]) -> Result<Vec<u8>, BuildError> {
    let mut header = Message::default();
    header
        .set_opcode(Opcode::BootReply)
        .set_htype(HType::from(req.htype))
        .set_xid(req.xid)
        .set_secs(0)
        .set_flags(Flags::new(req.flags))
        .set_chaddr(req.hardware_address())
        .set_giaddr(req.giaddr);
    if req.is_relayed() {
        header.set_yiaddr(req.ciaddr);
    }
    let mut vendor = Vec::with_capacity(2 + KPR_LEN);
    vendor.push(2);
    vendor.push(KPR_LEN as u8);
    vendor.extend_from_slice(kpr);

    let mut out = Vec::with_capacity(V4_REPLY_LEN);
    let mut e = Encoder::new(&mut out);
    // With no options in its map, dhcproto writes the header and the magic cookie only.
    header.encode(&mut e)?;
    DhcpOption::ClassIdentifier(VENDOR_CLASS.to_vec()).encode(&mut e)?;
    DhcpOption::VendorExtensions(vendor).encode(&mut e)?;
    DhcpOption::End.encode(&mut e)?;
    Ok(out)
}

// Keep the thumbprint length and the sub-option layout in one place for readers of this file.
const _: () = assert!(THUMBPRINT_LEN == 20 && HALF_KP == 128);
