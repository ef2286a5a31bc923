//! Minimal RFC 4180 CSV writer for report exports. Cells that a spreadsheet would run as a
//! formula (leading `=`, `+`, `-`, `@`, tab, CR) get a leading `'`, because audit exports are
//! opened in Excel and device names or free-text reasons come from outside.

/// Appends one CSV record (CRLF-terminated) to `out`.
pub fn write_record<S: AsRef<str>>(out: &mut String, cells: &[S]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_cell(out, cell.as_ref());
    }
    out.push_str("\r\n");
}

fn write_cell(out: &mut String, cell: &str) {
    let defused = matches!(
        cell.chars().next(),
        Some('=' | '+' | '-' | '@' | '\t' | '\r')
    );
    let needs_quotes = defused
        || cell.contains([',', '"', '\n', '\r'])
        || cell.starts_with(' ')
        || cell.ends_with(' ');
    if !needs_quotes {
        out.push_str(cell);
        return;
    }
    out.push('"');
    if defused {
        out.push('\'');
    }
    for c in cell.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_table() {
        let table: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("", ""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("=cmd|' /C calc'!A0", "\"'=cmd|' /C calc'!A0\""),
            ("+1", "\"'+1\""),
            ("-1", "\"'-1\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            (" padded", "\" padded\""),
            ("SRV-01", "SRV-01"),
        ];
        for (input, expected) in table {
            let mut out = String::new();
            write_record(&mut out, &[*input]);
            assert_eq!(out, format!("{expected}\r\n"), "input {input:?}");
        }
        let mut out = String::new();
        write_record(&mut out, &["a", "b,c", "d"]);
        assert_eq!(out, "a,\"b,c\",d\r\n");
    }
}
