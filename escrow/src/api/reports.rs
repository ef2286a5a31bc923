//! Reports: the recovery audit report (JSON or CSV), fleet state, and audit-chain verification.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};
use tokio::sync::mpsc;

use super::AppState;
use super::auth::Operator;
use super::csv::write_record;
use super::error::{ApiError, ApiQuery};
use super::wire::*;
use crate::audit::AuditFilter;
use crate::model::{Actor, PageRequest, Role};
use crate::service::EscrowService;

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

/// The CSV rows of `records` (no header).
pub fn audit_csv_rows(out: &mut String, records: &[AuditRecord]) {
    for r in records {
        let at = r.at.format(&Rfc3339).unwrap_or_default();
        write_record(
            out,
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
}

/// A response body fed chunk by chunk through a channel: the CSV export writes each batch of
/// records as it reads it, so memory stays constant. An error ends the body abnormally (the
/// client sees a broken transfer, never a silently shorter file).
struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(http_body::Frame::data)))
    }
}

/// Streams the whole selection as CSV (the API's `format=csv` and the console's export). `reason`
/// keeps only records with that reason code (the console's filter; the store has none).
pub(crate) fn audit_csv_stream(
    service: EscrowService,
    actor: Actor,
    filter: AuditFilter,
    reason: Option<String>,
) -> Response {
    let (records_tx, mut records_rx) = mpsc::channel::<Vec<AuditRecord>>(2);
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let export = service.audit_export(&actor, &filter, records_tx);
        let write = async {
            let mut header = String::new();
            write_record(&mut header, CSV_HEADER);
            if body_tx.send(Ok(Bytes::from(header))).await.is_err() {
                return;
            }
            while let Some(mut batch) = records_rx.recv().await {
                if let Some(r) = &reason {
                    batch.retain(|rec| rec.reason.as_deref() == Some(r.as_str()));
                }
                let mut chunk = String::with_capacity(batch.len() * 256);
                audit_csv_rows(&mut chunk, &batch);
                if body_tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return;
                }
            }
        };
        let (exported, ()) = tokio::join!(export, write);
        if let Err(e) = exported {
            tracing::warn!(error = %e, "audit CSV export failed part way; the transfer was aborted");
            let _ = body_tx
                .send(Err(std::io::Error::other(e.public_message())))
                .await;
        }
    });
    let mut resp = axum::body::Body::new(ChannelBody(body_rx)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"netunlockd-audit.csv\""),
    );
    resp
}

#[utoipa::path(
    get,
    path = "/api/v1/reports/audit",
    tag = "reports",
    security(("bearerToken" = [])),
    summary = "Recovery audit report",
    description = "Audit records filtered by date range, operator, device and kind, in chain order. JSON answers one page (`limit`, default 100, at most 1000; follow `next` with `cursor`); CSV (`format=csv`) streams the whole selection as it stood when the request arrived. Roles: admin, auditor.",
    params(AuditQuery),
    responses(
        (status = 200, description = "records", content((AuditList = "application/json"), (String = "text/csv"))),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody)
    )
)]
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
    let page = PageRequest {
        cursor: q.cursor.clone(),
        limit: q.limit,
    };
    if csv {
        if page.cursor.is_some() || page.limit.is_some() {
            return Err(ApiError::validation(
                "format=csv exports the whole selection; cursor and limit are for JSON pages",
            ));
        }
        // Role and filter problems are answered as errors before the stream starts.
        state
            .service
            .audit_report_page(&op.0, &filter, PageRequest::first(1))
            .await?;
        return Ok(audit_csv_stream(state.service.clone(), op.0, filter, None));
    }
    let page = state
        .service
        .audit_report_page(&op.0, &filter, page)
        .await?;
    Ok(Json(AuditList {
        records: page.items,
        next: page.next,
    })
    .into_response())
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FleetQuery {
    /// Devices not checked in for this many days are stale (default: server setting).
    #[param(minimum = 1, maximum = 3650)]
    pub stale_days: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/reports/fleet",
    tag = "reports",
    security(("bearerToken" = [])),
    summary = "Fleet report",
    description = "Stale devices, volumes without an escrowed key, disclosed keys not rotated (with age), mismatches. Roles: admin, auditor.",
    params(FleetQuery),
    responses(
        (status = 200, description = "fleet state", body = FleetReport),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody)
    )
)]
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

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UnlockReportQuery {
    /// Devices with no answered Network Unlock request in this many days are listed, and adapters
    /// seen in this many days (default: `unlock_records.no_unlock_days`, else 30).
    #[param(minimum = 1, maximum = 365)]
    pub days: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/reports/unlocks",
    tag = "reports",
    security(("bearerToken" = [])),
    summary = "Network Unlock fleet report",
    description = "Enrolled devices (not revoked, with adapters reported at check-in) that had no answered Network Unlock request in the window: at their last boot they needed a PIN or a recovery password, or they did not reboot. And adapters (MAC addresses) that sent requests in the window but that no enrolled device reports. Each list holds its first 1000 rows (devices by name, adapters by most recent request); the totals count every row. Roles: admin, auditor.",
    params(UnlockReportQuery),
    responses(
        (status = 200, description = "the two lists and their totals", body = UnlockFleetReport),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody)
    )
)]
pub async fn unlocks(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<UnlockReportQuery>,
) -> Result<Json<UnlockFleetReport>, ApiError> {
    let days = match q.days {
        None => state.unlock_window(),
        Some(d @ 1..=365) => d,
        Some(d) => {
            return Err(ApiError::validation(format!(
                "days {d} is out of range; use 1 to 365"
            )));
        }
    };
    Ok(Json(state.service.unlock_fleet_report(&op.0, days).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/audit/verify",
    tag = "reports",
    security(("bearerToken" = [])),
    summary = "Verify the audit hash chain",
    description = "Recomputes every record's hash; says where the chain breaks. Roles: admin, auditor.",
    responses(
        (status = 200, description = "verdict (status ok or broken)", body = ChainVerification)
    )
)]
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
