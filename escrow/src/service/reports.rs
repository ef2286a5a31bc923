//! Reports: the recovery audit report, fleet state, chain verification and Prometheus gauges.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use time::OffsetDateTime;

use super::candidates::{CANDIDATE_SELECT, candidate_from_row};
use super::{EscrowService, require_role};
use crate::audit::{
    AuditFilter, AuditRecord, ChainVerification, ChainVerifier, from_micros, to_micros,
};
use crate::error::EscrowError;
use crate::guid::parse_guid;
use crate::model::{Actor, KeyCandidate, ProtectorId, Role, VolumeType};
use crate::store::{AUDIT_COLUMNS, audit_from_row, read_audit_head};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleDevice {
    pub device_id: i64,
    pub computer_name: String,
    pub domain: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_check_in: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeWithoutKey {
    pub device_id: i64,
    pub computer_name: String,
    pub volume_guid: uuid::Uuid,
    pub volume_type: VolumeType,
    pub mount_point: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisclosedNotRotated {
    pub key: KeyCandidate,
    /// Seconds since the disclosure.
    pub age_secs: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MismatchRow {
    pub device_id: i64,
    pub computer_name: String,
    pub volume_guid: uuid::Uuid,
    pub protector_id: ProtectorId,
    #[serde(with = "time::serde::rfc3339")]
    pub detected_at: OffsetDateTime,
    pub audit_seq: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetReport {
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    pub stale_after_secs: u64,
    pub stale_devices: Vec<StaleDevice>,
    pub volumes_without_key: Vec<VolumeWithoutKey>,
    pub disclosed_not_rotated: Vec<DisclosedNotRotated>,
    pub mismatches: Vec<MismatchRow>,
}

/// Numbers for Prometheus gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetGauges {
    pub devices_active: i64,
    pub devices_revoked: i64,
    /// Active devices by time since last check-in: < 1 day, 1-7 days, 7-30 days, > 30 days or never.
    pub devices_fresh_1d: i64,
    pub devices_1d_to_7d: i64,
    pub devices_7d_to_30d: i64,
    pub devices_over_30d_or_never: i64,
    pub protectors_escrowed: i64,
    pub protectors_superseded: i64,
    pub volumes_without_key: i64,
    pub disclosed_not_rotated: i64,
    /// Age in seconds of the oldest disclosed-but-not-rotated key (0 if none).
    pub oldest_disclosed_not_rotated_secs: i64,
    pub mismatches: i64,
    pub audit_chain_length: i64,
}

const VOLUMES_WITHOUT_KEY: &str = "FROM volumes v JOIN devices d ON d.id = v.device_id WHERE d.revoked = 0 AND NOT EXISTS \
     (SELECT 1 FROM protectors p WHERE p.volume_id = v.id AND p.superseded_at IS NULL)";

impl EscrowService {
    /// The recovery audit report (filters: date range, operator, device, action, outcome).
    pub async fn audit_report(
        &self,
        actor: &Actor,
        filter: AuditFilter,
    ) -> Result<Vec<AuditRecord>, EscrowError> {
        require_role(actor, &[Role::Admin, Role::Auditor], "read the audit log")?;
        let limit = i64::from(filter.limit.unwrap_or(10_000).clamp(1, 100_000));
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at < $2) \
             AND ($3 IS NULL OR (actor_kind = 'operator' AND actor_name = $3)) \
             AND ($4 IS NULL OR lower(device_name) = lower($4)) AND ($5 IS NULL OR action = $5) \
             AND ($6 IS NULL OR outcome = $6) ORDER BY seq LIMIT $7"
        ))
        .bind(filter.from.map(to_micros))
        .bind(filter.to.map(to_micros))
        .bind(filter.operator)
        .bind(filter.device)
        .bind(filter.kind)
        .bind(filter.outcome.map(|o| o.as_str().to_owned()))
        .bind(limit)
        .fetch_all(&self.inner.db.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
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
        let mut stale_devices = Vec::new();
        for r in sqlx::query(
            "SELECT id, computer_name, domain, last_check_in FROM devices WHERE revoked = 0 \
             AND (last_check_in IS NULL OR last_check_in < $1) ORDER BY computer_name",
        )
        .bind(now_us.saturating_sub(stale_us))
        .fetch_all(&mut *tx)
        .await?
        {
            stale_devices.push(StaleDevice {
                device_id: r.try_get(0)?,
                computer_name: r.try_get(1)?,
                domain: r.try_get(2)?,
                last_check_in: r.try_get::<Option<i64>, _>(3)?.map(from_micros),
            });
        }
        let mut volumes_without_key = Vec::new();
        for r in sqlx::query(&format!("SELECT d.id, d.computer_name, v.volume_guid, v.volume_type, v.mount_point {VOLUMES_WITHOUT_KEY} ORDER BY d.computer_name"))
            .fetch_all(&mut *tx)
            .await?
        {
            volumes_without_key.push(VolumeWithoutKey {
                device_id: r.try_get(0)?,
                computer_name: r.try_get(1)?,
                volume_guid: parse_guid(&r.try_get::<String, _>(2)?).map_err(EscrowError::Storage)?,
                volume_type: r.try_get::<String, _>(3)?.parse().map_err(EscrowError::Storage)?,
                mount_point: r.try_get(4)?,
            });
        }
        let mut disclosed_not_rotated = Vec::new();
        for r in sqlx::query(&format!(
            "{CANDIDATE_SELECT} WHERE p.rotation_state IN ('requested', 'new_escrowed') ORDER BY p.disclosed_at"
        ))
        .fetch_all(&mut *tx)
        .await?
        {
            let key = candidate_from_row(&r)?;
            let age_secs = key.disclosed_at.map(|d| (now - d).whole_seconds()).unwrap_or(0);
            disclosed_not_rotated.push(DisclosedNotRotated { key, age_secs });
        }
        let mut mismatches = Vec::new();
        for r in sqlx::query(
            "SELECT m.device_id, d.computer_name, m.volume_guid, m.protector_id, m.detected_at, m.audit_seq \
             FROM mismatches m JOIN devices d ON d.id = m.device_id ORDER BY m.id",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            mismatches.push(MismatchRow {
                device_id: r.try_get(0)?,
                computer_name: r.try_get(1)?,
                volume_guid: parse_guid(&r.try_get::<String, _>(2)?).map_err(EscrowError::Storage)?,
                protector_id: r.try_get::<String, _>(3)?.parse().map_err(EscrowError::Storage)?,
                detected_at: from_micros(r.try_get(4)?),
                audit_seq: r.try_get(5)?,
            });
        }
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
        let head = read_audit_head(&mut tx).await?;
        let mut v = ChainVerifier::default();
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT 5000"
            ))
            .bind(after)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let rec = audit_from_row(r)?;
                after = rec.seq;
                if let Err(broken) = v.push(&rec) {
                    return Ok(broken);
                }
            }
        }
        tx.commit().await?;
        Ok(v.finish(Some(head)))
    }

    pub async fn fleet_gauges(&self) -> Result<FleetGauges, EscrowError> {
        let now_us = self.now_us();
        let day = 86_400_000_000i64;
        let mut tx = self.inner.db.begin_read().await?;
        let r = sqlx::query(
            "SELECT \
             COALESCE(SUM(CASE WHEN revoked = 0 THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN revoked = 1 THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN revoked = 0 AND last_check_in >= $1 THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN revoked = 0 AND last_check_in < $1 AND last_check_in >= $2 THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN revoked = 0 AND last_check_in < $2 AND last_check_in >= $3 THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN revoked = 0 AND (last_check_in IS NULL OR last_check_in < $3) THEN 1 ELSE 0 END), 0) \
             FROM devices",
        )
        .bind(now_us - day)
        .bind(now_us - 7 * day)
        .bind(now_us - 30 * day)
        .fetch_one(&mut *tx)
        .await?;
        let mut g = FleetGauges {
            devices_active: r.try_get(0)?,
            devices_revoked: r.try_get(1)?,
            devices_fresh_1d: r.try_get(2)?,
            devices_1d_to_7d: r.try_get(3)?,
            devices_7d_to_30d: r.try_get(4)?,
            devices_over_30d_or_never: r.try_get(5)?,
            ..FleetGauges::default()
        };
        let r = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN superseded_at IS NOT NULL THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN rotation_state IN ('requested', 'new_escrowed') THEN 1 ELSE 0 END), 0), \
             MIN(CASE WHEN rotation_state IN ('requested', 'new_escrowed') THEN disclosed_at END) FROM protectors",
        )
        .fetch_one(&mut *tx)
        .await?;
        g.protectors_escrowed = r.try_get(0)?;
        g.protectors_superseded = r.try_get(1)?;
        g.disclosed_not_rotated = r.try_get(2)?;
        g.oldest_disclosed_not_rotated_secs = r
            .try_get::<Option<i64>, _>(3)?
            .map(|d| (now_us - d).max(0) / 1_000_000)
            .unwrap_or(0);
        g.volumes_without_key = sqlx::query(&format!("SELECT COUNT(*) {VOLUMES_WITHOUT_KEY}"))
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        g.mismatches = sqlx::query("SELECT COUNT(*) FROM mismatches")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        g.audit_chain_length = read_audit_head(&mut tx).await?.0;
        tx.commit().await?;
        Ok(g)
    }
}
