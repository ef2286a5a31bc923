//! What happened to a request: the label of `netunlockd_requests_total` and of the log line.
//!
//! No-oracle rule: there is no "decrypt failed" class. A key protector that does not decrypt is answered
//! (with a reply built from a pseudo-random key) and counted as `answered`.

use std::time::{Duration, Instant};

/// Address family of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Self; 2] = [Self::V4, Self::V6];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V4 => "v4",
            Self::V6 => "v6",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome class of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Answered,
    UnknownCertificate,
    SubnetRefused,
    Disabled,
    NotNkpu,
    RateLimited,
    QueueFull,
    Expired,
}

impl Outcome {
    pub const ALL: [Self; 8] = [
        Self::Answered,
        Self::UnknownCertificate,
        Self::SubnetRefused,
        Self::Disabled,
        Self::NotNkpu,
        Self::RateLimited,
        Self::QueueFull,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::UnknownCertificate => "unknown_certificate",
            Self::SubnetRefused => "subnet_refused",
            Self::Disabled => "disabled",
            Self::NotNkpu => "not_nkpu",
            Self::RateLimited => "rate_limited",
            Self::QueueFull => "queue_full",
            Self::Expired => "expired",
        }
    }

    /// Log level of the per-request line.
    pub fn level(self) -> tracing::Level {
        match self {
            Self::Answered | Self::UnknownCertificate | Self::SubnetRefused => tracing::Level::INFO,
            Self::NotNkpu => tracing::Level::DEBUG,
            Self::Disabled | Self::RateLimited | Self::QueueFull | Self::Expired => {
                tracing::Level::WARN
            }
        }
    }

    /// Whether a flood of this class could flood the log (anyone on the LAN can send these), so the
    /// line itself is rate-limited. `answered` is bounded by the per-client limit and the RSA throughput.
    pub fn log_is_limited(self) -> bool {
        !matches!(self, Self::Answered | Self::NotNkpu)
    }
}

impl From<&crate::keystore::Decision<'_>> for Option<Outcome> {
    /// The outcome a decision implies; None for `Answer` (the request goes on to rate limit and queue).
    fn from(d: &crate::keystore::Decision<'_>) -> Self {
        match d {
            crate::keystore::Decision::Answer(_) => None,
            crate::keystore::Decision::UnknownCertificate => Some(Outcome::UnknownCertificate),
            crate::keystore::Decision::SubnetRefused => Some(Outcome::SubnetRefused),
            crate::keystore::Decision::Disabled => Some(Outcome::Disabled),
        }
    }
}

/// Allows `per_second` log lines per outcome class and counts what it suppressed, so a flood of junk
/// cannot fill the journal while the operator still learns how much was hidden.
#[derive(Debug)]
pub struct LogLimiter {
    per_second: u32,
    window_start: Option<Instant>,
    used: [u32; 8],
    suppressed: [u64; 8],
}

impl LogLimiter {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window_start: None,
            used: [0; 8],
            suppressed: [0; 8],
        }
    }

    fn slot(o: Outcome) -> usize {
        Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0)
    }

    /// Some(n) = log now, and n lines of this class were suppressed since the last logged one.
    pub fn admit(&mut self, o: Outcome, now: Instant) -> Option<u64> {
        let fresh = match self.window_start {
            Some(s) => now.saturating_duration_since(s) >= Duration::from_secs(1),
            None => true,
        };
        if fresh {
            self.window_start = Some(now);
            self.used = [0; 8];
        }
        let i = Self::slot(o);
        if self.used[i] < self.per_second {
            self.used[i] += 1;
            let s = self.suppressed[i];
            self.suppressed[i] = 0;
            Some(s)
        } else {
            self.suppressed[i] += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable() {
        let labels: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            labels,
            [
                "answered",
                "unknown_certificate",
                "subnet_refused",
                "disabled",
                "not_nkpu",
                "rate_limited",
                "queue_full",
                "expired"
            ]
        );
        assert_eq!(Family::V4.as_str(), "v4");
        assert_eq!(Family::V6.as_str(), "v6");
    }

    #[test]
    fn levels() {
        assert_eq!(Outcome::Answered.level(), tracing::Level::INFO);
        assert_eq!(Outcome::NotNkpu.level(), tracing::Level::DEBUG);
        assert_eq!(Outcome::RateLimited.level(), tracing::Level::WARN);
        assert_eq!(Outcome::QueueFull.level(), tracing::Level::WARN);
        assert!(Outcome::QueueFull.log_is_limited());
        assert!(!Outcome::Answered.log_is_limited());
    }

    #[test]
    fn decisions_map_to_outcomes() {
        use crate::keystore::Decision;
        assert_eq!(
            Option::<Outcome>::from(&Decision::UnknownCertificate),
            Some(Outcome::UnknownCertificate)
        );
        assert_eq!(
            Option::<Outcome>::from(&Decision::SubnetRefused),
            Some(Outcome::SubnetRefused)
        );
        assert_eq!(
            Option::<Outcome>::from(&Decision::Disabled),
            Some(Outcome::Disabled)
        );
    }

    #[test]
    fn log_limiter_caps_per_class_and_reports_suppressed() {
        let mut l = LogLimiter::new(2);
        let t0 = Instant::now();
        assert_eq!(l.admit(Outcome::QueueFull, t0), Some(0));
        assert_eq!(l.admit(Outcome::QueueFull, t0), Some(0));
        assert_eq!(l.admit(Outcome::QueueFull, t0), None);
        assert_eq!(l.admit(Outcome::QueueFull, t0), None);
        // Another class has its own budget.
        assert_eq!(l.admit(Outcome::RateLimited, t0), Some(0));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.admit(Outcome::QueueFull, t1), Some(2));
    }
}
