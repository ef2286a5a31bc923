//! Escaping user input placed in LDAP search filters (RFC 4515 §3) and in DN attribute values
//! (RFC 4514 §2.4), so a typed user name can never change the meaning of a filter or a DN.

/// Escape a value for use inside an RFC 4515 filter: `*` `(` `)` `\` NUL become `\2a` `\28` `\29`
/// `\5c` `\00`. Everything else (including non-ASCII UTF-8) is passed through unchanged.
pub fn filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Escape a value for use as an RDN attribute value in a DN (RFC 4514 §2.4): the special characters
/// `" + , ; < > \ =` get a backslash, a leading `#` or space and a trailing space are escaped, NUL
/// becomes `\00`.
pub fn dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    out
}

/// Replace every `{name}` in `template` by `value` (already escaped for where it goes).
pub fn fill(template: &str, name: &str, value: &str) -> String {
    template.replace(&format!("{{{name}}}"), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_escaped_per_rfc4515() {
        let cases = [
            ("alice", "alice"),
            ("*", "\\2a"),
            ("*)(uid=*", "\\2a\\29\\28uid=\\2a"),
            ("a\\b", "a\\5cb"),
            ("nul\0byte", "nul\\00byte"),
            ("(|(objectClass=*))", "\\28|\\28objectClass=\\2a\\29\\29"),
            ("jürgen", "jürgen"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(filter_value(input), want, "input {input:?}");
        }
    }

    #[test]
    fn dn_values_are_escaped_per_rfc4514() {
        let cases = [
            ("alice", "alice"),
            ("Smith, John", "Smith\\, John"),
            ("a+b", "a\\+b"),
            ("x=y", "x\\=y"),
            ("#hash", "\\#hash"),
            ("mid#hash", "mid#hash"),
            (" lead", "\\ lead"),
            ("trail ", "trail\\ "),
            ("in side", "in side"),
            ("q\"<>;\\", "q\\\"\\<\\>\\;\\\\"),
            ("nul\0", "nul\\00"),
            (" ", "\\ "),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(dn_value(input), want, "input {input:?}");
        }
    }

    #[test]
    fn templates_are_filled_everywhere() {
        assert_eq!(
            fill("(|(uid={user})(mail={user}))", "user", "bob"),
            "(|(uid=bob)(mail=bob))"
        );
        assert_eq!(
            fill("{user}@corp.example", "user", "a\\2a"),
            "a\\2a@corp.example"
        );
        assert_eq!(fill("(member={dn})", "user", "x"), "(member={dn})");
    }
}
