//! The device aggregate: enrolled computers and the client certificate each one is bound to.

use std::collections::HashSet;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{b2i, backend_of, or_pairs, param};
use crate::audit::from_micros;
use crate::error::EscrowError;
use crate::model::{DeviceFilter, DeviceInfo};

const DEVICE_COLUMNS: &str = "id, computer_name, domain, serial, first_seen, last_check_in, cert_sha256, revoked, reenroll_allowed";

fn device_from_row(row: &AnyRow) -> Result<DeviceInfo, EscrowError> {
    Ok(DeviceInfo {
        id: row.try_get(0)?,
        computer_name: row.try_get(1)?,
        domain: row.try_get(2)?,
        serial: row.try_get(3)?,
        first_seen: from_micros(row.try_get(4)?),
        last_check_in: row.try_get::<Option<i64>, _>(5)?.map(from_micros),
        client_cert_sha256: row.try_get(6)?,
        revoked: row.try_get::<i64, _>(7)? != 0,
        reenroll_allowed: row.try_get::<i64, _>(8)? != 0,
    })
}

/// The key of a device's identity: `lower(name) \ lower(domain)` (one record per machine identity).
pub(crate) fn name_key(computer_name: &str, domain: Option<&str>) -> String {
    format!(
        "{}\\{}",
        computer_name.to_ascii_lowercase(),
        domain.unwrap_or("").to_ascii_lowercase()
    )
}

pub(crate) async fn by_id(
    c: &mut AnyConnection,
    id: i64,
) -> Result<Option<DeviceInfo>, EscrowError> {
    sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(c)
    .await?
    .map(|r| device_from_row(&r))
    .transpose()
}

pub(crate) async fn by_name_key(
    c: &mut AnyConnection,
    key: &str,
) -> Result<Option<DeviceInfo>, EscrowError> {
    sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE name_key = $1"
    ))
    .bind(key.to_owned())
    .fetch_optional(c)
    .await?
    .map(|r| device_from_row(&r))
    .transpose()
}

/// The active (not revoked) device bound to this certificate.
pub(crate) async fn active_by_cert(
    c: &mut AnyConnection,
    cert_sha256: &str,
) -> Result<Option<DeviceInfo>, EscrowError> {
    sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE cert_sha256 = $1 AND revoked = 0"
    ))
    .bind(cert_sha256.to_owned())
    .fetch_optional(c)
    .await?
    .map(|r| device_from_row(&r))
    .transpose()
}

/// The name of another active device (not `name_key`) already bound to this certificate.
pub(crate) async fn other_active_with_cert(
    c: &mut AnyConnection,
    cert_sha256: &str,
    name_key: &str,
) -> Result<Option<String>, EscrowError> {
    sqlx::query(
        "SELECT computer_name FROM devices WHERE cert_sha256 = $1 AND revoked = 0 AND name_key <> $2",
    )
    .bind(cert_sha256.to_owned())
    .bind(name_key.to_owned())
    .fetch_optional(c)
    .await?
    .map(|r| r.try_get(0))
    .transpose()
    .map_err(Into::into)
}

/// A device to create.
pub(crate) struct NewDevice<'a> {
    pub computer_name: &'a str,
    pub domain: Option<&'a str>,
    pub serial: Option<&'a str>,
    pub first_seen: i64,
    /// Empty for a device created by an import (bound at its first enrollment).
    pub cert_sha256: &'a str,
    pub reenroll_allowed: bool,
    pub enrolled_token: Option<i64>,
}

pub(crate) async fn insert(c: &mut AnyConnection, d: &NewDevice<'_>) -> Result<i64, EscrowError> {
    Ok(sqlx::query(
        "INSERT INTO devices (computer_name, domain, name_key, serial, first_seen, cert_sha256, revoked, \
         reenroll_allowed, enrolled_token) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8) RETURNING id",
    )
    .bind(d.computer_name.to_owned())
    .bind(d.domain.map(str::to_owned))
    .bind(name_key(d.computer_name, d.domain))
    .bind(d.serial.map(str::to_owned))
    .bind(d.first_seen)
    .bind(d.cert_sha256.to_owned())
    .bind(b2i(d.reenroll_allowed))
    .bind(d.enrolled_token)
    .fetch_one(c)
    .await?
    .try_get(0)?)
}

