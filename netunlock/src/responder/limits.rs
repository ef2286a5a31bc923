//! Request-rate limits per source (`governor`, GCRA), keyed only on what cannot be forged from afar:
//! the IP source of a direct request (checked to be the client's own on-link address) or the trusted
//! relay of a relayed one. A relay carries many clients, so it gets `relay_share` times a host's rate,
//! and each client behind it (MAC or DUID) has a host's rate, checked first, so one chatty client can
//! neither exceed a host's rate nor spend the relay's share.
//!
//! Memory stays bounded: past `max_keys` tracked keys, entries indistinguishable from fresh ones are
//! dropped (`retain_recent`, at most twice a second); if that is not enough, the limiter starts
//! afresh, which admits what a fresh entry would.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::hooks::ClientIdentity;

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

    /// The governor quota, `share` times this one. A rate that is not a positive finite number
    /// refills once an hour (a burst, then nearly nothing).
    fn quota(&self, share: u32) -> Option<Quota> {
        let burst = NonZeroU32::new(self.burst.saturating_mul(share.max(1)))?;
        let rate = self.per_second * f64::from(share.max(1));
        let period = if rate.is_finite() && rate > 0.0 {
            Duration::from_secs_f64((1.0 / rate).clamp(1e-9, 3600.0))
        } else {
            Duration::from_secs(3600)
        };
        Some(Quota::with_period(period)?.allow_burst(burst))
    }
}

/// Where a request came from, for limits and fair queueing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    pub addr: IpAddr,
    pub relay: bool,
}

