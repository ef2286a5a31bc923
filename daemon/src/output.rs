//! What one-shot commands print: aligned tables and plain lines for people, JSON for scripts, and
//! writes to stdout that end quietly when the reader has gone (`netunlockd … | head`).

use std::fmt::Display;
use std::io::Write;

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde::Serialize;

/// `--output`: for people (default) or for scripts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Aligned tables and sentences.
    #[default]
    Text,
    /// One JSON document on stdout (the API's own field names).
    Json,
}

/// Writes `text` and a newline to stdout. A closed pipe becomes an error that `main` ends on
/// quietly (see [`is_closed_pipe`]); `println!` would panic instead.
pub(crate) fn line(text: impl Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(anyhow::Error::from)
}

/// Writes `text` as it is (no newline added).
pub(crate) fn raw(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(anyhow::Error::from)
}

/// Pretty JSON on stdout.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    line(serde_json::to_string_pretty(value).context("cannot format the answer as JSON")?)
}

/// True when the error is a write to a pipe whose reader has exited.
pub(crate) fn is_closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A table for people: a header row and left-aligned columns separated by two spaces. Empty
/// cells print as `-` so columns stay readable.
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rendered lines (no trailing spaces).
    pub(crate) fn render(&self) -> String {
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_string()).collect();
        let body: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                (0..header.len())
                    .map(|i| match row.get(i) {
                        Some(c) if !c.is_empty() => c.clone(),
                        _ => "-".into(),
                    })
                    .collect()
            })
            .collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &body {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&body) {
            let mut line = String::new();
            for (c, w) in row.iter().zip(&widths) {
                line.push_str(c);
                line.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table, or `empty` when it has no rows.
    pub(crate) fn print(&self, empty: &str) -> Result<()> {
        if self.is_empty() {
            line(empty)
        } else {
            raw(&self.render())
        }
    }
}

/// A 48-digit recovery password as read out over the phone: two lines of four numbered groups.
pub(crate) fn grouped_recovery_password(password: &str) -> String {
    let groups: Vec<&str> = password.split('-').collect();
    if groups.len() != 8 {
        return password.to_owned();
    }
    let half = |from: usize| {
        groups[from..from + 4]
            .iter()
            .enumerate()
            .map(|(i, g)| format!("{}: {g}", from + i + 1))
            .collect::<Vec<_>>()
            .join("   ")
    };
    format!("{}\n{}", half(0), half(4))
}

/// RFC 3339 to the minute, in UTC: enough for people, short enough for a table.
pub(crate) fn when(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

pub(crate) fn when_opt(t: Option<time::OffsetDateTime>) -> String {
    t.map(when).unwrap_or_default()
}

pub(crate) fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_mark_empty_cells() {
        let mut t = Table::new(&["ID", "NAME", "ROLE"]);
        t.row(vec!["1".into(), "admin".into(), "admin".into()]);
        t.row(vec!["12".into(), "helpdesk-bob".into(), String::new()]);
        assert_eq!(
            t.render(),
            "ID  NAME          ROLE\n\
             1   admin         admin\n\
             12  helpdesk-bob  -\n"
        );
        assert!(Table::new(&["A"]).is_empty());
    }

    #[test]
    fn recovery_passwords_are_grouped_for_reading_out() {
        let p = "111111-222222-333333-444444-555555-666666-777777-888888";
        assert_eq!(
            grouped_recovery_password(p),
            "1: 111111   2: 222222   3: 333333   4: 444444\n\
             5: 555555   6: 666666   7: 777777   8: 888888"
        );
        assert_eq!(grouped_recovery_password("odd"), "odd");
    }

    #[test]
    fn closed_pipes_are_recognised_through_context() {
        let err = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing the table");
        assert!(is_closed_pipe(&err));
        assert!(!is_closed_pipe(&anyhow::anyhow!("other")));
    }

    #[test]
    fn times_are_short_and_utc() {
        let t = time::macros::datetime!(2026-03-04 05:06:07 +02:00);
        assert_eq!(when(t), "2026-03-04 03:06Z");
        assert_eq!(when_opt(None), "");
    }
}
