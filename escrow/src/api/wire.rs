//! JSON bodies of the /api/v1 routes, shared by the server and `ApiClient`. Requests reject
//! unknown fields so a typo (`"recovery_pasword"`) is an error instead of a silently dropped value.
//! These are the stable wire shapes; conversions from the service model live in `convert.rs`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use crate::audit::{AuditRecord, ChainVerification};
pub use crate::model::{
    ApiTokenInfo, DeviceInfo, DisclosureReason, EnrollmentTokenInfo, ItemOutcome, KeyCandidate,
    OperatorInfo, Role, RotationInstruction, RotationState, VolumeType,
};
pub use crate::model::{FleetReport, UnlockFleetReport};

/// `{"error": {"code": "...", "message": "..."}}` — the body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Health {
    pub status: String,
}

// ---- agents ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EscrowItem)]
pub struct EscrowItemBody {
    /// GUID of the volume, braced or bare, any case.
    #[schema(example = "{24B0AA32-F8D0-40BA-BB05-73A800324C09}")]
    pub volume_guid: String,
    /// Drive letter or mount path (at most 260 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<String>,
    #[schema(value_type = VolumeType)]
    pub volume_type: String,
    /// Recovery key ID, braced or bare, any case.
    #[schema(example = "{24B0AA32-F8D0-40BA-BB05-73A800324C09}")]
    pub protector_id: String,
    /// 48 digits: 8 groups of 6, hyphen or space separated; each group divisible by 11 and <= 720885.
    pub recovery_password: String,
    /// Base64 (standard alphabet) of the BitLocker key package, at most 65536 bytes decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub key_package: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EscrowBody {
    /// 1 to 64 protectors (`model::limits::MAX_PROTECTORS_PER_ESCROW`).
    #[schema(min_items = 1, max_items = 64)]
    pub items: Vec<EscrowItemBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_owner_auth: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct EscrowItemResult {
    pub volume_guid: String,
    pub protector_id: String,
    #[schema(value_type = ItemOutcome)]
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct EscrowResponse {
    pub results: Vec<EscrowItemResult>,
}

/// 409 answer when at least one item is a mismatch: the usual error plus the per-item results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct EscrowConflict {
    pub error: ErrorDetail,
    pub results: Vec<EscrowItemResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresentProtector {
    #[schema(example = "{24B0AA32-F8D0-40BA-BB05-73A800324C09}")]
    pub volume_guid: String,
    #[schema(example = "{24B0AA32-F8D0-40BA-BB05-73A800324C09}")]
    pub protector_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInBody {
    /// Every protector on the device's volumes (at most 1024).
    #[schema(max_items = 1024)]
    pub protectors: Vec<PresentProtector>,
    /// MAC addresses of the device's network adapters (`AA-BB-CC-DD-EE-FF` or `aa:bb:cc:dd:ee:ff`),
    /// at most 64; they join Network Unlock requests to this device. Absent: keep the last list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapters: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct CheckInResponse {
    pub rotations: Vec<RotationInstruction>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationReport {
    #[schema(example = "{24B0AA32-F8D0-40BA-BB05-73A800324C09}")]
    pub old_protector_id: String,
    #[schema(example = "{24B0AA32-F8D0-40BA-BB05-73A800324C09}")]
    pub new_protector_id: String,
    pub old_removed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct RotationStateResponse {
    #[schema(value_type = RotationState)]
    pub state: String,
}

// ---- keys ----

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyCandidate>,
    /// Cursor of the next page (pass it as `cursor`); null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscloseBody {
    /// The device holding the key, as `device_id` of a lookup result: chooses among several
    /// devices that escrowed the same key ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<i64>,
    /// The device's name, `NAME` or `DOMAIN\NAME`. Helpdesk must give this or `device_id`; it
    /// must match the key's device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// One of the MBAM reason codes, e.g. "lost_pin"; "other" needs `reason_text`. A request
    /// without a valid reason is refused, and the refusal audited.
    #[serde(default)]
    #[schema(value_type = DisclosureReason, required = true)]
    pub reason: Option<String>,
    /// Required when reason is "other".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_text: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Disclosure)]
pub struct DisclosureResponse {
    pub key: KeyCandidate,
    pub recovery_password: String,
    /// Base64 of the key package, when one was escrowed.
    #[schema(content_encoding = "base64")]
    pub key_package: Option<String>,
    pub audit_seq: i64,
}

/// Query of the lists without other filters (`GET /enrollment-tokens`, `GET /operators`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Cursor from the previous page's `next`; omitted = first page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

impl From<PageQuery> for crate::model::PageRequest {
    fn from(q: PageQuery) -> Self {
        Self {
            cursor: q.cursor,
            limit: q.limit,
        }
    }
}

fn page_pairs(v: &mut Vec<(&'static str, String)>, cursor: &Option<String>, limit: Option<u32>) {
    if let Some(c) = cursor {
        v.push(("cursor", c.clone()));
    }
    if let Some(l) = limit {
        v.push(("limit", l.to_string()));
    }
}

// ---- administration ----

pub type DeviceView = DeviceInfo;
pub type OperatorView = OperatorInfo;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceInfo>,
    /// Cursor of the next page (pass it as `cursor`); null on the last page.
    pub next: Option<String>,
}

/// Query of `GET /devices`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    /// Case-insensitive substring of the computer name.
    pub name: Option<String>,
    /// Also list revoked devices.
    pub include_revoked: Option<bool>,
    /// Only devices that have not checked in for this many days.
    pub stale_days: Option<u32>,
    /// Cursor from the previous page's `next`; omitted = first page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
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
        page_pairs(&mut v, &self.cursor, self.limit);
        v
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// How many devices may enroll with it.
    #[schema(minimum = 1, maximum = 100000)]
    pub max_uses: u32,
    /// Lifetime in seconds (1 s to 30 days).
    #[schema(minimum = 1, maximum = 2592000)]
    pub ttl_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    pub info: EnrollmentTokenInfo,
    /// The secret, shown only in this answer.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentTokenList {
    pub tokens: Vec<EnrollmentTokenInfo>,
    /// Cursor of the next page (pass it as `cursor`); null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOperator {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OperatorList {
    pub operators: Vec<OperatorInfo>,
    /// Cursor of the next page (pass it as `cursor`); null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    #[schema(value_type = Role)]
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    pub operator_id: i64,
    /// Lifetime in seconds; omitted = the appliance's default (`escrow.api_token_lifetime_days`),
    /// else no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60)]
    pub ttl_seconds: Option<u64>,
}

/// Query of `GET /tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenQuery {
    /// Only the tokens of this operator.
    pub operator_id: Option<i64>,
    /// Cursor from the previous page's `next`; omitted = first page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

impl ApiTokenQuery {
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(id) = self.operator_id {
            v.push(("operator_id", id.to_string()));
        }
        page_pairs(&mut v, &self.cursor, self.limit);
        v
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiTokenList {
    pub tokens: Vec<ApiTokenInfo>,
    /// Cursor of the next page (pass it as `cursor`); null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiToken {
    pub info: ApiTokenInfo,
    /// The secret, shown only in this answer.
    pub token: String,
}

// ---- reports ----

/// Query of `GET /reports/audit`; `from`/`to` are RFC 3339 timestamps.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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
    /// Cursor from the previous page's `next`; omitted = first page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
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
        page_pairs(&mut v, &self.cursor, self.limit);
        v
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub records: Vec<AuditRecord>,
    /// Cursor of the next page (pass it as `cursor`); null on the last page.
    pub next: Option<String>,
}

/// The verdict of `GET /audit/verify`: `{"status": "ok", "records", "head_hash"}` or
/// `{"status": "broken", "seq", "reason"}`.
pub type ChainView = ChainVerification;

/// `GET /reports/fleet`.
pub type FleetView = FleetReport;

/// `GET /me`: the identity behind the presented token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Me {
    pub id: Option<i64>,
    pub name: String,
    pub role: Option<Role>,
}
