//! DHCPv4 options of a whole datagram: `dhcproto` walks them; this file adds what it cannot express.
//!
//! `dhcproto::v4::borrowed::DhcpOptionIterator` yields each option (concatenating *adjacent* repeats)
//! without copying, but it stops silently at a malformed option, does not say whether END was seen,
//! concatenates only adjacent repeats and knows nothing of option 52 (overload). MS-NKPU needs a
//! malformed request to be discarded, EDK2 needs END in replies, and RFC 3396/2131 allow a long
//! option 43/125 to be split anywhere in the options, `file` and `sname` fields. So a strict framing
//! pass runs first (ours: every length in bounds, option 52 well-formed), then the iterator collects
//! the values, and repeats are concatenated in RFC 3396 order: options field, then `file`, then `sname`.

use dhcproto::v4::borrowed::DhcpOptionIterator;

use crate::error::NotNkpu;

pub(crate) const BOOTP_HEADER_LEN: usize = 236;
pub(crate) const OPTIONS_OFFSET: usize = 240;
pub(crate) const MAGIC_COOKIE: [u8; 4] = dhcproto::v4::MAGIC;
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

    /// Appends every option of a (framing-checked) field, through dhcproto's iterator.
    fn collect(&mut self, field: &[u8]) {
        for option in DhcpOptionIterator::new(field) {
            if let Some(slot) = self.slot(u8::from(option.code())) {
                slot.get_or_insert_with(Vec::new)
                    .extend_from_slice(option.data());
            }
        }
    }
}

/// The result of the framing pass over one option field.
struct Framing {
    /// Length of the part before END (the whole field if there is no END).
    end: usize,
    saw_end: bool,
    /// The value of option 52, if the main options field carries one.
    overload: Option<u8>,
}

/// Checks that every option of `field` lies within it (PAD and END have no length byte), and in the
/// main field that option 52 appears at most once with a value 1–3.
fn check_framing(field: &[u8], main: bool) -> Result<Framing, NotNkpu> {
    let mut overload = None;
    let mut i = 0;
    while i < field.len() {
        match field[i] {
            OPT_PAD => i += 1,
            OPT_END => {
                return Ok(Framing {
                    end: i,
                    saw_end: true,
                    overload,
                });
            }
            code => {
                let len = usize::from(*field.get(i + 1).ok_or(NotNkpu::Truncated)?);
                let data = field.get(i + 2..i + 2 + len).ok_or(NotNkpu::Truncated)?;
                if main && code == OPT_OVERLOAD {
                    if overload.is_some() || data.len() != 1 || !(1..=3).contains(&data[0]) {
                        return Err(NotNkpu::BadOverload);
                    }
                    overload = Some(data[0]);
                }
                i += 2 + len;
            }
        }
    }
    Ok(Framing {
        end: field.len(),
        saw_end: false,
        overload,
    })
}

/// Walks the options of a whole datagram (at least 240 bytes, magic cookie already checked).
pub(crate) fn parse_options(datagram: &[u8]) -> Result<V4Options, NotNkpu> {
    let mut opts = V4Options::default();
    let area = datagram.get(OPTIONS_OFFSET..).ok_or(NotNkpu::TooShort)?;
    let main = check_framing(area, true)?;
    opts.collect(&area[..main.end]);
    opts.saw_end = main.saw_end;
    if let Some(overload) = main.overload {
        // RFC 3396 §5: the options field, then `file`, then `sname`.
        let fields = [(1, FILE), (2, SNAME)];
        for (bit, range) in fields {
            if overload & bit != 0 {
                let field = datagram.get(range).ok_or(NotNkpu::TooShort)?;
                let framing = check_framing(field, false)?;
                opts.collect(&field[..framing.end]);
            }
        }
    }
    Ok(opts)
}

/// Iterates over 1-byte-code / 1-byte-length sub-options (option 43 and option 125 vendor data), with PAD
/// and END honoured as RFC 2132 recommends for encapsulated options. MS-NKPU's own encoding: ours.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Why the framing pass exists: dhcproto's iterator stops silently at a truncated option, so the
    /// options before it look like a complete (if short) message.
    #[test]
    fn dhcproto_iterator_hides_truncation_the_framing_pass_reports_it() {
        let field = [
            60, 9, b'B', b'I', b'T', b'L', b'O', b'C', b'K', b'E', b'R', 43, 200, 1,
        ];
        assert_eq!(DhcpOptionIterator::new(&field).count(), 1);
        assert!(matches!(
            check_framing(&field, true),
            Err(NotNkpu::Truncated)
        ));
    }

    /// dhcproto concatenates only adjacent repeats; RFC 3396 concatenates all of them.
    #[test]
    fn non_adjacent_repeats_are_concatenated() {
        let mut d = vec![0u8; OPTIONS_OFFSET];
        d[BOOTP_HEADER_LEN..OPTIONS_OFFSET].copy_from_slice(&MAGIC_COOKIE);
        d.extend_from_slice(&[43, 2, 1, 2, 60, 1, b'X', 43, 1, 3, 255]);
        assert_eq!(DhcpOptionIterator::new(&d[OPTIONS_OFFSET..]).count(), 3);
        let opts = parse_options(&d).unwrap();
        assert_eq!(opts.vendor_info.as_deref(), Some(&[1, 2, 3][..]));
        assert!(opts.saw_end);
    }
}
