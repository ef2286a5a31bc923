//! Read-only aggregates over the whole store: the fleet report's lists and the Prometheus gauges.

use sqlx::{AnyConnection, Row};

use crate::audit::from_micros;
use crate::error::EscrowError;
use crate::guid::parse_guid;
use crate::model::{ConflictRow, FleetGauges, MismatchRow, StaleDevice, VolumeWithoutKey};

const VOLUMES_WITHOUT_KEY: &str = "FROM volumes v JOIN devices d ON d.id = v.device_id WHERE d.revoked = 0 AND NOT EXISTS \
     (SELECT 1 FROM protectors p WHERE p.volume_id = v.id AND p.superseded_at IS NULL)";

/// Where a device counts as stale: active, and its last check-in before `$1` (or never).
const STALE_DEVICES: &str =
    "FROM devices WHERE revoked = 0 AND (last_check_in IS NULL OR last_check_in < $1)";

/// The first `limit` active devices whose last check-in is before `before` (or that never checked
/// in), by name.
pub(crate) async fn stale_devices(
    c: &mut AnyConnection,
    before: i64,
    limit: i64,
) -> Result<Vec<StaleDevice>, EscrowError> {
    let rows = sqlx::query(&format!(
        "SELECT id, computer_name, domain, last_check_in {STALE_DEVICES} \
         ORDER BY computer_name, id LIMIT $2"
    ))
    .bind(before)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(StaleDevice {
                device_id: r.try_get(0)?,
                computer_name: r.try_get(1)?,
                domain: r.try_get(2)?,
                last_check_in: r.try_get::<Option<i64>, _>(3)?.map(from_micros),
            })
        })
        .collect()
}

/// How many devices [`stale_devices`] would list without a limit.
pub(crate) async fn stale_device_count(
    c: &mut AnyConnection,
    before: i64,
) -> Result<i64, EscrowError> {
    Ok(sqlx::query(&format!("SELECT COUNT(*) {STALE_DEVICES}"))
        .bind(before)
        .fetch_one(c)
        .await?
        .try_get(0)?)
}

/// The first `limit` volumes of active devices with no live (not superseded) protector.
pub(crate) async fn volumes_without_key(
    c: &mut AnyConnection,
    limit: i64,
) -> Result<Vec<VolumeWithoutKey>, EscrowError> {
    let rows = sqlx::query(&format!(
        "SELECT d.id, d.computer_name, v.volume_guid, v.volume_type, v.mount_point {VOLUMES_WITHOUT_KEY} \
         ORDER BY d.computer_name, v.id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(VolumeWithoutKey {
                device_id: r.try_get(0)?,
                computer_name: r.try_get(1)?,
                volume_guid: parse_guid(&r.try_get::<String, _>(2)?)
                    .map_err(EscrowError::Storage)?,
                volume_type: r
                    .try_get::<String, _>(3)?
                    .parse()
                    .map_err(EscrowError::Storage)?,
                mount_point: r.try_get(4)?,
            })
        })
        .collect()
}

pub(crate) async fn mismatches(
    c: &mut AnyConnection,
    limit: i64,
) -> Result<Vec<MismatchRow>, EscrowError> {
    let rows = sqlx::query(
        "SELECT m.device_id, d.computer_name, m.volume_guid, m.protector_id, m.detected_at, m.audit_seq \
         FROM mismatches m JOIN devices d ON d.id = m.device_id ORDER BY m.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(MismatchRow {
                device_id: r.try_get(0)?,
                computer_name: r.try_get(1)?,
                volume_guid: parse_guid(&r.try_get::<String, _>(2)?)
                    .map_err(EscrowError::Storage)?,
                protector_id: r
                    .try_get::<String, _>(3)?
                    .parse()
                    .map_err(EscrowError::Storage)?,
                detected_at: from_micros(r.try_get(4)?),
                audit_seq: r.try_get(5)?,
            })
        })
        .collect()
}

/// Protector IDs escrowed by a device while another held them, in detection order.
pub(crate) async fn conflicts(
    c: &mut AnyConnection,
    limit: i64,
) -> Result<Vec<ConflictRow>, EscrowError> {
    let rows = sqlx::query(
        "SELECT x.protector_id, x.device_id, d.computer_name, d.domain, x.other_device_id, \
         o.computer_name, o.domain, x.detected_at, x.audit_seq \
         FROM protector_conflicts x JOIN devices d ON d.id = x.device_id \
         JOIN devices o ON o.id = x.other_device_id ORDER BY x.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ConflictRow {
                protector_id: r
                    .try_get::<String, _>(0)?
                    .parse()
                    .map_err(EscrowError::Storage)?,
                device_id: r.try_get(1)?,
                computer_name: r.try_get(2)?,
                domain: r.try_get(3)?,
                other_device_id: r.try_get(4)?,
                other_computer_name: r.try_get(5)?,
                other_domain: r.try_get(6)?,
                detected_at: from_micros(r.try_get(7)?),
                audit_seq: r.try_get(8)?,
            })
        })
        .collect()
}

/// The gauges' counts, with check-in freshness bucketed at `now` - 1, 7 and 30 days.
pub(crate) async fn gauges(c: &mut AnyConnection, now: i64) -> Result<FleetGauges, EscrowError> {
    let day = 86_400_000_000i64;
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
    .bind(now - day)
    .bind(now - 7 * day)
    .bind(now - 30 * day)
    .fetch_one(&mut *c)
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
    .fetch_one(&mut *c)
    .await?;
    g.protectors_escrowed = r.try_get(0)?;
    g.protectors_superseded = r.try_get(1)?;
    g.disclosed_not_rotated = r.try_get(2)?;
    g.oldest_disclosed_not_rotated_secs = r
        .try_get::<Option<i64>, _>(3)?
        .map(|d| (now - d).max(0) / 1_000_000)
        .unwrap_or(0);
    g.volumes_without_key = sqlx::query(&format!("SELECT COUNT(*) {VOLUMES_WITHOUT_KEY}"))
        .fetch_one(&mut *c)
        .await?
        .try_get(0)?;
    g.mismatches = sqlx::query("SELECT COUNT(*) FROM mismatches")
        .fetch_one(&mut *c)
        .await?
        .try_get(0)?;
    g.protector_conflicts = sqlx::query("SELECT COUNT(*) FROM protector_conflicts")
        .fetch_one(&mut *c)
        .await?
        .try_get(0)?;
    g.audit_chain_length = super::audit::read_head(c).await?.0;
    Ok(g)
}
