//! Storage: one sqlx `Any` pool over SQLite or PostgreSQL, so the business logic has one code path.
//!
//! SQL text uses `$n` placeholders (accepted by both backends), BIGINT/INTEGER for timestamps (µs since the
//! epoch) and booleans, TEXT and BLOB/BYTEA. The only dialect switches live here: how a write transaction
//! begins (SQLite `BEGIN IMMEDIATE`; PostgreSQL `BEGIN` + lock the audit chain head row) and `FOR UPDATE`.

mod audit_store;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Transaction};

use crate::error::EscrowError;

pub(crate) use audit_store::{
    AUDIT_COLUMNS, AuditCursor, NewAudit, append_audit, append_audit_at, audit_from_row,
    insert_audit_rows, param, read_audit_head, values_placeholders,
};

/// Which database the pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Which backend a `database_url` names, by the same rule [`Db::open`] applies (so `config check`
    /// refuses exactly what the store would refuse).
    pub fn of_url(database_url: &str) -> Result<Self, EscrowError> {
        normalise_url(database_url).map(|(_, backend)| backend)
    }

    /// The name operators know it by, for logs and the start-up summary.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A connection pool plus its backend kind.
#[derive(Clone, Debug)]
pub struct Db {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
}

pub(crate) type Tx = Transaction<'static, Any>;

/// Make a URL given as a bare path or `sqlite:path` acceptable, adding `mode=rwc` (create if missing).
fn normalise_url(url: &str) -> Result<(String, Backend), EscrowError> {
    let u = url.trim();
    if u.starts_with("postgres://") || u.starts_with("postgresql://") {
        return Ok((u.to_owned(), Backend::Postgres));
    }
    let rest = u
        .strip_prefix("sqlite://")
        .or_else(|| u.strip_prefix("sqlite:"));
    let Some(rest) = rest else {
        return Err(EscrowError::Validation(format!(
            "database_url {:?} is not supported; use sqlite:///var/lib/netunlockd/escrow.db or postgres://user@host/db",
            redact_url(u)
        )));
    };
    if rest.is_empty() || rest.starts_with(":memory:") {
        return Err(EscrowError::Validation(
            "an in-memory SQLite database would lose every escrowed key; give a file path".into(),
        ));
    }
    let url = if rest.contains("mode=") {
        format!("sqlite://{rest}")
    } else if rest.contains('?') {
        format!("sqlite://{rest}&mode=rwc")
    } else {
        format!("sqlite://{rest}?mode=rwc")
    };
    Ok((url, Backend::Sqlite))
}

impl Db {
    /// Connect, configure durability, and run the backend's migrations.
    pub async fn open(database_url: &str) -> Result<Self, EscrowError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = normalise_url(database_url)?;
        let opts = AnyConnectOptions::from_str(&url)
            .map_err(|e| EscrowError::Validation(format!("database_url is malformed: {e}")))?;
        let mut pool_opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        pool_opts = match backend {
            Backend::Sqlite => pool_opts.max_connections(8).after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL + synchronous=FULL: a commit is on disk before the agent is told "stored".
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 15000").await?;
                    Ok(())
                })
            }),
            Backend::Postgres => pool_opts.max_connections(16),
        };
        let pool = pool_opts.connect_with(opts).await.map_err(|e| {
            EscrowError::Storage(format!(
                "cannot open the escrow database ({}): {e}",
                redact_url(&url)
            ))
        })?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The raw pool (tests, benchmarks and diagnostics that inspect the database directly).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A write transaction, serialised with every other writer (the audit chain must not fork).
    pub(crate) async fn begin_write(&self) -> Result<Tx, EscrowError> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// A read-only transaction giving a consistent snapshot.
    pub(crate) async fn begin_read(&self) -> Result<Tx, EscrowError> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN DEFERRED").await?),
            Backend::Postgres => Ok(self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?),
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Hide a password in a database URL before it reaches an error message.
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

/// Storage form of a boolean.
pub(crate) fn b2i(b: bool) -> i64 {
    i64::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            normalise_url("sqlite:///x/e.db").ok(),
            Some(("sqlite:///x/e.db?mode=rwc".into(), Backend::Sqlite))
        );
        assert_eq!(
            normalise_url("sqlite:e.db?mode=ro").ok(),
            Some(("sqlite://e.db?mode=ro".into(), Backend::Sqlite))
        );
        assert_eq!(
            normalise_url("postgres://u@h/db").ok(),
            Some(("postgres://u@h/db".into(), Backend::Postgres))
        );
        assert!(normalise_url("mysql://x").is_err());
        assert!(normalise_url("sqlite::memory:").is_err());
        assert_eq!(
            Backend::of_url("postgresql://h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::of_url("sqlite:///x/e.db?mode=rwc").ok(),
            Some(Backend::Sqlite)
        );
        let refused = Backend::of_url("mysql://u:secret@h/db")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            refused.contains("not supported") && !refused.contains("secret"),
            "{refused}"
        );
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
