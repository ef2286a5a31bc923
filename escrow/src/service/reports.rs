//! Reports: the recovery audit report, fleet state, chain verification and Prometheus gauges.

use std::time::Duration;

use super::{EscrowService, require_role};
use crate::audit::{
    AuditFilter, AuditRecord, ChainVerification, ChainVerifier, ChainWatch, from_micros, to_micros,
};
use crate::error::EscrowError;
use crate::model::{Actor, DisclosedNotRotated, FleetGauges, FleetReport, Role};
use crate::store::{audit, keys, reports};

/// Records read per round trip while verifying the chain.
const VERIFY_PAGE: i64 = 5000;
/// Older records re-verified per periodic check (see [`ChainWatch`]).
const SWEEP_SLICE: i64 = 2000;

impl EscrowService {
    /// The recovery audit report (filters: date range, operator, device, action, outcome).
    pub async fn audit_report(
        &self,
        actor: &Actor,
        filter: AuditFilter,
    ) -> Result<Vec<AuditRecord>, EscrowError> {
        require_role(actor, &[Role::Admin, Role::Auditor], "read the audit log")?;
        let limit = i64::from(filter.limit.unwrap_or(10_000).clamp(1, 100_000));
        audit::query(&mut *self.inner.db.conn().await?, &filter, limit).await
    }

    pub async fn fleet_report(
        &self,
        actor: &Actor,
        stale_after: Duration,
    ) -> Result<FleetReport, EscrowError> {
        require_role(actor, &[Role::Admin, Role::Auditor], "read fleet reports")?;
        let now = self.now();
        let now_us = to_micros(now);
        let stale_us = i64::try_from(stale_after.as_micros()).unwrap_or(i64::MAX / 2);
        let mut tx = self.inner.db.begin_read().await?;
        let stale_devices =
            reports::stale_devices(&mut tx, now_us.saturating_sub(stale_us)).await?;
        let volumes_without_key = reports::volumes_without_key(&mut tx).await?;
        let disclosed_not_rotated = keys::rotation_pending_all(&mut tx)
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
        let mismatches = reports::mismatches(&mut tx).await?;
        tx.commit().await?;
        Ok(FleetReport {
            generated_at: from_micros(now_us),
            stale_after_secs: stale_after.as_secs(),
            stale_devices,
            volumes_without_key,
            disclosed_not_rotated,
            mismatches,
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
