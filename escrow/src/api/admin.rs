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
use crate::model::{DeviceFilter, PageRequest};

/// Longest enrollment-token lifetime (30 days): tokens are for a rollout, not standing secrets.
pub const MAX_ENROLLMENT_TTL: u64 = 30 * 86_400;

fn parse_id(field: &str, s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::validation(format!(
            "{field} {s:?} is not a valid id (a positive integer)"
        ))
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "operators",
    security(("bearerToken" = [])),
    summary = "Who am I",
    description = "The operator behind the bearer token.",
    responses(
        (status = 200, description = "identity", body = Me)
    )
)]
pub async fn me(op: Operator) -> Json<Me> {
    let (_, id, name) = op.0.audit_identity();
    Json(Me {
        id,
        name,
        role: op.0.role(),
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "devices",
    security(("bearerToken" = [])),
    summary = "List devices",
    description = "By device id, one page at a time (`limit`, `cursor`, `next`). Roles: admin, auditor.",
    params(DeviceQuery),
    responses(
        (status = 200, description = "devices", body = DeviceList),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody)
    )
)]
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
    let page = PageRequest {
        cursor: q.cursor,
        limit: q.limit,
    };
    let page = state
        .service
        .list_devices_page(&op.0, &filter, page)
        .await?;
    Ok(Json(DeviceList {
        devices: page.items,
        next: page.next,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/revoke",
    tag = "devices",
    security(("bearerToken" = [])),
    summary = "Revoke a device",
    description = "Its certificate stops working immediately; its keys are kept. Role: admin.",
    params(("id" = String, Path, description = "device id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 404, description = "no such device", body = ErrorBody)
    )
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/allow-reenroll",
    tag = "devices",
    security(("bearerToken" = [])),
    summary = "Allow re-enrollment",
    description = "The next enrollment of this computer name with a valid token may bind a new certificate (reinstalled server, new TPM). Role: admin.",
    params(("id" = String, Path, description = "device id")),
    responses(
        (status = 204, description = "allowed"),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 404, description = "no such device", body = ErrorBody)
    )
)]
pub async fn allow_reenroll(
    State(state): State<AppState>,
    op: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("device id", &id)?;
    state.service.allow_reenroll(&op.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/enrollment-tokens",
    tag = "devices",
    security(("bearerToken" = [])),
    summary = "Create an enrollment token",
    description = "Bounded uses and lifetime; the secret is in this answer only. Role: admin.",
    request_body = CreateEnrollmentToken,
    responses(
        (status = 201, description = "created", body = CreatedEnrollmentToken),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 413, description = "body larger than escrow.max_body_bytes", body = ErrorBody)
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/enrollment-tokens",
    tag = "devices",
    security(("bearerToken" = [])),
    summary = "List enrollment tokens",
    description = "Without secrets, by id, one page at a time. Role: admin.",
    params(PageQuery),
    responses(
        (status = 200, description = "tokens", body = EnrollmentTokenList),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody)
    )
)]
pub async fn list_enrollment_tokens(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<EnrollmentTokenList>, ApiError> {
    let page = state
        .service
        .list_enrollment_tokens_page(&op.0, q.into())
        .await?;
    Ok(Json(EnrollmentTokenList {
        tokens: page.items,
        next: page.next,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/enrollment-tokens/{id}/revoke",
    tag = "devices",
    security(("bearerToken" = [])),
    summary = "Revoke an enrollment token",
    description = "Role: admin.",
    params(("id" = String, Path, description = "token id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 404, description = "no such token", body = ErrorBody)
    )
)]
pub async fn revoke_enrollment_token(
    State(state): State<AppState>,
    op: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("enrollment token id", &id)?;
    state.service.revoke_enrollment_token(&op.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/operators",
    tag = "operators",
    security(("bearerToken" = [])),
    summary = "Create an operator",
    description = "Role: admin. Create a token for them with POST /tokens.",
    request_body = CreateOperator,
    responses(
        (status = 201, description = "created", body = OperatorInfo),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 409, description = "name taken", body = ErrorBody),
        (status = 413, description = "body larger than escrow.max_body_bytes", body = ErrorBody)
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/operators",
    tag = "operators",
    security(("bearerToken" = [])),
    summary = "List operators",
    description = "By id, one page at a time. Role: admin.",
    params(PageQuery),
    responses(
        (status = 200, description = "operators", body = OperatorList),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody)
    )
)]
pub async fn list_operators(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<OperatorList>, ApiError> {
    let page = state.service.list_operators_page(&op.0, q.into()).await?;
    Ok(Json(OperatorList {
        operators: page.items,
        next: page.next,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/operators/{id}/role",
    tag = "operators",
    security(("bearerToken" = [])),
    summary = "Change an operator's role",
    description = "Role: admin.",
    request_body = SetRole,
    params(("id" = String, Path, description = "operator id")),
    responses(
        (status = 204, description = "changed"),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 404, description = "no such operator", body = ErrorBody),
        (status = 413, description = "body larger than escrow.max_body_bytes", body = ErrorBody)
    )
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/operators/{id}/disable",
    tag = "operators",
    security(("bearerToken" = [])),
    summary = "Disable an operator",
    description = "Their tokens stop working. Role: admin.",
    params(("id" = String, Path, description = "operator id")),
    responses(
        (status = 204, description = "disabled"),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 404, description = "no such operator", body = ErrorBody)
    )
)]
pub async fn disable_operator(
    State(state): State<AppState>,
    op: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("operator id", &id)?;
    state.service.disable_operator(&op.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "operators",
    security(("bearerToken" = [])),
    summary = "Create an API token",
    description = "Personal token for an operator; stored only as a hash, the secret is in this answer only. Role: admin.",
    request_body = CreateApiToken,
    responses(
        (status = 201, description = "created", body = CreatedApiToken),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 404, description = "no such operator", body = ErrorBody),
        (status = 413, description = "body larger than escrow.max_body_bytes", body = ErrorBody)
    )
)]
pub async fn create_api_token(
    State(state): State<AppState>,
    op: Operator,
    ApiJson(body): ApiJson<CreateApiToken>,
) -> Result<Response, ApiError> {
    if let Some(ttl) = body.ttl_seconds
        && !(60..=10 * 365 * 86_400).contains(&ttl)
    {
        return Err(ApiError::validation(
            "ttl_seconds must be between 60 and 315360000 (10 years), or omitted for the default lifetime",
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

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "operators",
    security(("bearerToken" = [])),
    summary = "List API tokens",
    description = "Every operator's personal tokens (or one operator's), without secrets or hashes, by id, one page at a time: find a leaked token by its id, owner and age, then revoke it. Role: admin.",
    params(ApiTokenQuery),
    responses(
        (status = 200, description = "tokens", body = ApiTokenList),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody)
    )
)]
pub async fn list_api_tokens(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<ApiTokenQuery>,
) -> Result<Json<ApiTokenList>, ApiError> {
    let page = PageRequest {
        cursor: q.cursor,
        limit: q.limit,
    };
    let page = state
        .service
        .list_api_tokens_page(&op.0, q.operator_id, page)
        .await?;
    Ok(Json(ApiTokenList {
        tokens: page.items,
        next: page.next,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens/{id}/revoke",
    tag = "operators",
    security(("bearerToken" = [])),
    summary = "Revoke an API token",
    description = "Role: admin.",
    params(("id" = String, Path, description = "token id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 404, description = "no such token", body = ErrorBody)
    )
)]
pub async fn revoke_api_token(
    State(state): State<AppState>,
    op: Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("token id", &id)?;
    state.service.revoke_api_token(&op.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
