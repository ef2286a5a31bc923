//! Bounds-checked DHCPv4 option walking, shared by the request parser and the client's reply check.
//!
//! Handles PAD/END, RFC 3396 concatenation of repeated codes, and RFC 2131 option 52 (overload of the
//! `file` and `sname` fields). Only the codes NKPU cares about are kept; the rest (lease options copied
//! by the Windows firmware, relay option 82, …) is skipped.

use crate::error::NotNkpu;

pub(crate) const BOOTP_HEADER_LEN: usize = 236;
pub(crate) const OPTIONS_OFFSET: usize = 240;
pub(crate) const MAGIC_COOKIE: [u8; 4] = [0x63, 0x82, 0x53, 0x63];
const SNAME: std::ops::Range<usize> = 44..108;
const FILE: std::ops::Range<usize> = 108..236;

pub(crate) const OPT_PAD: u8 = 0;
pub(crate) const OPT_END: u8 = 255;
pub(crate) const OPT_VENDOR_INFO: u8 = 43;
pub(crate) const OPT_OVERLOAD: u8 = 52;
pub(crate) const OPT_MESSAGE_TYPE: u8 = 53;
pub(crate) const OPT_VENDOR_CLASS: u8 = 60;
pub(crate) const OPT_VIVSO: u8 = 125;

/// The options relevant to NKPU, each concatenated over all its occurrences (RFC 3396).
#[derive(Debug, Default)]
pub(crate) struct V4Options {
    pub vendor_info: Option<Vec<u8>>,
    pub message_type: Option<Vec<u8>>,
    pub vendor_class: Option<Vec<u8>>,
    pub vivso: Option<Vec<u8>>,
    /// Whether the options field was closed by an END option (EDK2 clients require it in replies).
    pub saw_end: bool,
}

impl V4Options {
    fn slot(&mut self, code: u8) -> Option<&mut Option<Vec<u8>>> {
        match code {
            OPT_VENDOR_INFO => Some(&mut self.vendor_info),
            OPT_MESSAGE_TYPE => Some(&mut self.message_type),
            OPT_VENDOR_CLASS => Some(&mut self.vendor_class),
            OPT_VIVSO => Some(&mut self.vivso),
            _ => None,
        }
    }
}

/// Walks the options of a whole datagram (which must be at least 240 bytes with the cookie checked).
pub(crate) fn parse_options(datagram: &[u8]) -> Result<V4Options, NotNkpu> {
    let mut opts = V4Options::default();
    let area = datagram.get(OPTIONS_OFFSET..).ok_or(NotNkpu::TooShort)?;
    let (saw_end, overload) = walk(area, &mut opts, true)?;
    opts.saw_end = saw_end;
    // RFC 3396 §5: concatenation order is options field, then file, then sname.
    if let Some(ov) = overload {
        if ov & 1 != 0 {
            walk(
                datagram.get(FILE).ok_or(NotNkpu::TooShort)?,
                &mut opts,
                false,
            )?;
        }
        if ov & 2 != 0 {
            walk(
                datagram.get(SNAME).ok_or(NotNkpu::TooShort)?,
                &mut opts,
                false,
            )?;
        }
    }
    Ok(opts)
}

/// Walks one option field; returns (END seen, overload value if option 52 was in the main field).
fn walk(field: &[u8], opts: &mut V4Options, main: bool) -> Result<(bool, Option<u8>), NotNkpu> {
    let mut overload: Option<u8> = None;
    let mut i = 0;
    while i < field.len() {
        let code = field[i];
        if code == OPT_PAD {
            i += 1;
            continue;
        }
        if code == OPT_END {
            return Ok((true, overload));
        }
        let len = usize::from(*field.get(i + 1).ok_or(NotNkpu::Truncated)?);
        let data = field.get(i + 2..i + 2 + len).ok_or(NotNkpu::Truncated)?;
        if code == OPT_OVERLOAD && main {
            if overload.is_some() || data.len() != 1 || !(1..=3).contains(&data[0]) {
                return Err(NotNkpu::BadOverload);
            }
            overload = Some(data[0]);
        } else if let Some(slot) = opts.slot(code) {
            slot.get_or_insert_with(Vec::new).extend_from_slice(data);
        }
        i += 2 + len;
    }
    Ok((false, overload))
}

