//! The recovery audit report: filters, pages, CSV export of the whole selection.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use crate::api::reports::{audit_csv_stream, parse_when};
use crate::audit::{AuditFilter, AuditRecord};
use crate::model::{AuditOutcome, PageRequest, Role};
use crate::web::WebState;
use crate::web::error::PageError;
use crate::web::render::{Nav, html, when};
use crate::web::session::Session;

/// Records per page of the audit report (cursor pages, newest first: no page costs more than
/// this many rows, however long the log).
pub const PAGE_SIZE: u32 = 50;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct AuditParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub operator: Option<String>,
    pub device: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    /// Where the page starts (the `next` cursor of the page before); none: the newest records.
    pub cursor: Option<String>,
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl AuditParams {
    /// The service filter, and the reason (filtered here: the store has no reason filter).
    pub fn filter(&self) -> Result<(AuditFilter, Option<String>), PageError> {
        let when = |field: &str, v: &Option<String>, end: bool| {
            non_empty(v)
                .map(|s| parse_when(field, &s, end).map_err(|e| PageError::BadInput(e.message)))
                .transpose()
        };
        let from = when("from", &self.from, false)?;
        let to = when("to", &self.to, true)?;
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(PageError::BadInput(
                "The start date is after the end date.".into(),
            ));
        }
        let outcome = match non_empty(&self.outcome).as_deref() {
            None => None,
            Some(o) => Some(o.parse::<AuditOutcome>().map_err(PageError::BadInput)?),
        };
        Ok((
            AuditFilter {
                from,
                to,
                operator: non_empty(&self.operator),
                device: non_empty(&self.device),
                kind: non_empty(&self.action),
                outcome,
                limit: None,
            },
            non_empty(&self.reason),
        ))
    }

    /// The query string of this selection (for page links and the CSV link), without `cursor`.
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("from", &self.from),
            ("to", &self.to),
            ("operator", &self.operator),
            ("device", &self.device),
            ("action", &self.action),
            ("outcome", &self.outcome),
            ("reason", &self.reason),
        ] {
            if let Some(v) = non_empty(v) {
                parts.push(format!("{k}={}", enc(&v)));
            }
        }
        parts.join("&")
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub who: String,
    pub action: String,
    pub device: String,
    pub key: String,
    pub reason: String,
    pub outcome: String,
    pub failed: bool,
    pub client: String,
}

fn audit_row(r: &AuditRecord) -> AuditRow {
    AuditRow {
        seq: r.seq,
        at: when(&r.at),
        who: format!("{} ({})", r.actor_name, r.actor_kind),
        action: r.action.replace('_', " "),
        device: r.device_name.clone().unwrap_or_default(),
        key: r.protector_id.clone().unwrap_or_default(),
        reason: r.reason.clone().unwrap_or_default().replace('_', " "),
        outcome: r.outcome.as_str().to_owned(),
        failed: r.outcome == AuditOutcome::Failure,
        client: r.client_addr.clone().unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    nav: Nav,
    p: AuditParams,
    rows: Vec<AuditRow>,
    /// Not the first page: offer the way back to the newest records.
    later_page: bool,
    newest_href: String,
    next_href: Option<String>,
    csv_href: String,
}

pub async fn audit(
    State(state): State<WebState>,
    s: Session,
    Query(p): Query<AuditParams>,
) -> Result<Response, PageError> {
    s.require(&[Role::Admin, Role::Auditor], "the audit report")?;
    let (filter, reason) = p.filter()?;
    let cursor = non_empty(&p.cursor);
    let page = state
        .service
        .audit_report_page_newest_first(
            &s.actor,
            &filter,
            PageRequest {
                cursor: cursor.clone(),
                limit: Some(PAGE_SIZE),
            },
        )
        .await?;
    let rows: Vec<AuditRow> = page
        .items
        .iter()
        .filter(|r| {
            reason
                .as_deref()
                .is_none_or(|want| r.reason.as_deref() == Some(want))
        })
        .map(audit_row)
        .collect();
    let q = p.query();
    let with = |path: &str| {
        if q.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{q}")
        }
    };
    let newest_href = with("/reports/audit");
    let next_href = page.next.as_ref().map(|c| {
        let sep = if q.is_empty() { '?' } else { '&' };
        format!("{newest_href}{sep}cursor={}", enc(c))
    });
    html(&AuditPage {
        nav: Nav::new(&s, "audit"),
        rows,
        later_page: cursor.is_some(),
        newest_href,
        next_href,
        csv_href: with("/reports/audit.csv"),
        p,
    })
}

/// The whole selection as CSV, streamed batch by batch as the API's export does (memory stays
/// constant however long the log).
pub async fn audit_csv(
    State(state): State<WebState>,
    s: Session,
    Query(p): Query<AuditParams>,
) -> Result<Response, PageError> {
    s.require(&[Role::Admin, Role::Auditor], "the audit report")?;
    let (filter, reason) = p.filter()?;
    // Role and filter problems are shown as a page before the download starts.
    state
        .service
        .audit_report_page(&s.actor, &filter, PageRequest::first(1))
        .await?;
    Ok(audit_csv_stream(
        state.service.clone(),
        s.actor.clone(),
        filter,
        reason,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_query_round_trips_and_skips_empty_fields() {
        let p = AuditParams {
            from: Some("2026-11-01".into()),
            operator: Some("ann smith".into()),
            device: Some("  ".into()),
            action: Some("disclose".into()),
            cursor: Some("c1.40".into()),
            ..AuditParams::default()
        };
        assert_eq!(
            p.query(),
            "from=2026-11-01&operator=ann%20smith&action=disclose"
        );
        let (f, reason) = p.filter().unwrap_or_else(|_| panic!("valid"));
        assert_eq!(f.operator.as_deref(), Some("ann smith"));
        assert_eq!(f.device, None);
        assert_eq!(reason, None);
        assert_eq!(f.limit, None);
    }

    #[test]
    fn bad_filters_are_refused_with_a_message() {
        for p in [
            AuditParams {
                from: Some("yesterday".into()),
                ..AuditParams::default()
            },
            AuditParams {
                from: Some("2026-11-02".into()),
                to: Some("2026-11-01".into()),
                ..AuditParams::default()
            },
            AuditParams {
                outcome: Some("maybe".into()),
                ..AuditParams::default()
            },
        ] {
            assert!(matches!(p.filter(), Err(PageError::BadInput(_))), "{p:?}");
        }
    }
}