type Keyed<K, C> = RateLimiter<K, HashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// How often a full limiter may be swept (`retain_recent` is O(keys)).
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// One keyed limiter with a bound on its keys.
struct Bounded<K: Hash + Eq + Clone, C: Clock + Clone> {
    quota: Quota,
    clock: C,
    limiter: Keyed<K, C>,
    max_keys: usize,
    last_sweep: Option<Instant>,
    last_reset_warning: Option<Instant>,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Bounded<K, C> {
    fn new(quota: Quota, clock: C, max_keys: usize) -> Self {
        Self {
            quota,
            limiter: RateLimiter::hashmap_with_clock(quota, clock.clone()),
            clock,
            max_keys: max_keys.max(1),
            last_sweep: None,
            last_reset_warning: None,
        }
    }

    fn allow(&mut self, key: &K) -> bool {
        if self.limiter.len() >= self.max_keys {
            let now = Instant::now();
            if self
                .last_sweep
                .is_none_or(|t| now.duration_since(t) >= SWEEP_INTERVAL)
            {
                self.last_sweep = Some(now);
                self.limiter.retain_recent();
                self.limiter.shrink_to_fit();
            }
            if self.limiter.len() >= self.max_keys {
                if self
                    .last_reset_warning
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
                {
                    self.last_reset_warning = Some(now);
                    tracing::warn!(
                        keys = self.limiter.len(),
                        "Network Unlock rate limiter is full of active sources; starting it afresh"
                    );
                }
                self.limiter = RateLimiter::hashmap_with_clock(self.quota, self.clock.clone());
            }
        }
        self.limiter.check_key(key).is_ok()
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// The limits of one receive loop.
pub struct Limits<C: Clock + Clone = MonotonicClock> {
    hosts: Option<Bounded<IpAddr, C>>,
    relays: Option<Bounded<IpAddr, C>>,
    clients: Option<Bounded<(IpAddr, ClientIdentity), C>>,
}

impl<C: Clock + Clone> std::fmt::Debug for Limits<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits<MonotonicClock> {
    pub fn new(limit: RateLimit, relay_share: u32, max_keys: usize) -> Self {
        Self::with_clock(limit, relay_share, max_keys, MonotonicClock)
    }
}

impl<C: Clock + Clone> Limits<C> {
    pub fn with_clock(limit: RateLimit, relay_share: u32, max_keys: usize, clock: C) -> Self {
        let make = |share| {
            limit
                .quota(share)
                .filter(|_| !limit.is_off())
                .map(|q| Bounded::new(q, clock.clone(), max_keys))
        };
        Self {
            hosts: make(1),
            relays: make(relay_share),
            clients: limit
                .quota(1)
                .filter(|_| !limit.is_off())
                .map(|q| Bounded::new(q, clock.clone(), max_keys)),
        }
    }

    /// Takes one request for `client` from `source`; false when over a rate. A direct host is one
    /// client: only its address counts (whatever MAC it claims). Behind a relay the client is checked
    /// first, so a client over its own rate does not spend the relay's share.
    pub fn allow(&mut self, source: Source, client: &ClientIdentity) -> bool {
        if !source.relay {
            return self.hosts.as_mut().is_none_or(|l| l.allow(&source.addr));
        }
        if let Some(l) = &mut self.clients
            && !l.allow(&(source.addr, client.clone()))
        {
            return false;
        }
        self.relays.as_mut().is_none_or(|l| l.allow(&source.addr))
    }

    /// Keys tracked (tests and the memory bound).
    pub fn tracked(&self) -> usize {
        [
            self.hosts.as_ref().map(Bounded::len),
            self.relays.as_ref().map(Bounded::len),
            self.clients.as_ref().map(Bounded::len),
        ]
        .into_iter()
        .flatten()
        .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn host(n: u8) -> Source {
        Source {
            addr: IpAddr::from([10, 0, 0, n]),
            relay: false,
        }
    }

    fn mac(n: u32) -> ClientIdentity {
        ClientIdentity::Mac(n.to_be_bytes().to_vec())
    }

    fn limits(
        burst: u32,
        per_second: f64,
        share: u32,
        max: usize,
    ) -> (Limits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            Limits::with_clock(RateLimit { burst, per_second }, share, max, clock.clone()),
            clock,
        )
    }

    #[test]
    fn burst_then_refuse_then_refill() {
        let (mut l, clock) = limits(3, 1.0, 1, 100);
        for _ in 0..3 {
            assert!(l.allow(host(1), &mac(1)));
        }
        assert!(!l.allow(host(1), &mac(1)), "fourth within the burst");
        assert!(l.allow(host(2), &mac(1)), "another source is not affected");
        clock.advance(Duration::from_millis(1001));
        assert!(l.allow(host(1), &mac(1)));
        assert!(!l.allow(host(1), &mac(1)));
    }

    /// The finding: one host with a new MAC per request used to get a fresh bucket every time.
    #[test]
    fn new_macs_from_one_source_share_its_limit() {
        let (mut l, _) = limits(6, 1.0, 64, 1000);
        let allowed = (0..10_000).filter(|i| l.allow(host(7), &mac(*i))).count();
        assert_eq!(allowed, 6);
        assert!(l.allow(host(8), &mac(0)), "others still pass");
    }

    #[test]
    fn a_relay_gets_its_share_and_each_client_behind_it_a_hosts_rate() {
        let (mut l, _) = limits(2, 1.0, 50, 10_000);
        let relay = Source {
            addr: IpAddr::from([172, 16, 0, 1]),
            relay: true,
        };
        // One chatty client behind the relay: a host's burst, not the relay's.
        let chatty = (0..100).filter(|_| l.allow(relay, &mac(1))).count();
        assert_eq!(chatty, 2);
        // Many clients behind the relay: up to the relay's burst (2 × 50), of which 2 were used.
        let many = (2..1000).filter(|i| l.allow(relay, &mac(*i))).count();
        assert_eq!(many, 98);
    }

    #[test]
    fn off_never_refuses_and_tracks_nothing() {
        let (mut l, _) = limits(0, 0.0, 64, 10);
        for i in 0..100 {
            assert!(l.allow(host(1), &mac(i)));
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn keys_stay_bounded_under_a_flood_of_sources() {
        let (mut l, clock) = limits(2, 1.0, 1, 64);
        for i in 0..10_000u32 {
            let s = Source {
                addr: IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
                relay: false,
            };
            assert!(l.allow(s, &mac(i)), "a new source is admitted");
            assert!(l.tracked() <= 2 * 64 + 2);
            clock.advance(Duration::from_micros(10));
        }
    }

    #[test]
    fn non_finite_rates_do_not_panic() {
        for rate in [f64::NAN, f64::INFINITY, -1.0, 0.0] {
            let (mut l, clock) = limits(1, rate, 4, 4);
            assert!(l.allow(host(1), &mac(1)));
            clock.advance(Duration::from_secs(10));
            assert!(!l.allow(host(1), &mac(1)), "{rate}: no refill within 10 s");
            assert!(l.allow(host(2), &mac(1)));
        }
    }
}
