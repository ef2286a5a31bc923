//! CSRF tokens. Signed-in forms carry a token derived from the session secret (HMAC-SHA256), so
//! nothing more is stored and a token is worthless without the cookie it belongs to. The sign-in
//! form, which has no session yet, uses a double-submit value: a random cookie repeated in a
//! hidden field. Pure functions, table-tested.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

use crate::sealing::ct_eq;

/// The CSRF token of the session whose cookie secret is `session_secret`.
pub fn token_for(session_secret: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, session_secret.as_bytes());
    B64URL.encode(hmac::sign(&key, b"netunlockd console csrf v1").as_ref())
}

/// Whether `submitted` is the CSRF token of this session (constant time).
pub fn verify(session_secret: &str, submitted: &str) -> bool {
    !submitted.is_empty() && ct_eq(token_for(session_secret).as_bytes(), submitted.as_bytes())
}

/// Whether a double-submitted value (sign-in form) matches its cookie: both present and equal.
pub fn verify_double_submit(cookie: Option<&str>, field: &str) -> bool {
    match cookie {
        Some(c) => c.len() >= 32 && ct_eq(c.as_bytes(), field.as_bytes()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_to_their_session() {
        let a = token_for("nus_a");
        assert_eq!(a, token_for("nus_a"), "deterministic");
        assert_ne!(a, token_for("nus_b"));
        let cases: &[(&str, &str, bool)] = &[
            ("nus_a", a.as_str(), true),
            ("nus_b", a.as_str(), false),
            ("nus_a", "", false),
            ("nus_a", "x", false),
            ("nus_a", &a[..a.len() - 1], false),
        ];
        for (secret, submitted, ok) in cases {
            assert_eq!(verify(secret, submitted), *ok, "{secret} {submitted}");
        }
    }

    #[test]
    fn double_submit() {
        let v = "0123456789abcdef0123456789abcdef";
        let cases: &[(Option<&str>, &str, bool)] = &[
            (Some(v), v, true),
            (None, v, false),
            (Some(v), "", false),
            (Some("short"), "short", false),
            (Some(v), "0123456789abcdef0123456789abcdeX", false),
        ];
        for (cookie, field, ok) in cases {
            assert_eq!(
                verify_double_submit(*cookie, field),
                *ok,
                "{cookie:?} {field}"
            );
        }
    }
}
