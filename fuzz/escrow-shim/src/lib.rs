//! The escrow crate as the daemon's config module sees it, for the `config` fuzz target.
//!
//! Real code: `directory::config` and `directory::roles` are escrow's own files (the directory
//! settings the config validates go through the real `DirectoryConfig::validate`).
//! Stand-ins, kept to what the config module touches: `Role`, `Backend` with the `database_url`
//! scheme rule of `escrow::store`, `redact_url`, `DEFAULT_UNLOCK_WINDOW_DAYS`, the console
//! settings and the directory client
//! (which the config module only builds in `load`, never in `validate`). If escrow's rule for
//! database URLs changes, `Backend::of_url` here must follow; the daemon's own tests cover the real
//! one.
#![allow(dead_code)]

pub mod model {
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Role {
        Admin,
        Helpdesk,
        Auditor,
    }

    /// The names escrow's `Role` displays as (they appear in validation messages).
    impl std::fmt::Display for Role {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(match self {
                Self::Admin => "admin",
                Self::Helpdesk => "helpdesk",
                Self::Auditor => "auditor",
            })
        }
    }

    /// escrow::model::DEFAULT_UNLOCK_WINDOW_DAYS (the default of `unlock_records.no_unlock_days`).
    pub const DEFAULT_UNLOCK_WINDOW_DAYS: u32 = 30;
}

pub use model::{DEFAULT_UNLOCK_WINDOW_DAYS, Role};

pub mod directory;

pub mod store {
    /// Which database a URL names (escrow::store::Backend).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Backend {
        Sqlite,
        Postgres,
    }

    impl Backend {
        /// The scheme rule of escrow's `normalise_url`: postgres(ql)://, or sqlite: with a file.
        pub fn of_url(database_url: &str) -> Result<Self, String> {
            let u = database_url.trim();
            if u.starts_with("postgres://") || u.starts_with("postgresql://") {
                return Ok(Self::Postgres);
            }
            match u
                .strip_prefix("sqlite://")
                .or_else(|| u.strip_prefix("sqlite:"))
            {
                None => Err(format!("database_url {:?} is not supported", redact_url(u))),
                Some(rest) if rest.is_empty() || rest.starts_with(":memory:") => {
                    Err("an in-memory SQLite database would lose every escrowed key".into())
                }
                Some(_) => Ok(Self::Sqlite),
            }
        }
    }

    impl std::fmt::Display for Backend {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(match self {
                Self::Sqlite => "SQLite",
                Self::Postgres => "PostgreSQL",
            })
        }
    }

    /// escrow::store::redact_url, same rule.
    pub fn redact_url(url: &str) -> String {
        match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let creds = &url[s + 3..at];
                match creds.find(':') {
                    Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                    None => url.to_owned(),
                }
            }
            _ => url.to_owned(),
        }
    }
}

pub use store::Backend;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    pub idle: std::time::Duration,
    pub absolute: std::time::Duration,
}

pub mod web {
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ConsoleSettings {
        pub enabled: bool,
        pub sessions: super::SessionPolicy,
    }
}
