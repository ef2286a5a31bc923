//! Reports: the recovery audit report (JSON or CSV), fleet state, and audit-chain verification.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};

use super::AppState;
use super::auth::Operator;
use super::csv::write_record;
use super::error::{ApiError, ApiQuery};
use super::wire::*;
use crate::audit::AuditFilter;
use crate::model::Role;

/// Accepts RFC 3339 (`2026-11-02T10:00:00Z`) or a bare date (`2026-11-02`, UTC; as `to` it
/// means the end of that day).
pub fn parse_when(field: &str, s: &str, end_of_day: bool) -> Result<OffsetDateTime, ApiError> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    match Date::parse(s, &fmt) {
        Ok(d) if end_of_day => Ok(d
            .with_time(Time::from_hms_micro(23, 59, 59, 999_999).unwrap_or(Time::MIDNIGHT))
            .assume_utc()),
        Ok(d) => Ok(d.midnight().assume_utc()),
        Err(_) => Err(ApiError::validation(format!(
            "{field}: {s:?} is neither an RFC 3339 timestamp (2026-11-02T10:00:00Z) nor a date (2026-11-02)"
        ))),
    }
}

pub fn audit_filter(q: &AuditQuery) -> Result<AuditFilter, ApiError> {
    let from = q
        .from
        .as_deref()
        .map(|s| parse_when("from", s, false))
        .transpose()?;
    let to =
        q.to.as_deref()
            .map(|s| parse_when("to", s, true))
            .transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ApiError::validation("from is after to"));
    }
    Ok(AuditFilter {
        from,
        to,
        operator: q.operator.clone(),
        device: q.device.clone(),
        kind: q.kind.clone(),
        ..AuditFilter::default()
    })
}

pub const CSV_HEADER: &[&str] = &[
    "seq",
    "at",
    "actor_kind",
    "actor_name",
    "action",
    "device_name",
    "protector_id",
    "reason",
    "outcome",
    "client_addr",
    "detail",
];

pub fn audit_csv(records: &[AuditRecord]) -> String {
    let mut out = String::new();
    write_record(&mut out, CSV_HEADER);
    for r in records {
        let at = r.at.format(&Rfc3339).unwrap_or_default();
        write_record(
            &mut out,
            &[
                r.seq.to_string().as_str(),
                at.as_str(),
                r.actor_kind.as_str(),
                r.actor_name.as_str(),
                r.action.as_str(),
                r.device_name.as_deref().unwrap_or(""),
                r.protector_id.as_deref().unwrap_or(""),
                r.reason.as_deref().unwrap_or(""),
                r.outcome.as_str(),
                r.client_addr.as_deref().unwrap_or(""),
                r.detail.as_str(),
            ],
        );
    }
    out
}

pub async fn audit(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "format {other:?} is not supported; use json or csv"
            )));
        }
    };
    let filter = audit_filter(&q)?;
    let records = state.service.audit_report(&op.0, filter).await?;
    if !csv {
        return Ok(Json(AuditList { records }).into_response());
    }
    let mut resp = audit_csv(&records).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"netunlockd-audit.csv\""),
    );
    Ok(resp)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetQuery {
    pub stale_days: Option<u32>,
}

pub async fn fleet(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> Result<Json<FleetView>, ApiError> {
    let stale_after = match q.stale_days {
        None => state.stale_after,
        Some(d @ 1..=3650) => Duration::from_secs(u64::from(d) * 86_400),
        Some(d) => {
            return Err(ApiError::validation(format!(
                "stale_days {d} is out of range; use 1 to 3650"
            )));
        }
    };
    Ok(Json(state.service.fleet_report(&op.0, stale_after).await?))
}

pub async fn verify(
    State(state): State<AppState>,
    op: Operator,
) -> Result<Json<ChainView>, ApiError> {
    // The service method takes no actor (the local CLI runs it too), so the role is checked here:
    // admin and auditor, as for the audit report.
    match op.0.role() {
        Some(Role::Admin | Role::Auditor) => Ok(Json(state.service.verify_audit_chain().await?)),
        _ => Err(ApiError::forbidden(
            "verifying the audit chain needs the admin or auditor role",
        )),
    }
}
