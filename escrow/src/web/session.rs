//! Console request extractors: `Session` (the signed-in operator, from the session cookie) and
//! `Posted<T>` (a form POST from a signed-in operator whose CSRF token has been checked before the
//! form is even parsed), plus the cookie helpers.

use std::net::IpAddr;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::error::PageError;
use super::{WebState, csrf};
use crate::api::auth::ConnInfo;
use crate::model::{Actor, Role};

/// The session cookie. `__Host-` makes browsers insist on Secure, Path=/ and no Domain.
pub const SESSION_COOKIE: &str = "__Host-nu_session";
/// The sign-in form's double-submit cookie (there is no session to bind a token to yet).
pub const PRE_COOKIE: &str = "__Host-nu_signin";
/// The hidden form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// Largest form body accepted (the biggest form is a few short fields).
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The value of cookie `name` in the request, if any.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// `Set-Cookie` for a cookie that only this origin's HTTPS pages send back, never readable by
/// script. `max_age = Some(0)` deletes it; None makes it last until the browser closes (the server
/// enforces the real timeouts).
pub fn set_cookie(resp: &mut Response, name: &str, value: &str, max_age: Option<u64>) {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    let v = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{age}");
    if let Ok(h) = HeaderValue::from_str(&v) {
        resp.headers_mut().append(SET_COOKIE, h);
    }
}

/// The TCP peer's address (for audit records and the sign-in rate limit).
pub fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnInfo>().map(|c| c.peer.ip())
}

/// A signed-in operator.
pub struct Session {
    pub actor: Actor,
    secret: Zeroizing<String>,
    pub peer: Option<IpAddr>,
}

impl Session {
    pub fn role(&self) -> Option<Role> {
        self.actor.role()
    }
    /// The CSRF token to put in this session's forms.
    pub fn csrf(&self) -> String {
        csrf::token_for(&self.secret)
    }
    pub fn secret(&self) -> &str {
        &self.secret
    }
    /// Refuses unless the operator holds one of `roles`; `what` names the page for the message.
    pub fn require(&self, roles: &[Role], what: &str) -> Result<Role, PageError> {
        match self.role() {
            Some(r) if roles.contains(&r) => Ok(r),
            r => Err(PageError::Forbidden(format!(
                "Your role ({}) cannot open {what}. It needs the {} role; ask an administrator if you need access.",
                r.map(|r| r.as_str()).unwrap_or("none"),
                roles
                    .iter()
                    .map(Role::as_str)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))),
        }
    }
}

impl FromRequestParts<WebState> for Session {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, PageError> {
        let secret =
            Zeroizing::new(cookie(&parts.headers, SESSION_COOKIE).ok_or(PageError::SignIn(None))?);
        match state
            .service
            .console_session(&secret, &state.sessions)
            .await?
        {
            Ok(actor) => Ok(Self {
                actor,
                secret,
                peer: peer_ip(parts),
            }),
            Err(end) => Err(PageError::SignIn(Some(end))),
        }
    }
}

/// A form POST by a signed-in operator, CSRF token checked.
pub struct Posted<T>(pub Session, pub T);

/// Reads a form body (bounded).
pub async fn form_body(body: axum::body::Body) -> Result<axum::body::Bytes, PageError> {
    axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            PageError::BadInput("The form was too large or was cut off; try again.".into())
        })
}

/// The value of `field` in an url-encoded form body.
pub fn form_field(body: &[u8], field: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v)
}

impl<T: DeserializeOwned> FromRequest<WebState> for Posted<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &WebState) -> Result<Self, PageError> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let bytes = form_body(body).await?;
        let token = form_field(&bytes, CSRF_FIELD).unwrap_or_default();
        if !csrf::verify(session.secret(), &token) {
            tracing::warn!(
                operator = %session.actor.audit_identity().2,
                path = %parts.uri.path(),
                "console form refused: missing or wrong CSRF token"
            );
            return Err(PageError::Csrf);
        }
        let form = serde_urlencoded::from_bytes::<T>(&bytes).map_err(|e| {
            PageError::BadInput(format!(
                "The form is incomplete or malformed ({e}); go back and fill it in again."
            ))
        })?;
        Ok(Self(session, form))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; __Host-nu_session=nus_x ; b=2"),
        );
        h.append(COOKIE, HeaderValue::from_static("c=3"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("nus_x"));
        assert_eq!(cookie(&h, "c").as_deref(), Some("3"));
        assert_eq!(cookie(&h, "nu_session"), None);
        assert_eq!(cookie(&HeaderMap::new(), "a"), None);
    }

    #[test]
    fn form_fields() {
        assert_eq!(
            form_field(b"csrf=a%2Bb&x=1", "csrf").as_deref(),
            Some("a+b")
        );
        assert_eq!(form_field(b"x=1", "csrf"), None);
        assert_eq!(form_field(b"", "csrf"), None);
    }

    #[test]
    fn cookies_are_host_only_secure_and_strict() {
        let mut r = Response::new(axum::body::Body::empty());
        set_cookie(&mut r, SESSION_COOKIE, "v", None);
        set_cookie(&mut r, PRE_COOKIE, "", Some(0));
        let all: Vec<_> = r.headers().get_all(SET_COOKIE).iter().collect();
        assert_eq!(
            all[0],
            "__Host-nu_session=v; Path=/; Secure; HttpOnly; SameSite=Strict"
        );
        assert!(all[1].to_str().unwrap_or("").ends_with("Max-Age=0"));
    }
}
