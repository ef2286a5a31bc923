//! DHCPv6 side of MS-NKPU: Information-Request parsing (ms-nkpu.md §3.3), Relay-Forward unwrapping,
//! and the Reply / Relay-Reply (§2.4, RFC 8415 §19).

use std::net::Ipv6Addr;

use crate::error::NotNkpu;
use crate::nkpu::{ENTERPRISE_MICROSOFT, KP_LEN, KPR_LEN, NkpuRequest, Thumbprint, VENDOR_CLASS};

/// Largest datagram considered (a direct request is 351 bytes; 32 relay hops add well under 4 KiB).
pub const MAX_V6_DATAGRAM: usize = 4096;
/// Deepest relay nesting accepted. RFC 8415 relays stop forwarding at hop count 8 (HOP_COUNT_LIMIT);
/// 32 is a generous bound that still caps the work per datagram.
pub const MAX_RELAY_DEPTH: usize = 32;

pub(crate) const MSG_REPLY: u8 = 7;
pub(crate) const MSG_INFORMATION_REQUEST: u8 = 11;
pub(crate) const MSG_RELAY_FORW: u8 = 12;
pub(crate) const MSG_RELAY_REPL: u8 = 13;
pub(crate) const OPT_CLIENTID: u16 = 1;
pub(crate) const OPT_SERVERID: u16 = 2;
pub(crate) const OPT_ELAPSED_TIME: u16 = 8;
pub(crate) const OPT_ORO: u16 = 6;
pub(crate) const OPT_RELAY_MSG: u16 = 9;
pub(crate) const OPT_VENDOR_CLASS: u16 = 16;
pub(crate) const OPT_VENDOR_OPTS: u16 = 17;
pub(crate) const OPT_INTERFACE_ID: u16 = 18;
pub(crate) const RELAY_HEADER_LEN: usize = 34;

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
    /// The client's DUID in lowercase hex (for logs and per-client rate limiting).
    pub fn client_duid_hex(&self) -> Option<String> {
        self.client_id.as_ref().map(hex::encode)
    }

    /// The client's address as seen by the relay nearest to it (the peer-address of the innermost
    /// Relay-Forward); `None` for a direct request, where the IP source address is the client's.
    pub fn innermost_peer(&self) -> Option<Ipv6Addr> {
        self.relay_hops.last().map(|h| h.peer_address)
    }
}

/// Iterates over DHCPv6 options (2-byte code, 2-byte length) or 2-byte-coded sub-options.
pub(crate) fn options(data: &[u8]) -> Options<'_> {
    Options { data, pos: 0 }
}

pub(crate) struct Options<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u16, &'a [u8]), NotNkpu>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let item = self.data.get(self.pos..self.pos + 4).and_then(|head| {
            let code = u16::from_be_bytes([head[0], head[1]]);
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let value = self.data.get(self.pos + 4..self.pos + 4 + len)?;
            Some((code, value, 4 + len))
        });
        match item {
            Some((code, value, step)) => {
                self.pos += step;
                Some(Ok((code, value)))
            }
            None => {
                self.pos = self.data.len();
                Some(Err(NotNkpu::Truncated))
            }
        }
    }
}

