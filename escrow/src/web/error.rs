//! What a console request can fail with, shown as a page a help-desk person understands (the
//! details of internal failures stay in the server log).

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::session::{SESSION_COOKIE, set_cookie};
use crate::error::EscrowError;
use crate::service::SessionEnd;

#[derive(Debug)]
pub enum PageError {
    /// Not signed in (None), or the session ended: go to the sign-in page.
    SignIn(Option<SessionEnd>),
    /// The role does not allow this page or action.
    Forbidden(String),
    /// A form without this session's CSRF token.
    Csrf,
    /// Input the help desk must correct.
    BadInput(String),
    /// Nothing matches.
    NotFound(String),
    /// Refused by the rules (conflict, gone).
    Refused(String),
    /// Too many lookups; the wait in seconds.
    RateLimited(u64),
    /// The database or a dependency is unavailable.
    Unavailable(String),
    /// A bug or an internal failure (logged).
    Internal,
}

impl From<EscrowError> for PageError {
    fn from(e: EscrowError) -> Self {
        match e {
            EscrowError::Validation(m) => Self::BadInput(capitalise(&m)),
            EscrowError::Unauthorized => Self::SignIn(None),
            EscrowError::SignInRefused => Self::Forbidden(
                "The sign-in was refused: check the user name and password, or ask an administrator whether your account is in a BitLocker role group.".into(),
            ),
            EscrowError::DirectoryUnavailable(m) => Self::Unavailable(capitalise(&m)),
            EscrowError::Forbidden(m) => Self::Forbidden(capitalise(&m)),
            EscrowError::NotFound(m) => Self::NotFound(capitalise(&m)),
            EscrowError::Conflict(m) | EscrowError::Gone(m) => Self::Refused(capitalise(&m)),
            EscrowError::Storage(detail) => {
                tracing::error!(error = %detail, "console: escrow database failure");
                Self::Unavailable(
                    "The key database is not answering. Try again in a minute; if it keeps happening, call the appliance administrator."
                        .into(),
                )
            }
            EscrowError::Crypto(detail) | EscrowError::Io(detail) => {
                tracing::error!(error = %detail, "console: internal failure");
                Self::Internal
            }
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

impl PageError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::SignIn(_) => StatusCode::SEE_OTHER,
            Self::Forbidden(_) | Self::Csrf => StatusCode::FORBIDDEN,
            Self::BadInput(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Refused(_) => StatusCode::CONFLICT,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// (heading, message) for the error page.
    pub fn words(&self) -> (&'static str, String) {
        match self {
            Self::SignIn(_) => ("Sign in", "Please sign in.".into()),
            Self::Forbidden(m) => ("Not allowed", m.clone()),
            Self::Csrf => (
                "This form has expired",
                "The form was not sent from a current page of this console (it may have been open too long, or sent by another site). Nothing was changed. Go back, reload the page and try again.".into(),
            ),
            Self::BadInput(m) => ("Please check what you entered", m.clone()),
            Self::NotFound(m) => ("Not found", m.clone()),
            Self::Refused(m) => ("That cannot be done", m.clone()),
            Self::RateLimited(s) => (
                "Too many lookups",
                format!("You have looked up or revealed many keys in a short time. Wait {s} seconds, then try again."),
            ),
            Self::Unavailable(m) => ("Service unavailable", m.clone()),
            Self::Internal => (
                "Something went wrong",
                "The console hit an internal error; nothing was revealed. Try again, and if it keeps happening call the appliance administrator (the details are in the server log).".into(),
            ),
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    heading: &'static str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if let Self::SignIn(end) = &self {
            let why = match end {
                None => "",
                Some(SessionEnd::Unknown) => "?why=unknown",
                Some(SessionEnd::Expired) => "?why=expired",
                Some(SessionEnd::Disabled) => "?why=disabled",
            };
            let mut r = Redirect::to(&format!("/sign-in{why}")).into_response();
            if end.is_some() {
                set_cookie(&mut r, SESSION_COOKIE, "", Some(0));
            }
            return r;
        }
        let (heading, message) = self.words();
        let status = self.status();
        let page = ErrorPage { heading, message };
        let mut resp = match page.render() {
            Ok(body) => (status, Html(body)).into_response(),
            Err(_) => (status, format!("{heading}: {}", page.message)).into_response(),
        };
        if let Self::RateLimited(s) = self
            && let Ok(v) = s.to_string().parse()
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
