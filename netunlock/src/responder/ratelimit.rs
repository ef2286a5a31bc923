//! Per-client token buckets with a bounded map.
//!
//! The key is the *client* (v4: MAC + ciaddr, v6: DUID), never the relay address: thousands of clients
//! behind one relay must not share a bucket. Memory stays bounded: when the map is full, entries whose
//! bucket has refilled completely (indistinguishable from an absent entry) are evicted; if the map is
//! still full, a new client is admitted untracked, which is exactly what a fresh entry would allow.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Token-bucket parameters: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub burst: u32,
    pub per_second: f64,
}

impl RateLimit {
    /// A limit that never refuses (burst 0 means "rate limiting off").
    pub fn is_off(&self) -> bool {
        self.burst == 0
    }
}

/// What identifies one client for rate limiting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// DHCPv4: hardware address (up to 16 bytes of chaddr, cut to hlen) and ciaddr.
    V4 {
        mac: Vec<u8>,
        ciaddr: std::net::Ipv4Addr,
    },
    /// DHCPv6: the client DUID.
    V6Duid(Vec<u8>),
    /// DHCPv6 without a Client-ID: the client's own address (the innermost peer address when relayed).
    V6Addr(std::net::Ipv6Addr),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A bounded map of token buckets.
#[derive(Debug)]
pub struct RateLimiter<K = ClientKey> {
    limit: RateLimit,
    max_entries: usize,
    buckets: HashMap<K, Bucket>,
    last_sweep: Option<Instant>,
}

/// How often a full map may be swept; sweeping is O(n) so it must not run for every packet.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(limit: RateLimit, max_entries: usize) -> Self {
        Self {
            limit,
            max_entries: max_entries.max(1),
            buckets: HashMap::new(),
            last_sweep: None,
        }
    }

    /// Number of tracked clients (for tests and the memory bound).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Time for an empty bucket to refill completely; older entries carry no information.
    fn full_refill(&self) -> Duration {
        if self.limit.per_second <= 0.0 || !self.limit.per_second.is_finite() {
            // No refill: a bucket never becomes stale by time alone; keep entries an hour.
            return Duration::from_secs(3600);
        }
        Duration::from_secs_f64((f64::from(self.limit.burst) / self.limit.per_second).min(3600.0))
    }

    /// Takes one token for `key` at `now`. Returns false when the client is over its limit.
    pub fn allow(&mut self, key: &K, now: Instant) -> bool {
        if self.limit.is_off() {
            return true;
        }
        let burst = f64::from(self.limit.burst);
        let rate = if self.limit.per_second.is_finite() {
            self.limit.per_second.max(0.0)
        } else {
            0.0
        };
        if let Some(bucket) = self.buckets.get_mut(key) {
            let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
            bucket.last = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= self.max_entries {
            self.sweep(now);
        }
        if self.buckets.len() < self.max_entries {
            self.buckets.insert(
                key.clone(),
                Bucket {
                    tokens: burst - 1.0,
                    last: now,
                },
            );
        }
        true
    }

    /// Drops entries whose bucket would be full again by now.
    fn sweep(&mut self, now: Instant) {
        if let Some(last) = self.last_sweep
            && now.saturating_duration_since(last) < SWEEP_INTERVAL
        {
            return;
        }
        self.last_sweep = Some(now);
        let stale = self.full_refill();
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < stale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ClientKey {
        ClientKey::V4 {
            mac: vec![2, 0, 0, 0, 0, n],
            ciaddr: std::net::Ipv4Addr::new(10, 0, 0, n),
        }
    }

    #[test]
    fn burst_then_refuse_then_refill() {
        let mut rl = RateLimiter::new(
            RateLimit {
                burst: 3,
                per_second: 1.0,
            },
            100,
        );
        let t0 = Instant::now();
        assert!(rl.allow(&key(1), t0));
        assert!(rl.allow(&key(1), t0));
        assert!(rl.allow(&key(1), t0));
        assert!(
            !rl.allow(&key(1), t0),
            "fourth request within the burst must be refused"
        );
        // Another client is not affected.
        assert!(rl.allow(&key(2), t0));
        // One second refills one token.
        let t1 = t0 + Duration::from_millis(1001);
        assert!(rl.allow(&key(1), t1));
        assert!(!rl.allow(&key(1), t1));
    }

    #[test]
    fn off_never_refuses_and_tracks_nothing() {
        let mut rl = RateLimiter::new(
            RateLimit {
                burst: 0,
                per_second: 0.0,
            },
            10,
        );
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(rl.allow(&key(1), t0));
        }
        assert!(rl.is_empty());
    }

    #[test]
    fn v6_keys_are_per_duid_not_per_relay() {
        let mut rl = RateLimiter::new(
            RateLimit {
                burst: 1,
                per_second: 0.1,
            },
            100,
        );
        let t0 = Instant::now();
        assert!(rl.allow(&ClientKey::V6Duid(vec![0, 4, 1]), t0));
        assert!(!rl.allow(&ClientKey::V6Duid(vec![0, 4, 1]), t0));
        assert!(rl.allow(&ClientKey::V6Duid(vec![0, 4, 2]), t0));
    }

    #[test]
    fn map_stays_bounded_under_a_flood_of_new_clients() {
        let mut rl: RateLimiter<u32> = RateLimiter::new(
            RateLimit {
                burst: 2,
                per_second: 1.0,
            },
            64,
        );
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            // New clients are always admitted (a fresh bucket would admit them too).
            assert!(rl.allow(&i, t0 + Duration::from_micros(u64::from(i))));
            assert!(rl.len() <= 64);
        }
    }

    #[test]
    fn stale_entries_are_evicted_when_full() {
        let mut rl: RateLimiter<u32> = RateLimiter::new(
            RateLimit {
                burst: 1,
                per_second: 1.0,
            },
            4,
        );
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(rl.allow(&i, t0));
        }
        assert_eq!(rl.len(), 4);
        // Client 0 is over its limit right now.
        assert!(!rl.allow(&0, t0));
        // Two seconds later all four are stale; a new client evicts them and is tracked.
        let t2 = t0 + Duration::from_secs(2);
        assert!(rl.allow(&100, t2));
        assert_eq!(rl.len(), 1);
        assert!(
            !rl.allow(&100, t2),
            "the new client is tracked after the sweep"
        );
    }

    #[test]
    fn non_finite_rates_do_not_panic() {
        for rate in [f64::NAN, f64::INFINITY, -1.0] {
            let mut rl = RateLimiter::new(
                RateLimit {
                    burst: 1,
                    per_second: rate,
                },
                2,
            );
            let t0 = Instant::now();
            assert!(rl.allow(&key(1), t0));
            assert!(!rl.allow(&key(1), t0 + Duration::from_secs(10)));
            assert!(rl.allow(&key(2), t0));
            assert!(rl.allow(&key(3), t0));
        }
    }
}
