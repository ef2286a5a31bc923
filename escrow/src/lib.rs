//! escrow: BitLocker recovery-key escrow for netunlockd.
//!
//! Storage/service layer: [`EscrowService`] (SQLite or PostgreSQL via sqlx), envelope encryption
//! ([`sealing`]), the hash-chained audit log ([`audit`]), backup/restore ([`backup`]). The HTTPS API
//! modules sit on top of the service.

pub mod audit;
pub mod backup;
pub mod error;
pub mod guid;
pub mod model;
pub mod recovery_password;
pub mod sealing;
pub mod service;
pub mod store;

pub use audit::{AuditFilter, AuditRecord, ChainVerification};
pub use error::EscrowError;
pub use model::*;
pub use sealing::Kek;
pub use service::{
    Clock, DisclosedNotRotated, EscrowService, FleetGauges, FleetReport, ManualClock, MismatchRow,
    StaleDevice, SystemClock, VolumeWithoutKey,
};
pub use store::Backend;

// HTTP layer modules (escrow-api) below this line.
pub mod api;
pub mod auth;
pub mod client;
pub mod metrics;
pub mod openapi;
pub mod server;
pub mod tls;

pub use api::wire;
pub use client::{ApiClient, ApiClientConfig, ServerTrust};
pub use server::{EscrowServer, EscrowServerConfig, ServerLimits};
pub use tls::TlsReloader;
