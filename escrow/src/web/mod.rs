//! The help-desk web console: server-rendered pages (askama templates under `templates/console/`)
//! on the escrow HTTPS listener at `/`, beside `/api/v1`. It calls the service layer only, as the
//! API does. Sessions are server-side ([`session`]), every state-changing form carries a CSRF token,
//! and every response carries a strict Content-Security-Policy (no inline script) and `no-store`.

mod assets;
pub mod chart;
pub mod csrf;
mod error;
mod pages;
mod render;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::ratelimit::RateLimiter;
use crate::directory::Directory;
use crate::metrics::EscrowMetrics;
use crate::service::{EscrowService, SessionPolicy};

pub use error::PageError;
pub use render::counted_title;
pub use session::{CSRF_FIELD, PRE_COOKIE, SESSION_COOKIE};

/// Console settings (`[console]` in the daemon configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleSettings {
    pub enabled: bool,
    pub sessions: SessionPolicy,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            sessions: SessionPolicy::default(),
        }
    }
}

/// What console handlers share; cheap to clone.
#[derive(Clone)]
pub struct WebState {
    pub service: EscrowService,
    pub metrics: EscrowMetrics,
    /// The API's per-operator limiter: lookups through the console and the API share one budget.
    pub limiter: Arc<RateLimiter>,
    pub sessions: SessionPolicy,
    pub request_timeout: Duration,
    pub stale_after: Duration,
    /// Days without a Network Unlock before the fleet report lists a device; None when the daemon
    /// records no unlock outcomes (the report then leaves those lists out).
    pub unlock_window_days: Option<u32>,
    /// `[directory]`: when set, the sign-in page also takes a directory user name and password.
    pub directory: Option<Directory>,
}

impl WebState {
    /// As [`crate::api::AppState::unlock_window`].
    pub fn unlock_window(&self) -> u32 {
        self.unlock_window_days
            .unwrap_or(crate::model::DEFAULT_UNLOCK_WINDOW_DAYS)
    }
}

/// Every (method, path template) the console serves.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/sign-in"),
    ("post", "/sign-in"),
    ("post", "/sign-in/directory"),
    ("post", "/sign-out"),
    ("get", "/recovery"),
    ("post", "/recovery/disclose"),
    ("get", "/tpm"),
    ("post", "/tpm"),
    ("get", "/dashboard"),
    ("get", "/devices"),
    ("get", "/devices/{id}"),
    ("post", "/devices/{id}/revoke"),
    ("post", "/devices/{id}/allow-reenroll"),
    ("get", "/reports/audit"),
    ("get", "/reports/audit.csv"),
    ("get", "/reports/fleet"),
    ("get", "/admin"),
    ("post", "/admin/operators"),
    ("post", "/admin/operators/{id}/role"),
    ("post", "/admin/operators/{id}/disable"),
    ("get", "/admin/tokens"),
    ("post", "/admin/tokens"),
    ("post", "/admin/tokens/revoke"),
    ("post", "/admin/enrollment-tokens"),
    ("post", "/admin/enrollment-tokens/{id}/revoke"),
    ("get", "/static/console.css"),
    ("get", "/static/console.js"),
];

/// The console's routes (no fallback: the API router owns it when the two are merged).
pub fn router(state: WebState) -> Router {
    use pages::*;
    Router::new()
        .route("/", get(home::home))
        .route("/sign-in", get(signin::form).post(signin::submit))
        .route("/sign-in/directory", post(signin::submit_directory))
        .route("/sign-out", post(signin::sign_out))
        .route("/recovery", get(recovery::page))
        .route("/recovery/disclose", post(recovery::disclose))
        .route("/tpm", get(tpm::page).post(tpm::disclose))
        .route("/dashboard", get(dashboard::page))
        .route("/devices", get(devices::list))
        .route("/devices/{id}", get(devices::show))
        .route("/devices/{id}/revoke", post(devices::revoke))
        .route(
            "/devices/{id}/allow-reenroll",
            post(devices::allow_reenroll),
        )
        .route("/reports/audit", get(reports::audit))
        .route("/reports/audit.csv", get(reports::audit_csv))
        .route("/reports/fleet", get(fleet::fleet))
        .route("/admin", get(admin::page))
        .route("/admin/operators", post(admin::create_operator))
        .route("/admin/operators/{id}/role", post(admin::set_role))
        .route(
            "/admin/operators/{id}/disable",
            post(admin::disable_operator),
        )
        .route(
            "/admin/tokens",
            get(admin::tokens).post(admin::create_token),
        )
        .route("/admin/tokens/revoke", post(admin::revoke_token))
        .route(
            "/admin/enrollment-tokens",
            post(admin::create_enrollment_token),
        )
        .route(
            "/admin/enrollment-tokens/{id}/revoke",
            post(admin::revoke_enrollment_token),
        )
        .route("/static/console.css", get(assets::css))
        .route("/static/console.js", get(assets::js))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The Content-Security-Policy of every console response: nothing inline, nothing foreign, no
/// framing, forms only to this origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers, timeout, metrics and a log line, for every console request.
async fn observe(
    State(state): State<WebState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let route = matched
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let started = Instant::now();
    let mut resp = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => PageError::Unavailable(
            "The server took too long to answer. Nothing was changed unless the page shows it; try again."
                .into(),
        )
        .into_response(),
    };
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    set(
        h,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if !route.starts_with("/static/") {
        // Pages can show secrets and who saw them: never cached, not even by the browser's history.
        set(h, header::CACHE_CONTROL, "no-store");
    }
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    state.metrics.observe(&route, status, elapsed.as_secs_f64());
    tracing::info!(%method, route, status, ms = elapsed.as_millis() as u64, "console request");
    resp
}

#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod tests;
