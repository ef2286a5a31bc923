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
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// Default window of the Network Unlock fleet report; None when no unlock outcomes are recorded.
    pub unlock_window_days: Option<u32>,
}

impl AppState {
    /// The Network Unlock fleet report's window: the daemon's setting, or the default when this
    /// appliance records no unlock outcomes (others sharing the database may).
    pub fn unlock_window(&self) -> u32 {
        self.unlock_window_days
            .unwrap_or(crate::model::DEFAULT_UNLOCK_WINDOW_DAYS)
    }
}

/// Every route of the API, each registered together with the OpenAPI operation that documents
/// it (`#[utoipa::path]` on the handler): the served routes and the document cannot drift apart.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(openapi))
        .routes(routes!(admin::me))
        .routes(routes!(agent::enroll))
        .routes(routes!(agent::escrow))
        .routes(routes!(agent::check_in))
        .routes(routes!(agent::rotation))
        .routes(routes!(agent::own_keys))
        .routes(routes!(keys::find))
        .routes(routes!(keys::disclose))
        .routes(routes!(reports::audit))
        .routes(routes!(reports::fleet))
        .routes(routes!(reports::unlocks))
        .routes(routes!(reports::verify))
        .routes(routes!(admin::list_devices))
        .routes(routes!(admin::revoke_device))
        .routes(routes!(admin::allow_reenroll))
        .routes(routes!(
            admin::list_enrollment_tokens,
            admin::create_enrollment_token
        ))
        .routes(routes!(admin::revoke_enrollment_token))
        .routes(routes!(admin::list_operators, admin::create_operator))
        .routes(routes!(admin::set_operator_role))
        .routes(routes!(admin::disable_operator))
        .routes(routes!(admin::list_api_tokens, admin::create_api_token))
        .routes(routes!(admin::revoke_api_token))
}

/// Builds the router; `max_body_bytes` bounds every request body (413 beyond it).
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let (api, _) = routes().split_for_parts();
    api.fallback(error::not_found)
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

#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "meta",
    security(()),
    summary = "Liveness",
    description = "Always 200 while the server runs.",
    responses((status = 200, description = "running", body = wire::Health))
)]
async fn health() -> axum::Json<wire::Health> {
    axum::Json(wire::Health {
        status: "ok".into(),
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    security(()),
    summary = "This document",
    description = "The OpenAPI 3.1 description of the API (identical to docs/openapi.json).",
    responses((status = 200, description = "OpenAPI document", body = Object))
)]
async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
        .into_response()
}

/// Answers given without reading the request body: authentication (401) runs before the body
/// extractor, and 413/415 refuse the body unread.
fn answers_before_body(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
    )
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
    let mut resp = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "the server did not finish this request within its request_timeout; nothing was changed unless a later read shows it, retry",
        )
        .into_response(),
    };
    if answers_before_body(resp.status()) {
        // The body may still be unread on the wire: say the connection ends instead of letting
        // the client send its next request into a socket the server is about to drop.
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
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
