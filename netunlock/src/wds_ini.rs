//! Reader for the WDS subnet policy file `bde-network-unlock.ini` (ms-nkpu.md §6.4), so an operator
//! moving from Windows Deployment Services can bring theirs unchanged.
//!
//! WDS stops answering every request when the file is corrupt; this parser fails closed the same way:
//! any line it cannot understand is an error naming the line, never silently skipped.

use std::collections::HashMap;

use ipnet::IpNet;

use crate::error::IniError;
use crate::nkpu::Thumbprint;
use crate::policy::CertificatePolicy;

/// The parsed file: named subnets and one policy per certificate section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WdsPolicy {
    /// `[SUBNETS]` entries in file order (name as written, network with host bits cleared).
    subnets: Vec<(String, IpNet)>,
    certificates: HashMap<Thumbprint, CertificatePolicy>,
}

impl WdsPolicy {
    /// The policy of the certificate's section; `None` when the file has no section for it, which means
    /// no restriction.
    pub fn policy_for(&self, thumbprint: &Thumbprint) -> Option<&CertificatePolicy> {
        self.certificates.get(thumbprint)
    }

    /// Named subnets from `[SUBNETS]`.
    pub fn subnets(&self) -> &[(String, IpNet)] {
        &self.subnets
    }

    /// Certificate sections (thumbprint → policy).
    pub fn certificates(&self) -> impl Iterator<Item = (&Thumbprint, &CertificatePolicy)> {
        self.certificates.iter()
    }
}

/// Decodes the file's bytes: UTF-8 (with or without BOM) or UTF-16 with a BOM (what Windows Notepad may
/// save). The daemon reads the file and passes the result to [`parse_wds_ini`].
pub fn decode_ini_bytes(bytes: &[u8]) -> Result<String, IniError> {
    let utf16 = |rest: &[u8], be: bool| {
        if !rest.len().is_multiple_of(2) {
            return Err(IniError::Encoding);
        }
        let units = rest.chunks_exact(2).map(|c| {
            if be {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|_| IniError::Encoding)
    };
    match bytes {
        [0xff, 0xfe, rest @ ..] => utf16(rest, false),
        [0xfe, 0xff, rest @ ..] => utf16(rest, true),
        _ => String::from_utf8(bytes.to_vec()).map_err(|_| IniError::Encoding),
    }
}

enum Section {
    Subnets,
    Certificate(Thumbprint),
}

struct CertSection {
    disabled: bool,
    /// Subnet names with the line that listed them, resolved once the whole file is read
    /// ([SUBNETS] may come after the certificate sections).
    names: Vec<(usize, String)>,
}

const SUBNETS: &str = "SUBNETS";
const DISABLED: &str = "DISABLED";
const RESERVED_NAMES: [&str; 2] = ["ENABLED", DISABLED];

/// Parses the file. Names and thumbprints are case-insensitive (Windows INI semantics); `;` starts a
/// comment anywhere on a line; host bits in a CIDR are cleared (`10.185.252.200/28` → `10.185.252.192/28`).
pub fn parse_wds_ini(text: &str) -> Result<WdsPolicy, IniError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut subnets: Vec<(String, IpNet)> = Vec::new();
    let mut seen_subnets_section = false;
    let mut sections: Vec<(Thumbprint, CertSection)> = Vec::new();
    let mut current: Option<Section> = None;

    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let content = raw.split(';').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if let Some(rest) = content.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or(IniError::BadSectionHeader { line })?;
            let section = parse_section_name(name, line)?;
            match &section {
                Section::Subnets if seen_subnets_section => {
                    return Err(IniError::DuplicateSection {
                        line,
                        name: name.to_owned(),
                    });
                }
                Section::Subnets => seen_subnets_section = true,
                Section::Certificate(t) => {
                    if sections.iter().any(|(s, _)| s == t) {
                        return Err(IniError::DuplicateSection {
                            line,
                            name: name.to_owned(),
                        });
                    }
                    sections.push((
                        *t,
                        CertSection {
                            disabled: false,
                            names: Vec::new(),
                        },
                    ));
                }
            }
            current = Some(section);
            continue;
        }
        match &current {
            None => return Err(IniError::OutsideSection { line }),
            Some(Section::Subnets) => {
                let (name, net) = parse_subnet_line(content, line)?;
                if subnets.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                    return Err(IniError::DuplicateSubnet { line, name });
                }
                subnets.push((name, net));
            }
            Some(Section::Certificate(_)) => {
                let Some((_, sec)) = sections.last_mut() else {
                    return Err(IniError::OutsideSection { line });
                };
                if content.eq_ignore_ascii_case(DISABLED) {
                    sec.disabled = true;
                } else if is_name(content) {
                    sec.names.push((line, content.to_owned()));
                } else {
                    return Err(IniError::BadCertificateLine {
                        line,
                        text: content.to_owned(),
                    });
                }
            }
        }
    }

    let mut certificates = HashMap::new();
    for (thumbprint, sec) in sections {
        let mut allowed = Vec::new();
        for (line, name) in sec.names {
            let net = subnets
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                .map(|(_, net)| *net)
                .ok_or(IniError::UndefinedSubnet { line, name })?;
            if !allowed.contains(&net) {
                allowed.push(net);
            }
        }
        certificates.insert(
            thumbprint,
            CertificatePolicy {
                enabled: !sec.disabled,
                allowed_subnets: allowed,
            },
        );
    }
    Ok(WdsPolicy {
        subnets,
        certificates,
    })
}

fn parse_section_name(name: &str, line: usize) -> Result<Section, IniError> {
    if name.eq_ignore_ascii_case(SUBNETS) {
        return Ok(Section::Subnets);
    }
    if name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut t = [0u8; 20];
        if hex::decode_to_slice(name, &mut t).is_ok() {
            return Ok(Section::Certificate(t));
        }
    }
    Err(IniError::UnknownSection {
        line,
        name: name.to_owned(),
    })
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_subnet_line(content: &str, line: usize) -> Result<(String, IpNet), IniError> {
    let (name, value) = content
        .split_once('=')
        .ok_or(IniError::BadSubnetLine { line })?;
    let name = name.trim();
    let value = value.trim();
    if !is_name(name) {
        return Err(IniError::BadSubnetLine { line });
    }
    if RESERVED_NAMES.iter().any(|r| name.eq_ignore_ascii_case(r)) {
        return Err(IniError::ReservedSubnetName {
            line,
            name: name.to_owned(),
        });
    }
    let net: IpNet = value.parse().map_err(|_| IniError::BadCidr {
        line,
        value: value.to_owned(),
    })?;
    Ok((name.to_owned(), net.trunc()))
}
