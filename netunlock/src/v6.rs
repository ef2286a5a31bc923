//! DHCPv6 side of MS-NKPU: Information-Request parsing (ms-nkpu.md §3.3), Relay-Forward unwrapping,
//! and the Reply / Relay-Reply (§2.4, RFC 8415 §19).
//!
//! Bytes are read with `dhcproto::Decoder` and written with `dhcproto::Encoder` and its option
//! encoders (Server-ID, Client-ID, Vendor-Opts, Interface-ID). dhcproto's typed *decoder* is not used
//! on what arrives from the network: it stops silently at the first malformed option, reads
//! fixed-size options past their stated length (an Elapsed Time of length 0 swallows the next
//! option's header), subtracts without a check in Vendor-Class/Vendor-Opts/Status-Code (a length
//! below 4 overflows, a panic with overflow checks on), sorts options (so duplicates and order are
//! lost), and types Relay-Message as a relay message, which cannot hold the client's message. Its
//! Vendor-Class *encoder* writes the item count instead of the byte length (option 16 would say 5
//! where it holds 15 bytes), so option 16 is encoded here. See docs/protocol.md.

use std::net::Ipv6Addr;

use dhcproto::v6::{DhcpOption, DhcpOptions, MessageType, OptionCode, UnknownOption, VendorOpts};
use dhcproto::{Decoder, Encodable, Encoder};

use crate::error::NotNkpu;
use crate::nkpu::{ENTERPRISE_MICROSOFT, KP_LEN, KPR_LEN, NkpuRequest, Thumbprint, VENDOR_CLASS};
use crate::v4::BuildError;

/// Largest datagram considered (a direct request is 351 bytes; 32 relay hops add well under 4 KiB).
pub const MAX_V6_DATAGRAM: usize = 4096;
/// Deepest relay nesting accepted. RFC 8415 relays stop forwarding at hop count 8 (HOP_COUNT_LIMIT);
/// 32 is a generous bound that still caps the work per datagram.
pub const MAX_RELAY_DEPTH: usize = 32;

/// All_DHCP_Relay_Agents_and_Servers (RFC 8415), where DHCPv6 clients send Information-Requests.
pub const ALL_DHCP_RELAY_AGENTS_AND_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

pub(crate) const MSG_REPLY: u8 = 7;
pub(crate) const MSG_INFORMATION_REQUEST: u8 = 11;
pub(crate) const MSG_RELAY_FORW: u8 = 12;
pub(crate) const MSG_RELAY_REPL: u8 = 13;
pub(crate) const OPT_CLIENTID: u16 = 1;
pub(crate) const OPT_SERVERID: u16 = 2;
pub(crate) const OPT_RELAY_MSG: u16 = 9;
pub(crate) const OPT_VENDOR_CLASS: u16 = 16;
pub(crate) const OPT_VENDOR_OPTS: u16 = 17;
pub(crate) const OPT_INTERFACE_ID: u16 = 18;
pub(crate) const RELAY_HEADER_LEN: usize = 34;

// The codes above are dhcproto's; the match arms below use the numbers for readability.
const _: () = assert!(MSG_RELAY_FORW == 12 && OPT_RELAY_MSG == 9);

/// One relay agent on the path, as carried in its Relay-Forward (echoed in the Relay-Reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayHop {
    pub hop_count: u8,
    pub link_address: Ipv6Addr,
    pub peer_address: Ipv6Addr,
    pub interface_id: Option<Vec<u8>>,
}

/// A decoded DHCPv6 NKPU request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V6Request {
    pub xid: [u8; 3],
    pub client_id: Option<Vec<u8>>,
    /// Outermost relay first; empty when the client's message arrived directly.
    pub relay_hops: Vec<RelayHop>,
    pub nkpu: NkpuRequest,
}

impl V6Request {
    /// The client's DUID in lowercase hex (for logs).
    pub fn client_duid_hex(&self) -> Option<String> {
        self.client_id.as_ref().map(hex::encode)
    }

    /// The client's address as seen by the relay nearest to it (the peer-address of the innermost
    /// Relay-Forward); `None` for a direct request, where the IP source address is the client's.
    pub fn innermost_peer(&self) -> Option<Ipv6Addr> {
        self.relay_hops.last().map(|h| h.peer_address)
    }

