//! The per-operator find/disclose rate limit across appliances: appliances sharing a PostgreSQL
//! database keep one bucket per operator there, so N appliances do not give N times the burst.
//! (A SQLite database belongs to one appliance; its in-memory limiter decides there.)

use std::time::Duration;

use super::EscrowService;
use crate::error::EscrowError;
use crate::store::{Backend, ratelimit};

impl EscrowService {
    /// Whether several appliances may share this database (PostgreSQL), so the find/disclose
    /// limit must be taken with [`Self::take_shared_rate_token`].
    pub fn rate_limit_is_shared(&self) -> bool {
        self.backend() == Backend::Postgres
    }

    /// Takes one find/disclose request of `key` from the bucket every appliance on this
    /// database shares: `burst` at once, then `per_second`. `Ok(Err(wait))` when over the limit.
    pub async fn take_shared_rate_token(
        &self,
        key: &str,
        burst: u32,
        per_second: f64,
    ) -> Result<Result<(), Duration>, EscrowError> {
        let interval = (1e6 / per_second.max(1e-6)).round() as i64;
        let tolerance = interval.saturating_mul(i64::from(burst.max(1) - 1));
        let wait = ratelimit::take(
            &mut *self.inner.db.conn().await?,
            key,
            self.now_us(),
            interval.max(1),
            tolerance,
        )
        .await?;
        Ok(match wait {
            None => Ok(()),
            Some(us) => Err(Duration::from_micros(u64::try_from(us).unwrap_or(1))),
        })
    }
}
