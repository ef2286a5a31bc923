//! Liveness of the receive loops (systemd watchdog, health endpoint).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::family::Family;

/// Liveness of the receive loops, for the systemd watchdog and health checks.
#[derive(Debug)]
pub struct Heartbeat {
    start: Instant,
    /// Milliseconds since `start` of the last beat, +1; 0 = that loop is not running.
    v4: AtomicU64,
    v6: AtomicU64,
}

impl Heartbeat {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            v4: AtomicU64::new(0),
            v6: AtomicU64::new(0),
        }
    }

    fn slot(&self, f: Family) -> &AtomicU64 {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    pub(crate) fn beat(&self, f: Family) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.slot(f).store(ms + 1, Ordering::Relaxed);
    }

    pub(crate) fn stop(&self, f: Family) {
        self.slot(f).store(0, Ordering::Relaxed);
    }

    /// Time since the given loop last showed life; None if it is not running.
    pub fn age(&self, f: Family) -> Option<Duration> {
        match self.slot(f).load(Ordering::Relaxed) {
            0 => None,
            v => {
                let then = Duration::from_millis(v - 1);
                Some(self.start.elapsed().saturating_sub(then))
            }
        }
    }

    /// The oldest beat among running loops; None if no loop runs.
    pub fn stalest(&self) -> Option<Duration> {
        Family::ALL.iter().filter_map(|f| self.age(*f)).max()
    }

    /// Whether every running loop beat within `max_age` (loops beat at least once a second).
    pub fn healthy(&self, max_age: Duration) -> bool {
        self.stalest().is_some_and(|a| a <= max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_reports_running_loops_only() {
        let h = Heartbeat::new();
        assert_eq!(h.stalest(), None);
        assert!(!h.healthy(Duration::from_secs(5)));
        h.beat(Family::V4);
        assert!(h.age(Family::V4).unwrap() < Duration::from_secs(1));
        assert_eq!(h.age(Family::V6), None);
        assert!(h.healthy(Duration::from_secs(5)));
        h.stop(Family::V4);
        assert_eq!(h.stalest(), None);
    }
}
