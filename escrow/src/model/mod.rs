//! Domain types shared by every layer: what the service takes and returns, what the store reads and
//! writes, and what the API serialises.

pub mod limits;
mod page;
mod reports;
mod unlock;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

pub use crate::guid::ProtectorId;
pub use crate::recovery_password::{PasswordError, RecoveryPassword, parse_recovery_password};
pub use page::{Page, PageRequest, ResolvedPage};
pub use reports::{
    ConflictRow, DisclosedNotRotated, FleetGauges, FleetReport, FleetSnapshot, MismatchRow,
    StaleDevice, VolumeWithoutKey,
};
pub use unlock::{
    DEFAULT_UNLOCK_WINDOW_DAYS, DeviceUnlocks, DeviceWithoutUnlock, HourlyUnlocks, MAX_ADAPTERS,
    MacAddress, RecoveryNeeded, UnknownAdapter, UnlockEvent, UnlockFleetReport, UnlockGauges,
};

/// "DisclosureReason" → "disclosure reason": messages name the kind of value, not the Rust type.
fn type_words(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }
        impl $name {
            /// All variants, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            /// The wire and storage spelling.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($s => Ok(Self::$variant),)+
                    other => Err(format!("{other:?} is not a valid {}; expected one of: {}", type_words(stringify!($name)),
                        [$($s),+].join(", "))) }
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($s),+]))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

string_enum!(
    /// Operator roles, as in MBAM: admin (everything), helpdesk (find + disclose), auditor (reports, audit).
    Role { Admin => "admin", Helpdesk => "helpdesk", Auditor => "auditor" }
);
string_enum!(
    /// BitLocker volume type.
    VolumeType { OperatingSystem => "os", FixedData => "fixed", Removable => "removable" }
);
string_enum!(
    /// Mandatory disclosure reason codes (MBAM's drive-unlock list).
    DisclosureReason {
        BootOrderChanged => "boot_order_changed", BiosChanged => "bios_changed", OsFilesModified => "os_files_modified",
        LostStartupKey => "lost_startup_key", LostPin => "lost_pin", TpmReset => "tpm_reset",
        LostPassphrase => "lost_passphrase", LostSmartcard => "lost_smartcard", Other => "other",
    }
);
string_enum!(
    /// Reasons for retrieving the TPM owner authorisation (MBAM's "Manage TPM" list).
    TpmReason {
        ResetPinLockout => "reset_pin_lockout", TurnOnTpm => "turn_on_tpm", TurnOffTpm => "turn_off_tpm",
        ChangeTpmPassword => "change_tpm_password", ClearTpm => "clear_tpm", Other => "other",
    }
);
string_enum!(
    /// Rotation state of a protector after disclosure: requested → new escrowed → done.
    RotationState { None => "none", Requested => "requested", NewEscrowed => "new_escrowed", Done => "done" }
);
string_enum!(
    /// Outcome of an audited action.
    AuditOutcome { Success => "success", Failure => "failure" }
);

impl Serialize for RecoveryPassword {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for RecoveryPassword {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        parse_recovery_password(&s).map_err(serde::de::Error::custom)
    }
}

/// Who performs an action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub kind: ActorKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActorKind {
    /// A help-desk/admin/auditor operator authenticated by an API token.
    Operator { id: i64, name: String, role: Role },
    /// An enrolled device authenticated by its client certificate.
    Device { id: i64, name: String },
    /// A local administrator on the appliance (CLI with access to the state directory); admin rights.
    Local { user: String },
}

impl Actor {
    pub fn operator(id: i64, name: impl Into<String>, role: Role) -> Self {
        Self {
            kind: ActorKind::Operator {
                id,
                name: name.into(),
                role,
            },
        }
    }
    pub fn local(user: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::Local { user: user.into() },
        }
    }
    pub fn device(d: &DeviceInfo) -> Self {
        Self {
            kind: ActorKind::Device {
                id: d.id,
                name: d.computer_name.clone(),
            },
        }
    }
    /// The operator role, if this actor is an operator; `Local` counts as admin.
    pub fn role(&self) -> Option<Role> {
        match &self.kind {
            ActorKind::Operator { role, .. } => Some(*role),
            ActorKind::Local { .. } => Some(Role::Admin),
            ActorKind::Device { .. } => None,
        }
    }
    /// (kind, id, name) as stored in the audit log.
    pub fn audit_identity(&self) -> (&'static str, Option<i64>, String) {
        match &self.kind {
            ActorKind::Operator { id, name, .. } => ("operator", Some(*id), name.clone()),
            ActorKind::Device { id, name } => ("device", Some(*id), name.clone()),
            ActorKind::Local { user } => ("local", None, user.clone()),
        }
    }
}

