//! The /api/v1 HTTP surface: routes, shared state, and the per-request middleware (timeout,
//! metrics by route template, one log line per request naming route/status/actor/outcome).

mod admin;
mod agent;
pub mod auth;
pub mod csv;
pub mod error;
mod keys;
pub mod ratelimit;
pub(crate) mod reports;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::metrics::{EscrowMetrics, outcome_label};
use crate::service::EscrowService;
use auth::LogCtx;
use error::ApiError;
use ratelimit::RateLimiter;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub service: EscrowService,
    pub metrics: EscrowMetrics,
    pub limiter: Arc<RateLimiter>,
    pub request_timeout: Duration,
    pub stale_after: Duration,
}

/// Every (method, path template) the API serves; the OpenAPI document must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/health"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/me"),
    ("post", "/api/v1/enroll"),
    ("post", "/api/v1/agent/escrow"),
    ("post", "/api/v1/agent/checkin"),
    ("post", "/api/v1/agent/rotation"),
    ("get", "/api/v1/agent/keys"),
    ("get", "/api/v1/keys"),
    ("post", "/api/v1/keys/{protector_id}/disclose"),
    ("get", "/api/v1/reports/audit"),
    ("get", "/api/v1/reports/fleet"),
    ("get", "/api/v1/audit/verify"),
    ("get", "/api/v1/devices"),
    ("post", "/api/v1/devices/{id}/revoke"),
    ("post", "/api/v1/devices/{id}/allow-reenroll"),
    ("get", "/api/v1/enrollment-tokens"),
    ("post", "/api/v1/enrollment-tokens"),
    ("post", "/api/v1/enrollment-tokens/{id}/revoke"),
    ("get", "/api/v1/operators"),
    ("post", "/api/v1/operators"),
    ("post", "/api/v1/operators/{id}/role"),
    ("post", "/api/v1/operators/{id}/disable"),
    ("post", "/api/v1/tokens"),
    ("post", "/api/v1/tokens/{id}/revoke"),
];

/// Builds the router; `max_body_bytes` bounds every request body (413 beyond it).
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/me", get(admin::me))
        .route("/api/v1/enroll", post(agent::enroll))
        .route("/api/v1/agent/escrow", post(agent::escrow))
        .route("/api/v1/agent/checkin", post(agent::check_in))
        .route("/api/v1/agent/rotation", post(agent::rotation))
        .route("/api/v1/agent/keys", get(agent::own_keys))
        .route("/api/v1/keys", get(keys::find))
        .route("/api/v1/keys/{protector_id}/disclose", post(keys::disclose))
        .route("/api/v1/reports/audit", get(reports::audit))
        .route("/api/v1/reports/fleet", get(reports::fleet))
        .route("/api/v1/audit/verify", get(reports::verify))
        .route("/api/v1/devices", get(admin::list_devices))
        .route("/api/v1/devices/{id}/revoke", post(admin::revoke_device))
        .route(
            "/api/v1/devices/{id}/allow-reenroll",
            post(admin::allow_reenroll),
        )
        .route(
            "/api/v1/enrollment-tokens",
            get(admin::list_enrollment_tokens).post(admin::create_enrollment_token),
        )
        .route(
            "/api/v1/enrollment-tokens/{id}/revoke",
            post(admin::revoke_enrollment_token),
        )
        .route(
            "/api/v1/operators",
            get(admin::list_operators).post(admin::create_operator),
        )
        .route(
            "/api/v1/operators/{id}/role",
            post(admin::set_operator_role),
        )
        .route(
            "/api/v1/operators/{id}/disable",
            post(admin::disable_operator),
        )
        .route("/api/v1/tokens", post(admin::create_api_token))
        .route("/api/v1/tokens/{id}/revoke", post(admin::revoke_api_token))
        .fallback(error::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that HTTP method; see GET /api/v1/openapi.json",
    )
}

async fn health() -> axum::Json<wire::Health> {
    axum::Json(wire::Health {
        status: "ok".into(),
    })
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
        .into_response()
}

/// Timeout, metrics and the request log line. Never logs bodies, headers or query strings
/// (a query may carry a device name, which is fine, but bodies carry secrets).
async fn observe(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = matched
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let ctx = LogCtx::default();
    req.extensions_mut().insert(ctx.clone());
    let started = Instant::now();
    let resp = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "the server did not finish this request within its request_timeout; nothing was changed unless a later read shows it, retry",
        )
        .into_response(),
    };
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    state.metrics.observe(&route, status, elapsed.as_secs_f64());
    let outcome = outcome_label(status);
    let actor = ctx.get();
    if status >= 500 {
        tracing::warn!(%method, route, status, actor, outcome, ms = elapsed.as_millis() as u64, "escrow request");
    } else {
        tracing::info!(%method, route, status, actor, outcome, ms = elapsed.as_millis() as u64, "escrow request");
    }
    resp
}

#[cfg(test)]
mod tests;
