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
use crate::model::DisclosureReason;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindQuery {
    pub prefix: Option<String>,
    pub device: Option<String>,
}

fn rate_limit(state: &AppState, op: &Operator) -> Result<(), ApiError> {
    state
        .limiter
        .check(&op.key(), Instant::now())
        .map_err(|wait| {
            let secs = wait.as_secs().max(1);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many key lookups or disclosures from this operator; retry in {secs} s"
                ),
            );
            e.retry_after = Some(secs);
            e
        })
}

pub async fn find(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<FindQuery>,
) -> Result<Response, ApiError> {
    rate_limit(&state, &op)?;
    let keys = match (q.prefix.as_deref(), q.device.as_deref()) {
        (Some(prefix), None) => state.service.find_by_prefix(&op.0, prefix).await,
        (None, Some(device)) => state.service.find_by_device(&op.0, device).await,
        _ => {
            return Err(ApiError::validation(
                "give exactly one of ?prefix=<first 8 hex digits of the recovery key ID> or ?device=<computer name>",
            ));
        }
    }?;
    Ok(Json(KeyList { keys }).into_response())
}

pub async fn disclose(
    State(state): State<AppState>,
    op: Operator,
    PeerAddr(peer): PeerAddr,
    ApiPath(protector_id): ApiPath<String>,
    ApiJson(body): ApiJson<DiscloseBody>,
) -> Result<Response, ApiError> {
    rate_limit(&state, &op)?;
    let pid = parse_protector("protector_id", &protector_id)?;
    let reason: DisclosureReason = body
        .reason
        .parse()
        .map_err(|e: String| ApiError::validation(format!("reason: {e}")))?;
    let disclosure = state
        .service
        .disclose(
            &op.0,
            &pid,
            body.device_name.as_deref(),
            reason,
            body.reason_text.as_deref(),
            peer.map(|p| p.ip()),
        )
        .await?;
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
