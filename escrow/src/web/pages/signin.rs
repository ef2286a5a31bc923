//! Sign-in with an operator API token, and sign-out. The token travels only in a POST body; the
//! browser gets a session cookie instead. Failed sign-ins are rate-limited per client address.

use std::time::Instant;

use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::Deserialize;

use crate::sealing::random32;
use crate::web::error::PageError;
use crate::web::render::html_status;
use crate::web::session::{
    CSRF_FIELD, PRE_COOKIE, Posted, SESSION_COOKIE, cookie, form_body, form_field, peer_ip,
    set_cookie,
};
use crate::web::{WebState, csrf};

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SignIn {
    csrf: String,
    notice: Option<&'static str>,
    error: Option<String>,
    idle_minutes: u64,
    absolute_hours: u64,
    /// Whether `[directory]` is set: then the page offers the directory form first.
    directory: bool,
    /// The directory user name to show again after a refusal (never the password).
    user_name: String,
}

#[derive(Debug, Deserialize)]
pub struct Why {
    why: Option<String>,
}

fn notice(why: Option<&str>) -> Option<&'static str> {
    match why? {
        "expired" => Some(
            "Your session ended because it was idle too long or reached its time limit. Please sign in again.",
        ),
        "disabled" => Some("Your account has been disabled; ask an administrator."),
        "signed-out" => Some("You are signed out."),
        "unknown" => Some("Your session is no longer valid. Please sign in again."),
        _ => None,
    }
}

/// Renders the form with a fresh double-submit value (cookie + hidden field).
fn render(
    state: &WebState,
    status: StatusCode,
    notice: Option<&'static str>,
    error: Option<String>,
) -> Result<Response, PageError> {
    render_with(state, status, notice, error, String::new())
}

fn render_with(
    state: &WebState,
    status: StatusCode,
    notice: Option<&'static str>,
    error: Option<String>,
    user_name: String,
) -> Result<Response, PageError> {
    let value = B64URL.encode(random32().map_err(|_| PageError::Internal)?.as_slice());
    let page = SignIn {
        csrf: value.clone(),
        notice,
        error,
        idle_minutes: state.sessions.idle.as_secs() / 60,
        absolute_hours: state.sessions.absolute.as_secs() / 3600,
        directory: state.directory.is_some(),
        user_name,
    };
    let mut r = html_status(status, &page)?;
    set_cookie(&mut r, PRE_COOKIE, &value, Some(3600));
    Ok(r)
}

pub async fn form(
    State(state): State<WebState>,
    Query(q): Query<Why>,
) -> Result<Response, PageError> {
    render(&state, StatusCode::OK, notice(q.why.as_deref()), None)
}

pub async fn submit(State(state): State<WebState>, req: Request) -> Result<Response, PageError> {
    let (parts, body): (Parts, _) = req.into_parts();
    let bytes = form_body(body).await?;
    let pre = cookie(&parts.headers, PRE_COOKIE);
    let submitted = form_field(&bytes, CSRF_FIELD).unwrap_or_default();
    if !csrf::verify_double_submit(pre.as_deref(), &submitted) {
        return Err(PageError::Csrf);
    }
    let peer = peer_ip(&parts);
    let key = format!("signin:{}", peer.map(|p| p.to_string()).unwrap_or_default());
    if let Err(wait) = state.limiter.check(&key, Instant::now()) {
        return Err(PageError::RateLimited(wait.as_secs().max(1)));
    }
    let token = zeroize::Zeroizing::new(form_field(&bytes, "token").unwrap_or_default());
    match state
        .service
        .console_sign_in_with_token(&token, &state.sessions, peer)
        .await?
    {
        Some((actor, secret)) => {
            tracing::info!(operator = %actor.audit_identity().2, "console sign-in");
            let mut r = Redirect::to("/").into_response();
            set_cookie(&mut r, SESSION_COOKIE, &secret, None);
            set_cookie(&mut r, PRE_COOKIE, "", Some(0));
            Ok(r)
        }
        None => {
            tracing::warn!(client = ?peer, "console sign-in refused: unknown, expired or revoked token");
            render(
                &state,
                StatusCode::UNAUTHORIZED,
                None,
                Some("That token was not accepted: it may be mistyped, expired or revoked, or your account may be disabled. Ask an administrator for a new token.".into()),
            )
        }
    }
}

