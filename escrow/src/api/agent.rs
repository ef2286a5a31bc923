//! Agent routes: enroll (client certificate + token), escrow, check-in, rotation report, own keys.
//! Every route but enroll requires an enrolled device certificate; the device can only touch
//! its own records because the service receives the device resolved from that certificate.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::AppState;
use super::auth::{ClientCert, Device};
use super::error::{ApiError, ApiJson};
use super::wire::*;
use crate::error::EscrowError;
use crate::guid::parse_guid;
use crate::model::{
    CheckIn, EscrowItem, EscrowRequest, ItemOutcome, MAX_ADAPTERS, MacAddress, ProtectorId,
    VolumeType, parse_recovery_password,
};

pub const UNKNOWN_ENROLLMENT_TOKEN: &str = "the enrollment token is not known to this appliance: check it was copied whole \
     (it starts with nue_), or ask an admin for a new one (netunlockd enroll-token create)";

#[utoipa::path(
    post,
    path = "/api/v1/enroll",
    tag = "agent",
    security(()),
    summary = "Enroll a device",
    description = "Binds the SHA-256 of the TLS client certificate presented on this connection to the computer, using an enrollment token. Needs a client certificate but no bearer token. An active device that enrols again with the same name, domain and certificate gets its record back, whatever its token (the certificate authenticates it).",
    request_body = EnrollRequest,
    responses(
        (status = 201, description = "enrolled", body = DeviceInfo),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 401, description = "the enrollment token is unknown, or no client certificate was presented", body = ErrorBody),
        (status = 403, description = "the device is revoked; an admin must allow re-enrollment", body = ErrorBody),
        (status = 409, description = "the computer is enrolled with another certificate, or this certificate is bound to another device", body = ErrorBody),
        (status = 410, description = "enrollment token expired, revoked or used up", body = ErrorBody),
        (status = 413, description = "body larger than escrow.max_body_bytes", body = ErrorBody)
    )
)]
pub async fn enroll(
    State(state): State<AppState>,
    ClientCert(cert_sha256): ClientCert,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> Result<Response, ApiError> {
    let token = Zeroizing::new(body.token);
    let device = state
        .service
        .enroll_device(
            &token,
            body.computer_name.trim(),
            body.domain.as_deref(),
            body.serial.as_deref(),
            &cert_sha256,
        )
        .await
        .map_err(|e| match e {
            // The generic 401 text talks about API tokens; an agent needs to hear about its
            // enrollment token.
            EscrowError::Unauthorized => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                UNKNOWN_ENROLLMENT_TOKEN,
            ),
            other => other.into(),
        })?;
    tracing::info!(device = %device.computer_name, device_id = device.id, "device enrolled");
    Ok((StatusCode::CREATED, Json(device)).into_response())
}

pub fn parse_protector(field: &str, s: &str) -> Result<ProtectorId, ApiError> {
    s.parse::<ProtectorId>()
        .map_err(|e| ApiError::validation(format!("{field}: {e}")))
}

fn parse_volume(field: &str, s: &str) -> Result<Uuid, ApiError> {
    parse_guid(s).map_err(|e| ApiError::validation(format!("{field}: {e}")))
}

/// Turns the wire body into the service request, naming the item (1-based) and field of the
/// first problem. Never echoes a recovery password. Limits (count, sizes) are the service's to
/// check, once, against `model::limits`.
pub fn parse_escrow(body: EscrowBody) -> Result<EscrowRequest, ApiError> {
    let mut items = Vec::with_capacity(body.items.len());
    for (i, item) in body.items.into_iter().enumerate() {
        let n = i + 1;
        let password = Zeroizing::new(item.recovery_password);
        let volume_guid = parse_volume(&format!("item {n}: volume_guid"), &item.volume_guid)?;
        let volume_type: VolumeType = item
            .volume_type
            .parse()
            .map_err(|e: String| ApiError::validation(format!("item {n}: volume_type: {e}")))?;
        let protector_id = parse_protector(&format!("item {n}: protector_id"), &item.protector_id)?;
        let recovery_password = parse_recovery_password(&password)
            .map_err(|e| ApiError::validation(format!("item {n}: {e}")))?;
        let key_package = match item.key_package {
            None => None,
            Some(b) => Some(B64.decode(b.trim()).map_err(|e| {
                ApiError::validation(format!("item {n}: key_package is not valid base64: {e}"))
            })?),
        };
        items.push(EscrowItem {
            volume_guid,
            mount_point: item.mount_point,
            volume_type,
            protector_id,
            recovery_password,
            key_package,
        });
    }
    Ok(EscrowRequest {
        items,
        tpm_owner_auth: body.tpm_owner_auth.map(Zeroizing::new),
    })
}

