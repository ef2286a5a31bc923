//! What happened to a request (the label of `netunlockd_requests_total` and of the log line), and the
//! log gate that keeps per-request lines bounded under a flood.
//!
//! No-oracle rule: there is no "decrypt failed" class. A key protector that does not decrypt is answered
//! (with a reply built from a pseudo-random key) and counted as `answered`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::family::Family;

/// Outcome class of one request. Every received datagram on a served interface ends in exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Answered,
    UnknownCertificate,
    SubnetRefused,
    Disabled,
    NotNkpu,
    /// Direct DHCPv4 whose IP source is not its `ciaddr`.
    SourceMismatch,
    /// A relayed request from a source not in `trusted_relays`.
    UntrustedRelay,
    /// The reply would go to a broadcast, multicast, loopback, off-link or own address.
    BadDestination,
    /// Another appliance of the group answers this client.
    NotMine,
    RateLimited,
    QueueFull,
    Expired,
    /// The reply was built but the kernel refused to send it.
    SendFailed,
}

const COUNT: usize = 13;

impl Outcome {
    pub const ALL: [Self; COUNT] = [
        Self::Answered,
        Self::UnknownCertificate,
        Self::SubnetRefused,
        Self::Disabled,
        Self::NotNkpu,
        Self::SourceMismatch,
        Self::UntrustedRelay,
        Self::BadDestination,
        Self::NotMine,
        Self::RateLimited,
        Self::QueueFull,
        Self::Expired,
        Self::SendFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::UnknownCertificate => "unknown_certificate",
            Self::SubnetRefused => "subnet_refused",
            Self::Disabled => "disabled",
            Self::NotNkpu => "not_nkpu",
            Self::SourceMismatch => "source_mismatch",
            Self::UntrustedRelay => "untrusted_relay",
            Self::BadDestination => "bad_destination",
            Self::NotMine => "not_mine",
            Self::RateLimited => "rate_limited",
            Self::QueueFull => "queue_full",
            Self::Expired => "expired",
            Self::SendFailed => "send_failed",
        }
    }

    /// Log level of the per-request line.
    pub fn level(self) -> tracing::Level {
        match self {
            Self::Answered | Self::UnknownCertificate | Self::SubnetRefused => tracing::Level::INFO,
            Self::NotNkpu | Self::NotMine => tracing::Level::DEBUG,
            Self::Disabled
            | Self::SourceMismatch
            | Self::UntrustedRelay
            | Self::BadDestination
            | Self::RateLimited
            | Self::QueueFull
            | Self::Expired
            | Self::SendFailed => tracing::Level::WARN,
        }
    }

    fn slot(self) -> usize {
        Self::ALL.iter().position(|x| *x == self).unwrap_or(0)
    }

    /// What an operator should read in the per-request line of a request that was not answered.
    pub fn explanation(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::UnknownCertificate => {
                "no loaded certificate has this thumbprint (the client's Group Policy certificate differs \
                 from the ones configured here)"
            }
            Self::SubnetRefused => {
                "the client's address (or its relay's link) is not in the certificate's allowed subnets"
            }
            Self::Disabled => {
                "the certificate is disabled (config or bde-network-unlock.ini DISABLED)"
            }
            Self::NotNkpu => "not a Network Unlock request",
            Self::SourceMismatch => {
                "the IP source is not the client address (ciaddr) the request claims; real clients send \
                 from their leased address"
            }
            Self::UntrustedRelay => {
                "a relayed request from a source that is not a trusted relay; list the relay in \
                 [unlock] trusted_relays to accept it"
            }
            Self::BadDestination => "there is no acceptable address to send the reply to",
            Self::NotMine => "another appliance of the group answers this client",
            Self::RateLimited => "the source (host or relay) or client exceeded its request rate",
            Self::QueueFull => {
                "the request queue is full for this source (boot storm or flood); raise queue_capacity or \
                 workers if this is a real storm"
            }
            Self::Expired => {
                "older than the client's retry window (more requests than the workers can answer in time; \
                 add cores or spread the boots)"
            }
            Self::SendFailed => {
                "the kernel refused to send the reply (is there a route to the client or relay?)"
            }
        }
    }
}

