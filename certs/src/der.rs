//! A minimal DER reader for the two extensions x509-parser does not list in order
//! (EKU OIDs and Microsoft Application Policies). Bounds-checked; bad input gives `None`.

/// One tag-length-value element.
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    pub(crate) content: &'a [u8],
}

/// Reads one element from the front of `input`, returning it and the rest.
pub(crate) fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // High-tag-number form never occurs in the structures read here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(n);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((Tlv { tag, content }, rest))
}

/// Reads the elements of a SEQUENCE's content.
pub(crate) fn read_all(mut input: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tlv, rest) = read_tlv(input)?;
        out.push(tlv);
        input = rest;
    }
    Some(out)
}

pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_OID: u8 = 0x06;

/// Dotted form of an OBJECT IDENTIFIER's content octets.
pub(crate) fn oid_to_string(content: &[u8]) -> Option<String> {
    let mut arcs: Vec<u128> = Vec::new();
    let mut acc: u128 = 0;
    let mut in_arc = false;
    for &b in content {
        if acc > (u128::MAX >> 7) {
            return None;
        }
        acc = (acc << 7) | u128::from(b & 0x7f);
        in_arc = b & 0x80 != 0;
        if !in_arc {
            arcs.push(acc);
            acc = 0;
        }
    }
    if in_arc || arcs.is_empty() {
        return None;
    }
    let first = arcs[0];
    let (a, b) = if first < 40 {
        (0, first)
    } else if first < 80 {
        (1, first - 40)
    } else {
        (2, first - 80)
    };
    let mut s = format!("{a}.{b}");
    for arc in &arcs[1..] {
        s.push('.');
        s.push_str(&arc.to_string());
    }
    Some(s)
}

/// EKU extension value: SEQUENCE OF OBJECT IDENTIFIER.
pub(crate) fn parse_oid_sequence(value: &[u8]) -> Option<Vec<String>> {
    let (seq, rest) = read_tlv(value)?;
    if seq.tag != TAG_SEQUENCE || !rest.is_empty() {
        return None;
    }
    read_all(seq.content)?
        .into_iter()
        .map(|t| {
            (t.tag == TAG_OID)
                .then(|| oid_to_string(t.content))
                .flatten()
        })
        .collect()
}

/// MS Application Policies (1.3.6.1.4.1.311.21.10) value: SEQUENCE OF SEQUENCE { policyIdentifier OID, qualifiers OPTIONAL }.
pub(crate) fn parse_application_policies(value: &[u8]) -> Option<Vec<String>> {
    let (seq, rest) = read_tlv(value)?;
    if seq.tag != TAG_SEQUENCE || !rest.is_empty() {
        return None;
    }
    read_all(seq.content)?
        .into_iter()
        .map(|info| {
            if info.tag != TAG_SEQUENCE {
                return None;
            }
            let (oid, _qualifiers) = read_tlv(info.content)?;
            (oid.tag == TAG_OID)
                .then(|| oid_to_string(oid.content))
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_network_unlock_extensions() {
        let eku = hex::decode("300c060a2b060104018237430101").unwrap();
        assert_eq!(
            parse_oid_sequence(&eku).unwrap(),
            vec!["1.3.6.1.4.1.311.67.1.1".to_string()]
        );
        let pol = hex::decode("300e300c060a2b060104018237430101").unwrap();
        assert_eq!(
            parse_application_policies(&pol).unwrap(),
            vec!["1.3.6.1.4.1.311.67.1.1".to_string()]
        );
    }

    #[test]
    fn rejects_truncated_and_malformed_input() {
        for bad in [
            &b""[..],
            &[0x30][..],
            &[0x30, 0x05, 0x06, 0x01][..],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..],
            &[0x30, 0x02, 0x06, 0x01][..],
            &[0x30, 0x03, 0x06, 0x01, 0x80][..],
            &[0x31, 0x00][..],
            &[0x1f, 0x00][..],
        ] {
            assert!(parse_oid_sequence(bad).is_none(), "{bad:02x?}");
            assert!(parse_application_policies(bad).is_none(), "{bad:02x?}");
        }
        // Empty sequences are well-formed and list nothing.
        assert_eq!(
            parse_oid_sequence(&[0x30, 0x00]).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn oid_arcs() {
        assert_eq!(
            oid_to_string(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]).unwrap(),
            "1.2.840.113549"
        );
        assert_eq!(oid_to_string(&[0x55, 0x1d, 0x25]).unwrap(), "2.5.29.37");
    }
}
