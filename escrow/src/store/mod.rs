//! Storage: all SQL of the escrow crate, one module per aggregate, over one sqlx `Any` pool on SQLite or
//! PostgreSQL. Nothing above this module knows which backend runs, nor writes SQL.
//!
//! SQL text uses `$n` placeholders (accepted by both backends), BIGINT/INTEGER for timestamps (µs since the
//! epoch) and booleans, TEXT and BLOB/BYTEA. The dialect switches live here: how a write transaction
//! begins (SQLite `BEGIN IMMEDIATE`; PostgreSQL `BEGIN` + lock the audit chain head row), anonymous `?`
//! parameters in statements built at run time on SQLite, and PostgreSQL's sequences after a restore.
//!
//! The services own transaction boundaries: they open a [`Tx`] (or a [`Conn`] for single reads), pass it
//! to the store functions they need, and commit — so an operation and its audit record commit together.

pub(crate) mod audit;
pub(crate) mod backup;
pub(crate) mod devices;
pub(crate) mod keyring;
pub(crate) mod keys;
pub(crate) mod membership;
pub(crate) mod operators;
pub(crate) mod ratelimit;
pub(crate) mod reports;
pub(crate) mod sessions;
pub(crate) mod tokens;
pub(crate) mod tpm;
pub(crate) mod unlock;

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};

use crate::error::EscrowError;

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
    pool: AnyPool,
    backend: Backend,
}

/// A write or read transaction. Store functions take it as `&mut AnyConnection` (deref).
pub(crate) struct Tx(Transaction<'static, Any>);

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), EscrowError> {
        Ok(self.0.commit().await?)
    }

    /// Start a savepoint (nested unit of work that can be undone alone).
    pub(crate) async fn savepoint(&mut self) -> Result<(), EscrowError> {
        sqlx::query("SAVEPOINT unit").execute(&mut *self.0).await?;
        Ok(())
    }

    /// Undo everything since [`Tx::savepoint`] (`keep = false`) or keep it, and end the savepoint.
    pub(crate) async fn end_savepoint(&mut self, keep: bool) -> Result<(), EscrowError> {
        if !keep {
            sqlx::query("ROLLBACK TO SAVEPOINT unit")
                .execute(&mut *self.0)
                .await?;
        }
        sqlx::query("RELEASE SAVEPOINT unit")
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }
}

impl Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.0
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.0
    }
}

/// A pooled connection for reads outside a transaction.
pub(crate) struct Conn(PoolConnection<Any>);

impl Deref for Conn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.0
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.0
    }
}

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
            Backend::Sqlite => Ok(Tx(self.pool.begin_with("BEGIN IMMEDIATE").await?)),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
                    .execute(&mut *tx)
                    .await?;
                Ok(Tx(tx))
            }
        }
    }

    /// A write transaction that appends no audit record (operational data such as Network Unlock
    /// outcomes): on PostgreSQL it does not take the audit chain lock, so it never waits for, nor
    /// delays, audited writes.
    pub(crate) async fn begin_write_unaudited(&self) -> Result<Tx, EscrowError> {
        match self.backend {
            Backend::Sqlite => Ok(Tx(self.pool.begin_with("BEGIN IMMEDIATE").await?)),
            Backend::Postgres => Ok(Tx(self.pool.begin().await?)),
        }
    }

    /// A read-only transaction giving a consistent snapshot.
    pub(crate) async fn begin_read(&self) -> Result<Tx, EscrowError> {
        match self.backend {
            Backend::Sqlite => Ok(Tx(self.pool.begin_with("BEGIN DEFERRED").await?)),
            Backend::Postgres => Ok(Tx(self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?)),
        }
    }

    /// A connection for reads that need no snapshot across statements.
    pub(crate) async fn conn(&self) -> Result<Conn, EscrowError> {
        Ok(Conn(self.pool.acquire().await?))
    }

    /// A round trip to the database (`SELECT 1`).
    pub(crate) async fn ping(&self) -> Result<(), EscrowError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
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
fn b2i(b: bool) -> i64 {
    i64::from(b)
}

/// The backend behind a connection.
fn backend_of(conn: &AnyConnection) -> Backend {
    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    }
}

/// The `n`-th (1-based) parameter of SQL text built at run time; on SQLite every parameter of such a
/// statement must be written with this (anonymous `?` are numbered by position). SQLite gets anonymous
/// parameters because for named ones sqlx asks SQLite for each parameter's name, a linear scan of the
/// statement's parameter list: binding a statement with hundreds of parameters then takes quadratic time.
pub(crate) fn param(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_owned(),
        Backend::Postgres => format!("${n}"),
    }
}

/// A multi-row VALUES list of `rows` rows of `cols` parameters: `(?, ?), (?, ?)` on SQLite,
/// `($1, $2), ($3, $4)` on PostgreSQL.
fn values_placeholders(backend: Backend, rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push_str(&param(backend, r * cols + c + 1));
        }
        s.push(')');
    }
    s
}

/// `(a = p1 AND b = p2) OR (a = p3 AND b = p4) …` for `n` pairs, parameters from `first_param`.
fn or_pairs(backend: Backend, first_param: usize, n: usize, a: &str, b: &str) -> String {
    (0..n)
        .map(|i| {
            let p = first_param + 2 * i;
            format!(
                "({a} = {} AND {b} = {})",
                param(backend, p),
                param(backend, p + 1)
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ")
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

    #[test]
    fn placeholders() {
        assert_eq!(
            values_placeholders(Backend::Postgres, 2, 2),
            "($1, $2), ($3, $4)"
        );
        assert_eq!(values_placeholders(Backend::Sqlite, 1, 3), "(?, ?, ?)");
        assert_eq!(
            or_pairs(Backend::Postgres, 2, 2, "a", "b"),
            "(a = $2 AND b = $3) OR (a = $4 AND b = $5)"
        );
    }

    /// Only the store writes SQL or names the database library: the layers above stay backend-neutral.
    #[test]
    fn sql_lives_only_in_the_store() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut stack = vec![src.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if path != src.join("store") {
                        stack.push(path);
                    }
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") || path == src.join("error.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for needle in ["sqlx::", "use sqlx", "SELECT ", "INSERT INTO", "UPDATE "] {
                    if text.contains(needle) {
                        offenders.push(format!("{} contains {needle:?}", path.display()));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "SQL outside store/: {offenders:#?}");
    }
}
