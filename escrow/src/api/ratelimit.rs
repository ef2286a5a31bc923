//! Per-operator token bucket for find/disclose: a stolen help-desk token cannot walk the key
//! space by prefix. Pure logic (time is passed in) so it is table-tested without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Requests allowed in a burst.
    pub burst: u32,
    /// Tokens regained per second.
    pub per_second: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            burst: 60,
            per_second: 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token for `key`; `Err(wait)` says how long until the next one.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = match self.buckets.lock() {
            Ok(g) => g,
            // A panic elsewhere while holding the lock cannot leave a bucket half-updated in a
            // way that matters; keep limiting rather than failing open or closed.
            Err(poisoned) => poisoned.into_inner(),
        };
        // Bound memory: forget full buckets when the map grows (operators are few; this only
        // matters if something inserts many keys).
        if buckets.len() > 10_000 {
            let limit = self.limit;
            buckets.retain(|_, b| refill(b, limit, now) < f64::from(limit.burst));
        }
        let limit = self.limit;
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: f64::from(limit.burst),
            last: now,
        });
        let tokens = refill(bucket, limit, now);
        bucket.last = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            let missing = 1.0 - tokens;
            Err(Duration::from_secs_f64(
                missing / limit.per_second.max(1e-9),
            ))
        }
    }
}

fn refill(b: &Bucket, limit: RateLimit, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
    (b.tokens + elapsed * limit.per_second).min(f64::from(limit.burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_key() {
        let rl = RateLimiter::new(RateLimit {
            burst: 3,
            per_second: 1.0,
        });
        let t0 = Instant::now();
        // (key, offset ms, allowed?)
        let table: &[(&str, u64, bool)] = &[
            ("alice", 0, true),
            ("alice", 0, true),
            ("alice", 0, true),
            ("alice", 0, false),
            ("bob", 0, true),
            ("alice", 500, false),
            ("alice", 1000, true),
            ("alice", 1000, false),
            ("alice", 10_000, true),
            ("alice", 10_000, true),
            ("alice", 10_000, true),
            ("alice", 10_000, false),
        ];
        for (i, (key, ms, allowed)) in table.iter().enumerate() {
            let r = rl.check(key, t0 + Duration::from_millis(*ms));
            assert_eq!(r.is_ok(), *allowed, "row {i}: {key} at {ms} ms");
            if let Err(wait) = r {
                assert!(wait <= Duration::from_secs(1), "row {i}: wait {wait:?}");
            }
        }
    }
}
