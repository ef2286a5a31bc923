//! What the fleet report and the Prometheus gauges show (no secrets).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{KeyCandidate, ProtectorId, VolumeType};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StaleDevice {
    pub device_id: i64,
    pub computer_name: String,
    pub domain: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_check_in: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VolumeWithoutKey {
    pub device_id: i64,
    pub computer_name: String,
    #[serde(with = "crate::guid::braced")]
    #[schema(value_type = String, example = "{0B3E0C6A-5D2E-4F4B-9C1D-2A6B8E7F0011}")]
    pub volume_guid: uuid::Uuid,
    pub volume_type: VolumeType,
    pub mount_point: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DisclosedNotRotated {
    pub key: KeyCandidate,
    /// Seconds since the disclosure.
    pub age_secs: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MismatchRow {
    pub device_id: i64,
    pub computer_name: String,
    #[serde(with = "crate::guid::braced")]
    #[schema(value_type = String, example = "{0B3E0C6A-5D2E-4F4B-9C1D-2A6B8E7F0011}")]
    pub volume_guid: uuid::Uuid,
    pub protector_id: ProtectorId,
    #[serde(with = "time::serde::rfc3339")]
    pub detected_at: OffsetDateTime,
    pub audit_seq: i64,
}

/// A protector ID escrowed by a device while another device already held it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConflictRow {
    pub protector_id: ProtectorId,
    /// The device that escrowed it last…
    pub device_id: i64,
    pub computer_name: String,
    pub domain: Option<String>,
    /// …and the one that held it already.
    pub other_device_id: i64,
    pub other_computer_name: String,
    pub other_domain: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub detected_at: OffsetDateTime,
    pub audit_seq: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetReport {
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    pub stale_after_secs: u64,
    pub stale_devices: Vec<StaleDevice>,
    pub volumes_without_key: Vec<VolumeWithoutKey>,
    pub disclosed_not_rotated: Vec<DisclosedNotRotated>,
    pub mismatches: Vec<MismatchRow>,
    /// Protector IDs held by more than one device.
    pub protector_conflicts: Vec<ConflictRow>,
}

/// The fleet report as the console shows it: the first rows of each list, the full counts and the
/// gauges, computed together by the periodic refresh (see [`crate::EscrowService::fleet_snapshot`]).
#[derive(Clone, Debug)]
pub struct FleetSnapshot {
    /// Each list holds at most [`FleetSnapshot::ROWS`] rows; `generated_at` is when it was computed.
    pub report: FleetReport,
    pub stale_devices: i64,
    pub gauges: FleetGauges,
    /// The Network Unlock lists (same row limit).
    pub unlocks: super::UnlockFleetReport,
}

impl FleetSnapshot {
    /// Rows kept per list.
    pub const ROWS: i64 = 100;
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
    pub protector_conflicts: i64,
    pub audit_chain_length: i64,
}