    /// The client's link as the relays state it: the link-address of the relay nearest to the
    /// client, or of the next one out when a relay leaves it unspecified (RFC 8415 §19.1.1).
    /// `None` for a direct request or when no relay names a link.
    pub fn client_link(&self) -> Option<Ipv6Addr> {
        self.relay_hops
            .iter()
            .rev()
            .map(|h| h.link_address)
            .find(|a| !a.is_unspecified())
    }
}

/// Iterates over DHCPv6 options (2-byte code, 2-byte length) or 2-byte-coded sub-options, reading
/// with dhcproto's bounds-checked `Decoder`; a length past the end is an error, not the end.
pub(crate) fn options(data: &[u8]) -> Options<'_> {
    Options {
        decoder: Decoder::new(data),
        failed: false,
    }
}

pub(crate) struct Options<'a> {
    decoder: Decoder<'a>,
    failed: bool,
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u16, &'a [u8]), NotNkpu>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.decoder.buffer().is_empty() {
            return None;
        }
        let mut d = self.decoder;
        let item = (|| {
            let code = d.read_u16().ok()?;
            let len = usize::from(d.read_u16().ok()?);
            let value = d.read_slice(len).ok()?;
            Some((code, value))
        })();
        match item {
            Some(found) => {
                self.decoder = d;
                Some(Ok(found))
            }
            None => {
                self.failed = true;
                Some(Err(NotNkpu::Truncated))
            }
        }
    }
}

pub(crate) fn enterprise_of(value: &[u8]) -> Result<(u32, &[u8]), NotNkpu> {
    let mut d = Decoder::new(value);
    let ent = d.read_u32().map_err(|_| NotNkpu::Truncated)?;
    Ok((ent, &value[4..]))
}

/// Whether an option-16 vendor-class-data list (2-byte-length opaque items) holds "BITLOCKER".
pub(crate) fn class_data_has_bitlocker(data: &[u8]) -> Result<bool, NotNkpu> {
    let mut d = Decoder::new(data);
    let mut found = false;
    while !d.buffer().is_empty() {
        let len = usize::from(d.read_u16().map_err(|_| NotNkpu::Truncated)?);
        let item = d.read_slice(len).map_err(|_| NotNkpu::Truncated)?;
        found |= crate::v4_options::is_bitlocker_class(item);
    }
    Ok(found)
}

/// Decodes an NKPU Information-Request, directly or wrapped in (nested) Relay-Forward messages.
pub fn parse_request(datagram: &[u8]) -> Result<V6Request, NotNkpu> {
    if datagram.len() > MAX_V6_DATAGRAM {
        return Err(NotNkpu::TooLong);
    }
    let mut relay_hops = Vec::new();
    let mut msg = datagram;
    loop {
        if msg.len() < 4 {
            return Err(NotNkpu::TooShort);
        }
        match MessageType::from(msg[0]) {
            MessageType::InformationRequest => break,
            MessageType::RelayForw => {
                if relay_hops.len() >= MAX_RELAY_DEPTH {
                    return Err(NotNkpu::RelayTooDeep);
                }
                let (hop, inner) = parse_relay(msg, MSG_RELAY_FORW)?;
                relay_hops.push(hop);
                msg = inner;
            }
            other => return Err(NotNkpu::WrongV6MessageType(u8::from(other))),
        }
    }

    let mut client_id: Option<&[u8]> = None;
    let mut bitlocker = false;
    let mut vendor: Option<&[u8]> = None;
    for item in options(&msg[4..]) {
        let (code, value) = item?;
        match code {
            OPT_CLIENTID if client_id.replace(value).is_some() => {
                return Err(NotNkpu::DuplicateOption);
            }
            OPT_VENDOR_CLASS => {
                let (ent, data) = enterprise_of(value)?;
                if ent == ENTERPRISE_MICROSOFT {
                    bitlocker |= class_data_has_bitlocker(data)?;
                }
            }
            OPT_VENDOR_OPTS => {
                let (ent, data) = enterprise_of(value)?;
                if ent == ENTERPRISE_MICROSOFT && vendor.replace(data).is_some() {
                    return Err(NotNkpu::DuplicateOption);
                }
            }
            _ => {}
        }
    }
    if !bitlocker {
        return Err(NotNkpu::NotBitlocker);
    }
    let vendor = vendor.ok_or(NotNkpu::MissingVendorInfo)?;
    let (mut thumb, mut kp) = (None, None);
    for item in options(vendor) {
        let (code, value) = item?;
        let slot = match code {
            1 => &mut thumb,
            2 => &mut kp,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(NotNkpu::DuplicateSubOption);
        }
    }
    let thumbprint: Thumbprint = thumb
        .ok_or(NotNkpu::MissingThumbprint)?
        .try_into()
        .map_err(|_| NotNkpu::BadThumbprintLength)?;
    let kp: [u8; KP_LEN] = kp
        .ok_or(NotNkpu::MissingKeyProtector)?
        .try_into()
        .map_err(|_| NotNkpu::BadKeyProtectorLength)?;

    Ok(V6Request {
        xid: [msg[1], msg[2], msg[3]],
        client_id: client_id.map(<[u8]>::to_vec),
        relay_hops,
        nkpu: NkpuRequest {
            thumbprint,
            key_protector: Box::new(kp),
        },
    })
}