/// The directory form: user name + password, checked by the directory (LDAP bind); the role comes
/// from the person's groups, re-read at every sign-in. Every outcome is audited by the service.
pub async fn submit_directory(
    State(state): State<WebState>,
    req: Request,
) -> Result<Response, PageError> {
    let (parts, body): (Parts, _) = req.into_parts();
    let bytes = form_body(body).await?;
    let pre = cookie(&parts.headers, PRE_COOKIE);
    let submitted = form_field(&bytes, CSRF_FIELD).unwrap_or_default();
    if !csrf::verify_double_submit(pre.as_deref(), &submitted) {
        return Err(PageError::Csrf);
    }
    let Some(directory) = state.directory.as_ref() else {
        return Err(PageError::NotFound(
            "Directory sign-in is not set up on this server; sign in with your operator token."
                .into(),
        ));
    };
    let peer = peer_ip(&parts);
    // One budget with token sign-ins: password guessing is throttled per client address too.
    let key = format!("signin:{}", peer.map(|p| p.to_string()).unwrap_or_default());
    if let Err(wait) = state.limiter.check(&key, Instant::now()) {
        return Err(PageError::RateLimited(wait.as_secs().max(1)));
    }
    let user_name = form_field(&bytes, "username")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let password = zeroize::Zeroizing::new(form_field(&bytes, "password").unwrap_or_default());
    if user_name.is_empty() || password.is_empty() {
        return render_with(
            &state,
            StatusCode::BAD_REQUEST,
            None,
            Some("Enter your user name and your password.".into()),
            user_name,
        );
    }
    match state
        .service
        .sign_in_directory(directory, &user_name, &password, peer)
        .await
    {
        Ok(signed_in) => {
            let secret = state
                .service
                .console_start_session(&signed_in.actor, "directory", &state.sessions, peer)
                .await?;
            tracing::info!(operator = %signed_in.operator.name, role = ?signed_in.operator.role, "console sign-in (directory)");
            let mut r = Redirect::to("/").into_response();
            set_cookie(&mut r, SESSION_COOKIE, &secret, None);
            set_cookie(&mut r, PRE_COOKIE, "", Some(0));
            Ok(r)
        }
        Err(crate::error::EscrowError::SignInRefused) => {
            // The person learns only "refused" (no hint whether the name exists); the audit
            // record says why.
            tracing::warn!(client = ?peer, user = %user_name, "console directory sign-in refused");
            render_with(
                &state,
                StatusCode::UNAUTHORIZED,
                None,
                Some("Sign-in failed: the user name or password is not correct, or your account is not allowed to use this console (it must be in a help-desk, auditor or administrator group). Check the spelling and Caps Lock, then try again.".into()),
                user_name,
            )
        }
        Err(crate::error::EscrowError::DirectoryUnavailable(e)) => {
            tracing::warn!(client = ?peer, error = %e, "console directory sign-in: directory unavailable");
            render_with(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                Some("The directory cannot be reached just now, so your password cannot be checked. Try again in a minute, or sign in with your operator token.".into()),
                user_name,
            )
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct Nothing {}

pub async fn sign_out(
    State(state): State<WebState>,
    Posted(s, Nothing {}): Posted<Nothing>,
) -> Result<Response, PageError> {
    state.service.console_sign_out(s.secret(), s.peer).await?;
    let mut r = Redirect::to("/sign-in?why=signed-out").into_response();
    set_cookie(&mut r, SESSION_COOKIE, "", Some(0));
    Ok(r)
}
