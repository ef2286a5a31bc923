//! serde's messages name Rust types ("invalid type: string \"many\", expected usize"); an operator
//! editing a TOML file needs the kind of value instead.

/// The message with Rust type names replaced by what to write.
pub(crate) fn plain_words(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("expected ") {
        let (head, tail) = rest.split_at(i + "expected ".len());
        out.push_str(head);
        let word_len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let (word, after) = tail.split_at(word_len);
        // `struct Name` / `enum Name`: the name is Rust's too.
        let skip_name = |s: &str| -> usize {
            s.strip_prefix(' ').map_or(0, |n| {
                1 + n
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(n.len())
            })
        };
        let (replacement, consumed) = match word {
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64"
            | "i128" | "isize" => ("a whole number", 0),
            "f32" | "f64" => ("a number", 0),
            "struct" => ("a table", skip_name(after)),
            "enum" => (
                "one of the values the documentation lists",
                skip_name(after),
            ),
            _ => (word, 0),
        };
        out.push_str(replacement);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out.replace("invalid type: string", "invalid value: text")
}

#[cfg(test)]
mod tests {
    use super::plain_words;

    #[test]
    fn rust_type_names_become_kinds_of_values() {
        for (input, expected) in [
            (
                "invalid type: string \"many\", expected usize",
                "invalid value: text \"many\", expected a whole number",
            ),
            ("expected u16", "expected a whole number"),
            (
                "invalid type: integer `1`, expected struct WireUnlock",
                "invalid type: integer `1`, expected a table",
            ),
            (
                "invalid type: string \"x\", expected f64",
                "invalid value: text \"x\", expected a number",
            ),
            ("expected a boolean", "expected a boolean"),
            (
                "unknown variant `xml`, expected `text` or `json`",
                "unknown variant `xml`, expected `text` or `json`",
            ),
        ] {
            assert_eq!(plain_words(input), expected);
        }
    }
}
