//! The one error type of the escrow service, mapped to HTTP statuses by the API layer.

use thiserror::Error;

/// Errors returned by [`crate::EscrowService`]. Messages tell the operator (or agent author) what to do;
/// they never contain a secret.
#[derive(Debug, Error)]
pub enum EscrowError {
    /// Bad input (400).
    #[error("invalid request: {0}")]
    Validation(String),
    /// No or unknown credentials (401).
    #[error("authentication required: present a valid API token or an enrolled client certificate")]
    Unauthorized,
    /// Authenticated but not allowed (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The object does not exist (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with stored state (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// An enrollment token expired, was revoked or is used up (410).
    #[error("gone: {0}")]
    Gone(String),
    /// The database failed or is unreachable (500/503).
    #[error("storage error: {0}")]
    Storage(String),
    /// Sealing, unsealing or key handling failed (500).
    #[error("cryptographic error: {0}")]
    Crypto(String),
    /// Reading or writing a local file (KEK, backup) failed.
    #[error("I/O error: {0}")]
    Io(String),
    /// A directory sign-in was refused (401). Deliberately generic: the specific reason (wrong
    /// password, disabled, no role group, …) is in the audit log, not told to the person.
    #[error(
        "sign-in refused: the user name or password is wrong, or this account may not use netunlockd"
    )]
    SignInRefused,
    /// The directory could not be used for sign-in (503); the detail is for the server log.
    #[error("the directory is unavailable: {0}")]
    DirectoryUnavailable(String),
}

impl EscrowError {
    /// The HTTP status the API answers with for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Validation(_) => 400,
            Self::Unauthorized => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::Gone(_) => 410,
            Self::Storage(_) | Self::DirectoryUnavailable(_) => 503,
            Self::SignInRefused => 401,
            Self::Crypto(_) | Self::Io(_) => 500,
        }
    }

    /// The message safe to send to a remote client: internal details of storage and crypto failures stay in
    /// the server log.
    pub fn public_message(&self) -> String {
        match self {
            Self::Storage(_) => "the escrow database is unavailable; try again later".to_owned(),
            Self::Crypto(_) | Self::Io(_) => "internal error; see the server log".to_owned(),
            Self::DirectoryUnavailable(_) => {
                "the directory cannot be reached; try again later (API tokens still work)"
                    .to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl From<sqlx::Error> for EscrowError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for EscrowError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Storage(format!("database migration failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_public_messages() {
        assert_eq!(EscrowError::Validation("x".into()).http_status(), 400);
        assert_eq!(EscrowError::Unauthorized.http_status(), 401);
        assert_eq!(EscrowError::Gone("t".into()).http_status(), 410);
        assert_eq!(EscrowError::SignInRefused.http_status(), 401);
        let d = EscrowError::DirectoryUnavailable("dc1.corp:636 refused the connection".into());
        assert_eq!(d.http_status(), 503);
        assert!(!d.public_message().contains("dc1"));
        let e = EscrowError::Storage("disk /var/lib/x full".into());
        assert_eq!(e.http_status(), 503);
        assert!(!e.public_message().contains("/var/lib"));
        assert!(
            EscrowError::Conflict("dup".into())
                .public_message()
                .contains("dup")
        );
    }
}
