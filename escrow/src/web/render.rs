//! Turning askama templates into responses, and the navigation every signed-in page shows.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use time::OffsetDateTime;
use time::macros::format_description;

use super::error::PageError;
use super::session::Session;
use crate::model::Role;

/// The header of every signed-in page: who is signed in, the links their role may use, and the
/// CSRF token of the sign-out form.
#[derive(Clone, Debug)]
pub struct Nav {
    pub name: String,
    pub role: &'static str,
    pub csrf: String,
    /// Which section is current (for `aria-current`): "recovery", "tpm", "devices", "reports", "admin".
    pub current: &'static str,
    pub recover: bool,
    pub devices: bool,
    pub reports: bool,
    pub admin: bool,
}

impl Nav {
    pub fn new(s: &Session, current: &'static str) -> Self {
        let role = s.role();
        let is = |roles: &[Role]| role.is_some_and(|r| roles.contains(&r));
        Self {
            name: s.actor.audit_identity().2,
            role: role.map(|r| r.as_str()).unwrap_or("none"),
            csrf: s.csrf(),
            current,
            recover: is(&[Role::Admin, Role::Helpdesk]),
            devices: is(&[Role::Admin, Role::Auditor]),
            reports: is(&[Role::Admin, Role::Auditor]),
            admin: is(&[Role::Admin]),
        }
    }
    /// `aria-current="page"` for the current section's link, else nothing.
    pub fn cur(&self, section: &str) -> &'static str {
        if self.current == section {
            "page"
        } else {
            "false"
        }
    }
}

/// Renders a template as an HTML response with `status`.
pub fn html_status<T: Template>(status: StatusCode, t: &T) -> Result<Response, PageError> {
    let body = t.render().map_err(|e| {
        tracing::error!(error = %e, "console template failed to render");
        PageError::Internal
    })?;
    Ok((status, Html(body)).into_response())
}

/// Renders a template as a 200 HTML response.
pub fn html<T: Template>(t: &T) -> Result<Response, PageError> {
    html_status(StatusCode::OK, t)
}

/// How the console shows times: UTC, to the second, the same everywhere (help desks span zones).
pub fn when(t: &OffsetDateTime) -> String {
    t.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
    ))
    .unwrap_or_default()
}

/// As [`when`], or a dash.
pub fn when_opt(t: &Option<OffsetDateTime>) -> String {
    t.as_ref().map(when).unwrap_or_else(|| "—".into())
}

/// "3 days", "5 hours", "12 minutes": how long ago, roughly, for tables.
/// "Title (total)", or "Title (total; the first n shown)" when a list is longer than its table
/// (the console's fleet report and the CLI's reports).
pub fn counted_title(title: &str, shown: usize, total: i64) -> String {
    if i64::try_from(shown).is_ok_and(|n| n < total) {
        format!("{title} ({total}; the first {shown} shown)")
    } else {
        format!("{title} ({total})")
    }
}

pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s} seconds"),
        120..=7199 => format!("{} minutes", s / 60),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_say_when_a_list_is_longer_than_its_table() {
        assert_eq!(counted_title("Stale devices", 0, 0), "Stale devices (0)");
        assert_eq!(counted_title("Stale devices", 3, 3), "Stale devices (3)");
        assert_eq!(
            counted_title("Stale devices", 100, 250),
            "Stale devices (250; the first 100 shown)"
        );
    }

    #[test]
    fn ages() {
        for (s, want) in [
            (-5, "0 seconds"),
            (59, "59 seconds"),
            (600, "10 minutes"),
            (7200, "2 hours"),
            (3 * 86_400, "3 days"),
        ] {
            assert_eq!(age(s), want);
        }
    }

    #[test]
    fn times_are_utc() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(when(&t), "2023-11-14 22:13:20 UTC");
        assert_eq!(when_opt(&None), "—");
    }
}
