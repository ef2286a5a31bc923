//! The find/disclose rate limit shared by the appliances of one PostgreSQL database (GCRA in one
//! statement, so concurrent appliances cannot both spend the last token).

use sqlx::{AnyConnection, Row};

use crate::error::EscrowError;

/// Takes one request of `key` at `now` (µs). `interval` is the time one request costs and
/// `tolerance` how far ahead of `now` the bucket may run (the burst): both µs. Returns None when
/// allowed, else how many µs until the next request would be.
pub(crate) async fn take(
    c: &mut AnyConnection,
    key: &str,
    now: i64,
    interval: i64,
    tolerance: i64,
) -> Result<Option<i64>, EscrowError> {
    let allowed = sqlx::query(
        "INSERT INTO rate_limits (key, tat) VALUES ($1, $2 + $3) \
         ON CONFLICT (key) DO UPDATE SET tat = GREATEST(rate_limits.tat, $2) + $3 \
         WHERE GREATEST(rate_limits.tat, $2) - $2 <= $4 RETURNING tat",
    )
    .bind(key.to_owned())
    .bind(now)
    .bind(interval)
    .bind(tolerance)
    .fetch_optional(&mut *c)
    .await?;
    if allowed.is_some() {
        return Ok(None);
    }
    let tat: i64 = sqlx::query("SELECT tat FROM rate_limits WHERE key = $1")
        .bind(key.to_owned())
        .fetch_one(c)
        .await?
        .try_get(0)?;
    Ok(Some((tat - now - tolerance).max(1)))
}