/// Splits a relay message (Relay-Forward or Relay-Reply) into its hop and the relayed message.
pub(crate) fn parse_relay(msg: &[u8], msg_type: u8) -> Result<(RelayHop, &[u8]), NotNkpu> {
    if msg.first() != Some(&msg_type) {
        return Err(NotNkpu::WrongV6MessageType(
            msg.first().copied().unwrap_or(0),
        ));
    }
    let mut d = Decoder::new(msg);
    let short = |_| NotNkpu::TooShort;
    let _type = d.read_u8().map_err(short)?;
    let hop_count = d.read_u8().map_err(short)?;
    let link_address = Ipv6Addr::from(d.read::<16>().map_err(short)?);
    let peer_address = Ipv6Addr::from(d.read::<16>().map_err(short)?);
    let mut inner = None;
    let mut interface_id: Option<&[u8]> = None;
    for item in options(&msg[RELAY_HEADER_LEN..]) {
        let (code, value) = item?;
        let slot = match code {
            OPT_RELAY_MSG => &mut inner,
            OPT_INTERFACE_ID => &mut interface_id,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(NotNkpu::DuplicateOption);
        }
    }
    let inner = inner.ok_or(NotNkpu::MissingRelayMessage)?;
    let hop = RelayHop {
        hop_count,
        link_address,
        peer_address,
        interface_id: interface_id.map(<[u8]>::to_vec),
    };
    Ok((hop, inner))
}

/// Encodes an option dhcproto has no working type for (Relay-Message, MS-NKPU sub-options).
fn raw_option(code: u16, data: &[u8]) -> DhcpOption {
    DhcpOption::Unknown(UnknownOption::new(OptionCode::from(code), data.to_vec()))
}

/// Option 16 (Vendor Class): enterprise 311 and one opaque item "BITLOCKER". Written by hand: dhcproto
/// 0.14 encodes this option's length as 4 + the number of items.
pub(crate) fn encode_vendor_class(e: &mut Encoder<'_>) -> Result<(), BuildError> {
    e.write_u16(OPT_VENDOR_CLASS)?;
    e.write_u16(4 + 2 + VENDOR_CLASS.len() as u16)?;
    e.write_u32(ENTERPRISE_MICROSOFT)?;
    e.write_u16(VENDOR_CLASS.len() as u16)?;
    e.write_slice(VENDOR_CLASS)?;
    Ok(())
}

/// Option 17 (Vendor-specific Information), enterprise 311, with the given MS-NKPU sub-options.
pub(crate) fn vendor_opts(sub_options: &[(u16, &[u8])]) -> DhcpOption {
    DhcpOption::VendorOpts(VendorOpts {
        num: ENTERPRISE_MICROSOFT,
        opts: sub_options
            .iter()
            .map(|(code, data)| raw_option(*code, data))
            .collect::<DhcpOptions>(),
    })
}

