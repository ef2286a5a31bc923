//! Administration routes: devices, enrollment tokens, operators, API tokens. The service checks
//! the role of every call; these handlers only translate between JSON and the service.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Operator;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::wire::*;
use crate::model::DeviceFilter;

/// Longest enrollment-token lifetime (30 days): tokens are for a rollout, not standing secrets.
pub const MAX_ENROLLMENT_TTL: u64 = 30 * 86_400;

fn parse_id(field: &str, s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::validation(format!(
            "{field} {s:?} is not a valid id (a positive integer)"
        ))
    })
}

pub async fn me(op: Operator) -> Json<Me> {
    let (_, id, name) = op.0.audit_identity();
    Json(Me {
        id,
        name,
        role: op.0.role(),
    })
}

pub async fn list_devices(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<DeviceQuery>,
) -> Result<Json<DeviceList>, ApiError> {
    let filter = DeviceFilter {
        name_contains: q.name,
        include_revoked: q.include_revoked.unwrap_or(false),
        stale_for_secs: q.stale_days.map(|d| u64::from(d) * 86_400),
    };
    let devices = state.service.list_devices(&op.0, filter).await?;
    Ok(Json(DeviceList { devices }))
}

pub async fn revoke_device(
    State(state): State<AppState>,
    op: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("device id", &id)?;
    state.service.revoke_device(&op.0, id).await?;
    tracing::info!(device_id = id, "device revoked");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn allow_reenroll(
    State(state): State<AppState>,
    op: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("device id", &id)?;
    state.service.allow_reenroll(&op.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_enrollment_token(
    State(state): State<AppState>,
    op: Operator,
    ApiJson(body): ApiJson<CreateEnrollmentToken>,
) -> Result<Response, ApiError> {
    if body.max_uses == 0 || body.max_uses > 100_000 {
        return Err(ApiError::validation(
            "max_uses must be between 1 and 100000",
        ));
    }
    if !(1..=MAX_ENROLLMENT_TTL).contains(&body.ttl_seconds) {
        return Err(ApiError::validation(format!(
            "ttl_seconds must be between 1 and {MAX_ENROLLMENT_TTL} (30 days)"
        )));
    }
    let (info, token) = state
        .service
        .create_enrollment_token(
            &op.0,
            body.max_uses,
            Duration::from_secs(body.ttl_seconds),
            body.note,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollmentToken { info, token }),
    )
        .into_response())
}

pub async fn list_enrollment_tokens(
    State(state): State<AppState>,
    op: Operator,
) -> Result<Json<EnrollmentTokenList>, ApiError> {
    let tokens = state.service.list_enrollment_tokens(&op.0).await?;
    Ok(Json(EnrollmentTokenList { tokens }))
}

pub async fn revoke_enrollment_token(
    State(state): State<AppState>,
    op: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("enrollment token id", &id)?;
    state.service.revoke_enrollment_token(&op.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_operator(
    State(state): State<AppState>,
    op: Operator,
    ApiJson(body): ApiJson<CreateOperator>,
) -> Result<Response, ApiError> {
    let info = state
        .service
        .create_operator(&op.0, body.name.trim(), body.role)
        .await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

pub async fn list_operators(
    State(state): State<AppState>,
    op: Operator,
) -> Result<Json<OperatorList>, ApiError> {
    let operators = state.service.list_operators(&op.0).await?;
    Ok(Json(OperatorList { operators }))
}

pub async fn set_operator_role(
    State(state): State<AppState>,
    op: Operator,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SetRole>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("operator id", &id)?;
    let role = body
        .role
        .parse()
        .map_err(|e: String| ApiError::validation(format!("role: {e}")))?;
    state.service.set_operator_role(&op.0, id, role).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn disable_operator(
    State(state): State<AppState>,
    op: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("operator id", &id)?;
    state.service.disable_operator(&op.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_api_token(
    State(state): State<AppState>,
    op: Operator,
    ApiJson(body): ApiJson<CreateApiToken>,
) -> Result<Response, ApiError> {
    if let Some(ttl) = body.ttl_seconds
        && !(60..=10 * 365 * 86_400).contains(&ttl)
    {
        return Err(ApiError::validation(
            "ttl_seconds must be between 60 and 315360000 (10 years), or omitted for no expiry",
        ));
    }
    let (info, token) = state
        .service
        .create_api_token(
            &op.0,
            body.operator_id,
            body.ttl_seconds.map(Duration::from_secs),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedApiToken { info, token })).into_response())
}

pub async fn revoke_api_token(
    State(state): State<AppState>,
    op: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("token id", &id)?;
    state.service.revoke_api_token(&op.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