pub fn outcome_str(o: ItemOutcome) -> &'static str {
    match o {
        ItemOutcome::Stored => "stored",
        ItemOutcome::Unchanged => "unchanged",
        ItemOutcome::Mismatch => "mismatch",
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/agent/escrow",
    tag = "agent",
    security(("deviceCertificate" = [])),
    summary = "Escrow recovery passwords",
    description = "Idempotent upsert per (device, volume, protector); 1 to 64 protectors per call, key packages up to 65536 bytes. Re-sending identical data answers `unchanged`; the same protector ID with a different password is refused (409, outcome `mismatch`) and recorded.",
    request_body = EscrowBody,
    responses(
        (status = 200, description = "every item stored or unchanged", body = EscrowResponse),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 409, description = "at least one item is a mismatch; the other items' outcomes are in results", body = EscrowConflict),
        (status = 413, description = "body larger than escrow.max_body_bytes", body = ErrorBody)
    )
)]
pub async fn escrow(
    State(state): State<AppState>,
    Device(device): Device,
    ApiJson(body): ApiJson<EscrowBody>,
) -> Result<Response, ApiError> {
    let req = parse_escrow(body)?;
    let keys: Vec<(String, String)> = req
        .items
        .iter()
        .map(|i| {
            (
                crate::guid::format_guid(&i.volume_guid),
                i.protector_id.to_string(),
            )
        })
        .collect();
    state.metrics.escrow_batch.observe(keys.len() as f64);
    let outcomes = state.service.escrow(&device, req).await?;
    let results: Vec<EscrowItemResult> = keys
        .into_iter()
        .zip(outcomes.iter())
        .map(|((volume_guid, protector_id), o)| EscrowItemResult {
            volume_guid,
            protector_id,
            outcome: outcome_str(*o).to_string(),
        })
        .collect();
    let mismatches: Vec<&str> = results
        .iter()
        .filter(|r| r.outcome == "mismatch")
        .map(|r| r.protector_id.as_str())
        .collect();
    if mismatches.is_empty() {
        return Ok(Json(EscrowResponse { results }).into_response());
    }
    tracing::warn!(device = %device.computer_name, count = mismatches.len(), "escrow mismatch refused");
    let error = ErrorDetail {
        code: "mismatch".into(),
        message: format!(
            "protector(s) {} are already escrowed with a different recovery password; the stored key was kept and the mismatch recorded; other items: see results",
            mismatches.join(", ")
        ),
    };
    Ok((
        StatusCode::CONFLICT,
        Json(EscrowConflict { error, results }),
    )
        .into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/agent/checkin",
    tag = "agent",
    security(("deviceCertificate" = [])),
    summary = "Check in",
    description = "Reports the protectors present on the device (at most 1024); the answer lists the protectors to rotate (state `requested`) or whose old protector must now be removed (`new_escrowed`).",
    request_body = CheckInBody,
    responses(
        (status = 200, description = "rotation instructions", body = CheckInResponse),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 413, description = "body larger than escrow.max_body_bytes", body = ErrorBody)
    )
)]
pub async fn check_in(
    State(state): State<AppState>,
    Device(device): Device,
    ApiJson(body): ApiJson<CheckInBody>,
) -> Result<Json<CheckInResponse>, ApiError> {
    let mut present = Vec::with_capacity(body.protectors.len());
    for (i, p) in body.protectors.iter().enumerate() {
        let n = i + 1;
        present.push((
            parse_volume(&format!("protector {n}: volume_guid"), &p.volume_guid)?,
            parse_protector(&format!("protector {n}: protector_id"), &p.protector_id)?,
        ));
    }
    let adapters = match &body.adapters {
        Some(list) => Some(parse_adapters(list)?),
        None => None,
    };
    let rotations = state
        .service
        .check_in(
            &device,
            CheckIn {
                present_protectors: present,
            },
        )
        .await?;
    if let Some(adapters) = adapters {
        state.service.report_adapters(&device, &adapters).await?;
    }
    Ok(Json(CheckInResponse { rotations }))
}

/// Validate the adapters of a check-in: at most [`MAX_ADAPTERS`], each a unicast MAC address.
fn parse_adapters(list: &[String]) -> Result<Vec<MacAddress>, ApiError> {
    if list.len() > MAX_ADAPTERS {
        return Err(ApiError::validation(format!(
            "adapters lists {} entries; at most {MAX_ADAPTERS}",
            list.len()
        )));
    }
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            a.parse::<MacAddress>()
                .map_err(|e| ApiError::validation(format!("adapter {}: {e}", i + 1)))
        })
        .collect()
}

#[utoipa::path(
    post,
    path = "/api/v1/agent/rotation",
    tag = "agent",
    security(("deviceCertificate" = [])),
    summary = "Report rotation progress",
    description = "Two-phase rotation: after escrowing the new protector report `old_removed: false` (state `new_escrowed`), after Remove-BitLockerKeyProtector report `old_removed: true` (state `done`).",
    request_body = RotationReport,
    responses(
        (status = 200, description = "new rotation state", body = RotationStateResponse),
        (status = 400, description = "invalid JSON, unknown field, or a value that fails validation (the message says which)", body = ErrorBody),
        (status = 404, description = "no such rotation for this device", body = ErrorBody),
        (status = 409, description = "the new protector has not been escrowed yet", body = ErrorBody),
        (status = 413, description = "body larger than escrow.max_body_bytes", body = ErrorBody)
    )
)]
pub async fn rotation(
    State(state): State<AppState>,
    Device(device): Device,
    ApiJson(body): ApiJson<RotationReport>,
) -> Result<Json<RotationStateResponse>, ApiError> {
    let old = parse_protector("old_protector_id", &body.old_protector_id)?;
    let new = parse_protector("new_protector_id", &body.new_protector_id)?;
    if old == new {
        return Err(ApiError::validation(
            "old_protector_id and new_protector_id are the same; rotate to a new protector first",
        ));
    }
    let st = state
        .service
        .report_rotation(&device, old, new, body.old_removed)
        .await?;
    Ok(Json(RotationStateResponse {
        state: st.as_str().to_string(),
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/agent/keys",
    tag = "agent",
    security(("deviceCertificate" = [])),
    summary = "Own keys",
    description = "The device's own escrowed protectors (no secrets).",
    responses(
        (status = 200, description = "keys", body = KeyList)
    )
)]
pub async fn own_keys(
    State(state): State<AppState>,
    Device(device): Device,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state.service.device_own_keys(&device).await?;
    Ok(Json(KeyList { keys, next: None }))
}
