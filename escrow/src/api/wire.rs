//! JSON bodies of the /api/v1 routes, shared by the server and `ApiClient`. Requests reject
//! unknown fields so a typo (`"recovery_pasword"`) is an error instead of a silently dropped value.
//! These are the stable wire shapes; conversions from the service model live in `convert.rs`.

use serde::{Deserialize, Serialize};

pub use crate::audit::{AuditRecord, ChainVerification};
pub use crate::model::FleetReport;
pub use crate::model::{
    ApiTokenInfo, DeviceInfo, EnrollmentTokenInfo, KeyCandidate, OperatorInfo, Role,
    RotationInstruction,
};

/// `{"error": {"code": "...", "message": "..."}}` — the body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    pub status: String,
}

// ---- agents ----

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrollment token secret created by an admin.
    pub token: String,
    pub computer_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowItemBody {
    pub volume_guid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<String>,
    /// "os" | "fixed" | "removable"
    pub volume_type: String,
    pub protector_id: String,
    pub recovery_password: String,
    /// Base64 (standard alphabet) of the BitLocker key package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_package: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowBody {
    pub items: Vec<EscrowItemBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_owner_auth: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EscrowItemResult {
    pub volume_guid: String,
    pub protector_id: String,
    /// "stored" | "unchanged" | "mismatch"
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EscrowResponse {
    pub results: Vec<EscrowItemResult>,
}

/// 409 answer when at least one item is a mismatch: the usual error plus the per-item results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EscrowConflict {
    pub error: ErrorDetail,
    pub results: Vec<EscrowItemResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresentProtector {
    pub volume_guid: String,
    pub protector_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckInBody {
    pub protectors: Vec<PresentProtector>,
    /// MAC addresses of the device's network adapters (`AA-BB-CC-DD-EE-FF` or `aa:bb:cc:dd:ee:ff`),
    /// at most 64; they join Network Unlock requests to this device. Absent: keep the last list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapters: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckInResponse {
    pub rotations: Vec<RotationInstruction>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationReport {
    pub old_protector_id: String,
    pub new_protector_id: String,
    pub old_removed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RotationStateResponse {
    pub state: String,
}

// ---- keys ----

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyList {
    pub keys: Vec<KeyCandidate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscloseBody {
    /// Required for helpdesk operators; must match the key's device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// One of the MBAM reason codes (snake_case), e.g. "lost_pin"; "other" needs `reason_text`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_text: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisclosureResponse {
    pub key: KeyCandidate,
    pub recovery_password: String,
    /// Base64 of the key package, when one was escrowed.
    pub key_package: Option<String>,
    pub audit_seq: i64,
}

// ---- administration ----

pub type DeviceView = DeviceInfo;
pub type OperatorView = OperatorInfo;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceList {
    pub devices: Vec<DeviceInfo>,
}

/// Query of `GET /devices`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    /// Case-insensitive substring of the computer name.
    pub name: Option<String>,
    /// Also list revoked devices.
    pub include_revoked: Option<bool>,
    /// Only devices that have not checked in for this many days.
    pub stale_days: Option<u32>,
}

impl DeviceQuery {
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(n) = &self.name {
            v.push(("name", n.clone()));
        }
        if let Some(r) = self.include_revoked {
            v.push(("include_revoked", r.to_string()));
        }
        if let Some(d) = self.stale_days {
            v.push(("stale_days", d.to_string()));
        }
        v
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// How many devices may enroll with it (1..=100000).
    pub max_uses: u32,
    /// Lifetime in seconds (1 s to 30 days).
    pub ttl_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedEnrollmentToken {
    pub info: EnrollmentTokenInfo,
    /// The secret, shown only in this answer.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollmentTokenList {
    pub tokens: Vec<EnrollmentTokenInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOperator {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorList {
    pub operators: Vec<OperatorInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    pub operator_id: i64,
    /// Lifetime in seconds; omitted = no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedApiToken {
    pub info: ApiTokenInfo,
    /// The secret, shown only in this answer.
    pub token: String,
}

// ---- reports ----

/// Query of `GET /reports/audit`; `from`/`to` are RFC 3339 timestamps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    /// Operator name.
    pub operator: Option<String>,
    /// Device (computer) name.
    pub device: Option<String>,
    /// Record kind, e.g. "disclose".
    pub kind: Option<String>,
    /// "json" (default) or "csv".
    pub format: Option<String>,
}

impl AuditQuery {
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        for (k, val) in [
            ("from", &self.from),
            ("to", &self.to),
            ("operator", &self.operator),
            ("device", &self.device),
            ("kind", &self.kind),
        ] {
            if let Some(val) = val {
                v.push((k, val.clone()));
            }
        }
        v
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditList {
    pub records: Vec<AuditRecord>,
}

/// The verdict of `GET /audit/verify`: `{"status": "ok", "records", "head_hash"}` or
/// `{"status": "broken", "seq", "reason"}`.
pub type ChainView = ChainVerification;

/// `GET /reports/fleet`.
pub type FleetView = FleetReport;

/// `GET /me`: the identity behind the presented token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Me {
    pub id: Option<i64>,
    pub name: String,
    pub role: Option<Role>,
}
