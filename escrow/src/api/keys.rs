//! Help-desk routes: find keys (no secrets) and disclose one (audited, rotation queued). Both are
//! rate-limited per operator so a stolen token cannot enumerate the key space.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::AppState;
use super::agent::parse_protector;
use super::auth::{Operator, PeerAddr};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::wire::*;
use crate::model::{DiscloseRequest, PageRequest};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FindQuery {
    /// First 8 hex digits of the recovery key ID.
    #[param(pattern = "^[0-9A-Fa-f]{8}$")]
    pub prefix: Option<String>,
    /// Computer name.
    pub device: Option<String>,
    /// Cursor from the previous page's `next`; omitted = first page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// One find/disclose request of this operator: from the bucket in the shared database when
/// several appliances may share it (PostgreSQL), else from this appliance's own limiter.
async fn rate_limit(state: &AppState, op: &Operator) -> Result<(), ApiError> {
    let verdict = if state.service.rate_limit_is_shared() {
        let limit = state.limiter.limit();
        state
            .service
            .take_shared_rate_token(&op.key(), limit.burst, limit.per_second)
            .await?
    } else {
        state.limiter.check(&op.key(), Instant::now())
    };
    verdict.map_err(|wait| {
        let secs = wait.as_secs().max(1);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many key lookups or disclosures from this operator; retry in {secs} s"),
        );
        e.retry_after = Some(secs);
        e
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "helpdesk",
    security(("bearerToken" = [])),
    summary = "Find keys",
    description = "By the first 8 hex digits of the recovery key ID (`prefix`) or by computer name (`device`); exactly one. Keys of active devices only, newest first, each with its device's id, name, domain, enrolment time, certificate fingerprint and last check-in; one page at a time (`limit`, `cursor`, `next`). No secrets. Rate-limited per operator. Roles: admin, helpdesk.",
    params(FindQuery),
    responses(
        (status = 200, description = "candidates", body = KeyList),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 429, description = "rate limit; see Retry-After", body = ErrorBody)
    )
)]
pub async fn find(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<FindQuery>,
) -> Result<Response, ApiError> {
    rate_limit(&state, &op).await?;
    let page = PageRequest {
        cursor: q.cursor,
        limit: q.limit,
    };
    let page = match (q.prefix.as_deref(), q.device.as_deref()) {
        (Some(prefix), None) => state.service.find_by_prefix_page(&op.0, prefix, page).await,
        (None, Some(device)) => state.service.find_by_device_page(&op.0, device, page).await,
        _ => {
            return Err(ApiError::validation(
                "give exactly one of ?prefix=<first 8 hex digits of the recovery key ID> or ?device=<computer name>",
            ));
        }
    }?;
    Ok(Json(KeyList {
        keys: page.items,
        next: page.next,
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/keys/{protector_id}/disclose",
    tag = "helpdesk",
    security(("bearerToken" = [])),
    summary = "Disclose a recovery password",
    description = "Returns the recovery password (and key package) of one protector by its full ID, with a mandatory MBAM reason code. Helpdesk must give the device name. Audited in the same transaction; the key is marked disclosed and queued for rotation. Refused attempts are audited too. Rate-limited per operator.",
    request_body = DiscloseBody,
    params(("protector_id" = String, Path, description = "full recovery key ID, e.g. {24B0AA32-F8D0-40BA-BB05-73A800324C09}")),
    responses(
        (status = 200, description = "the secret (Cache-Control: no-store)", body = DisclosureResponse),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 404, description = "no such key, or (helpdesk) the device name does not match", body = ErrorBody),
        (status = 429, description = "rate limit; see Retry-After", body = ErrorBody),
        (status = 413, description = "body larger than escrow.max_body_bytes", body = ErrorBody)
    )
)]
pub async fn disclose(
    State(state): State<AppState>,
    op: Operator,
    PeerAddr(peer): PeerAddr,
    ApiPath(protector_id): ApiPath<String>,
    ApiJson(body): ApiJson<DiscloseBody>,
) -> Result<Response, ApiError> {
    rate_limit(&state, &op).await?;
    let pid = parse_protector("protector_id", &protector_id)?;
    // Everything else is checked by the service, inside the audited path.
    let disclosure = state
        .service
        .disclose_request(
            &op.0,
            &DiscloseRequest {
                protector_id: pid,
                device_id: body.device_id,
                device_name: body.device_name,
                reason: body.reason,
                reason_text: body.reason_text,
                client_addr: peer.map(|p| p.ip()),
            },
        )
        .await?;
    let reason = disclosure.reason;
    state
        .metrics
        .disclosures
        .with_label_values(&[reason.as_str()])
        .inc();
    tracing::info!(
        device = %disclosure.candidate.device_name,
        protector = %pid,
        reason = reason.as_str(),
        audit_seq = disclosure.audit_seq,
        "recovery password disclosed"
    );
    let body = DisclosureResponse {
        key: disclosure.candidate.clone(),
        recovery_password: disclosure.recovery_password.expose().to_string(),
        key_package: disclosure.key_package.as_ref().map(|k| B64.encode(k)),
        audit_seq: disclosure.audit_seq,
    };
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
