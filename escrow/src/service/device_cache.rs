//! Devices by client certificate, cached. Every agent request resolves its certificate to a device, and a
//! database round trip for that was a measurable part of an escrow call. Entries are dropped whenever this
//! service changes a device's binding (enroll, re-enroll, revoke, allow-reenroll, import, restore) and expire
//! after `TTL` (another appliance sharing a PostgreSQL database may change a binding). A stale entry cannot
//! write or read anything: every agent operation re-checks the device's binding in its own SQL
//! (`ensure_active`, the group committer's device update, the own-keys query).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::DeviceInfo;

const TTL: Duration = Duration::from_secs(10);
/// Bound on entries; the map is simply emptied when full (a fleet re-fills it within one TTL).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub(crate) struct DeviceCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by every invalidation, so a lookup that read the database before a change cannot store its
    /// stale answer after the change (`insert` compares generations).
    generation: u64,
    entries: HashMap<String, (Instant, DeviceInfo)>,
}

impl DeviceCache {
    pub(crate) fn get(&self, cert_sha256: &str) -> Option<DeviceInfo> {
        let state = self.state.lock().ok()?;
        state
            .entries
            .get(cert_sha256)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, d)| d.clone())
    }

    /// The generation to pass to `insert` (read it before querying the database).
    pub(crate) fn generation(&self) -> u64 {
        self.state.lock().map(|s| s.generation).unwrap_or(u64::MAX)
    }

    pub(crate) fn insert(&self, generation: u64, cert_sha256: String, device: DeviceInfo) {
        if let Ok(mut state) = self.state.lock()
            && state.generation == generation
        {
            if state.entries.len() >= MAX_ENTRIES {
                state.entries.clear();
            }
            state.entries.insert(cert_sha256, (Instant::now(), device));
        }
    }

    pub(crate) fn invalidate(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.generation = state.generation.wrapping_add(1);
            state.entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: i64) -> DeviceInfo {
        DeviceInfo {
            id,
            computer_name: format!("SRV{id}"),
            domain: None,
            serial: None,
            first_seen: time::OffsetDateTime::UNIX_EPOCH,
            last_check_in: None,
            client_cert_sha256: "ab".repeat(32),
            revoked: false,
            reenroll_allowed: false,
        }
    }

    #[test]
    fn invalidation_drops_entries_and_refuses_answers_read_before_it() {
        let c = DeviceCache::default();
        let g = c.generation();
        c.insert(g, "a".into(), device(1));
        assert_eq!(c.get("a").map(|d| d.id), Some(1));
        assert!(c.get("b").is_none());
        // A lookup started before the change must not store its (possibly stale) answer after it.
        let before = c.generation();
        c.invalidate();
        assert!(c.get("a").is_none());
        c.insert(before, "a".into(), device(1));
        assert!(c.get("a").is_none());
        c.insert(c.generation(), "a".into(), device(2));
        assert_eq!(c.get("a").map(|d| d.id), Some(2));
    }
}
