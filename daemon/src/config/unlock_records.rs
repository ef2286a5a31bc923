//! `[unlock_records]`: Network Unlock outcomes recorded in the escrow database (issue 10), which
//! the console joins to devices by their adapters. Active when both `[unlock]` and `[escrow]` are.

use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireUnlockRecords {
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    /// Records older than this are deleted.
    #[serde(default = "default_retention_days")]
    pub(crate) retention_days: u32,
    /// Records waiting to be written; when full, new ones are dropped (and counted).
    #[serde(default = "default_queue_capacity")]
    pub(crate) queue_capacity: usize,
    /// Window of the "no Network Unlock in N days" gauge.
    #[serde(default = "default_no_unlock_days")]
    pub(crate) no_unlock_days: u32,
    /// How often the unlock gauges are recomputed (they query the database).
    #[serde(default = "default_gauge_refresh_secs")]
    pub(crate) gauge_refresh_secs: u64,
}

impl Default for WireUnlockRecords {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: default_retention_days(),
            queue_capacity: default_queue_capacity(),
            no_unlock_days: default_no_unlock_days(),
            gauge_refresh_secs: default_gauge_refresh_secs(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_retention_days() -> u32 {
    90
}
fn default_queue_capacity() -> usize {
    10_000
}
fn default_no_unlock_days() -> u32 {
    escrow::DEFAULT_UNLOCK_WINDOW_DAYS
}
fn default_gauge_refresh_secs() -> u64 {
    60
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnlockRecordSettings {
    pub(crate) retention: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) no_unlock_days: u32,
    pub(crate) gauge_refresh: Duration,
}

/// None when disabled (or when `[unlock]` or `[escrow]` is off: there is nothing to join).
pub(crate) fn validate(
    w: &WireUnlockRecords,
    unlock_and_escrow: bool,
) -> Result<Option<UnlockRecordSettings>> {
    if !w.enabled || !unlock_and_escrow {
        return Ok(None);
    }
    if !(1..=3650).contains(&w.retention_days) {
        bail!("unlock_records.retention_days must be between 1 and 3650");
    }
    if !(16..=1_000_000).contains(&w.queue_capacity) {
        bail!("unlock_records.queue_capacity must be between 16 and 1000000");
    }
    if !(1..=365).contains(&w.no_unlock_days) {
        bail!("unlock_records.no_unlock_days must be between 1 and 365");
    }
    if !(1..=86_400).contains(&w.gauge_refresh_secs) {
        bail!("unlock_records.gauge_refresh_secs must be between 1 and 86400");
    }
    Ok(Some(UnlockRecordSettings {
        retention: Duration::from_secs(u64::from(w.retention_days) * 86_400),
        queue_capacity: w.queue_capacity,
        no_unlock_days: w.no_unlock_days,
        gauge_refresh: Duration::from_secs(w.gauge_refresh_secs),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bounds_and_when_it_applies() {
        let d = WireUnlockRecords::default();
        let s = validate(&d, true).unwrap().unwrap();
        assert_eq!(s.retention, Duration::from_secs(90 * 86_400));
        assert_eq!(s.no_unlock_days, 30);
        assert_eq!(validate(&d, false).unwrap(), None);
        let off = WireUnlockRecords {
            enabled: false,
            ..d.clone()
        };
        assert_eq!(validate(&off, true).unwrap(), None);
        for (edit, want) in [
            (
                WireUnlockRecords {
                    retention_days: 0,
                    ..d.clone()
                },
                "retention_days",
            ),
            (
                WireUnlockRecords {
                    queue_capacity: 1,
                    ..d.clone()
                },
                "queue_capacity",
            ),
            (
                WireUnlockRecords {
                    no_unlock_days: 0,
                    ..d.clone()
                },
                "no_unlock_days",
            ),
        ] {
            let err = validate(&edit, true).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
