//! Network Unlock outcomes and device adapters (issue 10): the tables that join the responder's
//! records to enrolled devices by MAC address.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{backend_of, values_placeholders};
use crate::audit::{from_micros, to_micros};
use crate::error::EscrowError;
use crate::model::{
    DeviceWithoutUnlock, HourlyUnlocks, MacAddress, RecoveryNeeded, UnknownAdapter, UnlockEvent,
};

const EVENT_COLUMNS: &str =
    "at, family, client, mac, address, interface, relay, thumbprint, outcome";
/// Rows per multi-row INSERT (9 parameters each: far below SQLite's parameter limit).
const EVENTS_PER_INSERT: usize = 200;
const HOUR_US: i64 = 3_600_000_000;

fn parse_mac(s: Option<String>) -> Option<MacAddress> {
    s.and_then(|m| m.parse().ok())
}

fn event_from_row(r: &AnyRow) -> Result<UnlockEvent, EscrowError> {
    Ok(UnlockEvent {
        at: from_micros(r.try_get(0)?),
        family: r.try_get(1)?,
        client: r.try_get(2)?,
        mac: parse_mac(r.try_get(3)?),
        address: r.try_get(4)?,
        interface: r.try_get(5)?,
        relay: r.try_get(6)?,
        thumbprint: r.try_get(7)?,
        outcome: r.try_get(8)?,
    })
}

/// Replace the adapters a device reports.
pub(crate) async fn replace_adapters(
    c: &mut AnyConnection,
    device_id: i64,
    macs: &[MacAddress],
    now: i64,
) -> Result<(), EscrowError> {
    sqlx::query("DELETE FROM device_adapters WHERE device_id = $1")
        .bind(device_id)
        .execute(&mut *c)
        .await?;
    if macs.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO device_adapters (device_id, mac, reported_at) VALUES {}",
        values_placeholders(backend_of(c), macs.len(), 3)
    );
    let mut q = sqlx::query(&sql);
    for m in macs {
        q = q.bind(device_id).bind(m.to_string()).bind(now);
    }
    q.execute(c).await?;
    Ok(())
}

pub(crate) async fn adapters_of(
    c: &mut AnyConnection,
    device_id: i64,
) -> Result<Vec<MacAddress>, EscrowError> {
    let rows = sqlx::query("SELECT mac FROM device_adapters WHERE device_id = $1 ORDER BY mac")
        .bind(device_id)
        .fetch_all(c)
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| parse_mac(r.try_get(0).ok()))
        .collect())
}

pub(crate) async fn insert_events(
    c: &mut AnyConnection,
    events: &[UnlockEvent],
) -> Result<(), EscrowError> {
    let backend = backend_of(c);
    for chunk in events.chunks(EVENTS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO unlock_events ({EVENT_COLUMNS}) VALUES {}",
            values_placeholders(backend, chunk.len(), 9)
        );
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q
                .bind(to_micros(e.at))
                .bind(e.family.clone())
                .bind(e.client.clone())
                .bind(e.mac.map(|m| m.to_string()))
                .bind(e.address.clone())
                .bind(e.interface.clone())
                .bind(e.relay.clone())
                .bind(e.thumbprint.clone())
                .bind(e.outcome.clone());
        }
        q.execute(&mut *c).await?;
    }
    Ok(())
}

/// Delete up to `limit` events older than `before` (µs); returns how many went.
pub(crate) async fn prune_events(
    c: &mut AnyConnection,
    before: i64,
    limit: i64,
) -> Result<u64, EscrowError> {
    let done = sqlx::query(
        "DELETE FROM unlock_events WHERE id IN (SELECT id FROM unlock_events WHERE at < $1 ORDER BY at LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(c)
    .await?;
    Ok(done.rows_affected())
}

/// The device's events (joined by its adapters' MACs), newest first: answered ones or the others.
pub(crate) async fn device_events(
    c: &mut AnyConnection,
    device_id: i64,
    answered: bool,
    limit: i64,
) -> Result<Vec<UnlockEvent>, EscrowError> {
    let op = if answered { "=" } else { "<>" };
    let rows = sqlx::query(&format!(
        "SELECT e.at, e.family, e.client, e.mac, e.address, e.interface, e.relay, e.thumbprint, e.outcome \
         FROM unlock_events e JOIN device_adapters a ON a.mac = e.mac \
         WHERE a.device_id = $1 AND e.outcome {op} 'answered' ORDER BY e.at DESC LIMIT $2"
    ))
    .bind(device_id)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// Events per hour and outcome since `since` (µs), oldest hour first.
pub(crate) async fn hourly(
    c: &mut AnyConnection,
    since: i64,
) -> Result<Vec<HourlyUnlocks>, EscrowError> {
    let rows = sqlx::query(
        "SELECT at / 3600000000 AS hour, outcome, COUNT(*) FROM unlock_events WHERE at >= $1 \
         GROUP BY at / 3600000000, outcome ORDER BY hour, outcome",
    )
    .bind(since)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(HourlyUnlocks {
                hour: from_micros(r.try_get::<i64, _>(0)? * HOUR_US),
                outcome: r.try_get(1)?,
                count: r.try_get(2)?,
            })
        })
        .collect()
}

/// Disclosures read per device listed by [`recovery_needed`].
const RECOVERY_WINDOW_PER_ROW: i64 = 100;