/// Per-request lines allowed per outcome class and second; the rest is summarised.
const LINES_PER_SECOND: u32 = 5;
/// A summary is written at the latest this long after the first suppressed line…
const SUMMARY_AFTER: Duration = Duration::from_secs(10);
/// …or as soon as a burst is over (nothing suppressed for this long).
const QUIET_AFTER: Duration = Duration::from_secs(2);
/// Sources counted by name per outcome in a summary; more are counted as "other sources".
const SOURCES_PER_OUTCOME: usize = 64;

#[derive(Debug, Default)]
struct Suppressed {
    first: Option<Instant>,
    last: Option<Instant>,
    counts: HashMap<(Family, Outcome), u64>,
    by_source: HashMap<(Family, Outcome), HashMap<IpAddr, u64>>,
}

#[derive(Debug, Default)]
struct GateState {
    window_start: Option<Instant>,
    used: [u32; COUNT],
    suppressed: Suppressed,
}

/// Lets a few per-request lines per outcome and second through and counts the rest per outcome and
/// source, so a flood cannot fill the journal while the operator still learns what happened.
#[derive(Debug, Default)]
pub struct LogGate {
    state: Mutex<GateState>,
}

/// One outcome class in a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    pub family: Family,
    pub outcome: Outcome,
    pub count: u64,
    /// The sources with the most requests, with their counts.
    pub top: Vec<(IpAddr, u64)>,
    /// Requests from the other sources.
    pub others: u64,
}

/// A summary of lines that were not written one by one.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSummary {
    pub seconds: f64,
    pub total: u64,
    pub rows: Vec<SummaryRow>,
}

impl LogSummary {
    /// The level of the summary line: that of its most severe outcome.
    pub fn level(&self) -> tracing::Level {
        if self
            .rows
            .iter()
            .any(|r| r.outcome.level() == tracing::Level::WARN)
        {
            tracing::Level::WARN
        } else {
            tracing::Level::INFO
        }
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for r in &self.rows {
            let mut sources: Vec<String> =
                r.top.iter().map(|(ip, n)| format!("{ip} {n}")).collect();
            if r.others > 0 {
                sources.push(format!("other sources {}", r.others));
            }
            parts.push(format!(
                "{} {} {} ({})",
                r.family,
                r.outcome.as_str(),
                r.count,
                sources.join(", ")
            ));
        }
        parts.join("; ")
    }
}

impl LogGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the per-request line for this request may be written now; if not, it is counted for
    /// the next summary.
    pub fn admit(&self, family: Family, outcome: Outcome, source: IpAddr, now: Instant) -> bool {
        let mut g = self.lock();
        let fresh = g
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1));
        if fresh {
            g.window_start = Some(now);
            g.used = [0; COUNT];
        }
        let slot = outcome.slot();
        if g.used[slot] < LINES_PER_SECOND {
            g.used[slot] += 1;
            return true;
        }
        let s = &mut g.suppressed;
        s.first.get_or_insert(now);
        s.last = Some(now);
        *s.counts.entry((family, outcome)).or_insert(0) += 1;
        let per_source = s.by_source.entry((family, outcome)).or_default();
        if per_source.len() < SOURCES_PER_OUTCOME || per_source.contains_key(&source) {
            *per_source.entry(source).or_insert(0) += 1;
        }
        false
    }

    /// The summary to write now, if one is due: something was suppressed, and either the burst is
    /// over or the oldest suppressed line is `SUMMARY_AFTER` old.
    pub fn take_summary(&self, now: Instant) -> Option<LogSummary> {
        let mut g = self.lock();
        let (first, last) = (g.suppressed.first?, g.suppressed.last?);
        let due = now.saturating_duration_since(first) >= SUMMARY_AFTER
            || now.saturating_duration_since(last) >= QUIET_AFTER;
        if !due {
            return None;
        }
        let s = std::mem::take(&mut g.suppressed);
        let mut rows: Vec<_> = s
            .counts
            .iter()
            .map(|(&(family, outcome), &count)| {
                let mut top: Vec<(IpAddr, u64)> = s
                    .by_source
                    .get(&(family, outcome))
                    .map(|m| m.iter().map(|(ip, n)| (*ip, *n)).collect())
                    .unwrap_or_default();
                top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                top.truncate(3);
                let named: u64 = top.iter().map(|(_, n)| n).sum();
                SummaryRow {
                    family,
                    outcome,
                    count,
                    top,
                    others: count.saturating_sub(named),
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.outcome.slot().cmp(&b.outcome.slot()))
        });
        Some(LogSummary {
            seconds: now.saturating_duration_since(first).as_secs_f64(),
            total: rows.iter().map(|r| r.count).sum(),
            rows,
        })
    }
}

