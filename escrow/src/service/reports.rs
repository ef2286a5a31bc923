//! Reports: the recovery audit report, fleet state, chain verification and Prometheus gauges.

use std::sync::Arc;
use std::time::Duration;

use super::{EscrowService, all_pages, require_role, resolve_page};
use crate::audit::{
    AuditFilter, AuditRecord, ChainVerification, ChainVerifier, ChainWatch, from_micros, to_micros,
};
use crate::error::EscrowError;
use crate::model::{
    Actor, DisclosedNotRotated, FleetGauges, FleetReport, FleetSnapshot, Page, PageRequest, Role,
};
use crate::store::{audit, keys, reports};

/// Records read per round trip of an export.
pub const EXPORT_BATCH: i64 = 2000;

/// Records read per round trip while verifying the chain.
const VERIFY_PAGE: i64 = 5000;
/// Older records re-verified per periodic check (see [`ChainWatch`]).
const SWEEP_SLICE: i64 = 2000;

impl EscrowService {
    /// One page of the recovery audit report (filters: date range, operator, device, action,
    /// outcome), in chain order. Roles: admin, auditor.
    pub async fn audit_report_page(
        &self,
        actor: &Actor,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditRecord>, EscrowError> {
        require_role(actor, &[Role::Admin, Role::Auditor], "read the audit log")?;
        let page = resolve_page(&page)?;
        let rows = audit::query(
            &mut *self.inner.db.conn().await?,
            filter,
            page.after.unwrap_or(0),
            i64::MAX,
            page.fetch(),
        )
        .await?;
        Ok(page.finish(rows, |r| r.seq))
    }

    /// As [`Self::audit_report_page`], newest first (the console's report): `next` continues
    /// with older records.
    pub async fn audit_report_page_newest_first(
        &self,
        actor: &Actor,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditRecord>, EscrowError> {
        require_role(actor, &[Role::Admin, Role::Auditor], "read the audit log")?;
        let page = resolve_page(&page)?;
        let rows = audit::query_newest_first(
            &mut *self.inner.db.conn().await?,
            filter,
            page.after.unwrap_or(i64::MAX),
            page.fetch(),
        )
        .await?;
        Ok(page.finish(rows, |r| r.seq))
    }

    /// The recovery audit report: every matching record, or the first `filter.limit` of them.
    pub async fn audit_report(
        &self,
        actor: &Actor,
        filter: AuditFilter,
    ) -> Result<Vec<AuditRecord>, EscrowError> {
        let mut all = all_pages(|p| self.audit_report_page(actor, &filter, p)).await?;
        if let Some(limit) = filter.limit {
            all.truncate(limit as usize);
        }
        Ok(all)
    }

    /// Streams every record matching `filter` that exists when the call starts, in chain order,
    /// in batches of [`EXPORT_BATCH`], into `out`; memory stays constant whatever the size of the
    /// log. Stops early (Ok) when the receiver is dropped. Roles: admin, auditor.
    pub async fn audit_export(
        &self,
        actor: &Actor,
        filter: &AuditFilter,
        out: tokio::sync::mpsc::Sender<Vec<AuditRecord>>,
    ) -> Result<(), EscrowError> {
        require_role(actor, &[Role::Admin, Role::Auditor], "read the audit log")?;
        let upto = audit::read_head(&mut *self.inner.db.conn().await?).await?.0;
        let mut after = 0i64;
        loop {
            let rows = audit::query(
                &mut *self.inner.db.conn().await?,
                filter,
                after,
                upto,
                EXPORT_BATCH,
            )
            .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.seq;
            let done = rows.len() < EXPORT_BATCH as usize;
            if out.send(rows).await.is_err() || done {
                return Ok(());
            }
        }
    }

    pub async fn fleet_report(
        &self,
        actor: &Actor,
        stale_after: Duration,
    ) -> Result<FleetReport, EscrowError> {
        require_role(actor, &[Role::Admin, Role::Auditor], "read fleet reports")?;
        let mut tx = self.inner.db.begin_read().await?;
        let report = self.fleet_lists(&mut tx, stale_after, i64::MAX).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// The console's fleet report: the last snapshot with these windows (staleness, and days
    /// without a Network Unlock), computed now if there is none yet. The server refreshes it with the gauges ([`Self::refresh_fleet_snapshot`]), so a page
    /// view costs no query over the whole store.
    pub async fn fleet_snapshot(
        &self,
        actor: &Actor,
        stale_after: Duration,
        unlock_window_days: u32,
    ) -> Result<Arc<FleetSnapshot>, EscrowError> {
        require_role(actor, &[Role::Admin, Role::Auditor], "read fleet reports")?;
        match self.inner.fleet.load_full() {
            Some(s)
                if s.report.stale_after_secs == stale_after.as_secs()
                    && s.unlocks.window_days == unlock_window_days =>
            {
                Ok(s)
            }
            _ => {
                self.refresh_fleet_snapshot(stale_after, unlock_window_days)
                    .await
            }
        }
    }

    /// Recompute the fleet snapshot (the first [`FleetSnapshot::ROWS`] rows of each list, the
    /// counts and the gauges, in one read transaction) and keep it for [`Self::fleet_snapshot`].
    pub async fn refresh_fleet_snapshot(
        &self,
        stale_after: Duration,
        unlock_window_days: u32,
    ) -> Result<Arc<FleetSnapshot>, EscrowError> {
        let mut tx = self.inner.db.begin_read().await?;
        let report = self
            .fleet_lists(&mut tx, stale_after, FleetSnapshot::ROWS)
            .await?;
        let stale_devices = reports::stale_device_count(
            &mut tx,
            Self::stale_before(report.generated_at, stale_after),
        )
        .await?;
        let gauges = reports::gauges(&mut tx, to_micros(report.generated_at)).await?;
        let unlocks = self
            .unlock_lists(&mut tx, unlock_window_days, FleetSnapshot::ROWS)
            .await?;
        tx.commit().await?;
        let snapshot = Arc::new(FleetSnapshot {
            report,
            stale_devices,
            gauges,
            unlocks,
        });
        self.inner.fleet.store(Some(snapshot.clone()));
        Ok(snapshot)
    }

    fn stale_before(now: time::OffsetDateTime, stale_after: Duration) -> i64 {
        let stale_us = i64::try_from(stale_after.as_micros()).unwrap_or(i64::MAX / 2);
        to_micros(now).saturating_sub(stale_us)
    }

    /// The fleet report's lists, at most `rows` rows each.
    async fn fleet_lists(
        &self,
        tx: &mut crate::store::Tx,
        stale_after: Duration,
        rows: i64,
    ) -> Result<FleetReport, EscrowError> {
        let now = self.now();
        let now_us = to_micros(now);
        let stale_devices =
            reports::stale_devices(&mut *tx, Self::stale_before(now, stale_after), rows).await?;
        let volumes_without_key = reports::volumes_without_key(&mut *tx, rows).await?;
        let disclosed_not_rotated = keys::rotation_pending_all(&mut *tx, rows)
            .await?
            .into_iter()
            .map(|key| {
                let age_secs = key
                    .disclosed_at
                    .map(|d| (now - d).whole_seconds())
                    .unwrap_or(0);
                DisclosedNotRotated { key, age_secs }
            })
            .collect();
        let mismatches = reports::mismatches(&mut *tx, rows).await?;
        let protector_conflicts = reports::conflicts(&mut *tx, rows).await?;
        Ok(FleetReport {
            generated_at: from_micros(now_us),
            stale_after_secs: stale_after.as_secs(),
            stale_devices,
            volumes_without_key,
            disclosed_not_rotated,
            mismatches,
            protector_conflicts,
        })
    }

    /// Verify the whole audit chain in one consistent snapshot. Any caller may run it (it reveals no data).
    pub async fn verify_audit_chain(&self) -> Result<ChainVerification, EscrowError> {
        let mut tx = self.inner.db.begin_read().await?;
        let head = audit::read_head(&mut tx).await?;
        let mut v = ChainVerifier::default();
        let mut after = 0i64;
        loop {
            let records = audit::after(&mut tx, after, VERIFY_PAGE).await?;
            if records.is_empty() {
                break;
            }
            for rec in &records {
                after = rec.seq;
                if let Err(broken) = v.push(rec) {
                    return Ok(broken);
                }
            }
        }
        tx.commit().await?;
        Ok(v.finish(Some(head)))
    }

    /// The periodic chain check (health, `status`): the records appended since the last round,
    /// the last verified record unchanged, and one slice of the older chain re-verified. Its cost
    /// per round is bounded by new records + [`SWEEP_SLICE`], whatever the chain's length; its
    /// verdict and counts match [`Self::verify_audit_chain`] as of this round. The first round
    /// (empty `watch`) reads the whole chain.
    pub async fn check_audit_chain(
        &self,
        watch: &mut ChainWatch,
    ) -> Result<ChainVerification, EscrowError> {
        let mut tx = self.inner.db.begin_read().await?;
        let head = audit::read_head(&mut tx).await?;
        let current = match watch.verified() {
            Some(cp) => audit::after(&mut tx, cp.seq - 1, 1)
                .await?
                .into_iter()
                .next(),
            None => None,
        };
        let mut v = match watch.resume(current.as_ref()) {
            Ok(v) => v,
            Err(broken) => return Ok(broken),
        };
        loop {
            let records = audit::after(&mut tx, v.last_seq(), VERIFY_PAGE).await?;
            if records.is_empty() {
                break;
            }
            for rec in &records {
                if let Err(broken) = v.push(rec) {
                    return Ok(broken);
                }
            }
        }
        let verdict = v.clone().finish(Some(head));
        if !matches!(verdict, ChainVerification::Ok { .. }) {
            return Ok(verdict);
        }
        watch.advance(&v);
        let anchor = watch.sweep_anchor();
        let slice = if anchor == 0 {
            audit::after(&mut tx, 0, SWEEP_SLICE).await?
        } else {
            audit::after(&mut tx, anchor - 1, SWEEP_SLICE + 1).await?
        };
        tx.commit().await?;
        let slice_len = usize::try_from(SWEEP_SLICE).unwrap_or(usize::MAX);
        if let Err(broken) = watch.sweep(&slice, slice_len) {
            return Ok(broken);
        }
        Ok(verdict)
    }

    pub async fn fleet_gauges(&self) -> Result<FleetGauges, EscrowError> {
        let mut tx = self.inner.db.begin_read().await?;
        let g = reports::gauges(&mut tx, self.now_us()).await?;
        tx.commit().await?;
        Ok(g)
    }
}