/// Iterates over 1-byte-code / 1-byte-length sub-options (option 43 and option 125 vendor data), with PAD
/// and END honoured as RFC 2132 recommends for encapsulated options.
pub(crate) fn sub_options(data: &[u8]) -> SubOptions<'_> {
    SubOptions { data, pos: 0 }
}

pub(crate) struct SubOptions<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for SubOptions<'a> {
    type Item = Result<(u8, &'a [u8]), NotNkpu>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let code = *self.data.get(self.pos)?;
            match code {
                OPT_PAD => self.pos += 1,
                OPT_END => {
                    self.pos = self.data.len();
                    return None;
                }
                _ => {
                    let Some(&len) = self.data.get(self.pos + 1) else {
                        self.pos = self.data.len();
                        return Some(Err(NotNkpu::Truncated));
                    };
                    let start = self.pos + 2;
                    let end = start + usize::from(len);
                    let Some(value) = self.data.get(start..end) else {
                        self.pos = self.data.len();
                        return Some(Err(NotNkpu::Truncated));
                    };
                    self.pos = end;
                    return Some(Ok((code, value)));
                }
            }
        }
    }
}

/// Values of two sub-options, each present or not.
pub(crate) type SubOptionPair<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Collects sub-options `a` and `b` (rejecting duplicates and malformed encodings), position independent.
pub(crate) fn two_sub_options(data: &[u8], a: u8, b: u8) -> Result<SubOptionPair<'_>, NotNkpu> {
    let (mut first, mut second) = (None, None);
    for item in sub_options(data) {
        let (code, value) = item?;
        let slot = if code == a {
            &mut first
        } else if code == b {
            &mut second
        } else {
            continue;
        };
        if slot.replace(value).is_some() {
            return Err(NotNkpu::DuplicateSubOption);
        }
    }
    Ok((first, second))
}

/// Collects sub-option `code` (rejecting duplicates and malformed encodings).
pub(crate) fn one_sub_option(data: &[u8], code: u8) -> Result<Option<&[u8]>, NotNkpu> {
    let mut found = None;
    for item in sub_options(data) {
        let (c, value) = item?;
        if c == code && found.replace(value).is_some() {
            return Err(NotNkpu::DuplicateSubOption);
        }
    }
    Ok(found)
}

/// Finds the data of the enterprise-311 block of an option 125 value (RFC 3925: 4-byte enterprise,
/// 1-byte data length, data; several blocks allowed, a repeated 311 block is rejected).
pub(crate) fn vivso_block(value: &[u8], enterprise: u32) -> Result<Option<&[u8]>, NotNkpu> {
    let mut found = None;
    let mut i = 0;
    while i < value.len() {
        let head = value.get(i..i + 5).ok_or(NotNkpu::Truncated)?;
        let ent = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let len = usize::from(head[4]);
        let data = value.get(i + 5..i + 5 + len).ok_or(NotNkpu::Truncated)?;
        if ent == enterprise && found.replace(data).is_some() {
            return Err(NotNkpu::DuplicateOption);
        }
        i += 5 + len;
    }
    Ok(found)
}

/// Option 60 equals "BITLOCKER", tolerating trailing NULs (RFC 2132 §2 says not to send them, but some
/// stacks do).
pub(crate) fn is_bitlocker_class(value: &[u8]) -> bool {
    let mut end = value.len();
    while end > 0 && value[end - 1] == 0 {
        end -= 1;
    }
    &value[..end] == crate::nkpu::VENDOR_CLASS
}