/// Writes a due summary (the responder calls this once a second).
pub(crate) fn write_summary(gate: &LogGate, now: Instant) {
    let Some(summary) = gate.take_summary(now) else {
        return;
    };
    let text = summary.describe();
    let total = summary.total;
    let seconds = summary.seconds.round() as u64;
    if summary.level() == tracing::Level::WARN {
        tracing::warn!(
            total,
            seconds,
            "Network Unlock: {total} request(s) in the last {seconds} s not logged one by one \
             (counted in netunlockd_requests_total): {text}"
        );
    } else {
        tracing::info!(
            total,
            seconds,
            "Network Unlock: {total} request(s) in the last {seconds} s not logged one by one \
             (counted in netunlockd_requests_total): {text}"
        );
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
                "source_mismatch",
                "untrusted_relay",
                "bad_destination",
                "not_mine",
                "rate_limited",
                "queue_full",
                "expired",
                "send_failed"
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
        assert_eq!(Outcome::UntrustedRelay.level(), tracing::Level::WARN);
        assert!(
            Outcome::UntrustedRelay
                .explanation()
                .contains("trusted_relays")
        );
    }

    #[test]
    fn gate_caps_lines_per_class_and_summarises_by_source() {
        let g = LogGate::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "10.0.0.3".parse().unwrap();
        for _ in 0..LINES_PER_SECOND {
            assert!(g.admit(Family::V4, Outcome::RateLimited, a, t0));
        }
        for _ in 0..100 {
            assert!(!g.admit(Family::V4, Outcome::RateLimited, a, t0));
        }
        assert!(!g.admit(Family::V4, Outcome::RateLimited, b, t0));
        // Another class has its own budget.
        assert!(g.admit(Family::V4, Outcome::Answered, b, t0));
        // Not due while the burst goes on.
        assert_eq!(g.take_summary(t0 + Duration::from_millis(500)), None);
        let s = g
            .take_summary(t0 + QUIET_AFTER)
            .expect("due once the burst is over");
        assert_eq!(s.total, 101);
        assert_eq!(s.rows[0].top, vec![(a, 100), (b, 1)]);
        assert!(
            s.describe()
                .contains("v4 rate_limited 101 (10.0.0.2 100, 10.0.0.3 1)")
        );
        assert_eq!(s.level(), tracing::Level::WARN);
        assert_eq!(g.take_summary(t0 + QUIET_AFTER * 2), None, "taken once");
        // A new second has a new budget.
        assert!(g.admit(
            Family::V4,
            Outcome::RateLimited,
            a,
            t0 + Duration::from_secs(1)
        ));
    }

    #[test]
    fn a_long_flood_is_summarised_every_ten_seconds() {
        let g = LogGate::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        for ms in 0..11_000u64 {
            let now = t0 + Duration::from_millis(ms);
            let _ = g.admit(Family::V6, Outcome::QueueFull, a, now);
            if ms < SUMMARY_AFTER.as_millis() as u64 {
                assert_eq!(g.take_summary(now), None, "{ms}");
            }
        }
        assert!(g.take_summary(t0 + Duration::from_millis(11_000)).is_some());
    }

    #[test]
    fn sources_per_outcome_are_bounded() {
        let g = LogGate::default();
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = g.admit(Family::V4, Outcome::SourceMismatch, ip, t0);
        }
        let s = g.take_summary(t0 + QUIET_AFTER).unwrap();
        let r = &s.rows[0];
        assert_eq!(r.count, 1000 - u64::from(LINES_PER_SECOND));
        assert_eq!(r.top.len(), 3);
        assert_eq!(r.top.iter().map(|t| t.1).sum::<u64>() + r.others, r.count);
    }
}