/// Wraps `inner` in a relay message of `msg_type` for `hop` (Interface-Id first, then Relay-Message).
pub(crate) fn wrap_relay(
    msg_type: u8,
    hop: &RelayHop,
    inner: &[u8],
) -> Result<Vec<u8>, BuildError> {
    let mut out = Vec::with_capacity(RELAY_HEADER_LEN + 8 + inner.len() + 64);
    let mut e = Encoder::new(&mut out);
    e.write_u8(msg_type)?;
    e.write_u8(hop.hop_count)?;
    e.write_slice(&hop.link_address.octets())?;
    e.write_slice(&hop.peer_address.octets())?;
    if let Some(id) = &hop.interface_id {
        DhcpOption::InterfaceId(id.clone()).encode(&mut e)?;
    }
    raw_option(OPT_RELAY_MSG, inner).encode(&mut e)?;
    Ok(out)
}

/// Builds the Reply: Server-ID, Client-ID (echoed when the request had one), 16 and 17 (len 68, sub-option
/// 2 = KPR). For a relayed request, wraps it in one Relay-Reply per hop, innermost first, echoing each
/// hop's hop-count, link and peer address and Interface-Id (RFC 8415 §19.3).
pub fn build_reply(
    req: &V6Request,
    server_duid: &[u8],
    kpr: &[u8; KPR_LEN],
) -> Result<Vec<u8>, BuildError> {
    let mut reply = Vec::with_capacity(135 + server_duid.len());
    let mut e = Encoder::new(&mut reply);
    e.write_u8(MSG_REPLY)?;
    e.write_slice(&req.xid)?;
    DhcpOption::ServerId(server_duid.to_vec()).encode(&mut e)?;
    if let Some(id) = &req.client_id {
        DhcpOption::ClientId(id.clone()).encode(&mut e)?;
    }
    encode_vendor_class(&mut e)?;
    vendor_opts(&[(2, &kpr[..])]).encode(&mut e)?;

    req.relay_hops
        .iter()
        .rev()
        .try_fold(reply, |inner, hop| wrap_relay(MSG_RELAY_REPL, hop, &inner))
}

/// A DUID-LLT (RFC 8415 §11.2) for hardware type 1 (Ethernet), `time` seconds since 2000-01-01, `mac`.
/// The §5.4 vector uses `duid_llt(0, [2, 0, 0, 0, 0, 1])`.
pub fn duid_llt(time: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut d = vec![0, 1, 0, 1];
    d.extend_from_slice(&time.to_be_bytes());
    d.extend_from_slice(&mac);
    d
}

/// Largest DUID RFC 8415 allows (2-byte type + 128 bytes); the daemon validates its configured server DUID
/// against it.
pub const MAX_DUID_LEN: usize = 130;

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v6::VendorClass;

    /// The reason option 16 is encoded here: dhcproto writes 4 + item count as its length.
    #[test]
    fn dhcproto_vendor_class_length_is_wrong_ours_is_right() {
        let mut theirs = Vec::new();
        DhcpOption::VendorClass(VendorClass {
            num: ENTERPRISE_MICROSOFT,
            data: vec![VENDOR_CLASS.to_vec()],
        })
        .encode(&mut Encoder::new(&mut theirs))
        .unwrap();
        assert_eq!(&theirs[2..4], &[0, 5], "dhcproto 0.14 says 5 bytes");
        assert_eq!(theirs.len() - 4, 15, "but writes 15");
        let mut ours = Vec::new();
        encode_vendor_class(&mut Encoder::new(&mut ours)).unwrap();
        assert_eq!(hex::encode(&ours), "0010000f0000013700094249544c4f434b4552");
    }

    /// The reason the typed decoder is not used on input: a truncated option ends the list silently.
    #[test]
    fn dhcproto_typed_decoder_accepts_what_ours_rejects() {
        let msg = [11, 1, 2, 3, 0, 1, 0, 2, 0, 4, 0, 99, 0, 9, 1];
        let decoded =
            <dhcproto::v6::Message as dhcproto::Decodable>::decode(&mut Decoder::new(&msg));
        assert!(decoded.is_ok(), "dhcproto: {decoded:?}");
        assert!(matches!(
            options(&msg[4..]).collect::<Result<Vec<_>, _>>(),
            Err(NotNkpu::Truncated)
        ));
    }
}
