//! What the escrow benches share: the generated fleet (ten keys per device, five per volume, two
//! volumes), settings from the environment, and percentiles.

use std::time::Duration;

use escrow::{EscrowItem, ImportRecord, ProtectorId, VolumeType, parse_recovery_password};
use time::OffsetDateTime;
use uuid::Uuid;

pub const PROTECTORS_PER_VOLUME: usize = 5;
pub const VOLUMES_PER_DEVICE: usize = 2;
pub const PER_DEVICE: usize = PROTECTORS_PER_VOLUME * VOLUMES_PER_DEVICE;
/// Records per bulk-import transaction.
pub const BATCH: usize = 20_000;

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A valid recovery password from a counter (each group is 11 × a 16-bit word).
pub fn password(n: u64) -> String {
    (0..8u64)
        .map(|i| {
            format!(
                "{:06}",
                11 * ((n.wrapping_mul(7919).wrapping_add(i * 104_729)) % 65_536)
            )
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The device that holds key number `i`.
pub fn device_name(i: usize) -> String {
    format!("SRV{:07}", i / PER_DEVICE)
}

/// Key number `i` of the generated fleet, with key ID `pid`.
pub fn record(i: usize, pid: ProtectorId) -> ImportRecord {
    let volume = i / PROTECTORS_PER_VOLUME;
    ImportRecord {
        computer_name: device_name(i),
        domain: Some("corp.example".into()),
        item: EscrowItem {
            volume_guid: Uuid::from_u128(
                0x1111_0000_0000_4000_8000_0000_0000_0000 | volume as u128,
            ),
            mount_point: Some(if volume.is_multiple_of(2) {
                "C:".into()
            } else {
                "D:".into()
            }),
            volume_type: if volume.is_multiple_of(2) {
                VolumeType::OperatingSystem
            } else {
                VolumeType::FixedData
            },
            protector_id: pid,
            recovery_password: parse_recovery_password(&password(i as u64)).unwrap(),
            key_package: None,
        },
        escrowed_at: OffsetDateTime::now_utc(),
    }
}

/// The `p` quantile (0.0–1.0) of `times` (sorted in place; not empty).
pub fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    let idx = ((times.len() as f64 - 1.0) * p).round() as usize;
    times[idx.min(times.len() - 1)]
}