/// Bind a new certificate to an existing device (re-enrollment): active again, re-enrollment used up.
pub(crate) async fn rebind(
    c: &mut AnyConnection,
    id: i64,
    d: &NewDevice<'_>,
) -> Result<(), EscrowError> {
    sqlx::query(
        "UPDATE devices SET cert_sha256 = $1, revoked = 0, revoked_at = NULL, reenroll_allowed = 0, \
         serial = COALESCE($2, serial), enrolled_token = $3, computer_name = $4, domain = $5 WHERE id = $6",
    )
    .bind(d.cert_sha256.to_owned())
    .bind(d.serial.map(str::to_owned))
    .bind(d.enrolled_token)
    .bind(d.computer_name.to_owned())
    .bind(d.domain.map(str::to_owned))
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

pub(crate) async fn revoke(c: &mut AnyConnection, id: i64, now: i64) -> Result<(), EscrowError> {
    sqlx::query(
        "UPDATE devices SET revoked = 1, revoked_at = $1, reenroll_allowed = 0 WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

pub(crate) async fn allow_reenroll(c: &mut AnyConnection, id: i64) -> Result<(), EscrowError> {
    sqlx::query("UPDATE devices SET reenroll_allowed = 1 WHERE id = $1")
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// Refresh `last_check_in` if the device is still active and bound to `cert_sha256`; false otherwise
/// (revoked, or re-bound to another certificate since the caller looked it up).
pub(crate) async fn touch_if_bound(
    c: &mut AnyConnection,
    id: i64,
    cert_sha256: &str,
    now: i64,
) -> Result<bool, EscrowError> {
    let n = sqlx::query(
        "UPDATE devices SET last_check_in = $1 WHERE id = $2 AND revoked = 0 AND cert_sha256 = $3",
    )
    .bind(now)
    .bind(id)
    .bind(cert_sha256.to_owned())
    .execute(c)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// (id, certificate) pairs looked up per statement.
const PAIRS_PER_STATEMENT: usize = 256;

/// [`touch_if_bound`] for many devices at once; returns the pairs that are still active and bound.
pub(crate) async fn touch_many_if_bound(
    c: &mut AnyConnection,
    pairs: &[(i64, String)],
    now: i64,
) -> Result<HashSet<(i64, String)>, EscrowError> {
    let backend = backend_of(c);
    let mut active = HashSet::with_capacity(pairs.len());
    for chunk in pairs.chunks(PAIRS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE devices SET last_check_in = {} WHERE revoked = 0 AND ({}) RETURNING id, cert_sha256",
            param(backend, 1),
            or_pairs(backend, 2, chunk.len(), "id", "cert_sha256")
        );
        let mut q = sqlx::query(&sql).bind(now);
        for (id, cert) in chunk {
            q = q.bind(*id).bind(cert.clone());
        }
        for row in q.fetch_all(&mut *c).await? {
            active.insert((row.try_get(0)?, row.try_get(1)?));
        }
    }
    Ok(active)
}

/// Devices matching `filter`, by name. `stale_before`: only those whose last check-in is older (or none).
pub(crate) async fn list(
    c: &mut AnyConnection,
    filter: &DeviceFilter,
    stale_before: Option<i64>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<DeviceInfo>, EscrowError> {
    let pattern = filter.name_contains.as_deref().map(|s| {
        format!(
            "%{}%",
            s.trim().to_ascii_lowercase().replace(['%', '_', '\\'], "")
        )
    });
    let rows = sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE ($1 = 1 OR revoked = 0) \
         AND ($2 IS NULL OR name_key LIKE $2) \
         AND ($3 IS NULL OR last_check_in IS NULL OR last_check_in < $3) AND id > $4 ORDER BY id LIMIT $5"
    ))
    .bind(b2i(filter.include_revoked))
    .bind(pattern)
    .bind(stale_before)
    .bind(after_id)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter().map(device_from_row).collect()
}
