//! Who is calling: operators by `Authorization: Bearer <token>`, devices by the SHA-256 of the
//! client certificate they proved in the TLS handshake (passed in by the server as `ConnInfo`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::model::{Actor, ActorKind, DeviceInfo};

/// Per-connection facts the accept loop attaches to every request.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Lower-case hex SHA-256 of the client's leaf certificate, when it presented one.
    pub client_cert_sha256: Option<String>,
}

/// Filled in by the auth extractors and read by the logging middleware, so each request's log
/// line names its actor (never its credentials).
#[derive(Clone, Debug, Default)]
pub struct LogCtx(Arc<Mutex<Option<String>>>);

impl LogCtx {
    pub fn set(&self, who: String) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(who);
        }
    }
    pub fn get(&self) -> String {
        self.0
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .unwrap_or_else(|| "-".into())
    }
}

fn note_actor(parts: &Parts, who: String) {
    if let Some(ctx) = parts.extensions.get::<LogCtx>() {
        ctx.set(who);
    }
}

/// An authenticated operator (any role; the service checks the role per operation).
#[derive(Debug, Clone)]
pub struct Operator(pub Actor);

impl Operator {
    /// Rate-limit key and log label.
    pub fn key(&self) -> String {
        match &self.0.kind {
            ActorKind::Operator { id, .. } => format!("op:{id}"),
            ActorKind::Device { id, .. } => format!("dev:{id}"),
            ActorKind::Local { user } => format!("local:{user}"),
        }
    }
}

pub const NEED_TOKEN: &str =
    "this endpoint needs an operator API token: send the header Authorization: Bearer <token>";
pub const BAD_TOKEN: &str = "the API token is unknown, expired or revoked, or its operator is disabled; ask an admin for a new one";
pub const NEED_CERT: &str = "this endpoint needs the device's client certificate (mutual TLS)";
pub const UNKNOWN_CERT: &str = "this client certificate is not enrolled or its device was revoked; enroll the device with an enrollment token";

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized(NEED_TOKEN))?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized(NEED_TOKEN))?;
        let token = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => return Err(ApiError::unauthorized(NEED_TOKEN)),
        };
        if token.is_empty() {
            return Err(ApiError::unauthorized(NEED_TOKEN));
        }
        let actor = state
            .service
            .authenticate_operator(token)
            .await?
            .ok_or_else(|| ApiError::unauthorized(BAD_TOKEN))?;
        let (kind, _, name) = actor.audit_identity();
        let role = actor.role().map(|r| r.as_str()).unwrap_or("-");
        note_actor(parts, format!("{kind}:{name}({role})"));
        Ok(Self(actor))
    }
}

/// The SHA-256 of a proven client certificate (enrollment: not bound to a device yet).
#[derive(Debug, Clone)]
pub struct ClientCert(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientCert {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ConnInfo>()
            .and_then(|c| c.client_cert_sha256.clone())
            .map(Self)
            .ok_or_else(|| ApiError::unauthorized(NEED_CERT))
    }
}

/// An enrolled, non-revoked device identified by its client certificate.
#[derive(Debug, Clone)]
pub struct Device(pub DeviceInfo);

impl FromRequestParts<AppState> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ClientCert(sha) = ClientCert::from_request_parts(parts, state).await?;
        let device = state
            .service
            .device_by_cert(&sha)
            .await?
            .ok_or_else(|| ApiError::forbidden(UNKNOWN_CERT))?;
        note_actor(parts, format!("device:{}", device.computer_name));
        Ok(Self(device))
    }
}

/// The TCP peer of the request (for the disclosure audit record).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<ConnInfo>().map(|c| c.peer)))
    }
}