/// One protector to escrow.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct EscrowItem {
    pub volume_guid: Uuid,
    pub mount_point: Option<String>,
    pub volume_type: VolumeType,
    pub protector_id: ProtectorId,
    pub recovery_password: RecoveryPassword,
    /// The BitLocker key package (binary); the JSON layer carries it as base64.
    pub key_package: Option<Vec<u8>>,
}

/// An agent's escrow call: one or more protectors, optionally the legacy TPM owner authorisation.
#[derive(Clone, Debug)]
pub struct EscrowRequest {
    pub items: Vec<EscrowItem>,
    pub tpm_owner_auth: Option<Zeroizing<String>>,
}

/// Per-item result of an escrow call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemOutcome {
    /// New protector stored.
    Stored,
    /// Same protector and password already stored (idempotent re-escrow).
    Unchanged,
    /// Same protector ID with a different password: refused and recorded.
    Mismatch,
}

/// What the agent currently has on its volumes.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CheckIn {
    pub present_protectors: Vec<(Uuid, ProtectorId)>,
}

/// A protector the agent must rotate (state Requested) or finish rotating (NewEscrowed: remove the old one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RotationInstruction {
    #[serde(with = "crate::guid::braced")]
    #[schema(value_type = String, example = "{0B3E0C6A-5D2E-4F4B-9C1D-2A6B8E7F0011}")]
    pub volume_guid: Uuid,
    pub protector_id: ProtectorId,
    pub state: RotationState,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
}

/// A key as shown to the help desk: everything but the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Key)]
pub struct KeyCandidate {
    pub device_id: i64,
    pub device_name: String,
    pub domain: Option<String>,
    #[serde(with = "crate::guid::braced")]
    #[schema(value_type = String, example = "{0B3E0C6A-5D2E-4F4B-9C1D-2A6B8E7F0011}")]
    pub volume_guid: Uuid,
    pub volume_type: VolumeType,
    pub mount_point: Option<String>,
    pub protector_id: ProtectorId,
    #[serde(with = "time::serde::rfc3339")]
    pub escrowed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub superseded_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub disclosed_at: Option<OffsetDateTime>,
    pub rotation: RotationState,
    /// When the device enrolled (its record was created).
    #[serde(with = "time::serde::rfc3339")]
    pub device_enrolled_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub device_last_check_in: Option<OffsetDateTime>,
    /// Lower-case hex SHA-256 of the device's client certificate: tells a clone from the real server.
    pub device_cert_sha256: String,
}

/// A help-desk disclosure request as received. The service checks every field inside the audited
/// path, so any refusal is in the audit log, with the key's device when the key exists.
#[derive(Clone, Debug)]
pub struct DiscloseRequest {
    pub protector_id: ProtectorId,
    /// The device, by id (as listed by a lookup)…
    pub device_id: Option<i64>,
    /// …and/or by name: `NAME` or domain-qualified `DOMAIN\NAME`.
    pub device_name: Option<String>,
    /// An MBAM reason code ([`DisclosureReason`]); required.
    pub reason: Option<String>,
    /// Free text; required with reason `other`.
    pub reason_text: Option<String>,
    pub client_addr: Option<std::net::IpAddr>,
}

/// The answer to a successful disclosure. Its audit record is committed before this value exists.
#[derive(Clone, Debug, Serialize)]
pub struct Disclosure {
    pub candidate: KeyCandidate,
    pub reason: DisclosureReason,
    pub recovery_password: RecoveryPassword,
    pub key_package: Option<Vec<u8>>,
    pub audit_seq: i64,
}

/// An enrolled device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Device)]
pub struct DeviceInfo {
    pub id: i64,
    pub computer_name: String,
    pub domain: Option<String>,
    pub serial: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_check_in: Option<OffsetDateTime>,
    /// Lower-case hex SHA-256 of the bound client certificate (DER).
    pub client_cert_sha256: String,
    pub revoked: bool,
    pub reenroll_allowed: bool,
}

/// Filter for [`crate::EscrowService::list_devices`].
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct DeviceFilter {
    /// Case-insensitive substring of the computer name.
    pub name_contains: Option<String>,
    pub include_revoked: bool,
    /// Only devices whose last check-in is older than this many seconds (or that never checked in).
    pub stale_for_secs: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = EnrollmentToken)]
pub struct EnrollmentTokenInfo {
    pub id: i64,
    pub note: Option<String>,
    pub max_uses: u32,
    pub uses: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub revoked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Operator)]
pub struct OperatorInfo {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ApiToken)]
pub struct ApiTokenInfo {
    pub id: i64,
    pub operator_id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub revoked: bool,
}

/// Bulk import of already-escrowed keys (migration from MBAM/AD exports; also used by the 1M-key benchmark).
#[derive(Clone, Debug)]
pub struct ImportRecord {
    pub computer_name: String,
    pub domain: Option<String>,
    pub item: EscrowItem,
    pub escrowed_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub format_version: u32,
    pub devices: u64,
    pub protectors: u64,
    pub audit_records: u64,
    pub rows: u64,
}
