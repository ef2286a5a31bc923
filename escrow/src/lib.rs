//! escrow: BitLocker recovery-key escrow for netunlockd.
//!
//! Layers, each importing only those below it:
//! - [`api`] (HTTP: routes, extractors, authentication, wire types, the OpenAPI document), served by
//!   [`server`] over [`tls`];
//! - [`service`] (the rules: roles, validation, rotation, audit decisions, backup) — [`EscrowService`];
//! - [`store`] (all SQL, one module per aggregate; the only place that knows SQLite from PostgreSQL);
//! - pure modules: [`model`], [`audit`] (the hash chain), [`sealing`], [`recovery_password`], [`guid`].
//!
//! [`client`] is the HTTPS client of the API used by the CLI, the tests and the load tool.

pub mod api;
pub mod audit;
pub mod client;
pub mod directory;
pub mod error;
pub mod guid;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod recovery_password;
pub mod sealing;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
pub mod web;

pub use api::wire;
pub use audit::{AuditFilter, AuditRecord, ChainCheckpoint, ChainVerification, ChainWatch};
pub use client::{ApiClient, ApiClientConfig, ServerTrust};
pub use error::EscrowError;
pub use model::{
    Actor, ActorKind, ApiTokenInfo, AuditOutcome, BackupSummary, CheckIn, ConflictRow,
    DeviceFilter, DeviceInfo, DiscloseRequest, DisclosedNotRotated, Disclosure, DisclosureReason,
    EnrollmentTokenInfo, EscrowItem, EscrowRequest, FleetGauges, FleetReport, FleetSnapshot,
    ImportRecord, ItemOutcome, KeyCandidate, MismatchRow, OperatorInfo, Page, PageRequest,
    PasswordError, ProtectorId, RecoveryPassword, Role, RotationInstruction, RotationState,
    StaleDevice, TpmReason, VolumeType, VolumeWithoutKey, parse_recovery_password,
};
pub use model::{
    DEFAULT_UNLOCK_WINDOW_DAYS, DeviceUnlocks, DeviceWithoutUnlock, HourlyUnlocks, MacAddress,
    RecoveryNeeded, UnknownAdapter, UnlockEvent, UnlockFleetReport, UnlockGauges,
};
pub use sealing::Kek;
pub use server::{EscrowServer, EscrowServerConfig, ServerLimits};
pub use service::membership::{MemberSeen, Membership};
pub use service::{Clock, EscrowService, ManualClock, SessionPolicy, SignedIn, SystemClock};
pub use store::Backend;
pub use tls::TlsReloader;