pub(crate) fn enterprise_of(value: &[u8]) -> Result<(u32, &[u8]), NotNkpu> {
    match value {
        [a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        _ => Err(NotNkpu::Truncated),
    }
}

/// Whether an option-16 vendor-class-data list (2-byte-length opaque items) holds "BITLOCKER".
pub(crate) fn class_data_has_bitlocker(mut data: &[u8]) -> Result<bool, NotNkpu> {
    let mut found = false;
    while !data.is_empty() {
        let [h, l, rest @ ..] = data else {
            return Err(NotNkpu::Truncated);
        };
        let len = usize::from(u16::from_be_bytes([*h, *l]));
        let item = rest.get(..len).ok_or(NotNkpu::Truncated)?;
        found |= crate::v4_options::is_bitlocker_class(item);
        data = &rest[len..];
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
        match msg[0] {
            MSG_INFORMATION_REQUEST => break,
            MSG_RELAY_FORW => {
                if relay_hops.len() >= MAX_RELAY_DEPTH {
                    return Err(NotNkpu::RelayTooDeep);
                }
                let (hop, inner) = parse_relay(msg, MSG_RELAY_FORW)?;
                relay_hops.push(hop);
                msg = inner;
            }
            other => return Err(NotNkpu::WrongV6MessageType(other)),
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
    let header = msg.get(..RELAY_HEADER_LEN).ok_or(NotNkpu::TooShort)?;
    let addr = |at: usize| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&header[at..at + 16]);
        Ipv6Addr::from(o)
    };
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
        hop_count: header[1],
        link_address: addr(2),
        peer_address: addr(18),
        interface_id: interface_id.map(<[u8]>::to_vec),
    };
    Ok((hop, inner))
}

/// Appends one option; lengths over 65535 cannot occur for inputs that passed `parse_request` (bounded by
/// `MAX_V6_DATAGRAM`) or a DUID (≤ 130 bytes), and are cut rather than mis-framed if they ever do.
pub(crate) fn put_option(out: &mut Vec<u8>, code: u16, data: &[u8]) {
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&data[..usize::from(len)]);
}

/// Option 16 value: enterprise 311, one opaque item "BITLOCKER".
pub(crate) fn vendor_class_value() -> Vec<u8> {
    let mut v = Vec::with_capacity(15);
    v.extend_from_slice(&ENTERPRISE_MICROSOFT.to_be_bytes());
    v.extend_from_slice(&(VENDOR_CLASS.len() as u16).to_be_bytes());
    v.extend_from_slice(VENDOR_CLASS);
    v
}

/// Wraps `inner` in a relay message of `msg_type` for `hop` (Interface-Id first, then Relay-Message).
pub(crate) fn wrap_relay(msg_type: u8, hop: &RelayHop, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RELAY_HEADER_LEN + 8 + inner.len() + 64);
    out.push(msg_type);
    out.push(hop.hop_count);
    out.extend_from_slice(&hop.link_address.octets());
    out.extend_from_slice(&hop.peer_address.octets());
    if let Some(id) = &hop.interface_id {
        put_option(&mut out, OPT_INTERFACE_ID, id);
    }
    put_option(&mut out, OPT_RELAY_MSG, inner);
    out
}

/// Builds the Reply: Server-ID, Client-ID (echoed when the request had one), 16 and 17 (len 68, sub-option
/// 2 = KPR). For a relayed request, wraps it in one Relay-Reply per hop, innermost first, echoing each
/// hop's hop-count, link and peer address and Interface-Id (RFC 8415 §19.3).
pub fn build_reply(req: &V6Request, server_duid: &[u8], kpr: &[u8; KPR_LEN]) -> Vec<u8> {
    let mut reply = Vec::with_capacity(135 + server_duid.len());
    reply.push(MSG_REPLY);
    reply.extend_from_slice(&req.xid);
    put_option(&mut reply, OPT_SERVERID, server_duid);
    if let Some(id) = &req.client_id {
        put_option(&mut reply, OPT_CLIENTID, id);
    }
    put_option(&mut reply, OPT_VENDOR_CLASS, &vendor_class_value());
    let mut vendor = Vec::with_capacity(8 + KPR_LEN);
    vendor.extend_from_slice(&ENTERPRISE_MICROSOFT.to_be_bytes());
    vendor.extend_from_slice(&2u16.to_be_bytes());
    vendor.extend_from_slice(&(KPR_LEN as u16).to_be_bytes());
    vendor.extend_from_slice(kpr);
    put_option(&mut reply, OPT_VENDOR_OPTS, &vendor);

    req.relay_hops
        .iter()
        .rev()
        .fold(reply, |inner, hop| wrap_relay(MSG_RELAY_REPL, hop, &inner))
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