/// Devices by their most recent recovery-password disclosure, newest first.
pub(crate) async fn recovery_needed(
    c: &mut AnyConnection,
    limit: i64,
) -> Result<Vec<RecoveryNeeded>, EscrowError> {
    // Only the newest disclosures are read (index protectors_disclosed), not every protector: the
    // window holds RECOVERY_WINDOW_PER_ROW disclosures per row asked for, so it misses a device only
    // when a few devices had all of them.
    let rows = sqlx::query(
        "SELECT d.id, d.computer_name, MAX(r.disclosed_at) AS last_at FROM \
         (SELECT device_id, disclosed_at FROM protectors WHERE disclosed_at IS NOT NULL \
          ORDER BY disclosed_at DESC LIMIT $1) r \
         JOIN devices d ON d.id = r.device_id \
         GROUP BY d.id, d.computer_name ORDER BY last_at DESC LIMIT $2",
    )
    .bind(limit.saturating_mul(RECOVERY_WINDOW_PER_ROW))
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(RecoveryNeeded {
                device_id: r.try_get(0)?,
                computer_name: r.try_get(1)?,
                disclosed_at: from_micros(r.try_get(2)?),
            })
        })
        .collect()
}

/// Enrolled devices that report adapters but none of whose adapters got an answered request since
/// `$1` (µs). A NOT EXISTS probe per device through `unlock_events_mac_at` (mac, at ≥ $1): about
/// four times faster at 100,000 devices than taking each device's last answer and comparing it.
const WITHOUT_UNLOCK: &str = "FROM devices d WHERE d.revoked = 0 \
       AND EXISTS (SELECT 1 FROM device_adapters a WHERE a.device_id = d.id) \
       AND NOT EXISTS (SELECT 1 FROM device_adapters a JOIN unlock_events e ON e.mac = a.mac \
         WHERE a.device_id = d.id AND e.outcome = 'answered' AND e.at >= $1)";

/// The first `limit` of those devices by name, with their last answered request ever recorded
/// (looked up only for the rows returned).
pub(crate) async fn devices_without_unlock(
    c: &mut AnyConnection,
    since: i64,
    limit: i64,
) -> Result<Vec<DeviceWithoutUnlock>, EscrowError> {
    let rows = sqlx::query(&format!(
        "SELECT l.id, l.computer_name, l.domain, \
           (SELECT MAX(e.at) FROM device_adapters a JOIN unlock_events e ON e.mac = a.mac \
            WHERE a.device_id = l.id AND e.outcome = 'answered') \
         FROM (SELECT d.id, d.computer_name, d.domain {WITHOUT_UNLOCK} \
               ORDER BY d.computer_name, d.id LIMIT $2) l \
         ORDER BY l.computer_name, l.id"
    ))
    .bind(since)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DeviceWithoutUnlock {
                device_id: r.try_get(0)?,
                computer_name: r.try_get(1)?,
                domain: r.try_get(2)?,
                last_unlock: r.try_get::<Option<i64>, _>(3)?.map(from_micros),
            })
        })
        .collect()
}

pub(crate) async fn count_devices_without_unlock(
    c: &mut AnyConnection,
    since: i64,
) -> Result<i64, EscrowError> {
    Ok(sqlx::query(&format!("SELECT COUNT(*) {WITHOUT_UNLOCK}"))
        .bind(since)
        .fetch_one(c)
        .await?
        .try_get(0)?)
}

/// The MACs that asked since `$1` (µs) and that no device reports.
const UNKNOWN_ADAPTERS_WHERE: &str = "FROM unlock_events e WHERE e.at >= $1 AND e.mac IS NOT NULL \
       AND NOT EXISTS (SELECT 1 FROM device_adapters a WHERE a.mac = e.mac)";

/// MACs that asked since `since` (µs) and that no device reports, most recent first.
pub(crate) async fn unknown_adapters(
    c: &mut AnyConnection,
    since: i64,
    limit: i64,
) -> Result<Vec<UnknownAdapter>, EscrowError> {
    let rows = sqlx::query(&format!(
        "SELECT e.mac, COUNT(*), MAX(e.at) AS last_at, \
           (SELECT x.outcome FROM unlock_events x WHERE x.mac = e.mac ORDER BY x.at DESC LIMIT 1) \
         {UNKNOWN_ADAPTERS_WHERE} GROUP BY e.mac ORDER BY last_at DESC, e.mac LIMIT $2"
    ))
    .bind(since)
    .bind(limit)
    .fetch_all(c)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let Some(mac) = parse_mac(r.try_get(0)?) else {
            continue;
        };
        out.push(UnknownAdapter {
            mac,
            requests: r.try_get(1)?,
            last_seen: from_micros(r.try_get(2)?),
            last_outcome: r.try_get(3)?,
        });
    }
    Ok(out)
}

pub(crate) async fn count_unknown_adapters(
    c: &mut AnyConnection,
    since: i64,
) -> Result<i64, EscrowError> {
    Ok(sqlx::query(&format!(
        "SELECT COUNT(DISTINCT e.mac) {UNKNOWN_ADAPTERS_WHERE}"
    ))
    .bind(since)
    .fetch_one(c)
    .await?
    .try_get(0)?)
}

pub(crate) async fn count_events(c: &mut AnyConnection) -> Result<i64, EscrowError> {
    Ok(sqlx::query("SELECT COUNT(*) FROM unlock_events")
        .fetch_one(c)
        .await?
        .try_get(0)?)
}
