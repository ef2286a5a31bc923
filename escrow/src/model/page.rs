//! Cursor pagination of every list (pure): a stable order by a unique key, a page size, and the
//! opaque cursor of the next page, so nothing is cut short without saying so.

use serde::{Deserialize, Serialize};

use super::limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

/// Which page to read: the items after `cursor` (a previous page's `next`; none = the first
/// page), at most `limit` of them (1..=1000, default 100).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

impl PageRequest {
    pub fn first(limit: u32) -> Self {
        Self {
            cursor: None,
            limit: Some(limit),
        }
    }

    /// The page after `page`, or None when `page` was the last.
    pub fn after<T>(&self, page: &Page<T>) -> Option<Self> {
        page.next.as_ref().map(|c| Self {
            cursor: Some(c.clone()),
            limit: self.limit,
        })
    }

    /// The validated position and size.
    pub fn resolve(&self) -> Result<ResolvedPage, String> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(format!(
                "limit {limit} is out of range: give 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE}) and follow `next` for more"
            ));
        }
        let after = match self.cursor.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) => Some(decode_cursor(c)?),
        };
        Ok(ResolvedPage { after, limit })
    }
}

/// A validated page request: the sort key to continue after, and the page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedPage {
    pub after: Option<i64>,
    pub limit: u32,
}

impl ResolvedPage {
    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// Cuts the fetched rows to the page and sets `next` from the last item's key.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> i64) -> Page<T> {
        let limit = self.limit as usize;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| encode_cursor(key(r)))
        } else {
            None
        };
        Page { items: rows, next }
    }
}

/// One page of a list; `next` is the cursor of the following page (None: this is the last).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// Cursors are opaque to clients; today the sort key with a version tag.
fn encode_cursor(key: i64) -> String {
    format!("c1.{key}")
}

fn decode_cursor(c: &str) -> Result<i64, String> {
    c.strip_prefix("c1.")
        .and_then(|k| k.parse::<i64>().ok())
        .filter(|k| *k >= 0)
        .ok_or_else(|| {
            format!(
                "cursor {:?} is not one this server handed out; pass back the `next` value of the previous page",
                c.chars().take(40).collect::<String>()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (cursor, limit, expected (after, limit) or an error fragment).
    type Case<'a> = (
        Option<&'a str>,
        Option<u32>,
        Result<(Option<i64>, u32), &'a str>,
    );

    #[test]
    fn resolve_table() {
        let cases: &[Case<'_>] = &[
            (None, None, Ok((None, 100))),
            (Some(""), Some(1), Ok((None, 1))),
            (Some("c1.42"), Some(1000), Ok((Some(42), 1000))),
            (None, Some(0), Err("out of range")),
            (None, Some(1001), Err("out of range")),
            (Some("42"), None, Err("not one this server")),
            (Some("c1.-1"), None, Err("not one this server")),
            (Some("c1.x"), None, Err("not one this server")),
        ];
        for (cursor, limit, want) in cases {
            let got = PageRequest {
                cursor: cursor.map(str::to_owned),
                limit: *limit,
            }
            .resolve();
            match (got, want) {
                (Ok(r), Ok((after, limit))) => assert_eq!((r.after, r.limit), (*after, *limit)),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{e}"),
                (got, want) => panic!("{cursor:?} {limit:?}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn pages_follow_each_other_without_gaps() {
        let all: Vec<i64> = (1..=7).collect();
        let mut req = PageRequest::first(3);
        let mut seen = Vec::new();
        loop {
            let r = req.resolve().unwrap();
            let rows: Vec<i64> = all
                .iter()
                .copied()
                .filter(|k| r.after.is_none_or(|a| *k > a))
                .take(r.fetch() as usize)
                .collect();
            let page = r.finish(rows, |k| *k);
            assert!(page.items.len() <= 3);
            seen.extend(page.items.iter().copied());
            match req.after(&page) {
                Some(n) => req = n,
                None => break,
            }
        }
        assert_eq!(seen, all);
        // An exact multiple of the page size ends with a full page and no `next`.
        let r = PageRequest::first(7).resolve().unwrap();
        assert_eq!(r.finish(all.clone(), |k| *k).next, None);
    }
}
