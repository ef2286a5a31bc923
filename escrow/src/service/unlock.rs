//! Unlock ↔ escrow: Network Unlock outcomes recorded by the daemon, joined to enrolled devices by
//! the MAC addresses their agents report. What the console's device page, dashboard and fleet
//! report show, and the Prometheus gauges.

use std::time::Duration;

use super::{EscrowService, require_role};
use crate::error::EscrowError;
use crate::model::{
    Actor, DeviceInfo, DeviceUnlocks, HourlyUnlocks, MAX_ADAPTERS, MacAddress, RecoveryNeeded,
    Role, UnlockEvent, UnlockFleetReport, UnlockGauges,
};
use crate::store::{devices, unlock};

const ALL_ROLES: &[Role] = &[Role::Admin, Role::Helpdesk, Role::Auditor];
/// Rows deleted per prune statement (keeps each transaction short).
const PRUNE_BATCH: i64 = 10_000;
/// Most rows a list returns.
const MAX_LIST: u32 = 1000;

impl EscrowService {
    /// Store Network Unlock outcomes (from the daemon; not audited: these are operational records,
    /// bounded by [`EscrowService::prune_unlock_events`]). One transaction.
    pub async fn record_unlock_events(&self, events: &[UnlockEvent]) -> Result<(), EscrowError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.inner.db.begin_write_unaudited().await?;
        unlock::insert_events(&mut tx, events).await?;
        tx.commit().await
    }

    /// Delete outcomes older than `retention`; returns how many were deleted.
    pub async fn prune_unlock_events(&self, retention: Duration) -> Result<u64, EscrowError> {
        let before = self.now_us().saturating_sub(micros(retention));
        let mut total = 0;
        loop {
            let mut tx = self.inner.db.begin_write_unaudited().await?;
            let n = unlock::prune_events(&mut tx, before, PRUNE_BATCH).await?;
            tx.commit().await?;
            total += n;
            if n < PRUNE_BATCH.unsigned_abs() {
                return Ok(total);
            }
        }
    }

    /// Record the adapters an enrolled device reported at check-in (replacing its previous list).
    pub async fn report_adapters(
        &self,
        device: &DeviceInfo,
        adapters: &[MacAddress],
    ) -> Result<(), EscrowError> {
        if adapters.len() > MAX_ADAPTERS {
            return Err(EscrowError::Validation(format!(
                "at most {MAX_ADAPTERS} adapters per check-in"
            )));
        }
        let mut macs = adapters.to_vec();
        macs.sort_unstable();
        macs.dedup();
        let mut tx = self.inner.db.begin_write_unaudited().await?;
        unlock::replace_adapters(&mut tx, device.id, &macs, self.now_us()).await?;
        tx.commit().await
    }

    /// A device's adapters, its last answered Network Unlock request and its `refusals` most recent
    /// other outcomes.
    pub async fn device_unlocks(
        &self,
        actor: &Actor,
        device_id: i64,
        refusals: u32,
    ) -> Result<DeviceUnlocks, EscrowError> {
        require_role(actor, ALL_ROLES, "read Network Unlock records")?;
        let mut tx = self.inner.db.begin_read().await?;
        if devices::by_id(&mut tx, device_id).await?.is_none() {
            return Err(EscrowError::NotFound(format!("device {device_id}")));
        }
        let adapters = unlock::adapters_of(&mut tx, device_id).await?;
        let last_unlock = unlock::device_events(&mut tx, device_id, true, 1)
            .await?
            .pop();
        let recent_refusals =
            unlock::device_events(&mut tx, device_id, false, i64::from(refusals.min(MAX_LIST)))
                .await?;
        tx.commit().await?;
        Ok(DeviceUnlocks {
            device_id,
            adapters,
            last_unlock,
            recent_refusals,
        })
    }

    /// Requests per hour and outcome over the last `hours` hours (for the dashboard chart).
    pub async fn unlocks_per_hour(
        &self,
        actor: &Actor,
        hours: u32,
    ) -> Result<Vec<HourlyUnlocks>, EscrowError> {
        require_role(actor, ALL_ROLES, "read Network Unlock records")?;
        let since = self
            .now_us()
            .saturating_sub(i64::from(hours.clamp(1, 24 * 90)) * 3_600_000_000);
        unlock::hourly(&mut *self.inner.db.conn().await?, since).await
    }

    /// The devices that most recently needed a recovery password (by their latest disclosure).
    pub async fn recovery_needed(
        &self,
        actor: &Actor,
        limit: u32,
    ) -> Result<Vec<RecoveryNeeded>, EscrowError> {
        require_role(actor, ALL_ROLES, "read the devices that needed recovery")?;
        unlock::recovery_needed(
            &mut *self.inner.db.conn().await?,
            i64::from(limit.clamp(1, MAX_LIST)),
        )
        .await
    }

    /// Fleet report additions: enrolled devices without an answered request in `window_days`, and
    /// adapters that asked in that window but that no device reports (the first [`MAX_LIST`] of
    /// each, and their totals). Roles: admin, auditor.
    pub async fn unlock_fleet_report(
        &self,
        actor: &Actor,
        window_days: u32,
    ) -> Result<UnlockFleetReport, EscrowError> {
        require_role(actor, &[Role::Admin, Role::Auditor], "read fleet reports")?;
        let mut tx = self.inner.db.begin_read().await?;
        let report = self
            .unlock_lists(&mut tx, window_days, i64::from(MAX_LIST))
            .await?;
        tx.commit().await?;
        Ok(report)
    }

    /// The unlock part of the fleet report, at most `rows` rows per list, in the caller's
    /// transaction (the console's snapshot reads it with the rest of the fleet report).
    pub(super) async fn unlock_lists(
        &self,
        tx: &mut crate::store::Tx,
        window_days: u32,
        rows: i64,
    ) -> Result<UnlockFleetReport, EscrowError> {
        let since = self.window_start(window_days);
        Ok(UnlockFleetReport {
            generated_at: self.now(),
            window_days,
            devices_without_unlock: unlock::devices_without_unlock(&mut *tx, since, rows).await?,
            devices_without_unlock_total: unlock::count_devices_without_unlock(&mut *tx, since)
                .await?,
            unknown_adapters: unlock::unknown_adapters(&mut *tx, since, rows).await?,
            unknown_adapters_total: unlock::count_unknown_adapters(&mut *tx, since).await?,
        })
    }

    /// Numbers for the Prometheus gauges (the metrics endpoint; no actor).
    pub async fn unlock_gauges(&self, window_days: u32) -> Result<UnlockGauges, EscrowError> {
        let since = self.window_start(window_days);
        let mut tx = self.inner.db.begin_read().await?;
        let devices_without_unlock = unlock::count_devices_without_unlock(&mut tx, since).await?;
        let unknown_adapters = unlock::count_unknown_adapters(&mut tx, since).await?;
        let events_stored = unlock::count_events(&mut tx).await?;
        tx.commit().await?;
        Ok(UnlockGauges {
            devices_without_unlock,
            unknown_adapters,
            events_stored,
        })
    }

    fn window_start(&self, days: u32) -> i64 {
        self.now_us()
            .saturating_sub(i64::from(days.max(1)) * 86_400_000_000)
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
